package e2e_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// sharedNamespace holds a second, Ready copy of green for cross-namespace
// backendRefs.
const sharedNamespace = "shared"

// Backends that cannot take traffic for reasons of their own, and the
// Gateway API's rules for references and weights.
func TestBackendReferences(t *testing.T) {
	e := setup(t)
	weighted := func() *gwv1.HTTPRoute {
		r := e.manifests.Route.DeepCopy()
		r.Spec.Rules[0].BackendRefs = []gwv1.HTTPBackendRef{
			{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: tutorial.Blue, Port: ptr.To[gwv1.PortNumber](80)}, Weight: ptr.To[int32](100)}},
			{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: tutorial.Green, Port: ptr.To[gwv1.PortNumber](80)}, Weight: ptr.To[int32](0)}},
		}
		return r
	}
	const crossNamespace = `kubectl patch httproute myapp -n production --type=json -p='[{"op":"replace","path":"/spec/rules/0/backendRefs/0","value":{"name":"app-green","namespace":"shared","port":80}}]'`
	const shiftWeights = `kubectl patch httproute myapp -n production --type=json -p='[{"op":"replace","path":"/spec/rules/0/backendRefs/0/weight","value":0},{"op":"replace","path":"/spec/rules/0/backendRefs/1/weight","value":100}]'`

	tests := map[string]struct {
		world world
		route func() *gwv1.HTTPRoute // nil: the tutorial's
		// grant: create the ReferenceGrant in sharedNamespace (else delete it).
		grant bool
		line  string
		// denied lists what the denial must say; empty means allowed.
		denied []string
		// backend is what the tutorial's check must print afterwards.
		backend string
		// jsonpath on the route must print want afterwards, if set.
		jsonpath, want string
	}{
		"a Service whose selector matches no pods is denied": {
			line: `kubectl patch httproute myapp -n production --type=json -p='[{"op":"replace","path":"/spec/rules/0/backendRefs/0/name","value":"app-orphan"}]'`,
			denied: []string{"service production/app-orphan: service app-orphan has no endpoints on port 80: its selector matches no running pods; " +
				"check its pods: kubectl get pods -n production -l app=myapp,version=orphan"},
			backend: tutorial.Blue,
		},
		"a backendRef to a missing Service is denied": {
			line: `kubectl patch httproute myapp -n production --type=json -p='[{"op":"replace","path":"/spec/rules/0/backendRefs/0/name","value":"app-grene"}]'`,
			denied: []string{"service production/app-grene: service app-grene does not exist in namespace production; " +
				"create it before switching, or correct the backendRef name (kubectl get services -n production)"},
			backend: tutorial.Blue,
		},
		"a backendRef to the container port instead of the Service port is denied": {
			line:     `kubectl patch httproute myapp -n production --type=json -p='[{"op":"replace","path":"/spec/rules/0/backendRefs/0/port","value":8080}]'`,
			denied:   []string{"service production/app-blue: service app-blue has no port 8080 (ports: 80); set the backendRef port to one of: 80"},
			backend:  tutorial.Blue,
			jsonpath: "{.spec.rules[0].backendRefs[0].port}",
			want:     "80",
		},
		"a cross-namespace backendRef without a ReferenceGrant is denied": {
			line: crossNamespace,
			denied: []string{"service shared/app-green: no referencegrant in namespace shared allows HTTPRoute from namespace production to reference service app-green; " +
				"create a ReferenceGrant in namespace shared with from {group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: production} and to {kind: Service, name: app-green}"},
			backend:  tutorial.Blue,
			jsonpath: "{.spec.rules[0].backendRefs[0].namespace}",
			want:     "",
		},
		"a cross-namespace backendRef with a ReferenceGrant to a Ready Service is allowed": {
			grant:    true,
			line:     crossNamespace,
			backend:  tutorial.Green,
			jsonpath: "{.spec.rules[0].backendRefs[0].namespace}",
			want:     sharedNamespace,
		},
		"a weight shift from 100/0 to 0/100 is denied while green is not Ready": {
			route:    weighted,
			line:     shiftWeights,
			denied:   greenNotReady,
			backend:  tutorial.Blue,
			jsonpath: "{.spec.rules[0].backendRefs[*].weight}",
			want:     "100 0",
		},
		"a weight shift from 100/0 to 0/100 is allowed once green is Ready": {
			world:    world{greenReady: true},
			route:    weighted,
			line:     shiftWeights,
			backend:  tutorial.Blue,
			jsonpath: "{.spec.rules[0].backendRefs[*].weight}",
			want:     "0 100",
		},
	}

	e.createOrphanService(t)
	e.createSharedGreen(t)
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e.reset(t, tc.world)
			if tc.route != nil {
				e.recreateRoute(t, tc.route())
			}
			e.setReferenceGrant(t, tc.grant)

			r := e.sh(t, tc.line)
			if len(tc.denied) > 0 {
				requireDenied(t, r, tutorial.HTTPRouteWebhook, tc.denied...)
			} else {
				requireOutput(t, r, tutorial.PatchedOutput)
			}
			e.checkBackend(t, tc.backend)
			if tc.jsonpath != "" {
				got := e.kubectl().Run(t.Context(), "get", "httproute", tutorial.Route, "-n", tutorial.Namespace, "-o", "jsonpath="+tc.jsonpath)
				if !got.OK() || got.Stdout != tc.want {
					t.Errorf("%s is %q, want %q:\n%s", tc.jsonpath, got.Stdout, tc.want, got)
				}
			}
		})
	}
}

// createOrphanService creates Service app-orphan in the tutorial's
// namespace, whose selector matches no pod.
func (e *env) createOrphanService(t *testing.T) {
	t.Helper()
	err := tutorial.CreateOrReplace(t.Context(), e.kube, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: "app-orphan", Labels: map[string]string{"app": "myapp"}},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "myapp", "version": "orphan"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// createSharedGreen puts the tutorial's green Service and Deployment, Ready,
// with its own db-credentials, into sharedNamespace.
func (e *env) createSharedGreen(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	if err := tutorial.EnsureNamespace(ctx, e.kube, sharedNamespace); err != nil {
		t.Fatal(err)
	}
	if err := tutorial.SetSecret(ctx, e.kube, sharedNamespace, postgresDSN); err != nil {
		t.Fatal(err)
	}
	svc := e.manifests.GreenService.DeepCopy()
	svc.Namespace = sharedNamespace
	if err := tutorial.CreateOrReplace(ctx, e.kube, svc); err != nil {
		t.Fatal(err)
	}
	d := e.manifests.Deployment(tutorial.Green, tutorial.Replicas, false)
	d.Namespace = sharedNamespace
	if err := tutorial.Serve(ctx, e.kube, d); err != nil {
		t.Fatal(err)
	}
}

// setReferenceGrant creates or deletes the ReferenceGrant that lets
// HTTPRoutes in the tutorial's namespace reference app-green in sharedNamespace.
func (e *env) setReferenceGrant(t *testing.T, present bool) {
	t.Helper()
	grant := &gwv1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: sharedNamespace, Name: "routes-from-production"},
		Spec: gwv1.ReferenceGrantSpec{
			From: []gwv1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "HTTPRoute", Namespace: tutorial.Namespace}},
			To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Service", Name: ptr.To[gwv1.ObjectName](tutorial.Green)}},
		},
	}
	var err error
	if present {
		err = tutorial.CreateOrReplace(t.Context(), e.kube, grant)
	} else if err = e.kube.Delete(t.Context(), grant); apierrors.IsNotFound(err) {
		err = nil
	}
	if err != nil {
		t.Fatal(err)
	}
}
