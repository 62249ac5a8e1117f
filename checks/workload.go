package checks

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The kinds of workload the guard judges.
const (
	KindDeployment  = "Deployment"
	KindStatefulSet = "StatefulSet"
	KindDaemonSet   = "DaemonSet"
	KindRollout     = "Rollout"
	// KindPod is a pod without a controller.
	KindPod = "Pod"
)

// RolloutGVK is the Argo Rollouts Rollout, read as unstructured when its
// API is served.
var RolloutGVK = schema.GroupVersionKind{Group: "argoproj.io", Version: "v1alpha1", Kind: "Rollout"}

// Reasons found by WorkloadReady besides the Deployment's.
const (
	ReasonUnknownWorkload  Reason = "UnknownWorkload"
	ReasonTooManyWorkloads Reason = "TooManyWorkloads"
	ReasonNothingScheduled Reason = "NothingScheduled"
	ReasonRolloutAborted   Reason = "RolloutAborted"
	ReasonPodNotReady      Reason = "PodNotReady"
)

// UnknownWorkloads says what a Service whose pods belong to a controller the
// guard cannot judge (a Job, a custom controller, a ReplicaSet no
// Deployment or Rollout controls) gets: a denial or a warning.
type UnknownWorkloads string

const (
	// UnknownWorkloadsDeny denies the switch, naming the controller found.
	UnknownWorkloadsDeny UnknownWorkloads = "deny"
	// UnknownWorkloadsWarn allows it with a warning; the endpoints and
	// database checks still decide.
	UnknownWorkloadsWarn UnknownWorkloads = "warn"
	// DefaultUnknownWorkloads is the default of --unknown-workloads.
	DefaultUnknownWorkloads = UnknownWorkloadsDeny
)

// ParseUnknownWorkloads reads the value of --unknown-workloads.
func ParseUnknownWorkloads(s string) (UnknownWorkloads, error) {
	switch u := UnknownWorkloads(s); u {
	case UnknownWorkloadsDeny, UnknownWorkloadsWarn:
		return u, nil
	}
	return "", fmt.Errorf("%q is not deny or warn", s)
}

// maxWorkloadsPerTarget bounds the workloads (and pods without a
// controller) one target's selector may select: each is one GET, and a
// tenant's selector must not make the guard read without bound. More is a
// denial.
const maxWorkloadsPerTarget = 32

// Workload is one controller of the pods a Service selects, or one pod that
// has none.
type Workload struct {
	// Kind is one of the Kind* constants.
	Kind string
	// Object is the workload as read: *appsv1.Deployment,
	// *appsv1.StatefulSet, *appsv1.DaemonSet, *unstructured.Unstructured
	// (a Rollout) or *corev1.Pod.
	Object client.Object
	// Template is what its pods are made of (a bare pod's own metadata and
	// spec); nil when the guard cannot read one (a Rollout that refers to a
	// Deployment's template with workloadRef).
	Template *corev1.PodTemplateSpec
}

// Name is the workload's name.
func (w Workload) Name() string { return w.Object.GetName() }

// Ref names the workload as messages do: "statefulset db".
func (w Workload) Ref() string { return strings.ToLower(w.Kind) + " " + w.Name() }

// kubectlRef is the workload as kubectl names it: "statefulset/db".
func (w Workload) kubectlRef() string {
	if w.Kind == KindRollout {
		return "rollout.argoproj.io/" + w.Name()
	}
	return strings.ToLower(w.Kind) + "/" + w.Name()
}

// deploymentWorkload wraps a Deployment.
func deploymentWorkload(d *appsv1.Deployment) Workload {
	return Workload{Kind: KindDeployment, Object: d, Template: &d.Spec.Template}
}

// WorkloadSelection is what SelectWorkloads found behind a Service.
type WorkloadSelection struct {
	// Workloads are those the guard judges, sorted by kind and name.
	Workloads []Workload
	// Unknown names, sorted, the controllers of selected pods the guard
	// cannot judge, as kubectl names them ("job.batch/migrate"), with why
	// when it is not the kind ("statefulset.apps/db (not found)").
	Unknown []string
	// TooMany is the number of workloads found when it exceeds
	// maxWorkloadsPerTarget; none were read then.
	TooMany int
}

// servedAPI remembers briefly that an optional API (the Argo Rollouts
// Rollout) is not served, so that pods claiming such a controller do not
// send the guard to discovery on every decision.
type servedAPI struct {
	mu        sync.Mutex
	absentTil time.Time
	now       func() time.Time
}

// servedAPIRecheck is how long "not served" is believed.
const servedAPIRecheck = 30 * time.Second

func (s *servedAPI) knownAbsent() bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clock().Before(s.absentTil)
}

func (s *servedAPI) markAbsent() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.absentTil = s.clock().Add(servedAPIRecheck)
}

func (s *servedAPI) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// owners are the names of the controllers found, by kind, and the rest.
type owners struct {
	deployments, rollouts, statefulSets, daemonSets, pods map[string]bool
	unknown                                               map[string]bool
}

func newOwners() *owners {
	return &owners{deployments: map[string]bool{}, rollouts: map[string]bool{}, statefulSets: map[string]bool{},
		daemonSets: map[string]bool{}, pods: map[string]bool{}, unknown: map[string]bool{}}
}

func (o *owners) count() int {
	return len(o.deployments) + len(o.rollouts) + len(o.statefulSets) + len(o.daemonSets) + len(o.pods) + len(o.unknown)
}

// SelectWorkloads finds the workloads whose pods svc's selector selects,
// without listing any kind of workload in the namespace: it reads the
// Deployment named like the Service (GET), the ReplicaSets and the pods
// whose labels match the selector (two label-selected LISTs of their
// metadata), and then, by name, each controller their controller references
// point to: a ReplicaSet's Deployment or Argo Rollout, a pod's StatefulSet
// or DaemonSet, and each pod that has no controller. Its reads grow with what
// the selector selects, never with the rest of the namespace, and are
// bounded by maxWorkloadsPerTarget.
//
// The ReplicaSet list finds a Deployment whose pods are all Pending or that
// is scaled to zero (its controller keeps the ReplicaSet); the Deployment
// named like the Service is found before its first ReplicaSet exists. A
// Deployment is selected only when its pod template matches the selector
// (a rollout may have moved it away). A Rollout is read only when the
// cluster serves argoproj.io/v1alpha1 (rollouts remembers briefly when it
// does not; nil remembers nothing).
func SelectWorkloads(ctx context.Context, r client.Reader, svc *corev1.Service, rollouts *servedAPI) (WorkloadSelection, error) {
	var sel WorkloadSelection
	if len(svc.Spec.Selector) == 0 {
		return sel, nil
	}
	var rsMeta, podMeta []metav1.PartialObjectMetadata
	var named *appsv1.Deployment
	eg, egCtx := errgroup.WithContext(ctx)
	eg.Go(func() (err error) {
		rsMeta, err = listSelectedMetadata(egCtx, r, svc, replicaSetListGVK, "replicasets.apps")
		return err
	})
	eg.Go(func() (err error) {
		podMeta, err = listSelectedMetadata(egCtx, r, svc, podListGVK, "pods")
		return err
	})
	eg.Go(func() (err error) {
		named, err = getDeployment(egCtx, r, svc.Namespace, svc.Name)
		return err
	})
	if err := eg.Wait(); err != nil {
		return sel, err
	}

	o := newOwners()
	if named != nil {
		o.deployments[named.Name] = true
	}
	owned := replicaSetControllers(rsMeta, o)
	podControllers(podMeta, owned, o)
	if n := o.count(); n > maxWorkloadsPerTarget {
		sel.TooMany = n
		return sel, nil
	}
	for u := range o.unknown {
		sel.Unknown = append(sel.Unknown, u)
	}
	if err := readOwners(ctx, r, svc, named, o, rollouts, &sel); err != nil {
		return sel, err
	}
	slices.Sort(sel.Unknown)
	sort.SliceStable(sel.Workloads, func(i, j int) bool {
		a, b := sel.Workloads[i], sel.Workloads[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Name() < b.Name()
	})
	return sel, nil
}

// listSelectedMetadata lists the metadata of the objects of list kind gvk in
// svc's namespace whose labels match svc's selector, from the API server's
// watch cache: the list only finds names, each controller (and each pod
// without one) is then read by a GET (see reads.go).
func listSelectedMetadata(ctx context.Context, r client.Reader, svc *corev1.Service, gvk schema.GroupVersionKind, resource string) ([]metav1.PartialObjectMetadata, error) {
	list := selectedMetadataList(gvk)
	if err := r.List(ctx, list, selectedListOptions(svc.Namespace, svc.Spec.Selector)...); err != nil {
		err = fmt.Errorf("listing %s that match the selector of service %s/%s: %w", strings.SplitN(resource, ".", 2)[0], svc.Namespace, svc.Name, err)
		if apierrors.IsForbidden(err) {
			err = fmt.Errorf("%w; grant the guard list on %s (apply this version's manifests/rbac)", err, resource)
		}
		return nil, err
	}
	return list.Items, nil
}

// selectedMetadataList is an empty metadata list of list kind gvk.
func selectedMetadataList(gvk schema.GroupVersionKind) *metav1.PartialObjectMetadataList {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(gvk)
	return list
}

// selectedListOptions select the objects of namespace ns whose labels match
// selector, from the watch cache: what SelectWorkloads lists, and what
// Guard reads ahead with a Service's remembered selector.
func selectedListOptions(ns string, selector map[string]string) []client.ListOption {
	return []client.ListOption{client.InNamespace(ns), client.MatchingLabels(selector), fromCache()}
}

// Kinds SelectWorkloads lists by a Service's selector.
var (
	replicaSetListGVK = appsv1.SchemeGroupVersion.WithKind("ReplicaSetList")
	podListGVK        = corev1.SchemeGroupVersion.WithKind("PodList")
)

// controllerOf returns the controller reference of obj and its API group;
// ok is false when it has none (or an unreadable apiVersion).
func controllerOf(obj *metav1.PartialObjectMetadata) (ref *metav1.OwnerReference, group string, ok bool) {
	ref = metav1.GetControllerOfNoCopy(obj)
	if ref == nil {
		return nil, "", false
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return nil, "", false
	}
	return ref, gv.Group, true
}

// replicaSetControllers records the Deployments and Rollouts that control
// the listed ReplicaSets and returns the names of the ReplicaSets they
// control.
func replicaSetControllers(rs []metav1.PartialObjectMetadata, o *owners) map[string]bool {
	owned := map[string]bool{}
	for i := range rs {
		ref, group, ok := controllerOf(&rs[i])
		switch {
		case !ok:
		case ref.Kind == KindDeployment && group == appsv1.GroupName:
			o.deployments[ref.Name] = true
			owned[rs[i].Name] = true
		case ref.Kind == KindRollout && group == RolloutGVK.Group:
			o.rollouts[ref.Name] = true
			owned[rs[i].Name] = true
		}
	}
	return owned
}

// podControllers records the controllers of the listed pods: StatefulSets,
// DaemonSets, pods without one, and, as unknown, every other controller
// (a ReplicaSet only when no Deployment or Rollout controls it).
func podControllers(pods []metav1.PartialObjectMetadata, ownedReplicaSets map[string]bool, o *owners) {
	for i := range pods {
		p := &pods[i]
		ref, group, ok := controllerOf(p)
		switch {
		case metav1.GetControllerOfNoCopy(p) == nil:
			o.pods[p.Name] = true
		case !ok:
			o.unknown[fmt.Sprintf("pod/%s (controller with an unreadable apiVersion)", p.Name)] = true
		case group == appsv1.GroupName && ref.Kind == KindStatefulSet:
			o.statefulSets[ref.Name] = true
		case group == appsv1.GroupName && ref.Kind == KindDaemonSet:
			o.daemonSets[ref.Name] = true
		case group == appsv1.GroupName && ref.Kind == "ReplicaSet" && ownedReplicaSets[ref.Name]:
			// judged through its Deployment or Rollout
		default:
			o.unknown[kubectlName(ref.Kind, group, ref.Name)] = true
		}
	}
}

// kubectlName names an object as kubectl accepts it: "job.batch/migrate".
func kubectlName(kind, group, name string) string {
	k := strings.ToLower(kind)
	if group != "" {
		k += "." + group
	}
	return k + "/" + name
}

// readOwners reads each controller found, by name, into sel. Each read is
// its own GET (see getDeployment and its kin), one after the other.
func readOwners(ctx context.Context, r client.Reader, svc *corev1.Service, named *appsv1.Deployment, o *owners, rollouts *servedAPI, sel *WorkloadSelection) error {
	selector := labels.SelectorFromSet(svc.Spec.Selector)
	for _, name := range slices.Sorted(maps.Keys(o.deployments)) {
		d := named
		if d == nil || d.Name != name {
			var err error
			if d, err = getDeployment(ctx, r, svc.Namespace, name); err != nil {
				return err
			}
		}
		if d != nil && selector.Matches(labels.Set(d.Spec.Template.Labels)) {
			sel.Workloads = append(sel.Workloads, deploymentWorkload(d))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(o.statefulSets)) {
		s := &appsv1.StatefulSet{}
		found, err := getNamed(ctx, r, svc.Namespace, name, "statefulset", s)
		if err != nil {
			return err
		}
		if !found {
			sel.Unknown = append(sel.Unknown, kubectlName(KindStatefulSet, appsv1.GroupName, name)+" (not found)")
			continue
		}
		sel.Workloads = append(sel.Workloads, Workload{Kind: KindStatefulSet, Object: s, Template: &s.Spec.Template})
	}
	for _, name := range slices.Sorted(maps.Keys(o.daemonSets)) {
		ds := &appsv1.DaemonSet{}
		found, err := getNamed(ctx, r, svc.Namespace, name, "daemonset", ds)
		if err != nil {
			return err
		}
		if !found {
			sel.Unknown = append(sel.Unknown, kubectlName(KindDaemonSet, appsv1.GroupName, name)+" (not found)")
			continue
		}
		sel.Workloads = append(sel.Workloads, Workload{Kind: KindDaemonSet, Object: ds, Template: &ds.Spec.Template})
	}
	for _, name := range slices.Sorted(maps.Keys(o.rollouts)) {
		w, why, err := getRollout(ctx, r, svc.Namespace, name, rollouts)
		if err != nil {
			return err
		}
		if why != "" {
			sel.Unknown = append(sel.Unknown, kubectlName(KindRollout, RolloutGVK.Group, name)+" ("+why+")")
			continue
		}
		sel.Workloads = append(sel.Workloads, w)
	}
	for _, name := range slices.Sorted(maps.Keys(o.pods)) {
		p := &corev1.Pod{}
		found, err := getNamed(ctx, r, svc.Namespace, name, "pod", p)
		if err != nil {
			return err
		}
		if found && metav1.GetControllerOf(p) == nil { // gone, or adopted since the list
			sel.Workloads = append(sel.Workloads, Workload{Kind: KindPod, Object: p,
				Template: &corev1.PodTemplateSpec{ObjectMeta: *p.ObjectMeta.DeepCopy(), Spec: p.Spec}})
		}
	}
	return nil
}

// getNamed reads one object by name into obj; found is false when there is
// none of that name.
func getNamed(ctx context.Context, r client.Reader, namespace, name, what string, obj client.Object) (found bool, err error) {
	err = r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, obj)
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("reading %s %s/%s: %w", what, namespace, name, err)
	}
	return true, nil
}

// getDeployment reads one Deployment; nil when there is none of that name.
func getDeployment(ctx context.Context, r client.Reader, namespace, name string) (*appsv1.Deployment, error) {
	var d appsv1.Deployment
	found, err := getNamed(ctx, r, namespace, name, "deployment", &d)
	if err != nil || !found {
		return nil, err
	}
	return &d, nil
}

// getRollout reads one Argo Rollout as unstructured. why says, when it is
// not a workload the guard can judge, what stands in the way: the API is not
// served, or there is no Rollout of that name.
func getRollout(ctx context.Context, r client.Reader, namespace, name string, served *servedAPI) (w Workload, why string, err error) {
	const notServed = "argoproj.io/v1alpha1 Rollouts are not served by this cluster"
	if served.knownAbsent() {
		return w, notServed, nil
	}
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(RolloutGVK)
	err = r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, u)
	switch {
	case meta.IsNoMatchError(err):
		served.markAbsent()
		return w, notServed, nil
	case apierrors.IsNotFound(err):
		return w, "not found", nil
	case err != nil:
		err = fmt.Errorf("reading rollout %s/%s: %w", namespace, name, err)
		if apierrors.IsForbidden(err) {
			err = fmt.Errorf("%w; grant the guard get on rollouts.argoproj.io (apply this version's manifests/rbac)", err)
		}
		return w, "", err
	}
	w = Workload{Kind: KindRollout, Object: u}
	if tmpl, ok, _ := unstructured.NestedMap(u.Object, "spec", "template"); ok {
		var t corev1.PodTemplateSpec
		if runtime.DefaultUnstructuredConverter.FromUnstructured(tmpl, &t) == nil {
			w.Template = &t
		}
	}
	return w, "", nil
}

// WorkloadReady selects the workloads behind in.Service (see
// SelectWorkloads), sets in.Workloads (and in.Deployments, those of them
// that are Deployments), and reports every way in which they are not fully
// rolled out, each kind by its own rule (see deploymentReady,
// statefulSetReady, daemonSetReady, rolloutReady, podReady). Pods whose
// controller the guard cannot judge are a denial naming it, or a warning
// under UnknownWorkloadsWarn.
func WorkloadReady(ctx context.Context, in *Input) ([]Finding, error) {
	sel, err := SelectWorkloads(ctx, in.Reader, in.Service, in.rollouts)
	if err != nil {
		return nil, err
	}
	in.Workloads = sel.Workloads
	in.Deployments = nil
	for _, w := range sel.Workloads {
		if d, ok := w.Object.(*appsv1.Deployment); ok {
			in.Deployments = append(in.Deployments, *d)
		}
	}
	return workloadsReady(in.Service, sel, in.UnknownWorkloads), nil
}

// workloadsReady is WorkloadReady's verdict on a selection.
func workloadsReady(svc *corev1.Service, sel WorkloadSelection, unknown UnknownWorkloads) []Finding {
	selector := labels.SelectorFromSet(svc.Spec.Selector)
	finding := func(sev Severity, reason Reason, msg, fix string) Finding {
		return Finding{Check: CheckDeployment, Severity: sev, Service: namespacedName(svc), Object: "service " + svc.Name, Reason: reason, Message: msg, Fix: fix}
	}
	if sel.TooMany > 0 {
		return []Finding{finding(Deny, ReasonTooManyWorkloads,
			fmt.Sprintf("the selector %s of service %s selects pods of %d workloads; the guard checks at most %d", selector, svc.Name, sel.TooMany, maxWorkloadsPerTarget),
			"narrow the selector to the pods of the workload that should take the traffic")}
	}
	var out []Finding
	if len(sel.Unknown) > 0 {
		sev, fix := Deny, "select only pods of a Deployment, StatefulSet, DaemonSet or Argo Rollout, or pods without a controller; or ask the guard's operators for --unknown-workloads=warn"
		if unknown == UnknownWorkloadsWarn {
			sev, fix = Warn, ""
		}
		out = append(out, finding(sev, ReasonUnknownWorkload,
			fmt.Sprintf("pods selected by %s belong to %s, which the guard cannot judge", selector, nameList(sel.Unknown)), fix))
	}
	if len(sel.Workloads) == 0 {
		if len(svc.Spec.Selector) == 0 || len(sel.Unknown) > 0 {
			return out // no selector: endpoints are managed by hand; EndpointsReady decides
		}
		return []Finding{{
			Check: CheckDeployment, Severity: Warn, Service: namespacedName(svc), Object: "service " + svc.Name, Reason: ReasonNoDeployment,
			Message: fmt.Sprintf("no deployment named %s, and no pods or replicasets that match %s; workload readiness not checked",
				svc.Name, selector),
		}}
	}
	for _, w := range sel.Workloads {
		switch o := w.Object.(type) {
		case *appsv1.Deployment:
			out = append(out, deploymentReady(svc, o)...)
		case *appsv1.StatefulSet:
			out = append(out, statefulSetReady(svc, o)...)
		case *appsv1.DaemonSet:
			out = append(out, daemonSetReady(svc, o)...)
		case *unstructured.Unstructured:
			out = append(out, rolloutReady(svc, o)...)
		case *corev1.Pod:
			out = append(out, podReady(svc, o)...)
		}
	}
	return out
}

// workloadFinding builds the findings of one workload.
func workloadFinding(svc *corev1.Service, w Workload) func(sev Severity, reason Reason, msg, fix string) Finding {
	return func(sev Severity, reason Reason, msg, fix string) Finding {
		return Finding{Check: CheckDeployment, Severity: sev, Service: namespacedName(svc), Object: w.Ref(), Reason: reason, Message: msg, Fix: fix}
	}
}

func replicasOr1(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

// scaledToZeroFinding is the denial of a workload that asks for no replicas.
func scaledToZeroFinding(f func(Severity, Reason, string, string) Finding, w Workload, ns string) Finding {
	return f(Deny, ReasonScaledToZero, w.Ref()+" is scaled to zero",
		fmt.Sprintf("scale it up before switching: kubectl scale %s -n %s --replicas=<n> && kubectl rollout status %s -n %s",
			w.kubectlRef(), ns, w.kubectlRef(), ns))
}

// statefulSetReady: at least one replica, the latest generation observed,
// no revision rolling out (updateRevision == currentRevision), and every
// replica ready and updated.
func statefulSetReady(svc *corev1.Service, s *appsv1.StatefulSet) []Finding {
	w := Workload{Kind: KindStatefulSet, Object: s}
	f := workloadFinding(svc, w)
	want := replicasOr1(s.Spec.Replicas)
	if want == 0 {
		return []Finding{scaledToZeroFinding(f, w, s.Namespace)}
	}
	wait := fmt.Sprintf("wait for: kubectl rollout status statefulset/%s -n %s", s.Name, s.Namespace)
	st := s.Status
	var out []Finding
	switch {
	case st.ObservedGeneration < s.Generation:
		out = append(out, f(Deny, ReasonRolloutNotObserved,
			fmt.Sprintf("statefulset %s has a change the controller has not observed yet (generation %d, observed %d)", s.Name, s.Generation, st.ObservedGeneration), wait))
	case st.UpdateRevision != st.CurrentRevision || st.ReadyReplicas != want || st.UpdatedReplicas != want || st.Replicas != want:
		msg := fmt.Sprintf("statefulset %s is not ready (%d/%d ready, %d/%d updated", s.Name, st.ReadyReplicas, want, st.UpdatedReplicas, want)
		if st.UpdateRevision != st.CurrentRevision {
			msg += ", rolling out revision " + st.UpdateRevision
		}
		out = append(out, f(Deny, ReasonNotReady, msg+")", wait))
	}
	if !hasReadinessProbe(&s.Spec.Template.Spec) {
		out = append(out, f(Warn, ReasonNoReadinessProbe, fmt.Sprintf("statefulset %s has no readinessProbe, so Ready says little", s.Name), ""))
	}
	return out
}

// daemonSetReady: the latest generation observed, at least one pod to
// schedule, and every scheduled pod updated, ready and available.
func daemonSetReady(svc *corev1.Service, ds *appsv1.DaemonSet) []Finding {
	w := Workload{Kind: KindDaemonSet, Object: ds}
	f := workloadFinding(svc, w)
	wait := fmt.Sprintf("wait for: kubectl rollout status daemonset/%s -n %s", ds.Name, ds.Namespace)
	st := ds.Status
	var out []Finding
	switch {
	case st.ObservedGeneration < ds.Generation:
		out = append(out, f(Deny, ReasonRolloutNotObserved,
			fmt.Sprintf("daemonset %s has a change the controller has not observed yet (generation %d, observed %d)", ds.Name, ds.Generation, st.ObservedGeneration), wait))
	case st.DesiredNumberScheduled == 0:
		out = append(out, f(Deny, ReasonNothingScheduled, fmt.Sprintf("daemonset %s runs no pods: no node matches it", ds.Name),
			fmt.Sprintf("check its nodeSelector, affinity and tolerations: kubectl describe daemonset/%s -n %s", ds.Name, ds.Namespace)))
	case st.UpdatedNumberScheduled != st.DesiredNumberScheduled || st.NumberReady != st.DesiredNumberScheduled || st.NumberUnavailable != 0:
		out = append(out, f(Deny, ReasonNotReady,
			fmt.Sprintf("daemonset %s is not ready (%d/%d ready, %d/%d updated, %d unavailable)", ds.Name,
				st.NumberReady, st.DesiredNumberScheduled, st.UpdatedNumberScheduled, st.DesiredNumberScheduled, st.NumberUnavailable), wait))
	}
	if !hasReadinessProbe(&ds.Spec.Template.Spec) {
		out = append(out, f(Warn, ReasonNoReadinessProbe, fmt.Sprintf("daemonset %s has no readinessProbe, so Ready says little", ds.Name), ""))
	}
	return out
}

// rolloutReady judges an Argo Rollout: at least one replica, not paused or
// aborted, the latest generation observed, and either phase Healthy or the
// stable ReplicaSet is the current one with every replica ready and
// available.
func rolloutReady(svc *corev1.Service, u *unstructured.Unstructured) []Finding {
	w := Workload{Kind: KindRollout, Object: u}
	f := workloadFinding(svc, w)
	name, ns := u.GetName(), u.GetNamespace()
	want := int32(1)
	if n, ok, _ := unstructured.NestedInt64(u.Object, "spec", "replicas"); ok {
		want = int32(n)
	}
	if want == 0 {
		return []Finding{scaledToZeroFinding(f, w, ns)}
	}
	str := func(fields ...string) string { s, _, _ := unstructured.NestedString(u.Object, fields...); return s }
	num := func(fields ...string) int64 { n, _, _ := unstructured.NestedInt64(u.Object, fields...); return n }
	flag := func(fields ...string) bool { b, _, _ := unstructured.NestedBool(u.Object, fields...); return b }
	wait := fmt.Sprintf("wait for: kubectl argo rollouts status %s -n %s", name, ns)
	var out []Finding
	if flag("spec", "paused") {
		out = append(out, f(Deny, ReasonPaused, fmt.Sprintf("rollout %s is paused", name),
			fmt.Sprintf("resume it: kubectl argo rollouts promote %s -n %s", name, ns)))
	}
	if flag("status", "abort") {
		out = append(out, f(Deny, ReasonRolloutAborted, fmt.Sprintf("rollout %s is aborted", name),
			fmt.Sprintf("find the cause with: kubectl argo rollouts get rollout %s -n %s", name, ns)))
	}
	observed, known := rolloutObservedGeneration(u)
	phase := str("status", "phase")
	stable, current := str("status", "stableRS"), str("status", "currentPodHash")
	ready, available := num("status", "readyReplicas"), num("status", "availableReplicas")
	healthy := phase == "Healthy" || (stable != "" && stable == current && ready == int64(want) && available == int64(want))
	switch {
	case known && observed < u.GetGeneration():
		out = append(out, f(Deny, ReasonRolloutNotObserved,
			fmt.Sprintf("rollout %s has a change the controller has not observed yet (generation %d, observed %d)", name, u.GetGeneration(), observed), wait))
	case !healthy:
		msg := fmt.Sprintf("rollout %s is not ready (%d/%d ready, %d/%d available", name, ready, want, available, want)
		if phase != "" {
			msg += ", phase " + oneWord(phase)
		}
		if stable != current {
			msg += ", stable revision is not the current one"
		}
		out = append(out, f(Deny, ReasonNotReady, msg+")", wait))
	}
	if t, ok, _ := unstructured.NestedMap(u.Object, "spec", "template", "spec"); ok { // none with a workloadRef
		var spec corev1.PodSpec
		if runtime.DefaultUnstructuredConverter.FromUnstructured(t, &spec) == nil && !hasReadinessProbe(&spec) {
			out = append(out, f(Warn, ReasonNoReadinessProbe, fmt.Sprintf("rollout %s has no readinessProbe, so Ready says little", name), ""))
		}
	}
	return out
}

// rolloutObservedGeneration reads status.observedGeneration, which Argo
// Rollouts writes as a string of the generation (older releases wrote a
// hash, which says nothing here: known is false).
func rolloutObservedGeneration(u *unstructured.Unstructured) (gen int64, known bool) {
	v, ok, _ := unstructured.NestedFieldNoCopy(u.Object, "status", "observedGeneration")
	if !ok {
		return 0, true // never observed: 0 < generation
	}
	switch x := v.(type) {
	case int64:
		return x, true
	case float64:
		return int64(x), true
	case string:
		var n int64
		if _, err := fmt.Sscanf(x, "%d", &n); err == nil && fmt.Sprint(n) == x {
			return n, true
		}
	}
	return 0, false
}

// oneWord bounds a value a tenant writes (a Rollout's phase) in a message.
func oneWord(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return '?'
		}
		return r
	}, s)
	if len(s) > 32 {
		s = s[:29] + "..."
	}
	return s
}

// podReady judges a pod without a controller: Ready and not terminating.
func podReady(svc *corev1.Service, p *corev1.Pod) []Finding {
	w := Workload{Kind: KindPod, Object: p}
	f := workloadFinding(svc, w)
	fix := fmt.Sprintf("check it: kubectl describe pod/%s -n %s", p.Name, p.Namespace)
	switch {
	case p.DeletionTimestamp != nil:
		return []Finding{f(Deny, ReasonPodNotReady, fmt.Sprintf("pod %s (no controller) is terminating", p.Name), "")}
	case !podIsReady(p) && p.Status.Phase != "":
		return []Finding{f(Deny, ReasonPodNotReady, fmt.Sprintf("pod %s (no controller) is not ready (phase %s)", p.Name, p.Status.Phase), fix)}
	case !podIsReady(p):
		return []Finding{f(Deny, ReasonPodNotReady, fmt.Sprintf("pod %s (no controller) is not ready", p.Name), fix)}
	}
	return nil
}

// podIsReady reports a pod whose Ready condition is True.
func podIsReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
