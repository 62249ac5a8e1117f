package checks

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

var webLabels = map[string]string{"app": "web"}

func webService() *corev1.Service {
	return service("web", webLabels, 80)
}

func readyStatefulSet(name string, replicas int32) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: name, Generation: 4, UID: types.UID("uid-" + name)},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To(replicas), Selector: &metav1.LabelSelector{MatchLabels: webLabels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: webLabels}, Spec: probedSpec()},
		},
		Status: appsv1.StatefulSetStatus{ObservedGeneration: 4, Replicas: replicas, ReadyReplicas: replicas, UpdatedReplicas: replicas,
			CurrentReplicas: replicas, CurrentRevision: name + "-7f", UpdateRevision: name + "-7f"},
	}
}

func readyDaemonSet(name string, nodes int32) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: name, Generation: 2, UID: types.UID("uid-" + name)},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: webLabels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: webLabels}, Spec: probedSpec()}},
		Status: appsv1.DaemonSetStatus{ObservedGeneration: 2, DesiredNumberScheduled: nodes, CurrentNumberScheduled: nodes,
			UpdatedNumberScheduled: nodes, NumberReady: nodes, NumberAvailable: nodes},
	}
}

// healthyRollout is an Argo Rollout as its controller writes it once fully
// promoted: observedGeneration is a string.
func healthyRollout(name string, replicas int64) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"spec": map[string]any{
			"replicas": replicas,
			"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
			"template": map[string]any{
				"metadata": map[string]any{"labels": map[string]any{"app": "web"}},
				"spec": map[string]any{"containers": []any{map[string]any{
					"name": "app", "image": "web:v2",
					"env":            []any{map[string]any{"name": "DATABASE_URL", "value": "postgres://app@db.internal:5432/app"}},
					"readinessProbe": map[string]any{"httpGet": map[string]any{"path": "/ready", "port": int64(8080)}},
				}}},
			},
		},
		"status": map[string]any{
			"observedGeneration": "3", "phase": "Healthy", "stableRS": "6d4b", "currentPodHash": "6d4b",
			"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas, "updatedReplicas": replicas,
		},
	}}
	u.SetGroupVersionKind(RolloutGVK)
	u.SetNamespace("production")
	u.SetName(name)
	u.SetGeneration(3)
	u.SetUID(types.UID("uid-" + name))
	return u
}

func probedSpec() corev1.PodSpec {
	return corev1.PodSpec{Containers: []corev1.Container{{
		Name: "app", Image: "web:v1",
		Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready"}}},
	}}}
}

// podOf is a pod labelled like the web Service, controlled by owner (nil:
// no controller), Ready or not.
func podOf(name string, owner *metav1.OwnerReference, ready bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: name, Labels: webLabels},
		Spec:       probedSpec(),
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.9"},
	}
	if owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	return p
}

func controllerRef(apiVersion, kind, name string) *metav1.OwnerReference {
	return &metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: types.UID("uid-" + name), Controller: ptr.To(true)}
}

// rolloutReplicaSet is a ReplicaSet of an Argo Rollout.
func rolloutReplicaSet(rollout, hash string) *appsv1.ReplicaSet {
	l := map[string]string{"app": "web", "rollouts-pod-template-hash": hash}
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: rollout + "-" + hash, Labels: l,
			OwnerReferences: []metav1.OwnerReference{*controllerRef("argoproj.io/v1alpha1", "Rollout", rollout)}},
		Spec: appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: l},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: l}, Spec: probedSpec()}},
	}
}

// rolloutScheme is a fake client whose RESTMapper knows argoproj.io
// Rollouts (served) or not.
func workloadReader(served bool, funcs interceptor.Funcs, objs ...client.Object) client.Reader {
	b := fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(objs...).WithInterceptorFuncs(funcs)
	mapper := meta.NewDefaultRESTMapper(nil)
	for gvk := range testScheme().AllKnownTypes() {
		mapper.Add(gvk, meta.RESTScopeNamespace)
	}
	if served {
		mapper.Add(RolloutGVK, meta.RESTScopeNamespace)
	}
	return b.WithRESTMapper(mapper).Build()
}

// Each kind of workload is found from the pods or ReplicaSets the
// selector matches, through controller references, and judged by its own
// rule of fully rolled out.
func TestWorkloadReadyEachKind(t *testing.T) {
	sts := func(f func(*appsv1.StatefulSet)) []client.Object {
		s := readyStatefulSet("web", 3)
		f(s)
		ref := controllerRef("apps/v1", "StatefulSet", "web")
		return []client.Object{s, podOf("web-0", ref, true), podOf("web-1", ref, true), podOf("web-2", ref, s.Status.ReadyReplicas == 3)}
	}
	ds := func(f func(*appsv1.DaemonSet)) []client.Object {
		d := readyDaemonSet("agent", 2)
		f(d)
		ref := controllerRef("apps/v1", "DaemonSet", "agent")
		return []client.Object{d, podOf("agent-a", ref, true), podOf("agent-b", ref, true)}
	}
	ro := func(f func(*unstructured.Unstructured)) []client.Object {
		r := healthyRollout("web", 2)
		f(r)
		return []client.Object{r, rolloutReplicaSet("web", "6d4b")}
	}
	set := func(u *unstructured.Unstructured, v any, fields ...string) {
		if err := unstructured.SetNestedField(u.Object, v, fields...); err != nil {
			panic(err)
		}
	}
	tests := map[string]struct {
		objs        []client.Object
		unknown     UnknownWorkloads
		want        []Reason
		wantMessage string
		wantKinds   []string
	}{
		"a fully rolled out statefulset passes": {
			objs: sts(func(*appsv1.StatefulSet) {}), wantKinds: []string{"StatefulSet"},
		},
		"a statefulset half way through a rollout, one new pod of three Pending, is denied": {
			objs: sts(func(s *appsv1.StatefulSet) {
				s.Status.ReadyReplicas, s.Status.UpdatedReplicas, s.Status.CurrentReplicas, s.Status.UpdateRevision = 2, 1, 2, "web-8a"
			}),
			want:        []Reason{ReasonNotReady},
			wantMessage: "service production/web: statefulset web is not ready (2/3 ready, 1/3 updated, rolling out revision web-8a); wait for: kubectl rollout status statefulset/web -n production",
			wantKinds:   []string{"StatefulSet"},
		},
		"a statefulset whose revisions differ though every pod is counted ready is denied": {
			objs: sts(func(s *appsv1.StatefulSet) { s.Status.UpdateRevision = "web-8a" }),
			want: []Reason{ReasonNotReady}, wantKinds: []string{"StatefulSet"},
		},
		"a statefulset generation not observed is denied": {
			objs: sts(func(s *appsv1.StatefulSet) { s.Generation = 5 }),
			want: []Reason{ReasonRolloutNotObserved}, wantKinds: []string{"StatefulSet"},
		},
		"a statefulset scaled to zero is denied with the scale fix": {
			objs:        sts(func(s *appsv1.StatefulSet) { s.Spec.Replicas = ptr.To[int32](0) }),
			want:        []Reason{ReasonScaledToZero},
			wantMessage: "service production/web: statefulset web is scaled to zero; scale it up before switching: kubectl scale statefulset/web -n production --replicas=<n> && kubectl rollout status statefulset/web -n production",
			wantKinds:   []string{"StatefulSet"},
		},
		"a fully rolled out daemonset passes": {
			objs: ds(func(*appsv1.DaemonSet) {}), wantKinds: []string{"DaemonSet"},
		},
		"a daemonset with an unavailable pod is denied": {
			objs: ds(func(d *appsv1.DaemonSet) { d.Status.NumberReady, d.Status.NumberUnavailable = 1, 1 }),
			want: []Reason{ReasonNotReady}, wantKinds: []string{"DaemonSet"},
			wantMessage: "service production/web: daemonset agent is not ready (1/2 ready, 2/2 updated, 1 unavailable); wait for: kubectl rollout status daemonset/agent -n production",
		},
		"a daemonset mid-update is denied": {
			objs: ds(func(d *appsv1.DaemonSet) { d.Status.UpdatedNumberScheduled = 1 }),
			want: []Reason{ReasonNotReady}, wantKinds: []string{"DaemonSet"},
		},
		"a daemonset that no node runs is denied": {
			objs: ds(func(d *appsv1.DaemonSet) {
				d.Status = appsv1.DaemonSetStatus{ObservedGeneration: 2}
			}),
			want: []Reason{ReasonNothingScheduled}, wantKinds: []string{"DaemonSet"},
		},
		"a daemonset generation not observed is denied": {
			objs: ds(func(d *appsv1.DaemonSet) { d.Status.ObservedGeneration = 1 }),
			want: []Reason{ReasonRolloutNotObserved}, wantKinds: []string{"DaemonSet"},
		},
		"a healthy argo rollout passes": {
			objs: ro(func(*unstructured.Unstructured) {}), wantKinds: []string{"Rollout"},
		},
		"a rollout whose stable replicaset is the current one, all ready, passes though its phase lags": {
			objs: ro(func(u *unstructured.Unstructured) { set(u, "Progressing", "status", "phase") }), wantKinds: []string{"Rollout"},
		},
		"a rollout mid-canary is denied": {
			objs: ro(func(u *unstructured.Unstructured) {
				set(u, "Paused", "status", "phase")
				set(u, "7e5c", "status", "currentPodHash")
			}),
			want:        []Reason{ReasonNotReady},
			wantMessage: "service production/web: rollout web is not ready (2/2 ready, 2/2 available, phase Paused, stable revision is not the current one); wait for: kubectl argo rollouts status web -n production",
			wantKinds:   []string{"Rollout"},
		},
		"a rollout whose generation is not observed is denied": {
			objs: ro(func(u *unstructured.Unstructured) { set(u, "2", "status", "observedGeneration") }),
			want: []Reason{ReasonRolloutNotObserved}, wantKinds: []string{"Rollout"},
		},
		"a paused rollout is denied": {
			objs: ro(func(u *unstructured.Unstructured) { set(u, true, "spec", "paused") }),
			want: []Reason{ReasonPaused}, wantKinds: []string{"Rollout"},
		},
		"an aborted rollout is denied": {
			objs: ro(func(u *unstructured.Unstructured) {
				set(u, true, "status", "abort")
				set(u, "Degraded", "status", "phase")
				set(u, int64(0), "status", "availableReplicas")
			}),
			want: []Reason{ReasonRolloutAborted, ReasonNotReady}, wantKinds: []string{"Rollout"},
		},
		"a rollout scaled to zero is denied": {
			objs: ro(func(u *unstructured.Unstructured) { set(u, int64(0), "spec", "replicas") }),
			want: []Reason{ReasonScaledToZero}, wantKinds: []string{"Rollout"},
		},
		"ready pods without a controller pass": {
			objs:      []client.Object{podOf("web-a", nil, true), podOf("web-b", nil, true)},
			wantKinds: []string{"Pod", "Pod"},
		},
		"a pod without a controller that is not ready is denied": {
			objs:        []client.Object{podOf("web-a", nil, true), podOf("web-b", nil, false)},
			want:        []Reason{ReasonPodNotReady},
			wantMessage: "service production/web: pod web-b (no controller) is not ready (phase Running); check it: kubectl describe pod/web-b -n production",
			wantKinds:   []string{"Pod", "Pod"},
		},
		"a terminating pod without a controller is denied": {
			objs: func() []client.Object {
				p := podOf("web-a", nil, true)
				p.DeletionTimestamp, p.Finalizers = ptr.To(metav1.Now()), []string{"example.com/hold"}
				return []client.Object{p}
			}(),
			want: []Reason{ReasonPodNotReady}, wantKinds: []string{"Pod"},
		},
		"pods of a job are denied, naming it": {
			objs:        []client.Object{podOf("migrate-x", controllerRef("batch/v1", "Job", "migrate"), true)},
			want:        []Reason{ReasonUnknownWorkload},
			wantMessage: "service production/web: pods selected by app=web belong to job.batch/migrate, which the guard cannot judge; select only pods of a Deployment, StatefulSet, DaemonSet or Argo Rollout, or pods without a controller; or ask the guard's operators for --unknown-workloads=warn",
		},
		"pods of a job are a warning with --unknown-workloads=warn": {
			objs:    []client.Object{podOf("migrate-x", controllerRef("batch/v1", "Job", "migrate"), true)},
			unknown: UnknownWorkloadsWarn,
			want:    []Reason{ReasonUnknownWorkload},
		},
		"pods of a replicaset no deployment controls are denied, naming it": {
			objs: []client.Object{podOf("bare-x", controllerRef("apps/v1", "ReplicaSet", "bare"), true)},
			want: []Reason{ReasonUnknownWorkload},
			wantMessage: "service production/web: pods selected by app=web belong to replicaset.apps/bare, which the guard cannot judge; " +
				"select only pods of a Deployment, StatefulSet, DaemonSet or Argo Rollout, or pods without a controller; or ask the guard's operators for --unknown-workloads=warn",
		},
		"pods of a custom controller are denied and a known workload beside them still judged": {
			objs: append(sts(func(*appsv1.StatefulSet) {}), podOf("db-x", controllerRef("example.com/v1", "Database", "db"), true)),
			want: []Reason{ReasonUnknownWorkload}, wantKinds: []string{"StatefulSet"},
		},
		"pods of a statefulset that is gone are denied as unknown": {
			objs: []client.Object{podOf("web-0", controllerRef("apps/v1", "StatefulSet", "web"), true)},
			want: []Reason{ReasonUnknownWorkload},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := &Input{Reader: workloadReader(true, interceptor.Funcs{}, tc.objs...), Service: webService(), UnknownWorkloads: tc.unknown}
			if in.UnknownWorkloads == "" {
				in.UnknownWorkloads = DefaultUnknownWorkloads
			}
			findings, err := WorkloadReady(t.Context(), in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, reasons(findings)); diff != "" {
				t.Errorf("reasons (-want +got):\n%s\nfindings: %v", diff, findings)
			}
			if tc.wantMessage != "" && (len(findings) == 0 || findings[0].String() != tc.wantMessage) {
				t.Errorf("message:\n got %v\nwant %q", findings, tc.wantMessage)
			}
			var kinds []string
			for _, w := range in.Workloads {
				kinds = append(kinds, w.Kind)
			}
			if diff := cmp.Diff(tc.wantKinds, kinds); diff != "" {
				t.Errorf("workloads (-want +got):\n%s", diff)
			}
			for _, f := range findings {
				if f.Reason == ReasonUnknownWorkload && (f.Severity == Warn) != (tc.unknown == UnknownWorkloadsWarn) {
					t.Errorf("unknown workload finding has severity %v under %q", f.Severity, in.UnknownWorkloads)
				}
			}
		})
	}
}

// A cluster without Argo Rollouts: a ReplicaSet that claims a Rollout as
// its controller is an unknown workload, and the guard does not ask again
// on every decision (a tenant's ReplicaSets cannot send it to discovery
// each time).
func TestRolloutAPINotServed(t *testing.T) {
	var mu sync.Mutex
	rolloutGets := 0
	r := workloadReader(false, interceptor.Funcs{
		Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if u, ok := obj.(*unstructured.Unstructured); ok && u.GroupVersionKind() == RolloutGVK {
				mu.Lock()
				rolloutGets++
				mu.Unlock()
				return &meta.NoKindMatchError{GroupKind: RolloutGVK.GroupKind(), SearchedVersions: []string{"v1alpha1"}}
			}
			return cl.Get(ctx, key, obj, opts...)
		},
	}, rolloutReplicaSet("web", "6d4b"))
	now := time.Unix(1_800_000_000, 0)
	served := &servedAPI{now: func() time.Time { return now }}
	for i := range 3 {
		sel, err := SelectWorkloads(t.Context(), r, webService(), served)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"rollout.argoproj.io/web (argoproj.io/v1alpha1 Rollouts are not served by this cluster)"}
		if diff := cmp.Diff(want, sel.Unknown); diff != "" {
			t.Fatalf("decision %d: unknown (-want +got):\n%s", i, diff)
		}
	}
	if rolloutGets != 1 {
		t.Errorf("the Rollout API was asked %d times in three decisions, want once", rolloutGets)
	}
	now = now.Add(servedAPIRecheck + time.Second)
	if _, err := SelectWorkloads(t.Context(), r, webService(), served); err != nil {
		t.Fatal(err)
	}
	if rolloutGets != 2 {
		t.Errorf("after %s the Rollout API was asked %d times in all, want twice", servedAPIRecheck, rolloutGets)
	}
}

// What a switch reads to find its workloads does not grow with the rest of
// the namespace, for every kind: other apps' workloads, ReplicaSets and
// pods are never read.
func TestSelectWorkloadsReadsDoNotGrowWithTheNamespace(t *testing.T) {
	type reads struct{ Calls, Objects int }
	kinds := map[string]func() []client.Object{
		"statefulset": func() []client.Object {
			ref := controllerRef("apps/v1", "StatefulSet", "web")
			return []client.Object{readyStatefulSet("web", 2), podOf("web-0", ref, true), podOf("web-1", ref, true)}
		},
		"daemonset": func() []client.Object {
			ref := controllerRef("apps/v1", "DaemonSet", "web")
			return []client.Object{readyDaemonSet("web", 2), podOf("web-a", ref, true), podOf("web-b", ref, true)}
		},
		"rollout": func() []client.Object {
			return []client.Object{healthyRollout("web", 2), rolloutReplicaSet("web", "6d4b")}
		},
		"pods without a controller": func() []client.Object {
			return []client.Object{podOf("web-a", nil, true), podOf("web-b", nil, true)}
		},
	}
	// others are apps of every kind that the web Service does not select.
	others := func(n int) []client.Object {
		var objs []client.Object
		for i := range n {
			l := map[string]string{"app": fmt.Sprintf("other-%03d", i)}
			s := readyStatefulSet(fmt.Sprintf("other-sts-%03d", i), 1)
			s.Spec.Template.Labels = l
			d := readyDaemonSet(fmt.Sprintf("other-ds-%03d", i), 1)
			d.Spec.Template.Labels = l
			r := healthyRollout(fmt.Sprintf("other-ro-%03d", i), 1)
			rs := rolloutReplicaSet(r.GetName(), "1a2b")
			rs.Labels = l
			p1 := podOf(fmt.Sprintf("other-sts-%03d-0", i), controllerRef("apps/v1", "StatefulSet", s.Name), true)
			p2 := podOf(fmt.Sprintf("other-bare-%03d", i), nil, true)
			p1.Labels, p2.Labels = l, l
			objs = append(objs, s, d, r, rs, p1, p2)
		}
		return objs
	}
	for kind, mine := range kinds {
		t.Run(kind, func(t *testing.T) {
			measure := func(t *testing.T, n int) reads {
				t.Helper()
				var mu sync.Mutex
				var got reads
				count := func(objects int) {
					mu.Lock()
					defer mu.Unlock()
					got.Calls++
					got.Objects += objects
				}
				r := workloadReader(true, interceptor.Funcs{
					Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
						count(1)
						return cl.Get(ctx, key, obj, opts...)
					},
					List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
						err := cl.List(ctx, list, opts...)
						count(meta.LenList(list))
						return err
					},
				}, append(mine(), others(n)...)...)
				sel, err := SelectWorkloads(t.Context(), r, webService(), nil)
				if err != nil {
					t.Fatal(err)
				}
				if len(sel.Workloads) == 0 || len(sel.Unknown) != 0 {
					t.Fatalf("selected %v, unknown %v", sel.Workloads, sel.Unknown)
				}
				return got
			}
			alone := measure(t, 0)
			t.Logf("reads to find the workloads: %d calls, %d objects", alone.Calls, alone.Objects)
			if diff := cmp.Diff(alone, measure(t, 100)); diff != "" {
				t.Errorf("reads with 100 other apps of each kind in the namespace (-alone +crowded):\n%s", diff)
			}
		})
	}
}

// A selector that selects pods of more workloads than the guard reads for
// one target is denied before any of them is read.
func TestSelectorOverManyWorkloadsIsDenied(t *testing.T) {
	var objs []client.Object
	for i := range maxWorkloadsPerTarget + 1 {
		objs = append(objs, podOf(fmt.Sprintf("web-%03d", i), controllerRef("apps/v1", "StatefulSet", fmt.Sprintf("web-%03d", i)), true))
	}
	gets := 0
	r := workloadReader(true, interceptor.Funcs{
		Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*appsv1.StatefulSet); ok {
				gets++
			}
			return cl.Get(ctx, key, obj, opts...)
		},
	}, objs...)
	findings, err := WorkloadReady(t.Context(), &Input{Reader: r, Service: webService()})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Reason{ReasonTooManyWorkloads}, reasons(findings)); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
	if gets != 0 {
		t.Errorf("%d statefulsets were read", gets)
	}
}

// The database check reads the pod template of every kind of workload.
func TestDatabaseURLOfEachKind(t *testing.T) {
	dsn := "postgres://app@db.internal:5432/app"
	withEnv := func(spec *corev1.PodSpec) {
		spec.Containers[0].Env = []corev1.EnvVar{{Name: "DATABASE_URL", Value: dsn}}
	}
	s := readyStatefulSet("web", 1)
	withEnv(&s.Spec.Template.Spec)
	d := readyDaemonSet("agent", 1)
	withEnv(&d.Spec.Template.Spec)
	p := podOf("bare", nil, true)
	withEnv(&p.Spec)
	ro, _, err := getRollout(t.Context(), workloadReader(true, interceptor.Funcs{}, healthyRollout("web", 1)), "production", "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, w := range map[string]Workload{
		"statefulset": {Kind: KindStatefulSet, Object: s, Template: &s.Spec.Template},
		"daemonset":   {Kind: KindDaemonSet, Object: d, Template: &d.Spec.Template},
		"pod":         {Kind: KindPod, Object: p, Template: &corev1.PodTemplateSpec{ObjectMeta: p.ObjectMeta, Spec: p.Spec}},
		"rollout":     ro,
	} {
		t.Run(name, func(t *testing.T) {
			uses, findings, err := discoverDSNs(t.Context(), fake.NewClientBuilder().Build(), production, []Workload{w}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(findings) != 0 || len(uses) != 1 || uses[0].value != dsn {
				t.Fatalf("uses %v findings %v, want the one connection string", uses, findings)
			}
			if want := "env DATABASE_URL of container app in " + strings.ToLower(w.Kind) + " production/" + w.Name(); uses[0].src.String() != want {
				t.Errorf("source %q, want %q", uses[0].src, want)
			}
		})
	}
}

// The endpoints of a selector switch are the pods the new selector selects:
// Ready, not terminating, with an IP, on each Service port's targetPort.
func TestSelectedPodsReady(t *testing.T) {
	named := func(svc *corev1.Service) *corev1.Service {
		svc.Spec.Ports[0].TargetPort = intstr.FromString("http")
		return svc
	}
	tests := map[string]struct {
		svc  *corev1.Service
		pods []client.Object
		want []Reason
		msg  string
	}{
		"a ready pod on a numeric target port passes":   {pods: []client.Object{podOf("a", nil, true)}},
		"a ready pod with the named target port passes": {svc: named(webService()), pods: []client.Object{podOf("a", nil, true)}},
		"ready pods without the named target port are denied": {
			svc: func() *corev1.Service {
				s := webService()
				s.Spec.Ports[0].TargetPort = intstr.FromString("grpc")
				return s
			}(),
			pods: []client.Object{podOf("a", nil, true)},
			want: []Reason{ReasonNoReadyEndpoints},
			msg:  "service production/web: service web would have no ready endpoints on port 80 after the switch: 1 selected pods are ready, none has container port grpc; check its pods: kubectl get pods -n production -l app=web",
		},
		"no ready pod is denied": {
			pods: []client.Object{podOf("a", nil, false), podOf("b", nil, false)},
			want: []Reason{ReasonNoReadyEndpoints},
			msg:  "service production/web: service web would have no ready endpoints on port 80 after the switch (0 of 2 selected pods ready); check its pods: kubectl get pods -n production -l app=web",
		},
		"a terminating pod does not count": {
			pods: func() []client.Object {
				p := podOf("a", nil, true)
				p.DeletionTimestamp, p.Finalizers = ptr.To(metav1.Now()), []string{"example.com/hold"}
				return []client.Object{p}
			}(),
			want: []Reason{ReasonNoReadyEndpoints},
		},
		"a pod without an IP does not count": {
			pods: func() []client.Object {
				p := podOf("a", nil, true)
				p.Status.PodIP = ""
				return []client.Object{p}
			}(),
			want: []Reason{ReasonNoReadyEndpoints},
		},
		"a selector that selects no pods is denied": {
			want: []Reason{ReasonSelectorMatchesNoPods},
			msg:  "service production/web: the new selector app=web of service web selects no pods; check its pods: kubectl get pods -n production -l app=web",
		},
		"pods of another namespace do not count": {
			pods: func() []client.Object {
				p := podOf("a", nil, true)
				p.Namespace = "staging"
				return []client.Object{p}
			}(),
			want: []Reason{ReasonSelectorMatchesNoPods},
		},
		"removing the selector is a warning": {
			svc:  service("web", nil, 80),
			want: []Reason{ReasonSelectorRemoved},
		},
		"every port needs a ready pod": {
			svc: func() *corev1.Service {
				s := webService()
				s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "admin", Port: 9000, TargetPort: intstr.FromString("admin")})
				return s
			}(),
			pods: []client.Object{podOf("a", nil, true)},
			want: []Reason{ReasonNoReadyEndpoints},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			svc := tc.svc
			if svc == nil {
				svc = webService()
			}
			in := &Input{Reader: fakeReader(tc.pods...), Service: svc, Target: Target{Service: production, Proposed: svc}}
			findings, err := SelectedPodsReady(t.Context(), in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, reasons(findings)); diff != "" {
				t.Errorf("reasons (-want +got):\n%s", diff)
			}
			if tc.msg != "" && (len(findings) == 0 || findings[0].String() != tc.msg) {
				t.Errorf("message:\n got %v\nwant %q", findings, tc.msg)
			}
		})
	}
}

// A selector switch is judged on the Service as the update writes it, not
// as stored: Guard checks the newly selected pods' workloads and pods.
func TestGuardEvaluatesSelectorSwitch(t *testing.T) {
	blue, greenDep := readyDeployment("app-blue", 2), readyDeployment("app-green", 2)
	greenDep.Status.ReadyReplicas, greenDep.Status.AvailableReplicas = 0, 0
	greenRS := replicaSetOf(greenDep, "6a1e", 2)
	stored := service("app", map[string]string{"app": "myapp", "version": "blue"}, 80)
	proposed := stored.DeepCopy()
	proposed.Spec.Selector = map[string]string{"app": "myapp", "version": "green"}
	r := fakeReader(stored, blue, replicaSetOf(blue, "5c4b", 2), greenDep, greenRS, pendingPod(greenRS, 0), pendingPod(greenRS, 1))
	g := &Guard{Reader: r}
	nn := types.NamespacedName{Namespace: "production", Name: "app"}
	res, err := g.Evaluate(t.Context(), []Target{{Route: nn, RouteKind: "Service", Service: nn, Proposed: proposed}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Reason{ReasonNotReady, ReasonNoReadyEndpoints, ReasonDatabaseNotChecked}, reasons(res.Findings)); diff != "" {
		t.Errorf("reasons (-want +got):\n%s\n%v", diff, res.Findings)
	}
	var observed []string
	for _, o := range res.Observed {
		observed = append(observed, o.Kind+" "+o.Name)
	}
	if diff := cmp.Diff([]string{"Service app", "Deployment app-green"}, observed); diff != "" {
		t.Errorf("observed (-want +got):\n%s", diff)
	}
}
