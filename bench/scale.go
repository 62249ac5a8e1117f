package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
)

const (
	scaleNamespaces = 20
	podsPerApp      = 5
	// crowdedNamespace also holds a copy of the tutorial's objects, so a
	// switch there reads a namespace that fills up with the cluster.
	crowdedNamespace = "scale-00"
	decoyManager     = "bench.cutover-guard.dev"
)

func scaleNamespace(i int) string { return fmt.Sprintf("scale-%02d", i%scaleNamespaces) }

// atScale is part 4: the guard's memory and switch latency as the cluster
// grows to 2,000 Deployments, Services and EndpointSlices and 10,000 pods.
func atScale(ctx context.Context, l *lab, r *report) error {
	sizes := []int{0, 400, 2000}
	if l.s.quick {
		sizes = []int{0, 200}
	}
	if len(l.s.scaleSizes) > 0 {
		sizes = l.s.scaleSizes
	}
	logf("scale: sizes %v", sizes)
	cfg := rest.CopyConfig(l.cluster.Config)
	cfg.QPS, cfg.Burst = -1, 0
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for i := range scaleNamespaces {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scaleNamespace(i)}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	if err := l.setUpNamespace(ctx, crowdedNamespace); err != nil {
		return err
	}
	crowdedBody := bytes.ReplaceAll(l.switchBody, []byte(`"`+labNamespace+`"`), []byte(`"`+crowdedNamespace+`"`))

	// A guard of its own, so its peak memory covers this part only.
	g, err := l.startGuard(ctx, "scale", true)
	if err != nil {
		return err
	}
	defer func() { _ = g.Stop() }()

	t := r.table("4. Scale: the guard as the cluster grows",
		fmt.Sprintf("Objects are spread over %d namespaces `scale-NN`. Each app is a Deployment (paused, %d replicas: the harness's controller-manager writes at its default 20 QPS, so the bench creates the pods itself), "+
			"a headless Service without selector, an idle ReplicaSet (0 replicas, owned by nothing, labels that match nothing else), an EndpointSlice with %d ready endpoints (managed by the bench, not the controller) and %d pods bound to the kwok node, which kwok turns Running. "+
			"Switch latencies are over HTTPS to a guard started for this part; \"crowded namespace\" is the same cutover in `%s`, which holds 1/%d of the apps: the namespace the guard looks up the target's Deployment in grows with the cluster. "+
			"RSS is read from /proc/<pid>/status after the measurements at each size (VmHWM: peak since the guard started). Medians over %d runs.",
			scaleNamespaces, podsPerApp, podsPerApp, podsPerApp, crowdedNamespace, scaleNamespaces, l.s.runs),
		"apps (Deployments = Services = EndpointSlices)", "pods (Running)", "guard VmRSS", "guard VmHWM",
		"switch p50 / p99, c=1", "switch p99, c=8", "crowded namespace: switch p50 / p99, c=1", "kube-apiserver RSS", "cluster writes/s while measured", "time to create")

	type point struct {
		apps                int
		hwm, rss            int64
		p50c1, p99c1, p99c8 float64
	}
	var points []point
	var writers []string
	have := 0
	for _, size := range sizes {
		began := time.Now()
		if size > have {
			logf("scale: creating apps %d..%d", have, size-1)
			if err := createApps(ctx, cs, l.cluster.NodeName, have, size); err != nil {
				return err
			}
			have = size
		}
		running, err := waitPodsRunning(ctx, cs, have*podsPerApp, 4*time.Minute)
		if err != nil {
			return err
		}
		created := time.Since(began)
		logf("scale: %d apps, %d of %d pods Running after %s", have, running, have*podsPerApp, created.Round(time.Second))
		// The controllers' follow-up writes (status of the paused
		// Deployments) would make every consistent list wait for etcd's
		// progress notification; measure the cluster at rest.
		rate, err := waitQuiet(ctx, cs, 4*time.Minute)
		if err != nil {
			return err
		}
		logf("scale: cluster at %.1f writes/s", rate)
		rv0, err := currentRevision(ctx, cs)
		if err != nil {
			return err
		}
		stopWatching := watchChanges(ctx, l, strconv.FormatInt(rv0, 10))
		t0 := time.Now()
		res, err := l.measureCells(ctx, []cell{
			{label: "switch", guard: g, body: l.switchBody, concurrency: 1},
			{label: "switch", guard: g, body: l.switchBody, concurrency: 8},
			{label: "switch, crowded namespace", guard: g, body: crowdedBody, concurrency: 1},
		})
		if err != nil {
			return err
		}
		for _, o := range res {
			if o.errors > 0 {
				return fmt.Errorf("%d apps: %d errors: %v", have, o.errors, o.firstError)
			}
		}
		rv1, err := currentRevision(ctx, cs)
		if err != nil {
			return err
		}
		took := time.Since(t0)
		writes := float64(rv1-rv0) / took.Seconds()
		changed := stopWatching()
		writers = append(writers, fmt.Sprintf("%d apps: %s", have, topWriters(changed, took)))
		rss, hwm, err := memory(g.PID())
		if err != nil {
			return err
		}
		apiRSS := "?"
		if pid := componentPID(l.cluster, "kube-apiserver"); pid > 0 {
			if rss, _, err := memory(pid); err == nil {
				apiRSS = mib(rss)
			}
		}
		createdCell := "-"
		if size > 0 {
			createdCell = created.Round(time.Second).String()
		}
		t.add(fmt.Sprint(have), fmt.Sprintf("%d (%d)", have*podsPerApp, running), mib(rss), mib(hwm),
			dur(ns(res[0].p50))+" / "+dur(ns(res[0].p99)), dur(ns(res[1].p99)),
			dur(ns(res[2].p50))+" / "+dur(ns(res[2].p99)), apiRSS, fmt.Sprintf("%.1f", writes), createdCell)
		points = append(points, point{apps: have, hwm: hwm, rss: rss, p50c1: res[0].p50, p99c1: res[0].p99, p99c8: res[1].p99})
	}
	r.note("objects that changed while the scale measurements ran (watch events per second, top 3; the guard writes nothing): %s", strings.Join(writers, "; "))
	first, last := points[0], points[len(points)-1]
	r.goal(fmt.Sprintf("guard peak RSS (VmHWM) with %d apps, %d pods", last.apps, last.apps*podsPerApp), "< 64 MiB", mib(last.hwm), last.hwm < 64*1024)
	p50growth := last.p50c1 / first.p50c1
	r.goal(fmt.Sprintf("switch p50 (c=1) with %d apps vs an empty cluster", last.apps), "no growth (<= 1.25x)",
		fmt.Sprintf("%.2fx (%s vs %s)", p50growth, dur(ns(last.p50c1)), dur(ns(first.p50c1))), p50growth <= 1.25)
	growth := last.p99c1 / first.p99c1
	r.goal(fmt.Sprintf("switch p99 (c=1) with %d apps vs an empty cluster", last.apps), "no growth (<= 1.25x)",
		fmt.Sprintf("%.2fx (%s vs %s)", growth, dur(ns(last.p99c1)), dur(ns(first.p99c1))), growth <= 1.25)
	return nil
}

// createApps creates apps [from, to): per app a paused Deployment, a Service,
// an EndpointSlice and podsPerApp pods bound to node.
//
// The Deployments go first: the controller-manager then writes their status
// (at its 20 QPS) while the rest is created.
func createApps(ctx context.Context, cs kubernetes.Interface, node string, from, to int) error {
	if err := forEachApp(ctx, from, to, func(i int) error { return createDeployment(ctx, cs, i) }); err != nil {
		return err
	}
	return forEachApp(ctx, from, to, func(i int) error { return createApp(ctx, cs, node, i) })
}

// forEachApp calls fn for apps [from, to) on 16 workers.
func forEachApp(ctx context.Context, from, to int, fn func(i int) error) error {
	const workers = 16
	next := atomic.Int64{}
	next.Store(int64(from))
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= to || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					errs <- fmt.Errorf("app %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	return ctx.Err()
}

func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func appName(i int) (namespace, name string) { return scaleNamespace(i), fmt.Sprintf("app-%04d", i) }

// appDeploymentAt is app i's Deployment: paused, so the controller-manager
// makes no ReplicaSet or pods for it.
func appDeploymentAt(i int) *appsv1.Deployment {
	_, name := appName(i)
	d := cluster.TestDeployment(name, podsPerApp, nil)
	d.Spec.Paused = true
	d.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: name + "-db"}, Key: "url"}}}}
	return d
}

func createDeployment(ctx context.Context, cs kubernetes.Interface, i int) error {
	ns, _ := appName(i)
	_, err := cs.AppsV1().Deployments(ns).Create(ctx, appDeploymentAt(i), metav1.CreateOptions{})
	return ignoreExists(err)
}

// createApp creates app i's Service, idle ReplicaSet, EndpointSlice and pods.
func createApp(ctx context.Context, cs kubernetes.Interface, node string, i int) error {
	ns, name := appName(i)
	labels := map[string]string{"app": name}
	d := appDeploymentAt(i)
	if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		// Headless: the test API server's service IP range holds 256 addresses.
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return err
	}
	if _, err := cs.AppsV1().ReplicaSets(ns).Create(ctx, idleReplicaSet(name, d), metav1.CreateOptions{}); ignoreExists(err) != nil {
		return err
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-1", Labels: map[string]string{
			discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: decoyManager}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(""), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for k := range podsPerApp {
		n := i*podsPerApp + k
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 128+n>>16, (n>>8)&255, n&255)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		})
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{}); ignoreExists(err) != nil {
		return err
	}
	for k := range podsPerApp {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, k), Labels: labels},
			Spec:       *d.Spec.Template.Spec.DeepCopy(),
		}
		p.Spec.NodeName = node
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); ignoreExists(err) != nil {
			return err
		}
	}
	return nil
}

// idleReplicaSet is a ReplicaSet at zero replicas, as a rollout leaves
// behind, so that a label-selected ReplicaSet list has a namespace's worth to
// filter. Its labels match neither app's Deployment nor its pods, and nothing
// owns it: no controller adopts or scales it.
func idleReplicaSet(name string, d *appsv1.Deployment) *appsv1.ReplicaSet {
	l := map[string]string{"app": name + "-previous", appsv1.DefaultDeploymentUniqueLabelKey: "0"}
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-previous", Labels: l},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](0), Selector: &metav1.LabelSelector{MatchLabels: l},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: l}, Spec: *d.Spec.Template.Spec.DeepCopy()}},
	}
}

// waitPodsRunning waits until want pods in the scale namespaces are Running,
// or for at most limit, and returns how many are.
func waitPodsRunning(ctx context.Context, cs kubernetes.Interface, want int, limit time.Duration) (int, error) {
	deadline := time.Now().Add(limit)
	for {
		running := 0
		for i := range scaleNamespaces {
			cont := ""
			for {
				list, err := cs.CoreV1().Pods(scaleNamespace(i)).List(ctx, metav1.ListOptions{Limit: 1000, Continue: cont,
					LabelSelector: "app,app notin (myapp)"})
				if err != nil {
					return 0, err
				}
				for _, p := range list.Items {
					if p.Status.Phase == corev1.PodRunning {
						running++
					}
				}
				if cont = list.Continue; cont == "" {
					break
				}
			}
		}
		if running >= want || time.Now().After(deadline) {
			return running, nil
		}
		select {
		case <-ctx.Done():
			return running, ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
}

// currentRevision is etcd's current revision, as the API server reports it
// on a consistent list.
func currentRevision(ctx context.Context, cs kubernetes.Interface) (int64, error) {
	list, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(list.ResourceVersion, 10, 64)
}

// waitQuiet waits, at most limit, until the cluster writes fewer than 5
// objects a second, and returns the last rate seen.
func waitQuiet(ctx context.Context, cs kubernetes.Interface, limit time.Duration) (float64, error) {
	const window = 2 * time.Second
	deadline := time.Now().Add(limit)
	for {
		rv0, err := currentRevision(ctx, cs)
		if err != nil {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(window):
		}
		rv1, err := currentRevision(ctx, cs)
		if err != nil {
			return 0, err
		}
		rate := float64(rv1-rv0) / window.Seconds()
		if rate < 5 || time.Now().After(deadline) {
			return rate, nil
		}
	}
}

// watchedResources are watched while the scale measurements run, to see
// what moves etcd's revision.
var watchedResources = []schema.GroupVersionResource{
	{Version: "v1", Resource: "pods"}, {Version: "v1", Resource: "events"}, {Version: "v1", Resource: "nodes"},
	{Version: "v1", Resource: "services"}, {Version: "v1", Resource: "configmaps"},
	{Version: "v1", Resource: "serviceaccounts"}, {Version: "v1", Resource: "namespaces"},
	{Group: "apps", Version: "v1", Resource: "deployments"}, {Group: "apps", Version: "v1", Resource: "replicasets"},
	{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"},
	{Group: "coordination.k8s.io", Version: "v1", Resource: "leases"},
	{Group: "events.k8s.io", Version: "v1", Resource: "events"},
}

// watchChanges counts, per resource, the objects that change from
// revision rv on, until the returned function is called.
func watchChanges(ctx context.Context, l *lab, rv string) func() map[string]float64 {
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	counts := map[string]float64{}
	var wg sync.WaitGroup
	for _, gvr := range watchedResources {
		w, err := l.dyn.Resource(gvr).Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
		if err != nil {
			continue
		}
		wg.Go(func() {
			defer w.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case ev, ok := <-w.ResultChan():
					if !ok {
						return
					}
					mu.Lock()
					counts[string(ev.Type)+" "+gvr.Resource]++
					mu.Unlock()
				}
			}
		})
	}
	return func() map[string]float64 {
		cancel()
		wg.Wait()
		return counts
	}
}

// topWriters renders the three largest change rates.
func topWriters(changed map[string]float64, took time.Duration) string {
	type w struct {
		key  string
		rate float64
	}
	var ws []w
	for k, v := range changed {
		ws = append(ws, w{k, v / took.Seconds()})
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].rate > ws[j].rate })
	var parts []string
	for i, x := range ws {
		if i == 3 {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.1f", x.key, x.rate))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// componentPID finds the pid of a control-plane binary by name.
func componentPID(c *cluster.Cluster, name string) int {
	for _, pid := range c.PIDs() {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err == nil && filepath.Base(exe) == name {
			return pid
		}
	}
	return 0
}
