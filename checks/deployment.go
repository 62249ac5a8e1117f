package checks

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Reasons found by DeploymentReady.
const (
	ReasonNoDeployment             Reason = "NoDeployment"
	ReasonScaledToZero             Reason = "ScaledToZero"
	ReasonPaused                   Reason = "Paused"
	ReasonProgressDeadlineExceeded Reason = "ProgressDeadlineExceeded"
	ReasonRolloutNotObserved       Reason = "RolloutNotObserved"
	ReasonNotReady                 Reason = "NotReady"
	ReasonNoReadinessProbe         Reason = "NoReadinessProbe"
)

// SelectDeployments returns the Deployments in the Service's namespace whose
// pod template labels match the Service selector, sorted by name. A Service
// without a selector selects none.
//
// It reads only the target's own objects, so its cost does not grow with the
// namespace: the Deployment named like the Service (GET), and the ReplicaSets
// whose labels match the selector (a label-selected LIST of their metadata)
// with the Deployments that control them (GETs, once each). The deployment
// controller copies a Deployment's pod template labels onto every ReplicaSet
// it makes and keeps the current one when the Deployment is scaled to zero,
// so a Deployment mid-rollout, one whose pods are all Pending and one scaled
// to zero are all found. A Deployment named unlike the Service for which the
// controller has made no ReplicaSet yet (just created, or created paused) is
// not found.
func SelectDeployments(ctx context.Context, r client.Reader, svc *corev1.Service) ([]appsv1.Deployment, error) {
	if len(svc.Spec.Selector) == 0 {
		return nil, nil
	}
	var owners []string
	var named *appsv1.Deployment
	eg, egCtx := errgroup.WithContext(ctx)
	eg.Go(func() (err error) {
		owners, err = replicaSetOwners(egCtx, r, svc)
		return err
	})
	eg.Go(func() (err error) {
		named, err = getDeployment(egCtx, r, svc.Namespace, svc.Name)
		return err
	})
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	found := map[string]*appsv1.Deployment{}
	if named != nil {
		found[named.Name] = named
	}
	for _, name := range owners {
		if _, ok := found[name]; ok {
			continue
		}
		d, err := getDeployment(ctx, r, svc.Namespace, name)
		if err != nil {
			return nil, err
		}
		if d != nil {
			found[name] = d
		}
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var out []appsv1.Deployment
	for _, d := range found {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			out = append(out, *d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// replicaSetOwners returns the names of the Deployments that control a
// ReplicaSet in svc's namespace whose labels match svc's selector, sorted and
// without repeats.
func replicaSetOwners(ctx context.Context, r client.Reader, svc *corev1.Service) ([]string, error) {
	var list metav1.PartialObjectMetadataList
	list.SetGroupVersionKind(appsv1.SchemeGroupVersion.WithKind("ReplicaSetList"))
	// From the cache: the list only finds names; each Deployment is then
	// read by a quorum GET (see reads.go).
	if err := r.List(ctx, &list, client.InNamespace(svc.Namespace), client.MatchingLabels(svc.Spec.Selector), fromCache()); err != nil {
		err = fmt.Errorf("listing replicasets that match the selector of service %s/%s: %w", svc.Namespace, svc.Name, err)
		if apierrors.IsForbidden(err) {
			err = fmt.Errorf("%w; grant the guard list on replicasets.apps (apply this version's manifests/rbac)", err)
		}
		return nil, err
	}
	var names []string
	for i := range list.Items {
		ref := metav1.GetControllerOfNoCopy(&list.Items[i])
		if ref == nil || ref.Kind != "Deployment" {
			continue
		}
		if gv, err := schema.ParseGroupVersion(ref.APIVersion); err != nil || gv.Group != appsv1.GroupName {
			continue
		}
		names = append(names, ref.Name)
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// getDeployment reads one Deployment; nil when there is none of that name.
func getDeployment(ctx context.Context, r client.Reader, namespace, name string) (*appsv1.Deployment, error) {
	var d appsv1.Deployment
	err := r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &d)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading deployment %s/%s: %w", namespace, name, err)
	}
	return &d, nil
}

// DeploymentReady selects the Deployments behind in.Service (see
// SelectDeployments), sets in.Deployments, and reports every way in which
// they are not fully Ready. Fully Ready means: at least one replica, the
// controller has observed the latest generation, every replica is updated,
// ready and available, no old pods are left from a rollout, the rollout is
// not paused and has not exceeded its progress deadline.
func DeploymentReady(ctx context.Context, in *Input) ([]Finding, error) {
	deployments, err := SelectDeployments(ctx, in.Reader, in.Service)
	if err != nil {
		return nil, err
	}
	in.Deployments = deployments
	return deploymentsReady(in.Service, deployments), nil
}

// deploymentsReady is DeploymentReady's verdict on the selected deployments.
func deploymentsReady(svc *corev1.Service, deployments []appsv1.Deployment) []Finding {
	if len(deployments) == 0 {
		if len(svc.Spec.Selector) == 0 {
			return nil // endpoints are managed by hand; EndpointsReady decides
		}
		return []Finding{{
			Check: CheckDeployment, Severity: Warn, Service: namespacedName(svc), Object: "service " + svc.Name, Reason: ReasonNoDeployment,
			Message: fmt.Sprintf("no deployment named %s or owning a replicaset that matches %s; workload readiness not checked",
				svc.Name, labels.SelectorFromSet(svc.Spec.Selector)),
		}}
	}
	var out []Finding
	for i := range deployments {
		out = append(out, deploymentReady(svc, &deployments[i])...)
	}
	return out
}

func deploymentReady(svc *corev1.Service, d *appsv1.Deployment) []Finding {
	f := func(sev Severity, reason Reason, msg, fix string) Finding {
		return Finding{Check: CheckDeployment, Severity: sev, Service: namespacedName(svc), Object: "deployment " + d.Name, Reason: reason, Message: msg, Fix: fix}
	}
	name := d.Name
	waitFix := fmt.Sprintf("wait for: kubectl rollout status deployment/%s -n %s", name, d.Namespace)

	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	if want == 0 {
		return []Finding{f(Deny, ReasonScaledToZero,
			fmt.Sprintf("deployment %s is scaled to zero", name),
			fmt.Sprintf("scale it up before switching: kubectl scale deployment/%s -n %s --replicas=<n> && kubectl rollout status deployment/%s -n %s",
				name, d.Namespace, name, d.Namespace))}
	}

	var out []Finding
	if d.Spec.Paused {
		out = append(out, f(Deny, ReasonPaused,
			fmt.Sprintf("deployment %s is paused", name),
			fmt.Sprintf("resume it: kubectl rollout resume deployment/%s -n %s", name, d.Namespace)))
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse && c.Reason == "ProgressDeadlineExceeded" {
			out = append(out, f(Deny, ReasonProgressDeadlineExceeded,
				fmt.Sprintf("deployment %s exceeded its progress deadline", name),
				fmt.Sprintf("find the cause with: kubectl describe deployment/%s -n %s", name, d.Namespace)))
		}
	}
	st := d.Status
	switch {
	case st.ObservedGeneration < d.Generation:
		out = append(out, f(Deny, ReasonRolloutNotObserved,
			fmt.Sprintf("deployment %s has a change the controller has not observed yet (generation %d, observed %d)", name, d.Generation, st.ObservedGeneration),
			waitFix))
	case st.ReadyReplicas != want || st.UpdatedReplicas != want || st.AvailableReplicas != want || st.Replicas != want:
		out = append(out, f(Deny, ReasonNotReady,
			fmt.Sprintf("deployment %s is not ready (%s)", name, replicaSummary(want, st)),
			waitFix))
	}

	if !hasReadinessProbe(&d.Spec.Template.Spec) {
		out = append(out, f(Warn, ReasonNoReadinessProbe,
			fmt.Sprintf("deployment %s has no readinessProbe, so Ready says little", name), ""))
	}
	return out
}

// replicaSummary renders e.g. "0/2 ready, 2 pending" or
// "2/2 ready, 1/2 updated, 3 pods (1 old)".
func replicaSummary(want int32, st appsv1.DeploymentStatus) string {
	s := fmt.Sprintf("%d/%d ready", st.ReadyReplicas, want)
	if pending := want - st.ReadyReplicas; pending > 0 {
		s += fmt.Sprintf(", %d pending", pending)
	}
	if st.UpdatedReplicas != want {
		s += fmt.Sprintf(", %d/%d updated", st.UpdatedReplicas, want)
	}
	if st.AvailableReplicas != want && st.AvailableReplicas != st.ReadyReplicas {
		s += fmt.Sprintf(", %d/%d available", st.AvailableReplicas, want)
	}
	if st.Replicas > want {
		s += fmt.Sprintf(", %d old pods still running", st.Replicas-want)
	}
	return s
}

func hasReadinessProbe(spec *corev1.PodSpec) bool {
	for _, c := range spec.Containers {
		if c.ReadinessProbe != nil {
			return true
		}
	}
	return false
}
