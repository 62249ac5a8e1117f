package cluster

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// FullyReady restates, for the harness, the rule a Deployment must meet to
// take traffic: at least one replica wanted, the latest generation
// observed, every replica updated, ready and available, no old pods left,
// not paused, and no ProgressDeadlineExceeded. It reads only d. Every wait
// for a Deployment in the tests, the demo, the benchmarks and the soak uses
// it.
func FullyReady(d *appsv1.Deployment) bool {
	want := Replicas(d)
	st := d.Status
	if want < 1 || d.Spec.Paused || st.ObservedGeneration < d.Generation ||
		st.Replicas != want || st.UpdatedReplicas != want || st.ReadyReplicas != want || st.AvailableReplicas != want {
		return false
	}
	for _, c := range st.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return false
		}
	}
	return true
}

// DeploymentState summarises the fields FullyReady reads, for messages.
func DeploymentState(d *appsv1.Deployment) string {
	st := d.Status
	return fmt.Sprintf("generation %d observed %d, replicas %d/%d updated %d ready %d available %d, paused %t",
		d.Generation, st.ObservedGeneration, st.Replicas, Replicas(d), st.UpdatedReplicas, st.ReadyReplicas, st.AvailableReplicas, d.Spec.Paused)
}

// Replicas is the number of replicas d asks for (unset means 1).
func Replicas(d *appsv1.Deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

// ReadyEndpoints counts the endpoints in the EndpointSlices of a Service
// that are ready (unset means ready, as the EndpointSlice API defines it)
// and not terminating.
func ReadyEndpoints(ctx context.Context, c client.Reader, namespace, service string) (int, error) {
	var slices discoveryv1.EndpointSliceList
	if err := c.List(ctx, &slices, client.InNamespace(namespace), client.MatchingLabels{discoveryv1.LabelServiceName: service}); err != nil {
		return 0, err
	}
	n := 0
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			terminating := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			if ready && !terminating {
				n++
			}
		}
	}
	return n, nil
}
