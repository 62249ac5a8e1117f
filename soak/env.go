package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
	"github.com/cutover-guard/cutover-guard/internal/faultproxy"
)

// Names the soak adds to the tutorial's.
const (
	// greenSecret holds green's connection string, through the fault proxy;
	// blue keeps the tutorial's Secret, straight to the database.
	greenSecret = "db-credentials-green"
	// weightsRoute splits traffic between blue and green; shifters move its
	// weights, never to zero; the backend whose share grows is checked.
	weightsRoute = "myapp-weights"
)

// env is the control plane, the guard, the fault proxy and a client.
type env struct {
	s       settings
	cluster *cluster.Cluster
	guard   *tutorial.Guard
	proxy   *faultproxy.Proxy
	// silent is the listener the hostile tenant's connection strings name.
	silent    *silent
	kube      client.Client
	manifests *tutorial.Manifests
	// sent counts the requests so far, for progress lines.
	sent atomic.Int64
}

// start brings everything up: control plane, proxy, guard, webhook
// registration, and the tutorial's objects with blue and green both Ready.
func start(ctx context.Context, s settings) (_ *env, err error) {
	if _, err := os.Stat(s.guardBin); err != nil {
		return nil, fmt.Errorf("guard binary %s: %w (run make build)", s.guardBin, err)
	}
	toolsDir, err := cluster.ToolsDir()
	if err != nil {
		return nil, err
	}
	if missing := cluster.MissingTools(toolsDir); len(missing) > 0 {
		return nil, fmt.Errorf("control-plane tools missing (run make tools): %s", strings.Join(missing, ", "))
	}
	if c, err := net.DialTimeout("tcp", s.postgres, 2*time.Second); err != nil {
		return nil, fmt.Errorf("local PostgreSQL %s not answering: %w (start it, or pass -postgres=HOST:PORT)", s.postgres, err)
	} else {
		_ = c.Close() // only a check that it answers
	}
	if err := os.MkdirAll(s.workDir, 0o755); err != nil {
		return nil, err
	}

	e := &env{s: s, manifests: tutorial.MustLoad()}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.stop())
		}
	}()
	logf("starting the local control plane")
	cl := cluster.Options{ToolsDir: toolsDir, Timeout: 3 * time.Minute}
	if s.verbose {
		cl.Logf = logf
	}
	if e.cluster, err = cluster.Start(ctx, cl); err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(e.cluster.Config)
	cfg.QPS, cfg.Burst = -1, 0 // the load is the point: API Priority and Fairness is the only limit
	if e.kube, err = client.New(cfg, client.Options{Scheme: tutorial.Scheme()}); err != nil {
		return nil, err
	}
	if e.proxy, err = faultproxy.Start(s.postgres); err != nil {
		return nil, fmt.Errorf("fault proxy: %w", err)
	}
	if e.silent, err = startSilent(); err != nil {
		return nil, fmt.Errorf("silent listener: %w", err)
	}
	e.guard, err = tutorial.StartGuard(ctx, tutorial.GuardOptions{
		Binary:     s.guardBin,
		Kubeconfig: e.cluster.Kubeconfig,
		Dir:        s.workDir,
		DBTimeout:  s.dbTimeout,
		// The soak's switchers and editors share one namespace: the
		// per-namespace bound on checks in flight is raised so that they
		// are judged on the backend, not on being busy; the hostile
		// tenant's busy flood sends more than that at once.
		Args: append([]string{"--db-cache-ttl=" + s.dbCacheTTL.String(), fmt.Sprintf("--max-checks-per-namespace=%d", maxChecksPerNamespace)}, s.guardArgs...),
	})
	if err != nil {
		return nil, err
	}
	logf("guard pid %d on 127.0.0.1:%d, log %s", e.guard.PID(), e.guard.Port, e.guard.LogPath)
	if err := tutorial.Register(ctx, e.kube, e.guard, time.Minute); err != nil {
		return nil, err
	}
	logf("setting up the tutorial's objects")
	if err := e.setUp(ctx); err != nil {
		return nil, fmt.Errorf("tutorial objects: %w", err)
	}
	logf("setting up the hostile tenant in namespace %s", hostileNamespace)
	if err := e.setUpHostile(ctx); err != nil {
		return nil, fmt.Errorf("hostile tenant: %w", err)
	}
	return e, nil
}

// setUp creates the tutorial's objects (route on blue), points green at the
// proxy, makes green Ready and creates the weights route.
func (e *env) setUp(ctx context.Context) error {
	direct := "postgresql://postgres@" + e.s.postgres + "/test?sslmode=disable"
	if err := tutorial.Setup(ctx, e.kube, direct); err != nil {
		return err
	}
	viaProxy := "postgresql://postgres@" + e.proxy.Addr() + "/test?sslmode=disable"
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: greenSecret},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{tutorial.SecretKey: []byte(viaProxy)},
	}
	if err := tutorial.CreateOrReplace(ctx, e.kube, secret); err != nil {
		return err
	}
	if err := tutorial.Serve(ctx, e.kube, e.green(false)); err != nil {
		return err
	}
	w := e.manifests.Route.DeepCopy()
	w.ObjectMeta = metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: weightsRoute}
	w.Spec.Rules[0].BackendRefs = []gwv1.HTTPBackendRef{backendRef(tutorial.Blue, 50), backendRef(tutorial.Green, 50)}
	return tutorial.Recreate(ctx, e.kube, w)
}

// green is the tutorial's green Deployment reading DATABASE_URL from
// greenSecret; pending keeps its pods from being scheduled.
func (e *env) green(pending bool) *appsv1.Deployment {
	d := e.manifests.Deployment(tutorial.Green, tutorial.Replicas, pending)
	for i := range d.Spec.Template.Spec.Containers {
		for j := range d.Spec.Template.Spec.Containers[i].Env {
			ev := &d.Spec.Template.Spec.Containers[i].Env[j]
			if ev.ValueFrom != nil && ev.ValueFrom.SecretKeyRef != nil && ev.ValueFrom.SecretKeyRef.Name == tutorial.Secret {
				ev.ValueFrom.SecretKeyRef.Name = greenSecret
			}
		}
	}
	return d
}

func backendRef(name string, weight int32) gwv1.HTTPBackendRef {
	return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{
		BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Port: ptr.To[gwv1.PortNumber](80)},
		Weight:                 ptr.To(weight),
	}}
}

// stop ends the guard, the proxy and the control plane.
func (e *env) stop() error {
	var errs []error
	if e.guard != nil {
		errs = append(errs, e.guard.Stop())
	}
	if e.proxy != nil {
		errs = append(errs, e.proxy.Close())
	}
	if e.silent != nil {
		e.silent.close()
	}
	if e.cluster != nil {
		logf("stopping the local control plane")
		errs = append(errs, e.cluster.Stop())
	}
	return errors.Join(errs...)
}
