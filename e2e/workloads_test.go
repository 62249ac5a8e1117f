package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// The control plane runs no StatefulSet or Job controller (and no kubelet):
// these tests create the pods such a controller would, owned by it, and
// write its status through the status subresource as it would. kwok plays
// the kubelet: a pod it runs turns Ready, one held Pending never does, and
// the EndpointSlice controller publishes them.

// switchRouteTo is the tutorial's cutover, to another Service.
func switchRouteTo(service string) string {
	return fmt.Sprintf(`kubectl patch httproute myapp -n production --type=json -p='[{"op":"replace","path":"/spec/rules/0/backendRefs/0/name","value":%q}]'`, service)
}

// ownedPod is a pod of owner (its controller), labelled labels, Ready once
// kwok runs it unless pending.
func ownedPod(owner client.Object, kind, apiVersion, name string, labels map[string]string, pending bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: owner.GetNamespace(), Name: name, Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: cluster.PauseImage,
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
	}
	if owner.GetUID() != "" {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: owner.GetName(), UID: owner.GetUID(), Controller: ptr.To(true)}}
	}
	if pending {
		p.Spec.NodeSelector = tutorial.UnschedulableNodeSelector
	}
	return p
}

// webService is a Service on port 80 (targetPort 8080) selecting selector.
func webService(name string, selector map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: name},
		Spec: corev1.ServiceSpec{Selector: selector,
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
}

// create creates each object afresh and deletes it when the test ends.
func (e *env) create(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := tutorial.Recreate(t.Context(), e.kube, o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
		t.Cleanup(func() {
			_ = e.kube.Delete(context.Background(), o, client.PropagationPolicy(metav1.DeletePropagationBackground))
		})
	}
}

// waitReadyEndpoints waits until service has exactly n ready endpoints.
func (e *env) waitReadyEndpoints(t *testing.T, service string, n int) {
	t.Helper()
	var got int
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		got, err = cluster.ReadyEndpoints(ctx, e.kube, tutorial.Namespace, service)
		return got == n, err
	})
	if err != nil {
		t.Fatalf("service %s has %d ready endpoints, want %d: %v", service, got, n, err)
	}
}

// A Service backed by a StatefulSet half way through a rollout (one pod of
// three on the new revision and Pending, two old pods Ready, so the
// endpoints check alone would pass) is denied; once the rollout is done the
// same switch is allowed.
func TestStatefulSetMidRolloutIsDeniedThenAllowed(t *testing.T) {
	e := setup(t)
	e.reset(t, world{})
	ctx := t.Context()
	const name = "app-stateful"
	labels := map[string]string{"app": name}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: name},
		Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To[int32](3), ServiceName: name,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: cluster.PauseImage,
					Env: []corev1.EnvVar{{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: tutorial.Secret}, Key: tutorial.SecretKey}}}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8080)}}},
				}}},
			},
		},
	}
	e.create(t, webService(name, labels), sts)
	revision := func(rev string) map[string]string {
		return map[string]string{"app": name, appsv1.ControllerRevisionHashLabelKey: name + "-" + rev}
	}
	old0 := ownedPod(sts, "StatefulSet", "apps/v1", name+"-0", revision("old"), false)
	old1 := ownedPod(sts, "StatefulSet", "apps/v1", name+"-1", revision("old"), false)
	new2 := ownedPod(sts, "StatefulSet", "apps/v1", name+"-2", revision("new"), true)
	e.create(t, old0, old1, new2)
	setStatus := func(st appsv1.StatefulSetStatus) {
		t.Helper()
		var have appsv1.StatefulSet
		if err := e.kube.Get(ctx, client.ObjectKeyFromObject(sts), &have); err != nil {
			t.Fatal(err)
		}
		st.ObservedGeneration = have.Generation
		have.Status = st
		if err := e.kube.Status().Update(ctx, &have); err != nil {
			t.Fatal(err)
		}
	}
	setStatus(appsv1.StatefulSetStatus{Replicas: 3, ReadyReplicas: 2, AvailableReplicas: 2, CurrentReplicas: 2, UpdatedReplicas: 1,
		CurrentRevision: name + "-old", UpdateRevision: name + "-new"})
	e.waitReadyEndpoints(t, name, 2)

	r := e.sh(t, switchRouteTo(name))
	requireDenied(t, r, tutorial.HTTPRouteWebhook,
		"service production/app-stateful: statefulset app-stateful is not ready (2/3 ready, 1/3 updated, rolling out revision app-stateful-new); wait for: kubectl rollout status statefulset/app-stateful -n production")
	if strings.Contains(r.Output, "no ready endpoints") {
		t.Errorf("the denial blames the endpoints, which are ready:\n%s", r.Output)
	}
	e.checkBackend(t, tutorial.Blue)

	// The rollout finishes: the Pending pod is replaced by one that runs.
	if err := e.kube.Delete(ctx, new2); err != nil {
		t.Fatal(err)
	}
	e.create(t, ownedPod(sts, "StatefulSet", "apps/v1", name+"-2", revision("new"), false))
	setStatus(appsv1.StatefulSetStatus{Replicas: 3, ReadyReplicas: 3, AvailableReplicas: 3, CurrentReplicas: 3, UpdatedReplicas: 3,
		CurrentRevision: name + "-new", UpdateRevision: name + "-new"})
	e.waitReadyEndpoints(t, name, 3)
	requireOutput(t, e.sh(t, switchRouteTo(name)), tutorial.PatchedOutput)
	e.checkBackend(t, name)
}

// A Service whose pods belong to a controller the guard cannot judge (a
// Job) is denied, naming the controller, though its pod is Ready.
func TestUnknownOwnerIsDenied(t *testing.T) {
	e := setup(t)
	e.reset(t, world{})
	const name = "app-batch"
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: name},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "app", Image: cluster.PauseImage}}},
		}},
	}
	labels := map[string]string{"app": name}
	e.create(t, webService(name, labels), job)
	e.create(t, ownedPod(job, "Job", "batch/v1", name+"-0", labels, false))
	e.waitReadyEndpoints(t, name, 1)

	r := e.sh(t, switchRouteTo(name))
	requireDenied(t, r, tutorial.HTTPRouteWebhook,
		"service production/app-batch: pods selected by app=app-batch belong to job.batch/app-batch, which the guard cannot judge")
	e.checkBackend(t, tutorial.Blue)
}

// The other blue-green, with no route at all: a selector switch of a Service
// with the real kubectl patch is denied while green cannot serve, and
// allowed once it can; edits that switch nothing pass while green is down.
func TestServiceSelectorSwitchDeniedThenAllowed(t *testing.T) {
	e := setup(t)
	e.reset(t, world{}) // blue serving, green 0/2 (Pending)
	ctx := t.Context()
	svc := webService("app", map[string]string{"app": "myapp", "version": "blue"})
	e.create(t, svc)
	e.waitReadyEndpoints(t, "app", tutorial.Replicas)
	selector := func() string {
		t.Helper()
		r := e.kubectl().Run(ctx, "get", "service", "app", "-n", tutorial.Namespace, "-o", "jsonpath={.spec.selector.version}")
		if !r.OK() {
			t.Fatalf("kubectl get service:\n%s", r)
		}
		return r.Stdout
	}
	const switchToGreen = `kubectl patch service app -n production -p '{"spec":{"selector":{"version":"green"}}}'`

	requireOutput(t, e.sh(t, "kubectl label service app -n production team=checkout"), "service/app labeled")
	requireOutput(t, e.sh(t, "kubectl annotate service app -n production example.com/owner=web-team"), "service/app annotated")

	r := e.sh(t, switchToGreen)
	requireDenied(t, r, tutorial.ServiceWebhook,
		"service production/app: deployment app-green is not ready (0/2 ready, 2 pending); wait for: kubectl rollout status deployment/app-green -n production",
		"service production/app: service app would have no ready endpoints on port 80 after the switch (0 of 2 selected pods ready)")
	if got := selector(); got != "blue" {
		t.Fatalf("after the denial the selector is version=%s, want blue", got)
	}
	var have corev1.Service
	if err := e.kube.Get(ctx, client.ObjectKeyFromObject(svc), &have); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		for _, ev := range e.deniedEvents(t, "Service", "app") {
			if ev.InvolvedObject.UID == string(have.UID) && strings.Contains(ev.Message, "deployment app-green is not ready") {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Errorf("no CutoverDenied Event on service app: %v", err)
	}

	if err := tutorial.Serve(ctx, e.kube, e.manifests.Deployment(tutorial.Green, tutorial.Replicas, false)); err != nil {
		t.Fatal(err)
	}
	requireOutput(t, e.sh(t, switchToGreen), "service/app patched")
	if got := selector(); got != "green" {
		t.Fatalf("after the switch the selector is version=%s, want green", got)
	}
	e.waitReadyEndpoints(t, "app", tutorial.Replicas)
}
