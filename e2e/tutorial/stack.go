package tutorial

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
)

// StackOptions configure StartStack.
type StackOptions struct {
	// Name tells stacks apart in log lines and folder names, e.g. "e2e".
	Name string
	// ToolsDir holds the control-plane binaries (see Preflight).
	ToolsDir string
	// DSN is the connection string of the tutorial's Secret.
	DSN string
	// DBTimeout is the guard's --db-timeout (zero: the guard's default);
	// GuardArgs are further flags.
	DBTimeout time.Duration
	GuardArgs []string
	// AuthenticateAPIServer starts the control plane with a webhook client
	// certificate (cluster.Options.WebhookClientCert) and the guard with
	// --client-ca-file naming its CA and --client-cn its Common Name.
	AuthenticateAPIServer bool
	// WriteManifests writes the tutorial's manifest files into
	// Dir/manifests, for kubectl commands that name them.
	WriteManifests bool
	// PodCIDR is the control plane's pod range (cluster.Options.PodCIDR).
	PodCIDR string
	// AsInstalled runs the guard as its ServiceAccount with the shipped
	// RBAC (ServiceAccountKubeconfig) rather than as the admin.
	AsInstalled bool
}

// Stack is what an end-to-end suite runs against: a local control plane,
// the guard built from this repository and registered as the validating
// webhook, and the tutorial's objects.
type Stack struct {
	Cluster *cluster.Cluster
	Guard   *Guard
	Kube    client.Client
	// Dir holds the guard's binary, certificate and log, and whatever the
	// suite puts there (kubectl's home, manifest files); it is removed by
	// Teardown when the suite passed.
	Dir string
}

// StartStack brings up a Stack. The guard is built while the control plane
// starts (a cold build on 2 cores takes minutes, hence the 10 minute bound).
func StartStack(ctx context.Context, o StackOptions) (*Stack, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "cutover-guard-"+filepath.Base(o.Name)+"-")
	if err != nil {
		return nil, err
	}
	began := time.Now()
	binary := filepath.Join(dir, "cutover-guard")
	built := make(chan error, 1)
	go func() { built <- BuildGuard(ctx, binary) }()

	c, err := cluster.Start(ctx, cluster.Options{ToolsDir: o.ToolsDir, Logf: log.Printf, KeepLogs: true, WebhookClientCert: o.AuthenticateAPIServer, PodCIDR: o.PodCIDR})
	if err != nil {
		return nil, errors.Join(err, <-built)
	}
	s := &Stack{Cluster: c, Dir: dir}
	fail := func(err error) (*Stack, error) {
		_ = s.Guard.Stop()
		_ = c.Stop()
		return nil, fmt.Errorf("%w (logs in %s and %s)", err, c.LogDir, dir)
	}
	if err := <-built; err != nil {
		return fail(err)
	}
	log.Printf("%s: cluster up and guard built after %s", o.Name, time.Since(began).Round(time.Millisecond))

	args := o.GuardArgs
	if o.AuthenticateAPIServer {
		args = append([]string{"--client-ca-file=" + c.WebhookClientCAFile, "--client-cn=" + cluster.WebhookClientCN}, args...)
	}
	kubeconfig := c.Kubeconfig
	if o.AsInstalled {
		kubeconfig = filepath.Join(dir, "guard-kubeconfig")
		if err := ServiceAccountKubeconfig(ctx, c, kubeconfig); err != nil {
			return fail(err)
		}
	}
	s.Guard, err = StartGuard(ctx, GuardOptions{Binary: binary, Kubeconfig: kubeconfig, Dir: dir, DBTimeout: o.DBTimeout, Args: args})
	if err != nil {
		return fail(err)
	}
	if s.Kube, err = client.New(c.Config, client.Options{Scheme: Scheme()}); err != nil {
		return fail(err)
	}
	if err := Register(ctx, s.Kube, s.Guard, time.Minute); err != nil {
		return fail(fmt.Errorf("%w\ncutover-guard log:\n%s", err, s.Guard.LogTail(30)))
	}
	if o.WriteManifests {
		if err := WriteFiles(filepath.Join(dir, "manifests"), false); err != nil {
			return fail(err)
		}
	}
	if err := Setup(ctx, s.Kube, o.DSN); err != nil {
		return fail(err)
	}
	log.Printf("%s: cluster, guard (pid %d, webhook on 127.0.0.1:%d) and tutorial objects ready after %s",
		o.Name, s.Guard.PID(), s.Guard.Port, time.Since(began).Round(time.Millisecond))
	return s, nil
}

// Teardown stops the guard and the control plane. When the suite failed it
// first writes the components' and the guard's last log lines to w and keeps
// every log; when it passed it removes them.
func (s *Stack) Teardown(failed bool, w io.Writer) error {
	if failed {
		s.Cluster.DumpLogs(w, 40)
		_, _ = fmt.Fprintf(w, "===== cutover-guard log %s (last 200 lines) =====\n%s\n", s.Guard.LogPath, s.Guard.LogTail(200))
	}
	var errs []error
	if err := s.Guard.Stop(); err != nil {
		errs = append(errs, fmt.Errorf("stop cutover-guard: %w", err))
	}
	if err := s.Cluster.Stop(); err != nil {
		errs = append(errs, fmt.Errorf("stop e2e cluster: %w", err))
	}
	// The cluster was started with KeepLogs: drop them only on success.
	if !failed && len(errs) == 0 {
		_ = os.RemoveAll(filepath.Dir(s.Cluster.LogDir))
		_ = os.RemoveAll(s.Dir)
	} else {
		_, _ = fmt.Fprintf(w, "e2e logs kept in %s and %s\n", s.Cluster.LogDir, s.Dir)
	}
	return errors.Join(errs...)
}
