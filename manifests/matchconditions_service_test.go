package manifests_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cutover-guard/cutover-guard/webhook"
)

// TestServiceMatchConditions installs the default overlay's webhook
// configuration, pointed at a counting webhook, and checks which Service
// writes the API server sends to /validate-service: only updates that change
// spec.selector, outside kube-system and the guard's namespace; never a
// create, a label, annotation or port edit, or the status subresource.
func TestServiceMatchConditions(t *testing.T) {
	c := sharedCluster(t)
	ctx := t.Context()
	cl := routeClient(t, c)

	counter := registerCounting(t, cl, "default", "cutover-guard-count-service-requests")

	apps := createNamespace(t, cl, "count-service-requests")
	createNamespace(t, cl, namespace)
	newService := func(ns, name string) *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "myapp", "version": "blue"},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
		}
	}
	before := counter.get(webhook.PathService)
	app := newService(apps, "app")
	recreate(t, cl, app)
	own := newService(namespace, "own")
	recreate(t, cl, own)
	system := newService("kube-system", "system")
	recreate(t, cl, system)
	if got := counter.get(webhook.PathService) - before; got != 0 {
		t.Errorf("creating services reached the webhook %d times, want never", got)
	}
	patch := func(svc *corev1.Service, merge string) func(context.Context) error {
		return func(ctx context.Context) error {
			return cl.Patch(ctx, svc.DeepCopy(), client.RawPatch("application/merge-patch+json", []byte(merge)))
		}
	}

	// The API server picks up a new webhook configuration asynchronously:
	// wait until a selector change (dry run) reaches the webhook.
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		err := cl.Patch(ctx, app.DeepCopy(), client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"selector":{"version":"probe"}}}`)), client.DryRunAll)
		if err != nil {
			return false, err
		}
		return counter.get(webhook.PathService) > 0, nil
	})
	if err != nil {
		t.Fatalf("the webhook configuration never took effect: %v", err)
	}

	for _, tc := range []struct {
		name   string
		update func(context.Context) error
		want   bool
	}{
		{"a label-only update", patch(app, `{"metadata":{"labels":{"release":"green"}}}`), false},
		{"an annotation-only update", patch(app, `{"metadata":{"annotations":{"note":"cutover at noon"}}}`), false},
		{"a port change", patch(app, `{"spec":{"ports":[{"name":"http","port":8080}]}}`), false},
		{"a status update", func(ctx context.Context) error {
			s := &corev1.Service{}
			if err := cl.Get(ctx, client.ObjectKeyFromObject(app), s); err != nil {
				return err
			}
			s.Status.Conditions = []metav1.Condition{{Type: "Example", Status: metav1.ConditionTrue, Reason: "Example", LastTransitionTime: metav1.Now()}}
			return cl.Status().Update(ctx, s)
		}, false},
		{"a selector switch (kubectl patch service app -p '{\"spec\":{\"selector\":{\"version\":\"green\"}}}')", patch(app, `{"spec":{"selector":{"version":"green"}}}`), true},
		{"a selector key added", patch(app, `{"spec":{"selector":{"track":"stable"}}}`), true},
		{"the selector removed", patch(app, `{"spec":{"selector":null}}`), true},
		{"a selector switch in the guard's namespace", patch(own, `{"spec":{"selector":{"version":"green"}}}`), false},
		{"a selector switch in kube-system", patch(system, `{"spec":{"selector":{"version":"green"}}}`), false},
	} {
		// Admission is synchronous: once the update returns, every call the
		// API server made to the webhook has been counted.
		before := counter.get(webhook.PathService)
		if err := tc.update(ctx); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := counter.get(webhook.PathService) - before; (got > 0) != tc.want {
			t.Errorf("%s reached the webhook %d times, want %s", tc.name, got, map[bool]string{true: "at least once", false: "never"}[tc.want])
		}
	}
}
