package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// greenAtZero is what a switch to a green scaled to zero is denied with.
var greenAtZero = []string{
	"service production/app-green: deployment app-green is scaled to zero; scale it up before switching: " +
		"kubectl scale deployment/app-green -n production --replicas=<n> && kubectl rollout status deployment/app-green -n production",
}

// retryOnCreate is the last line of a denied create.
const retryOnCreate = "the route is new: retry once app-green is Ready: GitOps tools retry a failed apply"

// A canary at blue 99 / green 1, green then scaled to zero: moving the
// weights to 0 / 100 gives green all the traffic although it was already
// live, so it is denied until green is Ready again.
func TestCanaryToGreenAtZero(t *testing.T) {
	e := setup(t)
	e.reset(t, world{greenReady: true})
	canary := e.manifests.Route.DeepCopy()
	canary.Spec.Rules[0].BackendRefs = []gwv1.HTTPBackendRef{weighted(tutorial.Blue, 99), weighted(tutorial.Green, 1)}
	e.recreateRoute(t, canary)
	e.scaleGreen(t, 0)

	const allToGreen = `kubectl patch httproute myapp -n production --type=json -p='[{"op":"replace","path":"/spec/rules/0/backendRefs/0/weight","value":0},{"op":"replace","path":"/spec/rules/0/backendRefs/1/weight","value":100}]'`
	requireDenied(t, e.sh(t, allToGreen), tutorial.HTTPRouteWebhook, greenAtZero...)
	e.requireWeights(t, "99 1")

	e.scaleGreen(t, tutorial.Replicas)
	requireOutput(t, e.sh(t, allToGreen), tutorial.PatchedOutput)
	e.requireWeights(t, "0 100")

	// Green fails again: the rollback to blue is never blocked by green,
	// whose share shrinks; blue's grows, and blue is Ready.
	e.scaleGreen(t, 0)
	requireOutput(t, e.sh(t, `kubectl patch httproute myapp -n production --type=json -p='[{"op":"replace","path":"/spec/rules/0/backendRefs/0/weight","value":100},{"op":"replace","path":"/spec/rules/0/backendRefs/1/weight","value":0}]'`), tutorial.PatchedOutput)
	e.requireWeights(t, "100 0")
}

// A route to green attached to a staging Gateway, green scaled to zero:
// moving its parentRef to the production Gateway sends production's
// traffic to green, so it is denied until green is Ready. Dropping the
// route's hostnames (which then means every hostname) is the same.
func TestReparentingToProduction(t *testing.T) {
	e := setup(t)
	e.reset(t, world{greenReady: true})
	staging := e.manifests.Gateway.DeepCopy()
	staging.Name, staging.ResourceVersion = "staging", ""
	if err := tutorial.CreateOrReplace(t.Context(), e.kube, staging); err != nil {
		t.Fatal(err)
	}
	route := e.manifests.Route.DeepCopy()
	route.Spec.ParentRefs = []gwv1.ParentReference{{Name: "staging", Namespace: ptr.To[gwv1.Namespace](tutorial.Namespace)}}
	route.Spec.Hostnames = []gwv1.Hostname{"staging.example.com", "qa.example.com"}
	route.Spec.Rules[0].BackendRefs[0].Name = tutorial.Green
	e.recreateRoute(t, route)
	e.scaleGreen(t, 0)

	const toProduction = `kubectl patch httproute myapp -n production --type=merge -p '{"spec":{"parentRefs":[{"name":"public","namespace":"production"}]}}'`
	const allHostnames = `kubectl patch httproute myapp -n production --type=json -p='[{"op":"remove","path":"/spec/hostnames"}]'`
	requireDenied(t, e.sh(t, toProduction), tutorial.HTTPRouteWebhook, greenAtZero...)
	requireDenied(t, e.sh(t, allHostnames), tutorial.HTTPRouteWebhook, greenAtZero...)
	if got := e.route(t); got.Spec.ParentRefs[0].Name != "staging" || len(got.Spec.Hostnames) != 2 {
		t.Fatalf("after the denials the route has parentRefs %v and hostnames %v, want staging and two hostnames", got.Spec.ParentRefs, got.Spec.Hostnames)
	}
	// A hostname less narrows what the route receives: no target.
	requireOutput(t, e.sh(t, `kubectl patch httproute myapp -n production --type=merge -p '{"spec":{"hostnames":["staging.example.com"]}}'`), tutorial.PatchedOutput)

	e.scaleGreen(t, tutorial.Replicas)
	requireOutput(t, e.sh(t, toProduction), tutorial.PatchedOutput)
	requireOutput(t, e.sh(t, allHostnames), tutorial.PatchedOutput)
	e.checkBackend(t, tutorial.Green)
}

// A new route to a green scaled to zero, by kubectl create and by kubectl
// replace --force (as a GitOps tool that recreates routes does), is denied
// with a message that says it passes once green is Ready, and it does.
// With --check-create=false a create is allowed unchecked.
func TestCreateRouteToGreenAtZero(t *testing.T) {
	e := setup(t)
	e.reset(t, world{greenReady: true})
	e.scaleGreen(t, 0)
	e.writeManifest(t, "canary.yaml", strings.ReplaceAll(canaryRouteYAML, "NAME", "myapp-canary"))
	e.writeManifest(t, "myapp-green.yaml", strings.ReplaceAll(greenRouteYAML, "NAME", tutorial.Route))
	t.Cleanup(func() {
		_ = e.kube.Delete(context.WithoutCancel(t.Context()), &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: "myapp-canary"}})
	})

	requireDenied(t, e.sh(t, "kubectl create -f canary.yaml"), tutorial.HTTPRouteWebhook, append(greenAtZero, retryOnCreate)...)
	e.requireNoRoute(t, "myapp-canary")

	// replace --force deletes the route, then creates it: the delete
	// goes through, the create is denied.
	requireDenied(t, e.sh(t, "kubectl replace --force -f myapp-green.yaml"), tutorial.HTTPRouteWebhook, append(greenAtZero, retryOnCreate)...)
	e.requireNoRoute(t, tutorial.Route)

	// The retry the message promises: green Ready, the same commands pass.
	e.scaleGreen(t, tutorial.Replicas)
	requireOutput(t, e.sh(t, "kubectl create -f canary.yaml"), "httproute.gateway.networking.k8s.io/myapp-canary created")
	e.recreateRoute(t, e.manifests.Route.DeepCopy())
	if r := e.sh(t, "kubectl replace --force -f myapp-green.yaml"); !r.OK() || !strings.Contains(r.Output, "httproute.gateway.networking.k8s.io/myapp replaced") {
		t.Fatalf("want the route replaced, got:\n%s", r)
	}
	e.checkBackend(t, tutorial.Green)

	t.Run("--check-create=false allows the create unchecked", func(t *testing.T) {
		e.scaleGreen(t, 0)
		if r := e.sh(t, "kubectl delete -f canary.yaml"); !r.OK() {
			t.Fatal(r)
		}
		g := e.startGuard(t, "--check-create=false")
		requireOutput(t, e.sh(t, "kubectl create -f canary.yaml"), "httproute.gateway.networking.k8s.io/myapp-canary created")
		// The same guard still checks updates.
		requireDenied(t, e.sh(t, `kubectl patch httproute myapp-canary -n production --type=json -p='[{"op":"replace","path":"/spec/rules/0/backendRefs/1/weight","value":50}]'`),
			tutorial.HTTPRouteWebhook, greenAtZero...)
		if !strings.Contains(g.Log(), `"checkCreate":false`) {
			t.Errorf("the second guard's log does not show checkCreate false:\n%s", g.LogTail(20))
		}
	})
}

// A RequestMirror filter to a green that cannot serve is allowed with
// warnings, never denied: mirrored responses are dropped. A switch of the
// real traffic to the same green is still denied.
func TestMirrorToUnreadyGreenWarns(t *testing.T) {
	e := setup(t)
	e.reset(t, world{})
	const mirrorRule = `kubectl patch httproute myapp -n production --type=json -p='[{"op":"add","path":"/spec/rules/0/filters","value":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"app-green","port":80}}}]}]'`
	r := e.sh(t, mirrorRule)
	if !r.OK() {
		t.Fatalf("a mirror to an unready green was refused:\n%s", r)
	}
	for _, w := range []string{
		"Warning: service production/app-green: mirror only, not denied: deployment app-green is not ready (0/2 ready, 2 pending)",
		"Warning: service production/app-green: mirror only, not denied: service app-green has no endpoints on port 80",
	} {
		if !strings.Contains(r.Output, w) {
			t.Errorf("output lacks the warning %q:\n%s", w, r.Output)
		}
	}
	e.checkBackend(t, tutorial.Blue)

	// The same mirror moved onto blue's backendRef mirrors the same
	// requests: nothing new to check.
	const mirrorBackendRef = `kubectl patch httproute myapp -n production --type=json -p='[{"op":"remove","path":"/spec/rules/0/filters"},{"op":"add","path":"/spec/rules/0/backendRefs/0/filters","value":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"app-green","port":80},"percent":10}}]}]'`
	requireOutput(t, e.sh(t, mirrorBackendRef), tutorial.PatchedOutput)

	// On a fresh route, a mirror on the backendRef is new, and warned about.
	e.recreateRoute(t, e.manifests.Route.DeepCopy())
	const newMirrorBackendRef = `kubectl patch httproute myapp -n production --type=json -p='[{"op":"add","path":"/spec/rules/0/backendRefs/0/filters","value":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"app-green","port":80},"percent":10}}]}]'`
	if r := e.sh(t, newMirrorBackendRef); !r.OK() || !strings.Contains(r.Output, "Warning: service production/app-green: mirror only, not denied: ") {
		t.Fatalf("want a mirror on the backendRef allowed with warnings, got:\n%s", r)
	}
	requireDenied(t, e.sh(t, tutorial.CutoverCommand), tutorial.HTTPRouteWebhook, greenNotReady...)
}

// An ExternalName Service cannot be checked: a switch to it is allowed
// with a warning that says so. A Service without a selector is judged by
// the EndpointSlices made for it by hand: denied while their endpoint is
// not ready, allowed once it is.
func TestExternalNameAndSelectorlessServices(t *testing.T) {
	e := setup(t)
	e.reset(t, world{})
	ctx := t.Context()
	external := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: "app-external"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "green.example.invalid", Ports: []corev1.ServicePort{{Port: 80}}},
	}
	manual := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: "app-manual"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: "app-manual-1", Labels: map[string]string{discoveryv1.LabelServiceName: "app-manual"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.9"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}}},
		Ports:       []discoveryv1.EndpointPort{{Port: ptr.To[int32](80)}},
	}
	for _, o := range []client.Object{external, manual, slice} {
		if err := tutorial.CreateOrReplace(ctx, e.kube, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.kube.Delete(context.WithoutCancel(ctx), o) })
	}

	r := e.sh(t, `kubectl patch httproute myapp -n production --type=json -p='[{"op":"replace","path":"/spec/rules/0/backendRefs/0/name","value":"app-external"}]'`)
	if !r.OK() || !strings.Contains(r.Output, "Warning: service production/app-external: service app-external is of type ExternalName; readiness not checked") {
		t.Fatalf("want the switch to an ExternalName Service allowed with a warning, got:\n%s", r)
	}
	e.checkBackend(t, "app-external")

	const toManual = `kubectl patch httproute myapp -n production --type=json -p='[{"op":"replace","path":"/spec/rules/0/backendRefs/0/name","value":"app-manual"}]'`
	requireDenied(t, e.sh(t, toManual), tutorial.HTTPRouteWebhook,
		"service production/app-manual: service app-manual has no ready endpoints on port 80 (0 of 1 ready); service app-manual has no selector: create EndpointSlices for it")
	e.checkBackend(t, "app-external")

	slice.Endpoints[0].Conditions.Ready = ptr.To(true)
	if err := tutorial.CreateOrReplace(ctx, e.kube, slice); err != nil {
		t.Fatal(err)
	}
	requireOutput(t, e.sh(t, toManual), tutorial.PatchedOutput)
	e.checkBackend(t, "app-manual")
}

// A route with one rule (path /) to blue 99 and green 1, as a file.
const canaryRouteYAML = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: NAME
  namespace: production
spec:
  parentRefs:
  - name: public
    namespace: production
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /
    backendRefs:
    - name: app-blue
      port: 80
      weight: 99
    - name: app-green
      port: 80
      weight: 1
`

// The tutorial's route to green, as a file.
const greenRouteYAML = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: NAME
  namespace: production
spec:
  parentRefs:
  - name: public
    namespace: production
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /
    backendRefs:
    - name: app-green
      port: 80
`

func weighted(name string, weight int32) gwv1.HTTPBackendRef {
	return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{
		BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Port: ptr.To[gwv1.PortNumber](80)},
		Weight:                 ptr.To(weight),
	}}
}

// scaleGreen scales green with the real kubectl and waits until it has no
// ready endpoint (replicas 0) or is serving (replicas above 0).
func (e *env) scaleGreen(t *testing.T, replicas int32) {
	t.Helper()
	r := e.kubectl().Run(t.Context(), "scale", "deployment", tutorial.Green, "-n", tutorial.Namespace, "--replicas="+strconv.Itoa(int(replicas)))
	if !r.OK() {
		t.Fatal(r)
	}
	if replicas > 0 {
		if err := tutorial.WaitServing(t.Context(), e.kube, tutorial.Namespace, tutorial.Green); err != nil {
			t.Fatal(err)
		}
		return
	}
	var last string
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, tutorial.WaitTimeout, true, func(ctx context.Context) (bool, error) {
		d := e.deployment(t, tutorial.Green)
		n, err := cluster.ReadyEndpoints(ctx, e.kube, tutorial.Namespace, tutorial.Green)
		last = cluster.DeploymentState(d)
		return err == nil && n == 0 && d.Status.Replicas == 0 && d.Status.ObservedGeneration >= d.Generation, nil
	})
	if err != nil {
		t.Fatalf("green not at zero: %v (%s)", err, last)
	}
}

// writeManifest writes a file where the kubectl commands run.
func (e *env) writeManifest(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(e.dir, "manifests", name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// requireWeights requires the route's first rule to have these weights.
func (e *env) requireWeights(t *testing.T, want string) {
	t.Helper()
	r := e.kubectl().Run(t.Context(), "get", "httproute", tutorial.Route, "-n", tutorial.Namespace, "-o", "jsonpath={.spec.rules[0].backendRefs[*].weight}")
	if !r.OK() || r.Stdout != want {
		t.Fatalf("weights %q, want %q:\n%s", r.Stdout, want, r)
	}
}

// requireNoRoute requires the route name not to exist.
func (e *env) requireNoRoute(t *testing.T, name string) {
	t.Helper()
	err := e.kube.Get(t.Context(), client.ObjectKey{Namespace: tutorial.Namespace, Name: name}, &gwv1.HTTPRoute{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("route %s: want NotFound, got %v", name, err)
	}
}

// startGuard starts a second guard with extra flags and points the webhook
// configuration at it; the cleanup points it back at the suite's guard and
// stops the second. Both deny the probes Register waits on, so each switch
// also waits until a create of a route to green (at zero) gets the answer
// of the guard it switched to: allowed (and deleted) by one that does not
// check creates, denied by the suite's.
func (e *env) startGuard(t *testing.T, args ...string) *tutorial.Guard {
	t.Helper()
	ctx := t.Context()
	g, err := tutorial.StartGuard(ctx, tutorial.GuardOptions{
		Binary: filepath.Join(e.dir, "cutover-guard"), Kubeconfig: e.cluster.Kubeconfig, Dir: t.TempDir(), DBTimeout: dbTimeout, Args: args,
	})
	if err != nil {
		t.Fatal(err)
	}
	g.LogOnFailure(t, 40)
	t.Cleanup(func() {
		ctx := context.WithoutCancel(ctx)
		if err := tutorial.Register(ctx, e.kube, e.guard, time.Minute); err != nil {
			t.Errorf("register the suite's guard again: %v", err)
		}
		e.waitCreatesChecked(t, ctx, true)
		if err := g.Stop(); err != nil {
			t.Error(err)
		}
	})
	if err := tutorial.Register(ctx, e.kube, g, time.Minute); err != nil {
		t.Fatal(err)
	}
	e.waitCreatesChecked(t, ctx, false)
	return g
}

// waitCreatesChecked polls a create of a route to green (which
// must be at zero) until the guard in effect denies it (checked) or allows
// it (not checked).
func (e *env) waitCreatesChecked(t *testing.T, ctx context.Context, checked bool) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		r := e.manifests.Route.DeepCopy()
		r.Name = "myapp-create-probe"
		r.Spec.Rules[0].BackendRefs[0].Name = tutorial.Green
		// A real create: a dry-run create is answered with warnings.
		last = e.kube.Create(ctx, r)
		if last == nil {
			if err := e.kube.Delete(ctx, r); err != nil && !apierrors.IsNotFound(err) {
				return false, err
			}
		}
		if checked {
			return apierrors.IsForbidden(last) && strings.Contains(last.Error(), retryOnCreate), nil
		}
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("creates checked = %v never took effect: %v (last: %v)", checked, err, last)
	}
}
