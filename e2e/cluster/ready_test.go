package cluster

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FullyReady restates the guard's rule; each clause can make it false.
func TestFullyReadyRestatesTheRule(t *testing.T) {
	tests := map[string]struct {
		change func(*appsv1.Deployment)
		want   bool
	}{
		"a Deployment rolled out with every replica ready is fully Ready": {change: func(*appsv1.Deployment) {}, want: true},
		"replicas unset means one": {change: func(d *appsv1.Deployment) {
			d.Spec.Replicas = nil
			d.Status.Replicas, d.Status.UpdatedReplicas, d.Status.ReadyReplicas, d.Status.AvailableReplicas = 1, 1, 1, 1
		}, want: true},
		"zero replicas wanted is not Ready": {change: func(d *appsv1.Deployment) {
			d.Spec.Replicas = new(int32)
			d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation}
		}},
		"a change the controller has not observed is not Ready": {change: func(d *appsv1.Deployment) { d.Generation++ }},
		"an old pod left from a rollout is not Ready":           {change: func(d *appsv1.Deployment) { d.Status.Replicas++ }},
		"a replica not updated is not Ready":                    {change: func(d *appsv1.Deployment) { d.Status.UpdatedReplicas-- }},
		"a replica not ready is not Ready":                      {change: func(d *appsv1.Deployment) { d.Status.ReadyReplicas-- }},
		"a replica ready but not yet available is not Ready":    {change: func(d *appsv1.Deployment) { d.Status.AvailableReplicas-- }},
		"a paused Deployment is not Ready":                      {change: func(d *appsv1.Deployment) { d.Spec.Paused = true }},
		"a rollout past its progress deadline is not Ready": {change: func(d *appsv1.Deployment) {
			d.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: "False", Reason: "ProgressDeadlineExceeded"}}
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			replicas := int32(2)
			d := &appsv1.Deployment{
				ObjectMeta: metav1.ObjectMeta{Generation: 3},
				Spec:       appsv1.DeploymentSpec{Replicas: &replicas},
				Status:     appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2},
			}
			tc.change(d)
			if got := FullyReady(d); got != tc.want {
				t.Errorf("FullyReady = %t, want %t (%s)", got, tc.want, DeploymentState(d))
			}
		})
	}
}
