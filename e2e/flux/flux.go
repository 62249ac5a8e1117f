// Package flux runs a real GitOps engine against the local control plane:
// Flux's source-controller and kustomize-controller (built by
// hack/build-tools.sh from hack/flux), their CRDs, and a Git server on
// loopback that serves a bare repository through git-http-backend.
package flux

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/cutover-guard/cutover-guard/internal/loopback"
	"github.com/cutover-guard/cutover-guard/internal/tail"
)

// Controllers are the Flux controllers Start runs, as hack/build-tools.sh
// names their binaries in <tools>/bin and their CRDs in
// <tools>/crds/flux/<name>.
var Controllers = []string{"source-controller", "kustomize-controller"}

// FieldManager is the field manager kustomize-controller applies with.
const FieldManager = "kustomize-controller"

// Missing lists what hack/build-tools.sh should have put in toolsDir for
// Flux but is not there. Empty means Start can run.
func Missing(toolsDir string) []string {
	var missing []string
	for _, name := range Controllers {
		p := filepath.Join(toolsDir, "bin", name)
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, p)
		}
		crds, _ := filepath.Glob(filepath.Join(toolsDir, "crds", "flux", name, "*.yaml"))
		if len(crds) == 0 {
			missing = append(missing, filepath.Join(toolsDir, "crds", "flux", name, "*.yaml"))
		}
	}
	return missing
}

// Options configure Start.
type Options struct {
	// ToolsDir is the folder hack/build-tools.sh fills.
	ToolsDir string
	// Config and Kubeconfig are the cluster the controllers reconcile
	// (Flux's controllers take no --kubeconfig flag: they read
	// $KUBECONFIG).
	Config     *rest.Config
	Kubeconfig string
	// Dir receives the controllers' logs and source-controller's artifact
	// storage.
	Dir string
}

// Flux is a running source-controller and kustomize-controller.
type Flux struct {
	procs []*proc
	// LogDir holds <controller>.log.
	LogDir string
}

type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// Start installs Flux's CRDs and starts both controllers on free loopback
// ports, returning once each answers its readiness probe.
func Start(ctx context.Context, o Options) (*Flux, error) {
	if missing := Missing(o.ToolsDir); len(missing) > 0 {
		return nil, fmt.Errorf("flux not built (run hack/build-tools.sh): missing %v", missing)
	}
	var paths []string
	for _, name := range Controllers {
		paths = append(paths, filepath.Join(o.ToolsDir, "crds", "flux", name))
	}
	if _, err := envtest.InstallCRDs(o.Config, envtest.CRDInstallOptions{
		Paths: paths, ErrorIfPathMissing: true, MaxTime: time.Minute, PollInterval: 100 * time.Millisecond,
	}); err != nil {
		return nil, fmt.Errorf("install Flux CRDs: %w", err)
	}
	f := &Flux{LogDir: o.Dir}
	storage := filepath.Join(o.Dir, "artifacts")
	if err := os.MkdirAll(storage, 0o700); err != nil {
		return nil, err
	}
	ports, err := loopback.FreePorts(5)
	if err != nil {
		return nil, err
	}
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	common := []string{"--log-level=debug", "--log-encoding=json", "--enable-leader-election=false", "--watch-all-namespaces=true"}
	specs := []struct {
		name   string
		health string
		args   []string
	}{
		{"source-controller", addr(1), []string{"--metrics-addr=" + addr(0), "--health-addr=" + addr(1),
			"--storage-path=" + storage, "--storage-addr=" + addr(2), "--storage-adv-addr=" + addr(2)}},
		{"kustomize-controller", addr(4), []string{"--metrics-addr=" + addr(3), "--health-addr=" + addr(4)}},
	}
	for _, s := range specs {
		p, err := f.start(o, s.name, append(append([]string{}, common...), s.args...))
		if err != nil {
			_ = f.Stop()
			return nil, err
		}
		if err := p.waitReady(ctx, "http://"+s.health+"/readyz"); err != nil {
			_ = f.Stop()
			return nil, fmt.Errorf("%s: %w\n%s", s.name, err, tail.File(p.log, 30))
		}
	}
	return f, nil
}

func (f *Flux) start(o Options, name string, args []string) (*proc, error) {
	p := &proc{name: name, log: filepath.Join(f.LogDir, name+".log"), done: make(chan struct{})}
	out, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(filepath.Join(o.ToolsDir, "bin", name), args...)
	p.cmd.Env = append(os.Environ(), "KUBECONFIG="+o.Kubeconfig, "RUNTIME_NAMESPACE=flux-system")
	p.cmd.Stdout, p.cmd.Stderr = out, out
	// Die with the test binary, even when it is killed.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		_ = out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		_ = out.Close()
		close(p.done)
	}()
	f.procs = append(f.procs, p)
	return p, nil
}

func (p *proc) waitReady(ctx context.Context, url string) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case <-p.done:
			return false, errors.New("exited before it was ready")
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false, nil
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// Log returns a controller's log so far.
func (f *Flux) Log(name string) string {
	b, _ := os.ReadFile(filepath.Join(f.LogDir, name+".log"))
	return string(b)
}

// LogTail returns the last n lines of a controller's log.
func (f *Flux) LogTail(name string, n int) string {
	return tail.File(filepath.Join(f.LogDir, name+".log"), n)
}

// Stop ends both controllers.
func (f *Flux) Stop() error {
	if f == nil {
		return nil
	}
	var errs []error
	for _, p := range f.procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			errs = append(errs, fmt.Errorf("%s did not stop on SIGTERM within 10s", p.name))
		}
	}
	return errors.Join(errs...)
}
