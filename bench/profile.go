package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cutover-guard/cutover-guard/internal/loopback"
)

// With -profile, part 3 ends with a profiled run: its 8 clients switch the
// guard + matchConditions routes for the -profile period while CPU profiles
// of the guard (its --pprof-bind-address) and of kube-apiserver (its
// /debug/pprof, served to the bench's admin credentials) are taken. The
// profiles are kept in the raw folder, with the top of each and the CPU
// each process used per switch, read from /proc, for the whole period.

// pprofArgs are the warm guard's extra flags for -profile: a free loopback
// port for its pprof endpoints.
func (l *lab) pprofArgs() ([]string, error) {
	if l.s.profile <= 0 || !l.guardHasFlag("pprof-bind-address") {
		return nil, nil
	}
	ports, err := loopback.FreePorts(1)
	if err != nil {
		return nil, err
	}
	l.pprofAddr = "127.0.0.1:" + strconv.Itoa(ports[0])
	return []string{"--pprof-bind-address=" + l.pprofAddr}, nil
}

func (l *lab) profileSwitches(ctx context.Context, s setup, r *report) error {
	if l.pprofAddr == "" {
		return fmt.Errorf("-profile: the guard binary has no --pprof-bind-address")
	}
	secs := int(l.s.profile.Seconds())
	logf("profiling %d clients switching %s for %ds", clients, s.name, secs)
	pids := map[string]int{"guard": l.warm.PID(), "kube-apiserver": componentPID(l.cluster, "kube-apiserver"), "etcd": componentPID(l.cluster, "etcd")}
	cpu0 := map[string]time.Duration{}
	for name, pid := range pids {
		t, err := cpuTime(pid)
		if err != nil {
			return err
		}
		cpu0[name] = t
	}
	var wg sync.WaitGroup
	profiles := map[string][]byte{}
	errs := map[string]error{}
	var mu sync.Mutex
	fetch := func(name string, get func(context.Context) ([]byte, error)) {
		wg.Go(func() {
			b, err := get(ctx)
			mu.Lock()
			defer mu.Unlock()
			profiles[name], errs[name] = b, err
		})
	}
	fetch("guard", func(ctx context.Context) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", l.pprofAddr, secs), nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("guard pprof: %s", resp.Status)
		}
		return io.ReadAll(resp.Body)
	})
	fetch("kube-apiserver", func(ctx context.Context) ([]byte, error) {
		return l.cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", strconv.Itoa(secs)).
			Timeout(time.Duration(secs+30) * time.Second).DoRaw(ctx)
	})
	began := time.Now()
	switches := 0
	for time.Since(began) < l.s.profile {
		_, lat, err := l.switchAtOnce(ctx, s, 20)
		if err != nil {
			return err
		}
		switches += len(lat)
	}
	took := time.Since(began)
	wg.Wait()
	var lines []string
	for _, name := range []string{"guard", "kube-apiserver", "etcd"} {
		t, err := cpuTime(pids[name])
		if err != nil {
			return err
		}
		lines = append(lines, fmt.Sprintf("%s %.2f ms CPU per switch", name, float64(t-cpu0[name])/float64(time.Millisecond)/float64(switches)))
	}
	logf("profiled: %d switches in %s (%.0f/s); %s", switches, took.Round(time.Millisecond), float64(switches)/took.Seconds(), strings.Join(lines, ", "))
	for _, name := range []string{"guard", "kube-apiserver"} {
		if errs[name] != nil {
			return fmt.Errorf("%s CPU profile: %w", name, errs[name])
		}
		path := filepath.Join(l.s.rawDir, "profile-"+name+".pprof")
		if err := os.WriteFile(path, profiles[name], 0o644); err != nil {
			return err
		}
		top, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=30", path).CombinedOutput()
		if err != nil {
			return fmt.Errorf("go tool pprof %s: %w: %s", path, err, top)
		}
		logf("%s CPU profile in %s, top:\n%s", name, path, top)
	}
	r.note("%s", fmt.Sprintf("Profiled (-profile=%s): %d switches of %s by %d clients, %.0f/s; %s. Profiles in %s.",
		l.s.profile, switches, s.name, clients, float64(switches)/took.Seconds(), strings.Join(lines, ", "), l.s.rawDir))
	return nil
}
