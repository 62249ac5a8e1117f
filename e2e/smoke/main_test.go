// Package smoke_test runs the smoke gate end to end: the tutorial's
// cutover with the real kubectl against a local control plane whose pods
// really answer. kwok gives the pods addresses in a network namespace the
// suite makes (internal/netns); the suite serves HTTP on each pod's
// address inside it, and the real guard, in the host's namespace, calls
// the pods through the veth pair, as it calls pod IPs in a cluster.
//
// It has its own control plane and guard: the shared suite's pods have
// addresses nothing serves.
package smoke_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
	"github.com/cutover-guard/cutover-guard/internal/netns"
)

// postgresDSN fills the tutorial's Secret; the suite's guard does not
// probe databases (--skip-database-check): the smoke gate is its subject.
const postgresDSN = "postgresql://postgres@127.0.0.1:5432/test?sslmode=require"

var shared tutorial.Shared[*env]

// made is the suite's network namespace once start made it: TestMain
// removes it after the stack, whose pods' addresses are in it.
var made *netns.Namespace

// env is the suite's namespace, control plane, guard and clients.
type env struct {
	ns        *netns.Namespace
	stack     *tutorial.Stack
	cluster   *cluster.Cluster
	guard     *tutorial.Guard
	kube      client.Client
	manifests *tutorial.Manifests
	dir       string
}

func TestMain(m *testing.M) {
	code := shared.Main(m, func(e *env) *tutorial.Stack { return e.stack })
	if made != nil {
		if err := made.Close(); err != nil {
			_, _ = fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func setup(t *testing.T) *env {
	t.Helper()
	e := shared.Get(t, start)
	e.guard.LogOnFailure(t, 60)
	return e
}

// start makes the namespace, then the stack with kwok's pod range in it,
// or says why it cannot.
func start() (_ *env, skip string, _ error) {
	toolsDir, skip := tutorial.Preflight()
	if skip != "" {
		return nil, skip, nil
	}
	if err := netns.Available(); err != nil {
		return nil, "network namespace: " + err.Error(), nil
	}
	ns, err := netns.New(context.Background())
	if err != nil {
		return nil, "network namespace: " + err.Error(), nil
	}
	made = ns
	s, err := tutorial.StartStack(context.Background(), tutorial.StackOptions{
		Name: "e2e/smoke", ToolsDir: toolsDir, DSN: postgresDSN, PodCIDR: ns.PodRange.String(),
		// The pods' addresses are private by the guard's one list, the
		// database prober's.
		GuardArgs: []string{"--skip-database-check", "--private-cidrs=" + ns.Subnet.String(), "--zap-log-level=debug"},
	})
	if err != nil {
		return nil, "", err
	}
	return &env{ns: ns, stack: s, cluster: s.Cluster, guard: s.Guard, kube: s.Kube, dir: s.Dir, manifests: tutorial.MustLoad()}, "", nil
}

func (e *env) kubectl() *tutorial.Kubectl {
	return &tutorial.Kubectl{Binary: e.cluster.Kubectl, Kubeconfig: e.cluster.Kubeconfig, Home: filepath.Join(e.dir, "kubectl")}
}

// serveGreen makes app-green serve replicas pods with the given
// annotations, and the route point at blue again. It returns green's
// pods, sorted by name: each has an address in the namespace's pod range
// on which nothing listens yet.
func (e *env) serveGreen(t *testing.T, replicas int32, annotations map[string]string) []corev1.Pod {
	t.Helper()
	ctx := t.Context()
	d := e.manifests.Deployment(tutorial.Green, replicas, false)
	d.Annotations = annotations
	if err := tutorial.Serve(ctx, e.kube, d); err != nil {
		t.Fatal(err)
	}
	if err := tutorial.Recreate(ctx, e.kube, e.manifests.Route.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	var list corev1.PodList
	if err := e.kube.List(ctx, &list, client.InNamespace(tutorial.Namespace), client.MatchingLabels{"app": "myapp", "version": "green"}); err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			ip := netip.MustParseAddr(p.Status.PodIP)
			if !e.ns.PodRange.Contains(ip) {
				t.Fatalf("pod %s has address %s, outside the namespace's pod range %s", p.Name, ip, e.ns.PodRange)
			}
			pods = append(pods, p)
		}
	}
	if len(pods) != int(replicas) {
		t.Fatalf("%d running green pods, want %d", len(pods), replicas)
	}
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods
}

// serve answers on pod's address, port 8080 (the tutorial's
// containerPort), inside the namespace, until the test ends. A nil
// handler leaves the port closed: the connection is refused.
func (e *env) serve(t *testing.T, pod corev1.Pod, h http.Handler) {
	t.Helper()
	if h == nil {
		return
	}
	l, err := e.ns.Listen(net.JoinHostPort(pod.Status.PodIP, "8080"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
}
