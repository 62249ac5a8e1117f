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

// With -profile, part 3 ends with two more runs of its 8 clients, each for
// the -profile period: on the always-allow webhook's routes, then on the
// guard + matchConditions routes while CPU profiles of the guard (its
// --pprof-bind-address) and of kube-apiserver (its /debug/pprof, served to
// the bench's admin credentials) are taken. It prints the CPU that the
// guard, kube-apiserver and etcd used per switch in each run (from /proc):
// the difference is what a guarded switch costs beyond any webhook. The
// profiles are kept in the raw folder and the top of each is printed.

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

// cpuTimes is the CPU each of pids has used so far, by name.
func cpuTimes(pids map[string]int) (map[string]time.Duration, error) {
	out := make(map[string]time.Duration, len(pids))
	for name, pid := range pids {
		t, err := cpuTime(pid)
		if err != nil {
			return nil, err
		}
		out[name] = t
	}
	return out, nil
}

// cpuPerSwitch runs s's 8 clients for period and returns the CPU each of
// pids used per switch, and the switches per second.
func (l *lab) cpuPerSwitch(ctx context.Context, s setup, pids map[string]int, period time.Duration) (map[string]time.Duration, float64, error) {
	cpu0, err := cpuTimes(pids)
	if err != nil {
		return nil, 0, err
	}
	began := time.Now()
	switches := 0
	for time.Since(began) < period {
		_, lat, err := l.switchAtOnce(ctx, s, 20)
		if err != nil {
			return nil, 0, err
		}
		switches += len(lat)
	}
	took := time.Since(began)
	cpu1, err := cpuTimes(pids)
	if err != nil {
		return nil, 0, err
	}
	for name := range cpu1 {
		cpu1[name] = (cpu1[name] - cpu0[name]) / time.Duration(switches)
	}
	return cpu1, float64(switches) / took.Seconds(), nil
}

// profileSwitches measures the CPU per switch of the always-allow webhook's
// set-up and then of guarded's, profiling the guard and kube-apiserver
// during the latter.
func (l *lab) profileSwitches(ctx context.Context, allow, guarded setup, r *report) error {
	if l.pprofAddr == "" {
		return fmt.Errorf("-profile: the guard binary has no --pprof-bind-address")
	}
	secs := int(l.s.profile.Seconds())
	pids := map[string]int{"guard": l.warm.PID(), "kube-apiserver": componentPID(l.cluster, "kube-apiserver"), "etcd": componentPID(l.cluster, "etcd")}
	logf("profiling: %d clients switching %s for %ds, then %s", clients, allow.name, secs, guarded.name)
	base, baseRate, err := l.cpuPerSwitch(ctx, allow, pids, l.s.profile)
	if err != nil {
		return err
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
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("guard pprof: %s", resp.Status)
		}
		return io.ReadAll(resp.Body)
	})
	fetch("kube-apiserver", func(ctx context.Context) ([]byte, error) {
		return l.cs.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", strconv.Itoa(secs)).
			Timeout(time.Duration(secs+30) * time.Second).DoRaw(ctx)
	})
	guard, rate, err := l.cpuPerSwitch(ctx, guarded, pids, l.s.profile)
	wg.Wait()
	if err != nil {
		return err
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }
	var lines []string
	for _, name := range []string{"guard", "kube-apiserver", "etcd"} {
		lines = append(lines, fmt.Sprintf("%s %s ms (%s %s ms)", name, ms(guard[name]), allow.name, ms(base[name])))
	}
	summary := fmt.Sprintf("CPU per switch at %d clients, %s %.0f/s vs %s %.0f/s: %s", clients, guarded.name, rate, allow.name, baseRate, strings.Join(lines, ", "))
	logf("%s", summary)
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
	r.note("%s (-profile=%s; profiles in %s)", summary, l.s.profile, l.s.rawDir)
	return nil
}
