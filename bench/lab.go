package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
	"github.com/cutover-guard/cutover-guard/internal/testcert"
)

// The tutorial's namespace as the lab sets it up: app-blue and app-green
// rolled out and Ready, both reading DATABASE_URL from a Secret that points
// at the local PostgreSQL; app-red never Ready (its pods stay Pending); the
// route myapp sending traffic to app-blue.
const (
	labNamespace = "production"
	routeName    = "myapp"
	localPGDSN   = "postgresql://postgres@127.0.0.1:5432/test?sslmode=disable"
)

var httpRoutes = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}

// lab is the local control plane with the tutorial's objects and the guard
// processes under test.
type lab struct {
	s       settings
	cluster *cluster.Cluster
	cs      kubernetes.Interface // no client-side rate limit
	dyn     dynamic.Interface
	certs   *testcert.Bundle // every guard's serving certificate
	client  *http.Client     // the load generator's: TLS, keep-alive
	// warm runs with the default database cache, cold with none; flagged is
	// started with --kubeconfig (see httpsLoad).
	warm, cold, flagged  *guard
	allow                *allowServer // part 3's always-allow webhook, while it runs
	fastBody, switchBody []byte
	pprofAddr            string // the warm guard's pprof endpoints, with -profile
	guardConfig          string // the guards' kubeconfig: the ServiceAccount's token (identity.go)
	k8sVersion           string
}

func startLab(ctx context.Context, s settings, r *report) (_ *lab, err error) {
	if _, err := os.Stat(s.guardBin); err != nil {
		return nil, fmt.Errorf("guard binary: %w (run make build)", err)
	}
	l := &lab{s: s}
	defer func() {
		if err != nil {
			_ = l.stop()
		}
	}()
	logf("starting the local control plane")
	c, err := cluster.Start(ctx, cluster.Options{Timeout: 3 * time.Minute, Logf: func(f string, a ...any) {
		if s.verbose {
			logf(f, a...)
		}
	}})
	if err != nil {
		return nil, err
	}
	l.cluster = c
	cfg := rest.CopyConfig(c.Config)
	cfg.QPS, cfg.Burst = -1, 0 // API Priority and Fairness is the only limit
	if l.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if l.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if v, err := l.cs.Discovery().ServerVersion(); err == nil {
		l.k8sVersion = v.GitVersion
	}
	r.setEnv("control plane", fmt.Sprintf("kube-apiserver %s (e2e/cluster: etcd, kube-apiserver, controller-manager, scheduler, kwok), started in %s",
		l.k8sVersion, c.StartDuration.Round(time.Second)))

	if err := l.setUpNamespace(ctx, labNamespace); err != nil {
		return nil, err
	}
	if l.fastBody, err = os.ReadFile(filepath.Join(s.repo, "webhook/testdata/labels-only.json")); err != nil {
		return nil, err
	}
	if l.switchBody, err = os.ReadFile(filepath.Join(s.repo, "webhook/testdata/cutover-to-green.json")); err != nil {
		return nil, err
	}

	if l.certs, err = testcert.Issue(); err != nil { // for 127.0.0.1 and localhost
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(l.certs.CAPEM)
	l.client = &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}, Timeout: 30 * time.Second}

	if l.guardConfig, err = l.guardKubeconfig(ctx); err != nil {
		return nil, err
	}
	r.setEnv("the guards' identity", "ServiceAccount "+tutorial.GuardNamespace+"/"+tutorial.GuardServiceAccount+" bound to manifests/rbac's ClusterRole, with a token from the TokenRequest API (as installed)")
	pprof, err := l.pprofArgs()
	if err != nil {
		return nil, err
	}
	if l.warm, err = l.startGuard(ctx, "warm", true, pprof...); err != nil {
		return nil, err
	}
	if l.cold, err = l.startGuard(ctx, "cold", true, "--db-cache-ttl=0"); err != nil {
		return nil, err
	}
	if l.flagged, err = l.startGuard(ctx, "kubeconfig-flag", false); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *lab) stop() error {
	var errs []error
	for _, g := range []*guard{l.warm, l.cold, l.flagged} {
		if g != nil {
			errs = append(errs, g.Stop())
		}
	}
	if l.cluster != nil {
		logf("stopping the local control plane")
		errs = append(errs, l.cluster.Stop())
	}
	return errors.Join(errs...)
}

// setUpNamespace creates the tutorial's objects in ns and waits until blue
// and green are Ready with ready endpoints.
func (l *lab) setUpNamespace(ctx context.Context, ns string) error {
	logf("setting up namespace %s", ns)
	create := func(err error) error {
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}
	if err := create(func() error {
		_, err := l.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		return err
	}()); err != nil {
		return err
	}
	if err := create(func() error {
		_, err := l.cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db-credentials"},
			StringData: map[string]string{"url": localPGDSN}}, metav1.CreateOptions{})
		return err
	}()); err != nil {
		return err
	}
	for _, color := range []string{"blue", "green", "red"} {
		name := "app-" + color
		labels := map[string]string{"app": "myapp", "version": color}
		if err := create(func() error {
			_, err := l.cs.AppsV1().Deployments(ns).Create(ctx, appDeployment(name, labels, color == "red"), metav1.CreateOptions{})
			return err
		}()); err != nil {
			return err
		}
		if err := create(func() error {
			_, err := l.cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}, metav1.CreateOptions{})
			return err
		}()); err != nil {
			return err
		}
	}
	route := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
		"metadata": map[string]any{"name": routeName, "namespace": ns},
		"spec": map[string]any{
			"parentRefs": []any{map[string]any{"name": "public", "namespace": ns}},
			"rules":      routeRules("app-blue"),
		},
	}}
	if err := create(func() error {
		_, err := l.dyn.Resource(httpRoutes).Namespace(ns).Create(ctx, route, metav1.CreateOptions{})
		return err
	}()); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, name := range []string{"app-blue", "app-green"} {
			d, err := l.cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil || !cluster.FullyReady(d) {
				return false, nil
			}
			if n, err := cluster.ReadyEndpoints(ctx, l.cluster.Client, ns, name); err != nil || n < 2 {
				return false, nil
			}
		}
		return true, nil
	})
}

// routeRules is the route's one rule sending everything to backend.
func routeRules(backend string) []any {
	return []any{map[string]any{
		"matches":     []any{map[string]any{"path": map[string]any{"type": "PathPrefix", "value": "/"}}},
		"backendRefs": []any{map[string]any{"name": backend, "port": int64(80)}},
	}}
}

// appDeployment is one colour of the tutorial's app: two pause pods with a
// readiness probe and DATABASE_URL from the Secret. pending keeps its pods
// from ever being scheduled.
func appDeployment(name string, labels map[string]string, pending bool) *appsv1.Deployment {
	d := cluster.TestDeployment(name, 2, nil)
	d.Spec.Selector.MatchLabels = labels
	d.Spec.Template.Labels = labels
	d.Labels = labels
	if pending {
		d.Spec.Template.Spec.NodeSelector = map[string]string{"cutover-guard.dev/no-such-node": "true"}
	}
	c := &d.Spec.Template.Spec.Containers[0]
	c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}}
	c.Env = []corev1.EnvVar{{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "db-credentials"}, Key: "url"}}}}
	return d
}

// guard is one guard process of the lab.
type guard struct {
	*tutorial.Guard
	name string
	URL  string // the HTTPRoute webhook path, with the API server's timeout parameter
}

// startGuard starts the guard binary against the lab's cluster, serving the
// lab's certificate. With viaEnv the kubeconfig is given as $KUBECONFIG (as
// in a cluster, where the guard finds its config without --kubeconfig);
// otherwise as --kubeconfig.
func (l *lab) startGuard(ctx context.Context, name string, viaEnv bool, extra ...string) (*guard, error) {
	if l.guardHasFlag("max-checks-per-namespace") {
		// The load runs put up to 64 switches in flight in one namespace:
		// measured is the cost of a check, not the per-namespace bound.
		extra = append([]string{"--max-checks-per-namespace=1024"}, extra...)
	}
	g, err := tutorial.StartGuard(ctx, tutorial.GuardOptions{
		Binary:        l.s.guardBin,
		Kubeconfig:    l.guardConfig,
		KubeconfigEnv: viaEnv,
		Env:           l.s.guardEnv,
		Dir:           filepath.Join(l.s.rawDir, "guard-"+name),
		LogPath:       filepath.Join(l.s.rawDir, "guard-"+name+".log"),
		PrivateCIDRs:  []string{"127.0.0.1/32"},
		Certificate:   l.certs,
		// Older builds, measured for a before/after comparison, may
		// rotate out of cluster unless told --disable-cert-rotation.
		LegacyDisableRotation: l.guardHasFlag("disable-cert-rotation"),
		PrePortAllowlistBuild: !l.guardHasFlag("database-ports"),
		Args:                  append(append([]string(nil), extra...), l.s.guardArgs...),
	})
	if err != nil {
		return nil, fmt.Errorf("guard %s: %w", name, err)
	}
	logf("guard %s (pid %d) serving on 127.0.0.1:%d", name, g.PID(), g.Port)
	return &guard{Guard: g, name: name, URL: fmt.Sprintf("https://127.0.0.1:%d/validate-httproute?timeout=10s", g.Port)}, nil
}

// guardHasFlag reports whether the guard binary knows --name (older
// builds, measured for a before/after comparison, may not).
func (l *lab) guardHasFlag(name string) bool {
	out, _ := exec.Command(l.s.guardBin, "--help").CombinedOutput()
	return strings.Contains(string(out), "-"+name+" ") || strings.Contains(string(out), "-"+name+"\n")
}

// memory returns VmRSS and VmHWM (peak RSS) of pid in KiB.
func memory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm, nil
}

// cpuTime is the user+system CPU time pid has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields start after its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks, nil
}
