package cutoverctl

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/manifests"
)

// The unit tests' cluster is controller-runtime's fake client with a stand-in
// for the guard at the edge (Patch): it denies a switch to a Service in
// denied, or to one that does not exist, with the API server's message
// format. What it decides is not under test here (the e2e suite runs the
// real guard); how the plugin reads and shows the answer is.

type fakeCluster struct {
	c client.Client
	// denied maps a Service to the findings the guard answers for it.
	denied map[string][]string
	// guard: the guard's webhook configuration is installed and answers.
	guard bool
	// patches counts the writes that were not dry runs.
	patches int
}

func deployment(name, version string, replicas, ready int32) *appsv1.Deployment {
	labels := map[string]string{"app": "myapp", "version": version}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: name, Generation: 2},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/myapp:" + version}}},
			},
		},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: replicas, UpdatedReplicas: replicas, ReadyReplicas: ready, AvailableReplicas: ready},
	}
}

func service(name, version string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: name},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "myapp", "version": version}, Ports: []corev1.ServicePort{{Port: 80}}},
	}
}

func endpoints(svc string, ready ...bool) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "production", Name: svc + "-abc", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for i, r := range ready {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.0.0.%d", i+1)}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(r)}})
	}
	return s
}

// newFake is the tutorial's state: blue serving, green with greenReady of
// two pods ready, blue with blueReplicas, the route on blue.
func newFake(t *testing.T, greenReady, blueReplicas int32, guard bool, objs ...client.Object) *fakeCluster {
	t.Helper()
	route := routeTo([]string{"app-blue"})
	route.ResourceVersion = ""
	route.Generation = 1
	route.Spec.ParentRefs = []gwv1.ParentReference{{Name: "public"}}
	greenReadyEps := make([]bool, 2)
	for i := range greenReady {
		greenReadyEps[i] = true
	}
	blueEps := make([]bool, blueReplicas)
	for i := range blueEps {
		blueEps[i] = true
	}
	objs = append(objs, route,
		deployment("app-blue", "blue", blueReplicas, blueReplicas), deployment("app-green", "green", 2, greenReady),
		service("app-blue", "blue"), service("app-green", "green"),
		endpoints("app-blue", blueEps...), endpoints("app-green", greenReadyEps...),
	)
	if guard {
		vwc, err := manifests.WebhookConfiguration()
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, vwc)
	}
	f := &fakeCluster{denied: map[string][]string{}, guard: guard}
	f.c = fake.NewClientBuilder().WithScheme(scheme()).WithObjects(objs...).WithStatusSubresource(&gwv1.HTTPRoute{}).
		WithInterceptorFuncs(interceptor.Funcs{Patch: f.patch}).Build()
	return f
}

func (f *fakeCluster) env() *env {
	return &env{c: f.c, namespace: "production", warnings: &warningCollector{}}
}

// patch applies a JSON patch as the API server would, after the guard's
// stand-in has reviewed it; a dry run is not persisted.
func (f *fakeCluster) patch(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	po := &client.PatchOptions{}
	po.ApplyOptions(opts)
	data, err := patch.Data(obj)
	if err != nil {
		return err
	}
	var have gwv1.HTTPRoute
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), &have); err != nil {
		return err
	}
	doc, _ := json.Marshal(&have)
	ops, err := jsonpatch.DecodePatch(data)
	if err != nil {
		return apierrors.NewBadRequest(err.Error())
	}
	out, err := ops.Apply(doc)
	if err != nil {
		return apierrors.NewInvalid(have.GroupVersionKind().GroupKind(), have.Name, nil)
	}
	var want gwv1.HTTPRoute
	if err := json.Unmarshal(out, &want); err != nil {
		return err
	}
	if f.guard {
		for _, r := range want.Spec.Rules {
			for _, b := range r.BackendRefs {
				name := string(b.Name)
				var svc corev1.Service
				if err := c.Get(ctx, client.ObjectKey{Namespace: want.Namespace, Name: name}, &svc); apierrors.IsNotFound(err) {
					return denial("service production/" + name + ": service " + name + " does not exist in namespace production")
				}
				if findings := f.denied[name]; len(findings) > 0 && (b.Weight == nil || *b.Weight > 0) {
					return denial(findings...)
				}
			}
		}
	}
	if len(po.DryRun) > 0 {
		want.DeepCopyInto(obj.(*gwv1.HTTPRoute))
		return nil
	}
	f.patches++
	if err := c.Update(ctx, &want); err != nil {
		return err
	}
	return c.Get(ctx, client.ObjectKeyFromObject(obj), obj)
}

func denial(findings ...string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: 403, Reason: metav1.StatusReasonForbidden,
		Message: `admission webhook "httproute.cutover-guard.dev" denied the request: ` + strings.Join(findings, "\n"),
	}}
}
