package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/cutover-guard/cutover-guard/internal/testenv"
)

// One cluster serves the read-mostly tests; TestMain stops it.
var shared struct {
	once sync.Once
	c    *Cluster
	err  error
	skip string
}

func sharedCluster(t *testing.T) *Cluster {
	t.Helper()
	shared.once.Do(func() {
		dir, err := ToolsDir()
		if err != nil {
			shared.skip = err.Error()
			return
		}
		if missing := MissingTools(dir); len(missing) > 0 {
			shared.skip = "control-plane tools not built (run hack/build-tools.sh or set " + ToolsEnv + "); missing: " + strings.Join(missing, ", ")
			return
		}
		shared.c, shared.err = Start(context.Background(), Options{ToolsDir: dir, Logf: log.Printf})
	})
	if shared.skip != "" {
		testenv.Unavailable(t, "e2e cluster: %s", shared.skip)
	}
	if shared.err != nil {
		t.Fatalf("e2e cluster: %v", shared.err)
	}
	return shared.c
}

func TestMain(m *testing.M) {
	code := m.Run()
	if c := shared.c; c != nil {
		if code != 0 {
			c.opts.KeepLogs = true
			fmt.Fprintf(os.Stderr, "e2e cluster logs kept in %s\n", c.LogDir)
			c.DumpLogs(os.Stderr, 40)
		}
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e cluster stop: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func poll(t *testing.T, timeout time.Duration, cond wait.ConditionWithContextFunc) error {
	t.Helper()
	return wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, timeout, true, cond)
}

func createNamespace(t *testing.T, c *Cluster, name string) {
	t.Helper()
	_, err := c.Clientset.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// Runs first, before the shared cluster exists, so two clusters never share
// the two cores.
func TestStartStopLeavesNoProcess(t *testing.T) {
	c := StartT(t, Options{})
	t.Logf("cluster started in %s", c.StartDuration.Round(time.Millisecond))

	pids := c.PIDs()
	if len(pids) != len(Binaries)-1 { // every binary but kubectl runs
		t.Fatalf("recorded PIDs %v, want %d processes", pids, len(Binaries)-1)
	}
	for _, pid := range pids {
		if !pidAlive(pid) {
			t.Fatalf("pid %d (%s) is not running", pid, procExe(pid))
		}
	}
	if _, err := os.Stat(c.Kubeconfig); err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}

	began := time.Now()
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("cluster stopped in %s", time.Since(began).Round(time.Millisecond))
	for _, pid := range pids {
		if pidAlive(pid) {
			t.Errorf("pid %d (%s) still running after Stop", pid, procExe(pid))
		}
	}
	if _, err := os.Stat(c.LogDir); !os.IsNotExist(err) {
		t.Errorf("log folder %s not removed: %v", c.LogDir, err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestDeploymentRollsOutReady(t *testing.T) {
	c := sharedCluster(t)
	ctx, cs, ns := t.Context(), c.Clientset, "rollout"
	createNamespace(t, c, ns)
	if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, TestDeployment("web", 2, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var endpoints int
	err := poll(t, time.Minute, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil || !FullyReady(d) {
			return false, nil
		}
		endpoints, err = ReadyEndpoints(ctx, c.Client, ns, "web")
		return err == nil && endpoints == 2, nil
	})
	if err != nil {
		d, _ := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		t.Fatalf("Deployment web not Ready with 2 ready endpoints (have %d): %v; status %+v", endpoints, err, d.Status)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName != c.NodeName || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			t.Errorf("pod %s: node %q phase %s IP %q; want running on %s with an IP", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP, c.NodeName)
		}
	}
}

func TestUnsatisfiableNodeSelectorStaysPending(t *testing.T) {
	c := sharedCluster(t)
	ctx, cs, ns := t.Context(), c.Clientset, "pending"
	createNamespace(t, c, ns)
	d := TestDeployment("stuck", 2, map[string]string{"cutover-guard.test/no-such-node": "true"})
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Wait for the scheduler's verdict on both pods rather than for a while.
	err := poll(t, time.Minute, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=stuck"})
		if err != nil || len(pods.Items) != 2 {
			return false, nil
		}
		for _, p := range pods.Items {
			if !slices.ContainsFunc(p.Status.Conditions, func(cond corev1.PodCondition) bool {
				return cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse && cond.Reason == corev1.PodReasonUnschedulable
			}) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("pods not reported Unschedulable: %v", err)
	}
	got, err := cs.AppsV1().Deployments(ns).Get(ctx, "stuck", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if FullyReady(got) || got.Status.ReadyReplicas != 0 || got.Status.AvailableReplicas != 0 {
		t.Fatalf("Deployment stuck: ready %d available %d, want 0/2", got.Status.ReadyReplicas, got.Status.AvailableReplicas)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=stuck"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodPending || p.Spec.NodeName != "" {
			t.Errorf("pod %s: phase %s node %q, want Pending and unbound", p.Name, p.Status.Phase, p.Spec.NodeName)
		}
	}
}

func TestNodeReadyAndLeaseRenewed(t *testing.T) {
	c := sharedCluster(t)
	ctx := t.Context()
	node, err := c.Clientset.CoreV1().Nodes().Get(ctx, c.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(node.Status.Conditions, func(cond corev1.NodeCondition) bool {
		return cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue
	}) {
		t.Fatalf("node %s not Ready: %+v", c.NodeName, node.Status.Conditions)
	}
	lease, err := c.NodeLease(ctx)
	if err != nil {
		t.Fatalf("node lease: %v", err)
	}
	if lease.Spec.RenewTime == nil {
		t.Fatalf("lease %s has no renewTime", lease.Name)
	}
	first := lease.Spec.RenewTime.Time
	// kwok renews every quarter of the lease duration.
	timeout := time.Duration(c.opts.NodeLeaseDurationSeconds)*time.Second + 10*time.Second
	err = poll(t, timeout, func(ctx context.Context) (bool, error) {
		l, err := c.NodeLease(ctx)
		return err == nil && l.Spec.RenewTime != nil && l.Spec.RenewTime.After(first), nil
	})
	if err != nil {
		t.Fatalf("lease renewTime did not advance past %s: %v", first, err)
	}
}

func TestGatewayAPIHTTPRouteServed(t *testing.T) {
	c := sharedCluster(t)
	ctx := t.Context()
	resources, err := c.Clientset.Discovery().ServerResourcesForGroupVersion("gateway.networking.k8s.io/v1")
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	if !slices.ContainsFunc(resources.APIResources, func(r metav1.APIResource) bool { return r.Name == "httproutes" }) {
		t.Fatalf("httproutes not served in gateway.networking.k8s.io/v1")
	}

	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	createNamespace(t, c, "routes")
	gvr := schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
	route := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1",
		"kind":       "HTTPRoute",
		"metadata":   map[string]any{"name": "checkout"},
		"spec": map[string]any{
			"parentRefs": []any{map[string]any{"name": "gw"}},
			"rules": []any{map[string]any{
				"backendRefs": []any{
					map[string]any{"name": "blue", "port": int64(80), "weight": int64(90)},
					map[string]any{"name": "green", "port": int64(80), "weight": int64(10)},
				},
			}},
		},
	}}
	if _, err := dyn.Resource(gvr).Namespace("routes").Create(ctx, route, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create HTTPRoute: %v", err)
	}
	out, err := c.KubectlCommand(ctx, "get", "httproutes.gateway.networking.k8s.io", "-n", "routes", "-o", "name").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "httproute.gateway.networking.k8s.io/checkout" {
		t.Fatalf("kubectl get httproutes: %v\n%s", err, out)
	}
}

func TestKubectlVersionMatchesPinned(t *testing.T) {
	c := sharedCluster(t)
	want := pinnedKubernetesVersion(t)
	out, err := c.KubectlCommand(t.Context(), "version", "-o", "json").Output()
	if err != nil {
		t.Fatalf("kubectl version: %v\n%s", err, out)
	}
	var v struct {
		ClientVersion struct{ GitVersion string } `json:"clientVersion"`
		ServerVersion struct{ GitVersion string } `json:"serverVersion"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("kubectl version output: %v\n%s", err, out)
	}
	if v.ClientVersion.GitVersion != want || v.ServerVersion.GitVersion != want {
		t.Fatalf("kubectl version: client %q server %q, want %q for both", v.ClientVersion.GitVersion, v.ServerVersion.GitVersion, want)
	}
}

// pinnedKubernetesVersion reads the k8s.io/kubernetes version from e2e/tools/go.mod.
func pinnedKubernetesVersion(t *testing.T) string {
	t.Helper()
	f, err := os.Open("../tools/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 2 && fields[0] == "k8s.io/kubernetes" {
			return fields[1]
		}
	}
	t.Fatal("k8s.io/kubernetes not required in e2e/tools/go.mod")
	return ""
}
