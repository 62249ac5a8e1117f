// Package cluster runs a local Kubernetes control plane for end-to-end tests,
// built only from pinned Go modules (see hack/build-tools.sh):
//
//   - etcd and kube-apiserver, started by controller-runtime's envtest;
//   - kube-controller-manager with the controllers that make Deployments roll
//     out, fill EndpointSlices, create default ServiceAccounts, delete
//     namespaces, collect garbage and watch node health;
//   - kube-scheduler;
//   - kwok, which plays the kubelet of one fake node: it keeps the node Ready
//     (renewing its Lease) and moves the pods bound to it to Running and Ready.
//
// Gateway API standard CRDs are installed. Every process runs in its own
// process group with its output in a log folder, and Stop ends them all.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/cutover-guard/cutover-guard/internal/loopback"
	"github.com/cutover-guard/cutover-guard/internal/tail"
)

// Controllers are the kube-controller-manager controllers the cluster runs.
var Controllers = []string{
	"deployment-controller",
	"replicaset-controller",
	"endpointslice-controller",
	"serviceaccount-controller",
	"node-lifecycle-controller",
	"namespace-controller",
	"garbage-collector-controller",
}

const (
	// KwokNodeAnnotation marks the nodes kwok manages.
	KwokNodeAnnotation = "kwok.x-k8s.io/node"
	// PauseImage is the image used for pods; kwok never pulls it.
	PauseImage = "registry.k8s.io/pause:3.10"

	readinessNamespace = "cluster-readiness"
	readinessName      = "probe"
)

// Options configure Start. The zero value is ready to use.
type Options struct {
	// ToolsDir is the folder filled by hack/build-tools.sh; default ToolsDir().
	ToolsDir string
	// NodeName is the name of the fake node; default "kwok-node-0".
	NodeName string
	// NodeLeaseDurationSeconds is the node Lease duration kwok uses; it renews
	// the Lease every quarter of it. Default 20.
	NodeLeaseDurationSeconds int
	// Timeout bounds Start when ctx has no earlier deadline; default 2 minutes.
	Timeout time.Duration
	// KeepLogs keeps the log folder after Stop (it is always kept when Start fails).
	KeepLogs bool
	// Logf receives progress messages; default: discarded.
	Logf func(format string, args ...any)
	// WebhookClientCert makes kube-apiserver authenticate to the webhooks
	// it calls: an AdmissionConfiguration gives it a client certificate
	// (Common Name WebhookClientCN) from a throwaway CA, whose certificate
	// is Cluster.WebhookClientCAFile. Off: it calls them without one.
	WebhookClientCert bool
	// PodCIDR is where kwok gives pods their addresses (its --cidr);
	// default DefaultPodCIDR. A test whose pods really answer sets it to
	// a range it serves (see internal/netns).
	PodCIDR string
}

// DefaultPodCIDR is the default of Options.PodCIDR.
const DefaultPodCIDR = "10.244.0.0/16"

// Cluster is a running local control plane.
type Cluster struct {
	// Config is an admin (system:masters) client config.
	Config *rest.Config
	// Clientset is a typed client for Config.
	Clientset kubernetes.Interface
	// Client is a controller-runtime client for Config that knows the
	// built-in types (not Gateway API's).
	Client client.Client
	// Kubeconfig is the path of an admin kubeconfig file for kubectl.
	Kubeconfig string
	// Kubectl is the path of the kubectl binary matching the server.
	Kubectl string
	// BinDir holds the control-plane binaries.
	BinDir string
	// NodeName is the fake node that kwok keeps Ready.
	NodeName string
	// LogDir holds one log file per component.
	LogDir string
	// StartDuration is how long Start took.
	StartDuration time.Duration
	// WebhookClientCAFile is the PEM CA that signed the client certificate
	// kube-apiserver presents to webhooks, and WebhookClientCertFile and
	// WebhookClientKeyFile that key pair; empty unless
	// Options.WebhookClientCert.
	WebhookClientCAFile, WebhookClientCertFile, WebhookClientKeyFile string

	opts    Options
	workDir string // data, certs and kubeconfig; removed by Stop
	env     *envtest.Environment
	procs   []*proc
	pids    map[int]string // pid -> executable, every process started
	reg     *registration
	// watchdog kills etcd and kube-apiserver if the test binary dies.
	watchdog *exec.Cmd
	stopped  bool
	mu       sync.Mutex
}

// Start starts a cluster and returns once a Deployment rolls out Ready and
// its Service's EndpointSlice has a ready endpoint. On error everything
// started so far is stopped; the error names the log folder.
func Start(ctx context.Context, opts Options) (_ *Cluster, retErr error) {
	began := time.Now()
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.NodeName == "" {
		opts.NodeName = "kwok-node-0"
	}
	if opts.NodeLeaseDurationSeconds == 0 {
		opts.NodeLeaseDurationSeconds = 20
	}
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Minute
	}
	if opts.PodCIDR == "" {
		opts.PodCIDR = DefaultPodCIDR
	}
	if opts.ToolsDir == "" {
		d, err := ToolsDir()
		if err != nil {
			return nil, err
		}
		opts.ToolsDir = d
	}
	if missing := MissingTools(opts.ToolsDir); len(missing) > 0 {
		return nil, fmt.Errorf("control-plane tools missing (run hack/build-tools.sh): %s", strings.Join(missing, ", "))
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	reapOrphans(opts.Logf)

	root, err := os.MkdirTemp("", "cutover-guard-e2e-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		BinDir:   filepath.Join(opts.ToolsDir, binSubdir),
		NodeName: opts.NodeName,
		LogDir:   filepath.Join(root, "logs"),
		opts:     opts,
		workDir:  filepath.Join(root, "work"),
		pids:     map[int]string{},
	}
	c.Kubectl = filepath.Join(c.BinDir, "kubectl")
	c.Kubeconfig = filepath.Join(c.workDir, "kubeconfig")
	for _, d := range []string{c.LogDir, c.workDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if c.reg, err = newRegistration(); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			c.opts.KeepLogs = true
			var logs strings.Builder
			c.DumpLogs(&logs, 30)
			if err := c.Stop(); err != nil {
				retErr = errors.Join(retErr, err)
			}
			retErr = fmt.Errorf("%w (logs in %s)\n%s", retErr, c.LogDir, logs.String())
		}
	}()

	if err := c.startAPIServer(); err != nil {
		return nil, err
	}
	c.logf("cluster: etcd and kube-apiserver up after %s", time.Since(began).Round(time.Millisecond))

	if err := c.startComponents(); err != nil {
		return nil, err
	}
	if err := c.createNode(ctx); err != nil {
		return nil, err
	}
	if err := c.installGatewayCRDs(ctx); err != nil {
		return nil, err
	}
	c.logf("cluster: Gateway API CRDs established after %s", time.Since(began).Round(time.Millisecond))
	if err := c.waitWorkloadsRun(ctx); err != nil {
		return nil, err
	}
	c.StartDuration = time.Since(began)
	c.logf("cluster: ready in %s (logs in %s)", c.StartDuration.Round(time.Millisecond), c.LogDir)
	return c, nil
}

func (c *Cluster) logf(format string, args ...any) { c.opts.Logf(format, args...) }

func (c *Cluster) addPID(pid int, exe string) {
	c.mu.Lock()
	c.pids[pid] = exe
	snapshot := maps.Clone(c.pids)
	c.mu.Unlock()
	c.reg.record(snapshot)
}

func (c *Cluster) startAPIServer() error {
	etcdOut, err := os.Create(filepath.Join(c.LogDir, "etcd.log"))
	if err != nil {
		return err
	}
	apiOut, err := os.Create(filepath.Join(c.LogDir, "kube-apiserver.log"))
	if err != nil {
		_ = etcdOut.Close()
		return err
	}
	// envtest only writes to them; they are closed when the cluster stops.
	c.env = &envtest.Environment{
		BinaryAssetsDirectory:    c.BinDir,
		ControlPlaneStartTimeout: time.Minute,
		ControlPlaneStopTimeout:  15 * time.Second,
		ControlPlane: envtest.ControlPlane{
			Etcd: &envtest.Etcd{
				DataDir: filepath.Join(c.workDir, "etcd"),
				Out:     etcdOut,
				Err:     etcdOut,
			},
			APIServer: &envtest.APIServer{
				CertDir: filepath.Join(c.workDir, "kube-apiserver"),
				Out:     apiOut,
				Err:     apiOut,
			},
		},
	}
	for _, d := range []string{c.env.ControlPlane.Etcd.DataDir, c.env.ControlPlane.APIServer.CertDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	if c.opts.WebhookClientCert {
		admission, err := c.webhookClientFiles(filepath.Join(c.workDir, "webhook-client"))
		if err != nil {
			return fmt.Errorf("webhook client certificate: %w", err)
		}
		c.env.ControlPlane.APIServer.Configure().Set("admission-control-config-file", admission)
	}
	cfg, startErr := c.env.Start()
	// Record what runs even when Start failed half way, so Stop can check it.
	for exe, marker := range map[string]string{
		filepath.Join(c.BinDir, "etcd"):           c.env.ControlPlane.Etcd.DataDir,
		filepath.Join(c.BinDir, "kube-apiserver"): c.env.ControlPlane.APIServer.CertDir,
	} {
		if pid, err := findChild(exe, marker); err == nil {
			c.addPID(pid, exe)
		} else if startErr == nil {
			return err
		}
	}
	if startErr != nil {
		return fmt.Errorf("envtest: %w", startErr)
	}
	wd, err := startWatchdog(c.PIDs())
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.watchdog = wd
	c.mu.Unlock()
	c.Config = rest.CopyConfig(cfg)
	if err := os.WriteFile(c.Kubeconfig, c.env.KubeConfig, 0o600); err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	c.Clientset = cs
	c.Client, err = client.New(c.Config, client.Options{})
	return err
}

func (c *Cluster) startComponents() error {
	ports, err := loopback.FreePorts(3)
	if err != nil {
		return err
	}
	kcmPort, schedPort, kwokPort := ports[0], ports[1], ports[2]
	kc := "--kubeconfig=" + c.Kubeconfig
	// No --authentication/authorization-kubeconfig: the secure port only
	// serves /healthz, and envtest's API server has no request-header CA for
	// the delegated authentication to look up (it would log errors forever).
	common := []string{
		kc,
		"--bind-address=127.0.0.1",
		"--leader-elect=false",
		"--v=2",
	}

	kcmArgs := append(slices.Clone(common),
		"--secure-port="+strconv.Itoa(kcmPort),
		"--cert-dir="+filepath.Join(c.workDir, "kube-controller-manager"),
		"--controllers="+strings.Join(Controllers, ","),
		"--use-service-account-credentials=false",
		"--concurrent-deployment-syncs=10",
		"--concurrent-replicaset-syncs=10",
		"--concurrent-service-endpoint-syncs=10",
	)
	schedArgs := append(slices.Clone(common),
		"--secure-port="+strconv.Itoa(schedPort),
		"--cert-dir="+filepath.Join(c.workDir, "kube-scheduler"),
	)

	stages, err := filepath.Glob(filepath.Join(c.opts.ToolsDir, kwokStagesSubdir, "*.yaml"))
	if err != nil {
		return err
	}
	kwokArgs := []string{
		kc,
		"--config=" + strings.Join(stages, ","),
		"--manage-nodes-with-annotation-selector=" + KwokNodeAnnotation + "=fake",
		"--node-lease-duration-seconds=" + strconv.Itoa(c.opts.NodeLeaseDurationSeconds),
		"--server-address=127.0.0.1:" + strconv.Itoa(kwokPort),
		"--node-ip=127.0.0.1",
		"--node-port=" + strconv.Itoa(kwokPort),
		"--cidr=" + c.opts.PodCIDR,
	}
	// KWOK_WORKDIR keeps kwok from reading ~/.kwok/kwok.yaml.
	kwokEnv := []string{"KWOK_WORKDIR=" + filepath.Join(c.workDir, "kwok")}

	for _, comp := range []struct {
		name string
		args []string
		env  []string
	}{
		{"kube-controller-manager", kcmArgs, nil},
		{"kube-scheduler", schedArgs, nil},
		{"kwok", kwokArgs, kwokEnv},
	} {
		exe := filepath.Join(c.BinDir, comp.name)
		p, err := startProc(comp.name, exe, comp.args, comp.env, c.LogDir)
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.procs = append(c.procs, p)
		c.mu.Unlock()
		c.addPID(p.pid(), exe)
	}
	return nil
}

// checkProcs fails if one of the components the harness started has exited.
func (c *Cluster) checkProcs() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if done, err := p.exited(); done {
			return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", p.name, err, p.logPath, tail.File(p.logPath, 30))
		}
	}
	return nil
}

func (c *Cluster) createNode(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: c.NodeName,
			Labels: map[string]string{
				"kubernetes.io/hostname": c.NodeName,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"type":                   "kwok",
			},
			Annotations: map[string]string{
				KwokNodeAnnotation:             "fake",
				"node.alpha.kubernetes.io/ttl": "0",
			},
		},
	}
	_, err := c.Clientset.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create node: %w", err)
	}
	return nil
}

func (c *Cluster) installGatewayCRDs(ctx context.Context) error {
	maxTime := time.Minute
	if dl, ok := ctx.Deadline(); ok {
		maxTime = time.Until(dl)
	}
	crds, err := envtest.InstallCRDs(c.Config, envtest.CRDInstallOptions{
		Paths:              []string{filepath.Join(c.opts.ToolsDir, gatewayCRDSubdir)},
		ErrorIfPathMissing: true,
		MaxTime:            maxTime,
		PollInterval:       50 * time.Millisecond,
	})
	if err != nil {
		return fmt.Errorf("install Gateway API CRDs: %w", err)
	}
	if len(crds) == 0 {
		return errors.New("install Gateway API CRDs: none found")
	}
	return nil
}

// waitWorkloadsRun proves the whole chain works: a Deployment behind a Service
// rolls out Ready and its EndpointSlice lists a ready endpoint.
func (c *Cluster) waitWorkloadsRun(ctx context.Context) error {
	cs := c.Clientset
	labels := map[string]string{"app": readinessName}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: readinessNamespace},
	}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if _, err := cs.CoreV1().Services(readinessNamespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: readinessName},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := cs.AppsV1().Deployments(readinessNamespace).Create(ctx, TestDeployment(readinessName, 1, nil), metav1.CreateOptions{}); err != nil {
		return err
	}
	err := c.poll(ctx, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments(readinessNamespace).Get(ctx, readinessName, metav1.GetOptions{})
		if err != nil || !FullyReady(d) {
			return false, nil
		}
		n, err := ReadyEndpoints(ctx, c.Client, readinessNamespace, readinessName)
		return err == nil && n >= 1, nil
	})
	if err != nil {
		return fmt.Errorf("readiness Deployment %s/%s: %w", readinessNamespace, readinessName, err)
	}
	// Leave no trace for the tests; the namespace controller cleans up.
	_ = cs.CoreV1().Namespaces().Delete(ctx, readinessNamespace, metav1.DeleteOptions{})
	return nil
}

// poll calls cond every 100 ms until it is true, ctx ends, or one of the
// components exits.
func (c *Cluster) poll(ctx context.Context, cond wait.ConditionWithContextFunc) error {
	return wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if err := c.checkProcs(); err != nil {
			return false, err
		}
		return cond(ctx)
	})
}

// TestDeployment returns a Deployment of replicas pause pods labelled
// app=name. A non-nil nodeSelector is set on the pods; one that no node has
// keeps them Pending, which makes a Deployment that is never Ready.
func TestDeployment(name string, replicas int32, nodeSelector map[string]string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	zero := int64(0)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector:                  nodeSelector,
					TerminationGracePeriodSeconds: &zero,
					Containers: []corev1.Container{{
						Name:  "app",
						Image: PauseImage,
						Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
					}},
				},
			},
		},
	}
}

// NodeLease returns the Lease that kwok renews for the fake node.
func (c *Cluster) NodeLease(ctx context.Context) (*coordinationv1.Lease, error) {
	return c.Clientset.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, c.NodeName, metav1.GetOptions{})
}

// KubectlCommand returns a kubectl command against the cluster.
func (c *Cluster) KubectlCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.Kubectl, append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	return cmd
}

// PIDs returns the process IDs of every control-plane process started.
func (c *Cluster) PIDs() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	pids := make([]int, 0, len(c.pids))
	for pid := range c.pids {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	return pids
}

// Stop ends every process of the cluster (SIGTERM, then SIGKILL), waits
// until they are gone, and removes the data folder and, unless
// Options.KeepLogs, the logs. It may be called more than once.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	procs := slices.Clone(c.procs)
	c.mu.Unlock()

	var errs []error
	// Clients of the API server first, in parallel.
	var wg sync.WaitGroup
	var errMu sync.Mutex
	for _, p := range procs {
		wg.Go(func() {
			if err := p.stop(10 * time.Second); err != nil {
				errMu.Lock()
				errs = append(errs, err)
				errMu.Unlock()
			}
		})
	}
	wg.Wait()
	if c.env != nil {
		if err := c.env.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("envtest stop: %w", err))
		}
		for _, w := range []io.Writer{c.env.ControlPlane.Etcd.Out, c.env.ControlPlane.APIServer.Out} {
			if f, ok := w.(*os.File); ok {
				_ = f.Close()
			}
		}
	}
	// envtest gives up after SIGKILL without waiting: make sure all are gone.
	deadline := time.Now().Add(15 * time.Second)
	c.mu.Lock()
	pids := maps.Clone(c.pids)
	c.mu.Unlock()
	for pid, exe := range pids {
		for pidAlive(pid) {
			if time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("pid %d (%s) still running after Stop", pid, filepath.Base(exe)))
				break
			}
			_ = killGroup(pid)
			time.Sleep(20 * time.Millisecond)
		}
	}
	c.mu.Lock()
	wd := c.watchdog
	c.mu.Unlock()
	stopWatchdog(wd)
	c.reg.remove()
	_ = os.RemoveAll(c.workDir)
	if !c.opts.KeepLogs {
		_ = os.RemoveAll(filepath.Dir(c.LogDir))
	}
	return errors.Join(errs...)
}

// DumpLogs writes the last lines of every component log to w.
func (c *Cluster) DumpLogs(w io.Writer, lines int) {
	files, _ := filepath.Glob(filepath.Join(c.LogDir, "*.log"))
	for _, f := range files {
		_, _ = fmt.Fprintf(w, "===== %s (last %d lines) =====\n%s\n", f, lines, tail.File(f, lines))
	}
}
