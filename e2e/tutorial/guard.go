package tutorial

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cutover-guard/cutover-guard/checks/probe"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cutover-guard/cutover-guard/internal/loopback"
	"github.com/cutover-guard/cutover-guard/internal/tail"
	"github.com/cutover-guard/cutover-guard/internal/testcert"
)

// GuardOptions configure StartGuard.
type GuardOptions struct {
	// Binary is the cutover-guard executable (see BuildGuard).
	Binary string
	// Kubeconfig is the cluster the guard reads.
	Kubeconfig string
	// KubeconfigEnv passes Kubeconfig as $KUBECONFIG instead of
	// --kubeconfig, as in a cluster, where the guard finds its config
	// without the flag.
	KubeconfigEnv bool
	// Env is added to the guard's environment (e.g. GOGC=400).
	Env []string
	// Dir receives the serving certificate (Dir/certs) and, unless LogPath
	// says otherwise, the guard's log (Dir/cutover-guard.log); it is
	// created if missing.
	Dir string
	// LogPath receives the guard's stdout and stderr; it is emptied when
	// the guard starts and appended to when it restarts.
	LogPath string
	// PrivateCIDRs is --private-cidrs. Default: 127.0.0.1/32 and the
	// guard's defaults, so that a database on 127.0.0.1 is private and
	// 127.0.0.2 is public.
	PrivateCIDRs []string
	// DatabasePorts is --database-ports. Default: DefaultDatabasePorts, so
	// that throwaway databases on ports the OS chose can be probed.
	DatabasePorts string
	// PrePortAllowlistBuild marks a build older than --database-ports (the
	// benchmarks measure older builds for comparison): the flag is not
	// passed.
	PrePortAllowlistBuild bool
	// DBTimeout is --db-timeout; zero leaves the guard's default.
	DBTimeout time.Duration
	// Certificate is the serving certificate written to Dir/certs; nil
	// issues one for 127.0.0.1 and localhost from a throwaway CA. Guards
	// given the same one are trusted through the same caBundle.
	Certificate *testcert.Bundle
	// RotateCertificate leaves the certificate to the guard, as installed:
	// it fills the cluster's Secret, injects the CA into the webhook
	// configuration and keeps Dir/certs current. Nothing is written there
	// first, and CABundle stays empty.
	RotateCertificate bool
	// LegacyDisableRotation marks a build that rotates its certificate by
	// default even out of cluster and knows only --disable-cert-rotation
	// to serve --cert-dir (the benchmarks measure older builds for
	// comparison): the harness passes that flag. Current builds serve
	// --cert-dir out of cluster without being told, and builds older than
	// rotation know no such flag.
	LegacyDisableRotation bool
	// Port, MetricsPort and HealthPort are the loopback ports, when Port is
	// set (a test that registers the webhook before the guard starts needs
	// them first); otherwise free ports are picked, and picked again if one
	// was taken meanwhile.
	Port, MetricsPort, HealthPort int
	// Args are further flags.
	Args []string
	// StartTimeout bounds StartGuard; default 1 minute.
	StartTimeout time.Duration
}

// DefaultDatabasePorts is the --database-ports the harness gives the guard:
// every unprivileged port (the guard's defaults among them), where the
// throwaway databases listen.
const DefaultDatabasePorts = "1024-65535"

// Guard is a running cutover-guard process serving the webhook on 127.0.0.1.
type Guard struct {
	// Port is the webhook port; MetricsPort serves /metrics and HealthPort
	// /healthz and /readyz, all on 127.0.0.1.
	Port, MetricsPort, HealthPort int
	// CABundle is the PEM certificate of the CA that signed the serving
	// certificate, for the webhook configuration's caBundle; empty with
	// GuardOptions.RotateCertificate.
	CABundle []byte
	// CertDir is the guard's --cert-dir.
	CertDir string
	// LogPath holds the guard's stdout and stderr.
	LogPath string
	// Args are the flags the guard runs with.
	Args []string

	// StartedAt is when the current process was started.
	StartedAt time.Time

	binary string
	env    []string
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has been reaped
	err    error         // exit status, valid after done
}

// StartGuard starts the guard out of cluster, by default with a serving
// certificate for 127.0.0.1 from a throwaway CA on free loopback ports, and
// returns once it is ready: its /readyz answers 200, the one rule for a
// started guard. If a port it picked was taken in the meantime it retries.
func StartGuard(ctx context.Context, o GuardOptions) (*Guard, error) {
	if o.Binary == "" || o.Kubeconfig == "" || o.Dir == "" {
		return nil, errors.New("StartGuard: Binary, Kubeconfig and Dir are required")
	}
	if len(o.PrivateCIDRs) == 0 {
		o.PrivateCIDRs = []string{"127.0.0.1/32"}
		for _, p := range probe.DefaultPrivateCIDRs() {
			o.PrivateCIDRs = append(o.PrivateCIDRs, p.String())
		}
	}
	if o.LogPath == "" {
		o.LogPath = filepath.Join(o.Dir, "cutover-guard.log")
	}
	if o.DatabasePorts == "" {
		o.DatabasePorts = DefaultDatabasePorts
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()

	certDir := filepath.Join(o.Dir, "certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, err
	}
	var caPEM []byte
	var certArgs []string
	if !o.RotateCertificate {
		bundle := o.Certificate
		var err error
		if bundle == nil {
			bundle, err = testcert.Issue()
		}
		if err == nil {
			err = bundle.WriteKeyPair(certDir)
		}
		if err != nil {
			return nil, fmt.Errorf("serving certificate: %w", err)
		}
		caPEM = bundle.CAPEM
		// Out of cluster the guard serves the certificate written above
		// from --cert-dir as it is, unasked: the documented command.
		if o.LegacyDisableRotation {
			certArgs = []string{"--disable-cert-rotation"}
		}
	} else {
		// As the manifests do: rotation is asked for.
		certArgs = []string{"--cert-rotation=true"}
	}
	if err := os.WriteFile(o.LogPath, nil, 0o600); err != nil {
		return nil, err
	}
	env := append(os.Environ(), o.Env...)
	var kubeconfigArgs []string
	if o.KubeconfigEnv {
		env = append(env, "KUBECONFIG="+o.Kubeconfig)
	} else {
		kubeconfigArgs = []string{"--kubeconfig=" + o.Kubeconfig}
	}

	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		ports := []int{o.Port, o.MetricsPort, o.HealthPort}
		if o.Port == 0 {
			var err error
			if ports, err = loopback.FreePorts(3); err != nil {
				return nil, err
			}
		}
		g := &Guard{Port: ports[0], MetricsPort: ports[1], HealthPort: ports[2], CABundle: caPEM, CertDir: certDir, LogPath: o.LogPath, env: env}
		g.Args = append(append(kubeconfigArgs,
			"--cert-dir="+certDir,
			"--port="+strconv.Itoa(g.Port),
			"--metrics-bind-address=127.0.0.1:"+strconv.Itoa(g.MetricsPort),
			"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(g.HealthPort),
			"--private-cidrs="+strings.Join(o.PrivateCIDRs, ","),
		), certArgs...)
		if !o.PrePortAllowlistBuild {
			g.Args = append(g.Args, "--database-ports="+o.DatabasePorts)
		}
		if o.DBTimeout != 0 {
			g.Args = append(g.Args, "--db-timeout="+o.DBTimeout.String())
		}
		g.Args = append(g.Args, o.Args...)
		if err := g.start(o.Binary); err != nil {
			return nil, err
		}
		lastErr = g.waitReady(ctx)
		if lastErr == nil {
			return g, nil
		}
		_ = g.Stop()
		if o.Port != 0 || !strings.Contains(g.Log(), "address already in use") || ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("cutover-guard did not become ready: %w\n%s", lastErr, tail.File(o.LogPath, 30))
}

// start starts binary with g.Args, its output appended to LogPath.
func (g *Guard) start(binary string) error {
	logFile, err := os.OpenFile(g.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = logFile.Close() }() // the child has its own descriptor
	_, _ = fmt.Fprintf(logFile, "+ %s %s\n", binary, strings.Join(g.Args, " "))
	cmd := exec.Command(binary, g.Args...)
	cmd.Env = g.env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// If this process dies without cleaning up, the kernel ends the guard.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start cutover-guard: %w", err)
	}
	g.binary, g.cmd, g.done, g.err, g.StartedAt = binary, cmd, make(chan struct{}), nil, time.Now()
	done := g.done
	go func() {
		g.err = cmd.Wait()
		close(done)
	}()
	return nil
}

// waitReady polls /readyz until it answers 200 or the guard exits.
func (g *Guard) waitReady(ctx context.Context) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", g.HealthPort)
	var last error
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if g.Exited() {
			if g.err == nil {
				return false, errors.New("cutover-guard exited with status 0")
			}
			return false, fmt.Errorf("cutover-guard exited: %w", g.err)
		}
		status, _, err := httpGet(ctx, url)
		if err != nil {
			last = err
			return false, nil
		}
		last = fmt.Errorf("%s: HTTP %d", url, status)
		return status == http.StatusOK, nil
	})
	if err != nil && last != nil && !g.Exited() {
		return fmt.Errorf("%w (last: %v)", err, last)
	}
	return err
}

// PID is the guard's process ID.
func (g *Guard) PID() int { return g.cmd.Process.Pid }

// Exited reports whether the guard process has ended.
func (g *Guard) Exited() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// Stop ends the guard (SIGTERM, SIGKILL after 30 s) and waits until it has
// been reaped; Wait then tells whether it exited cleanly. It may be called
// more than once.
func (g *Guard) Stop() error {
	if g == nil || g.cmd == nil {
		return nil
	}
	pgid := g.cmd.Process.Pid
	if !g.Exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-g.done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			select {
			case <-g.done:
			case <-time.After(10 * time.Second):
				return fmt.Errorf("cutover-guard (pid %d) did not exit after SIGKILL", pgid)
			}
		}
	}
	return nil
}

// Kill ends the guard with SIGKILL, as a node failure or the OOM killer
// would, and waits until it has been reaped.
func (g *Guard) Kill() error {
	if g.Exited() {
		return fmt.Errorf("cutover-guard (pid %d) has already exited: %v", g.PID(), g.err)
	}
	if err := g.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Wait(ctx); ctx.Err() != nil {
		return fmt.Errorf("cutover-guard (pid %d) was not reaped after SIGKILL: %w", g.PID(), err)
	}
	return nil
}

// Signal sends sig to the guard's process group and returns at once.
func (g *Guard) Signal(sig syscall.Signal) error {
	if err := syscall.Kill(-g.PID(), sig); err != nil {
		return fmt.Errorf("signal %s to cutover-guard (pid %d): %w", sig, g.PID(), err)
	}
	return nil
}

// Wait waits until the guard has exited and returns its exit status: nil
// for status 0, an *exec.ExitError otherwise. It returns ctx's error if ctx
// ends first.
func (g *Guard) Wait(ctx context.Context) error {
	select {
	case <-g.done:
		return g.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Restart starts the guard again after it has exited, with the same binary,
// flags, ports and certificate (so the webhook configuration still points
// at it), and returns once its /readyz answers; StartedAt is then the new
// process's start. It must not be called while other methods run.
func (g *Guard) Restart(ctx context.Context, timeout time.Duration) error {
	if !g.Exited() {
		return fmt.Errorf("restart cutover-guard: pid %d is still running; Stop or Kill it first", g.PID())
	}
	if err := g.start(g.binary); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := g.waitReady(ctx); err != nil {
		return fmt.Errorf("restarted cutover-guard did not become ready: %w\n%s", err, g.LogTail(30))
	}
	return nil
}

// Log returns the guard's log so far.
func (g *Guard) Log() string {
	b, err := os.ReadFile(g.LogPath)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// LogTail returns the last n lines of the guard's log.
func (g *Guard) LogTail(n int) string { return tail.File(g.LogPath, n) }

// LogOnFailure makes t show the last n lines of the guard's log when t
// ends failed.
func (g *Guard) LogOnFailure(t testing.TB, n int) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cutover-guard log (last %d lines of %s):\n%s", n, g.LogPath, g.LogTail(n))
		}
	})
}

// Metrics returns the guard's /metrics page.
func (g *Guard) Metrics(ctx context.Context) (string, error) {
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", g.MetricsPort)
	status, body, err := httpGet(ctx, url)
	if err != nil {
		return "", err
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("%s: HTTP %d", url, status)
	}
	return body, nil
}

// MetricSum adds up the samples of metric name in a Prometheus text page
// whose labels include every pair in labels.
func MetricSum(page, name string, labels map[string]string) float64 {
	var sum float64
	s := bufio.NewScanner(strings.NewReader(page))
	s.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for s.Scan() {
		line := s.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		labelText, value := "", rest
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			labelText, value = rest[1:end], rest[end+1:]
		}
		match := true
		for k, v := range labels {
			if !strings.Contains(","+labelText+",", ","+k+"="+strconv.Quote(v)+",") {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) == 0 {
			continue
		}
		if f, err := strconv.ParseFloat(fields[0], 64); err == nil {
			sum += f
		}
	}
	return sum
}

func httpGet(ctx context.Context, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	// Loopback only: never a proxy.
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// BuildGuard builds the guard binary into out as `make build` does (static,
// -trimpath), so that a build made by make is reused from Go's cache.
func BuildGuard(ctx context.Context, out string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("building cutover-guard needs the go command: %w", err)
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-o", out, "github.com/cutover-guard/cutover-guard/cmd/cutover-guard")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if root, err := RepoRoot(); err == nil {
		cmd.Dir = root
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build cutover-guard: %w\n%s", err, b)
	}
	return nil
}

// RepoRoot returns the folder of the root module's go.mod, found from the
// working directory up.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), "module github.com/cutover-guard/cutover-guard\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of module github.com/cutover-guard/cutover-guard above the working directory")
		}
		dir = parent
	}
}
