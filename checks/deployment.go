package checks

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Reasons found by WorkloadReady (for every kind of workload).
const (
	ReasonNoDeployment             Reason = "NoDeployment"
	ReasonScaledToZero             Reason = "ScaledToZero"
	ReasonPaused                   Reason = "Paused"
	ReasonProgressDeadlineExceeded Reason = "ProgressDeadlineExceeded"
	ReasonRolloutNotObserved       Reason = "RolloutNotObserved"
	ReasonNotReady                 Reason = "NotReady"
	ReasonNoReadinessProbe         Reason = "NoReadinessProbe"
)

// SelectDeployments returns the Deployments among the workloads behind svc
// (see SelectWorkloads), sorted by name. A Service without a selector
// selects none.
func SelectDeployments(ctx context.Context, r client.Reader, svc *corev1.Service) ([]appsv1.Deployment, error) {
	sel, err := SelectWorkloads(ctx, r, svc, nil)
	if err != nil {
		return nil, err
	}
	var out []appsv1.Deployment
	for _, w := range sel.Workloads {
		if d, ok := w.Object.(*appsv1.Deployment); ok {
			out = append(out, *d)
		}
	}
	return out, nil
}

// deploymentReady: at least one replica, the controller has observed the
// latest generation, every replica is updated, ready and available, no old
// pods are left from a rollout, the rollout is not paused and has not
// exceeded its progress deadline.
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
