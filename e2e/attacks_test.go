package e2e_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
	"github.com/cutover-guard/cutover-guard/internal/testdb"
)

// attackNamespace is the hostile tenant's namespace: its own budget of
// connection strings per minute, deleted afterwards.
const attackNamespace = "hostile-attacks"

// admissionDeadline is the API server's default webhook timeout: every
// attack must be answered inside it.
const admissionDeadline = 10 * time.Second

// Each attack of a hostile tenant, through the real API server and kubectl
// against the real binary, with its bound measured on the guard's process.
func TestAttacks(t *testing.T) {
	e := setup(t)
	kube := e.wideClient(t)
	e.createTenant(t, kube, attackNamespace)
	pid := e.guard.PID()

	// attack rolls green out with its env (and annotations) changed by
	// mutate, puts the route back on blue and switches it with the
	// tutorial's command; it requires an answer inside the deadline.
	// attackDSN is the connection string the next attack puts in the
	// tenant's Secret; empty keeps the working one.
	attackDSN := ""
	// recreateRoute creates the tenant's route to blue (a create is
	// checked) while the Secret, which blue reads too, holds a working
	// connection string, then puts attackDSN in.
	recreateRoute := func(t *testing.T) {
		t.Helper()
		ctx := t.Context()
		if err := tutorial.SetSecret(ctx, kube, attackNamespace, postgresDSN); err != nil {
			t.Fatal(err)
		}
		route := e.manifests.Route.DeepCopy()
		route.Namespace = attackNamespace
		if err := tutorial.Recreate(ctx, kube, route); err != nil {
			t.Fatal(err)
		}
		if attackDSN != "" {
			if err := tutorial.SetSecret(ctx, kube, attackNamespace, attackDSN); err != nil {
				t.Fatal(err)
			}
		}
	}
	attack := func(t *testing.T, mutate func(d *appsv1.Deployment)) *tutorial.Result {
		t.Helper()
		ctx := t.Context()
		green := e.manifests.Deployment(tutorial.Green, 1, false)
		green.Namespace = attackNamespace
		mutate(green)
		if err := tutorial.Serve(ctx, kube, green); err != nil {
			t.Fatal(err)
		}
		recreateRoute(t)
		return e.switchTenant(t)
	}
	secretDSN := func(t *testing.T, dsn string) {
		t.Helper()
		attackDSN = dsn
		t.Cleanup(func() { attackDSN = "" })
	}
	keepEnv := func(*appsv1.Deployment) {}

	t.Run("env-expansion CPU bomb: denied at once, no CPU after the answer", func(t *testing.T) {
		r := attack(t, func(d *appsv1.Deployment) {
			env := []corev1.EnvVar{{Name: "V0", Value: "x"}}
			for k := 1; k <= 30; k++ {
				env = append(env, corev1.EnvVar{Name: fmt.Sprintf("V%d", k), Value: fmt.Sprintf("$(V%d)$(V%d)", k-1, k-1)})
			}
			d.Spec.Template.Spec.Containers[0].Env = append(env, corev1.EnvVar{Name: "DATABASE_URL", Value: "postgresql://app@db:5432/app?x=$(V30)"})
		})
		requireDenied(t, r, tutorial.HTTPRouteWebhook, "expands to more than 32768 bytes")
		at := cpuTime(t, pid)
		window := 3 * time.Second
		time.Sleep(window) // the measurement window, not a synchronisation
		burned := cpuTime(t, pid) - at
		t.Logf("answered in %s; the guard used %s of CPU in the %s after the answer", r.Took.Round(time.Millisecond), burned, window)
		if burned > 500*time.Millisecond {
			t.Errorf("the guard used %s of CPU in the %s after the answer, want under 0.5s", burned, window)
		}
	})

	t.Run("memory bombs: denied, peak RSS growth under 128 MiB", func(t *testing.T) {
		for name, tc := range map[string]struct {
			serve func(net.Conn)
			dsn   func(addr string) string
		}{
			"a postgres server announcing a 1 GiB message": {probetest.PostgresBomb, func(a string) string { return "postgresql://app:pw@" + a + "/app?sslmode=prefer" }},
			"a mysql server greeting with 16 MiB packets":  {probetest.MySQLBomb, func(a string) string { return "mysql://app:pw@" + a + "/app?ssl-mode=DISABLED" }},
			"a mysql server sending 16 MiB packets inside TLS": {probetest.MySQLTLSBomb(t), func(a string) string {
				return "mysql://app:pw@" + a + "/app?ssl-mode=REQUIRED"
			}},
		} {
			t.Run(name, func(t *testing.T) {
				bomb := probetest.NewBomb(t, tc.serve)
				secretDSN(t, tc.dsn(bomb.Addr()))
				resetPeakRSS(t, pid)
				before := procStatus(t, pid, "VmRSS")
				r := attack(t, keepEnv)
				peak := procStatus(t, pid, "VmHWM")
				requireDenied(t, r, tutorial.HTTPRouteWebhook, "database at "+bomb.Addr()+" sent more than 1024 KiB")
				grew := peak - before
				t.Logf("answered in %s; peak RSS %d MiB, %d MiB over the RSS before the switch (%d connections)",
					r.Took.Round(time.Millisecond), peak>>20, grew>>20, bomb.Accepted())
				if grew > 128<<20 {
					t.Errorf("the guard's peak RSS grew by %d MiB, want under 128 MiB", grew>>20)
				}
			})
		}
	})

	t.Run("probe flood: 300 connection strings, at most 16 connections at once", func(t *testing.T) {
		silent := probetest.NewSilent(t)
		var names []string
		r := attack(t, func(d *appsv1.Deployment) {
			c := &d.Spec.Template.Spec.Containers[0]
			for i := range 300 {
				n := fmt.Sprintf("DB_%03d", i)
				names = append(names, n)
				c.Env = append(c.Env, corev1.EnvVar{Name: n, Value: fmt.Sprintf("postgresql://app:pw@127.0.0.1:%d/db%03d?sslmode=disable", silent.Port(), i)})
			}
			if d.Annotations == nil {
				d.Annotations = map[string]string{}
			}
			d.Annotations["cutover-guard.dev/database-url-env"] = strings.Join(names, ",")
		})
		requireDenied(t, r, tutorial.HTTPRouteWebhook,
			"names more than 16 env vars; the guard reads at most 16",
			"the guard checks at most 8",
			"database at 127.0.0.1:"+strconv.Itoa(silent.Port())+" is not reachable")
		t.Logf("answered in %s; %d connections accepted, at most %d open at once", r.Took.Round(time.Millisecond), silent.Accepted(), silent.Peak())
		if p := silent.Peak(); p > 16 || p == 0 {
			t.Errorf("%d connections open at once, want between 1 and 16", p)
		}
	})

	t.Run("port scanner: a port outside --database-ports is never dialed", func(t *testing.T) {
		// The shared guard allows 1024-65535 (throwaway servers listen on
		// ports the OS chose); a port below is outside the allowlist as
		// 22 or 80 is outside the shipped default.
		ln, accepted := countingListener(t, 999)
		secretDSN(t, "postgresql://app:pw@"+ln+"/app?sslmode=disable")
		r := attack(t, keepEnv)
		requireDenied(t, r, tutorial.HTTPRouteWebhook, "database port 999 is not one the guard probes")
		if n := accepted(); n != 0 {
			t.Errorf("the listener on %s accepted %d connections, want none", ln, n)
		}
		t.Logf("answered in %s without a connection: %s", r.Took.Round(time.Millisecond), strings.Join(deniedLines(r.Output), " | "))
	})

	t.Run("refused, timed out and reset read the same", func(t *testing.T) {
		targets := map[string]string{
			"refused":   testdb.ClosedPort(t),
			"timed out": testdb.Blackhole(t),
			"reset":     resetter(t),
		}
		var msgs []string
		for how, addr := range targets {
			secretDSN(t, "postgresql://app:pw@"+addr+"/app?sslmode=disable")
			r := attack(t, keepEnv)
			requireDenied(t, r, tutorial.HTTPRouteWebhook, "database at "+addr+" is not reachable")
			msg := strings.ReplaceAll(strings.Join(deniedLines(r.Output), "\n"), addr, "ADDR")
			t.Logf("%s (%s): answered in %s", how, addr, r.Took.Round(time.Millisecond))
			msgs = append(msgs, msg)
		}
		for _, m := range msgs[1:] {
			if m != msgs[0] {
				t.Errorf("the denials differ beyond the address:\n%s\n---\n%s", msgs[0], m)
			}
		}
	})

	t.Run("stale pass: a database gone 2s after a passing probe is denied", func(t *testing.T) {
		db := testdb.StartPostgres(t, testdb.PostgresOptions{Password: "Stale-pass-1"})
		secretDSN(t, db.URL("postgresql", "sslmode=disable"))
		r := attack(t, keepEnv)
		requireOutput(t, r, tutorial.PatchedOutput)
		db.Stop(t)
		gone := time.Now()
		recreateRoute(t)
		time.Sleep(time.Until(gone.Add(2 * time.Second))) // the scenario: 2 s after the pass
		r = e.switchTenant(t)
		requireDenied(t, r, tutorial.HTTPRouteWebhook, "database at "+db.Addr()+" is not reachable")
		t.Logf("the switch %s after the database went away was denied", time.Since(gone).Round(time.Millisecond))
	})
}

// switchTenant switches attackNamespace's route to green with the
// tutorial's command, and requires an answer inside the deadline.
func (e *env) switchTenant(t *testing.T) *tutorial.Result {
	t.Helper()
	r := e.sh(t, strings.Replace(tutorial.CutoverCommand, "-n production", "-n "+attackNamespace, 1))
	if r.Took > admissionDeadline {
		t.Errorf("answered after %s, past the API server's %s", r.Took, admissionDeadline)
	}
	return r
}

// cpuTime is the CPU time (user and system) process pid has used, from
// /proc/<pid>/stat.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command (field 2) may hold spaces; the fields after its ")"
	// begin with field 3, so utime and stime (14, 15) are the 12th and 13th.
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return time.Duration(utime+stime) * time.Second / time.Duration(clockTicks(t))
}

var clockTicks = func() func(*testing.T) int64 {
	var once sync.Once
	var hz int64
	return func(t *testing.T) int64 {
		once.Do(func() {
			hz = 100 // USER_HZ on every Linux architecture Go supports
			if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
				if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
					hz = n
				}
			}
		})
		return hz
	}
}()

// procStatus is a size field ("VmRSS", "VmHWM") of /proc/<pid>/status, in bytes.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + field + `:\s+(\d+) kB$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("/proc/%d/status has no %s", pid, field)
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}

// resetPeakRSS sets the peak RSS (VmHWM) of process pid to its RSS now, so
// that a later VmHWM is the peak of what came after.
func resetPeakRSS(t *testing.T, pid int) {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Fatalf("resetting the guard's peak RSS: %v", err)
	}
}

// countingListener listens on port of 127.0.0.1,
// accepting and closing connections, until t ends; accepted counts them.
func countingListener(t *testing.T, port int) (addr string, accepted func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Skipf("cannot listen on port %d: %v", port, err)
	}
	var mu sync.Mutex
	n := 0
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
			_ = c.Close()
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// resetter is a loopback address whose listener accepts every connection
// and resets it at once (RST, not FIN), until t ends.
func resetter(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String()
}
