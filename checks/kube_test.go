package checks

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

func testScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(gwv1.Install(s))
	utilruntime.Must(gwv1beta1.Install(s))
	return s
}

func fakeReader(objs ...client.Object) client.Reader {
	return fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(objs...).Build()
}

var green = types.NamespacedName{Namespace: "production", Name: "app-green"}

func greenTarget() Target {
	return Target{Route: types.NamespacedName{Namespace: "production", Name: "myapp"}, RouteKind: "HTTPRoute", Service: green, Port: ptr.To[int32](80)}
}

func service(name string, selector map[string]string, ports ...int32) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: name}, Spec: corev1.ServiceSpec{Selector: selector}}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Port: p})
	}
	return s
}

func greenService() *corev1.Service {
	return service("app-green", map[string]string{"app": "myapp", "version": "green"}, 80)
}

// readyDeployment is the tutorial's app-green, fully rolled out.
func readyDeployment(name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": "myapp", "version": strings.TrimPrefix(name, "app-")}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: name, Generation: 2},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "myapp:v1",
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready"}}},
				}}},
			},
		},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: replicas, UpdatedReplicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas},
	}
}

func slice(service string, ready ...*bool) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "production", Name: service + "-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(""), Port: ptr.To[int32](8080)}},
	}
	for i, r := range ready {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.0.0." + string(rune('1'+i))}, Conditions: discoveryv1.EndpointConditions{Ready: r}})
	}
	return s
}

// denies reports whether any finding blocks the update.
func denies(fs []Finding) bool {
	return slices.ContainsFunc(fs, func(f Finding) bool { return f.Severity == Deny })
}

func reasons(fs []Finding) []Reason {
	var out []Reason
	for _, f := range fs {
		out = append(out, f.Reason)
	}
	return out
}

func TestReference(t *testing.T) {
	crossTarget := greenTarget()
	crossTarget.Route.Namespace = "gateways"
	grant := func(name *gwv1.ObjectName) *gwv1.ReferenceGrant {
		return &gwv1.ReferenceGrant{
			ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "allow-gateways"},
			Spec: gwv1.ReferenceGrantSpec{
				From: []gwv1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "HTTPRoute", Namespace: "gateways"}},
				To:   []gwv1.ReferenceGrantTo{{Group: "", Kind: "Service", Name: name}},
			},
		}
	}
	noPort := greenTarget()
	noPort.Port = nil

	tests := map[string]struct {
		target      Target
		objs        []client.Object
		wantReasons []Reason
		wantMessage string
	}{
		"an existing service with the port passes": {
			target: greenTarget(), objs: []client.Object{greenService()},
		},
		"a missing service is denied": {
			target: greenTarget(), wantReasons: []Reason{ReasonServiceNotFound},
			wantMessage: "service production/app-green: service app-green does not exist in namespace production; create it before switching, or correct the backendRef name (kubectl get services -n production)",
		},
		"a port the service does not have is denied and lists its ports": {
			target: greenTarget(), objs: []client.Object{service("app-green", nil, 8080, 9090)},
			wantReasons: []Reason{ReasonPortNotFound},
			wantMessage: "service production/app-green: service app-green has no port 80 (ports: 8080, 9090); set the backendRef port to one of: 8080, 9090",
		},
		"no port on a single-port service passes": {
			target: noPort, objs: []client.Object{greenService()},
		},
		"no port on a multi-port service is denied": {
			target: noPort, objs: []client.Object{service("app-green", nil, 80, 443)}, wantReasons: []Reason{ReasonPortNotFound},
		},
		"a cross-namespace ref without a grant is denied": {
			target: crossTarget, objs: []client.Object{greenService()}, wantReasons: []Reason{ReasonReferenceNotPermitted},
			wantMessage: "service production/app-green: no referencegrant in namespace production allows HTTPRoute from namespace gateways to reference service app-green; create a ReferenceGrant in namespace production with from {group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: gateways} and to {kind: Service, name: app-green}",
		},
		"a cross-namespace ref with a grant for all services passes": {
			target: crossTarget, objs: []client.Object{greenService(), grant(nil)},
		},
		"a cross-namespace ref with a grant naming this service passes": {
			target: crossTarget, objs: []client.Object{greenService(), grant(ptr.To(gwv1.ObjectName("app-green")))},
		},
		"a grant naming another service does not count": {
			target: crossTarget, objs: []client.Object{greenService(), grant(ptr.To(gwv1.ObjectName("app-blue")))},
			wantReasons: []Reason{ReasonReferenceNotPermitted},
		},
		"a grant for GRPCRoute does not allow an HTTPRoute": {
			target: crossTarget,
			objs: []client.Object{greenService(), func() *gwv1.ReferenceGrant {
				g := grant(nil)
				g.Spec.From[0].Kind = "GRPCRoute"
				return g
			}()},
			wantReasons: []Reason{ReasonReferenceNotPermitted},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := &Input{Reader: fakeReader(tc.objs...), Target: tc.target}
			findings, err := Reference(t.Context(), in)
			if err != nil {
				t.Fatal(err)
			}
			svc := in.Service
			if diff := cmp.Diff(tc.wantReasons, reasons(findings)); diff != "" {
				t.Errorf("reasons (-want +got):\n%s", diff)
			}
			if (svc == nil) != (len(tc.wantReasons) > 0) {
				t.Errorf("service returned = %v, want it only when there is no finding", svc != nil)
			}
			if tc.wantMessage != "" && (len(findings) == 0 || findings[0].String() != tc.wantMessage) {
				t.Errorf("message:\n got %v\nwant %q", findings, tc.wantMessage)
			}
		})
	}
}

// On clusters that serve ReferenceGrant as v1beta1 only, the v1beta1 grants count.
func TestReferenceGrantV1beta1Fallback(t *testing.T) {
	target := greenTarget()
	target.Route.Namespace = "gateways"
	grant := &gwv1beta1.ReferenceGrant{
		ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "allow-gateways"},
		Spec: gwv1beta1.ReferenceGrantSpec{
			From: []gwv1.ReferenceGrantFrom{{Group: gwv1.GroupName, Kind: "HTTPRoute", Namespace: "gateways"}},
			To:   []gwv1.ReferenceGrantTo{{Kind: "Service"}},
		},
	}
	for name, objs := range map[string][]client.Object{
		"a v1beta1 grant allows the reference": {greenService(), grant},
		"without one it is denied":             {greenService()},
	} {
		t.Run(name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
				List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
					if _, ok := list.(*gwv1.ReferenceGrantList); ok {
						return &meta.NoKindMatchError{GroupKind: schema.GroupKind{Group: gwv1.GroupName, Kind: "ReferenceGrant"}, SearchedVersions: []string{"v1"}}
					}
					return cl.List(ctx, list, opts...)
				},
			}).Build()
			findings, err := Reference(t.Context(), &Input{Reader: c, Target: target})
			if err != nil {
				t.Fatal(err)
			}
			want := []Reason(nil)
			if len(objs) == 1 {
				want = []Reason{ReasonReferenceNotPermitted}
			}
			if diff := cmp.Diff(want, reasons(findings)); diff != "" {
				t.Errorf("reasons (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReferenceReadErrorIsAnError(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(testScheme()).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return errors.New("connection refused")
		},
	}).Build()
	findings, err := Reference(t.Context(), &Input{Reader: c, Target: greenTarget()})
	if err == nil || !strings.Contains(err.Error(), "reading service production/app-green") {
		t.Errorf("err = %v, want a read error naming the service", err)
	}
	if findings != nil {
		t.Errorf("findings = %v, want none alongside an error", findings)
	}
}

func TestDeploymentReady(t *testing.T) {
	mod := func(f func(d *appsv1.Deployment)) *appsv1.Deployment {
		d := readyDeployment("app-green", 2)
		f(d)
		return d
	}
	tests := map[string]struct {
		deployments []*appsv1.Deployment
		svc         *corev1.Service
		want        []Reason
		wantMessage string
	}{
		"a fully rolled out deployment passes": {
			deployments: []*appsv1.Deployment{readyDeployment("app-green", 2)},
		},
		"0/2 ready is denied with the rollout status fix": {
			deployments: []*appsv1.Deployment{mod(func(d *appsv1.Deployment) {
				d.Status.ReadyReplicas, d.Status.AvailableReplicas = 0, 0
			})},
			want:        []Reason{ReasonNotReady},
			wantMessage: "service production/app-green: deployment app-green is not ready (0/2 ready, 2 pending); wait for: kubectl rollout status deployment/app-green -n production",
		},
		"scaled to zero has its own message telling to scale up first": {
			deployments: []*appsv1.Deployment{mod(func(d *appsv1.Deployment) {
				d.Spec.Replicas = ptr.To[int32](0)
				d.Status = appsv1.DeploymentStatus{ObservedGeneration: 2}
			})},
			want:        []Reason{ReasonScaledToZero},
			wantMessage: "service production/app-green: deployment app-green is scaled to zero; scale it up before switching: kubectl scale deployment/app-green -n production --replicas=<n> && kubectl rollout status deployment/app-green -n production",
		},
		"a generation the controller has not observed is denied": {
			deployments: []*appsv1.Deployment{mod(func(d *appsv1.Deployment) { d.Generation = 3 })},
			want:        []Reason{ReasonRolloutNotObserved},
		},
		"old pods left from a rollout are denied": {
			deployments: []*appsv1.Deployment{mod(func(d *appsv1.Deployment) { d.Status.Replicas = 3 })},
			want:        []Reason{ReasonNotReady},
			wantMessage: "service production/app-green: deployment app-green is not ready (2/2 ready, 1 old pods still running); wait for: kubectl rollout status deployment/app-green -n production",
		},
		"replicas not yet updated are denied": {
			deployments: []*appsv1.Deployment{mod(func(d *appsv1.Deployment) { d.Status.UpdatedReplicas = 1 })},
			want:        []Reason{ReasonNotReady},
		},
		"ready but not yet available is denied": {
			deployments: []*appsv1.Deployment{mod(func(d *appsv1.Deployment) { d.Status.AvailableReplicas = 1 })},
			want:        []Reason{ReasonNotReady},
		},
		"a paused rollout is denied": {
			deployments: []*appsv1.Deployment{mod(func(d *appsv1.Deployment) { d.Spec.Paused = true })},
			want:        []Reason{ReasonPaused},
		},
		"an exceeded progress deadline is denied": {
			deployments: []*appsv1.Deployment{mod(func(d *appsv1.Deployment) {
				d.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded"}}
			})},
			want: []Reason{ReasonProgressDeadlineExceeded},
		},
		"no readiness probe is a warning": {
			deployments: []*appsv1.Deployment{mod(func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].ReadinessProbe = nil })},
			want:        []Reason{ReasonNoReadinessProbe},
		},
		"nil replicas means one": {
			deployments: []*appsv1.Deployment{mod(func(d *appsv1.Deployment) {
				d.Spec.Replicas = nil
				d.Status.Replicas, d.Status.UpdatedReplicas, d.Status.ReadyReplicas, d.Status.AvailableReplicas = 1, 1, 1, 1
			})},
		},
		"a deployment with other labels is not selected": {
			deployments: []*appsv1.Deployment{readyDeployment("app-blue", 2)},
			want:        []Reason{ReasonNoDeployment},
		},
		"a service without a selector selects no deployment and is left to the endpoints check": {
			svc:         service("app-green", nil, 80),
			deployments: []*appsv1.Deployment{readyDeployment("app-green", 2)},
		},
		"every selected deployment must be ready": {
			svc: service("app-green", map[string]string{"app": "myapp"}, 80),
			deployments: []*appsv1.Deployment{readyDeployment("app-blue", 2), mod(func(d *appsv1.Deployment) {
				d.Status.ReadyReplicas = 1
			})},
			want: []Reason{ReasonNotReady},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			svc := tc.svc
			if svc == nil {
				svc = greenService()
			}
			var objs []client.Object
			for _, d := range tc.deployments {
				objs = append(objs, d, replicaSetOf(d, "6a1e", ptr.Deref(d.Spec.Replicas, 1)))
			}
			findings, err := WorkloadReady(t.Context(), &Input{Reader: fakeReader(objs...), Service: svc})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, reasons(findings)); diff != "" {
				t.Errorf("reasons (-want +got):\n%s", diff)
			}
			if tc.wantMessage != "" && (len(findings) == 0 || findings[0].String() != tc.wantMessage) {
				t.Errorf("message:\n got %v\nwant %q", findings, tc.wantMessage)
			}
		})
	}
}

func TestEndpointsReady(t *testing.T) {
	named := func(s *discoveryv1.EndpointSlice, port string) *discoveryv1.EndpointSlice {
		s.Ports[0].Name = ptr.To(port)
		return s
	}
	terminating := slice("app-green", ptr.To(true))
	terminating.Endpoints[0].Conditions.Terminating = ptr.To(true)

	tests := map[string]struct {
		svc         *corev1.Service
		objs        []client.Object
		want        []Reason
		wantMessage string
	}{
		"one ready endpoint passes": {
			objs: []client.Object{slice("app-green", ptr.To(false), ptr.To(true))},
		},
		"an unknown ready condition counts as ready": {
			objs: []client.Object{slice("app-green", nil)},
		},
		"no endpointslice means the selector matches no pods": {
			want:        []Reason{ReasonNoEndpointSlices},
			wantMessage: "service production/app-green: service app-green has no endpoints on port 80: its selector matches no running pods; check its pods: kubectl get pods -n production -l app=myapp,version=green",
		},
		"only unready endpoints are denied with a count": {
			objs:        []client.Object{slice("app-green", ptr.To(false), ptr.To(false))},
			want:        []Reason{ReasonNoReadyEndpoints},
			wantMessage: "service production/app-green: service app-green has no ready endpoints on port 80 (0 of 2 ready); check its pods: kubectl get pods -n production -l app=myapp,version=green",
		},
		"a terminating endpoint is not ready": {
			objs: []client.Object{terminating},
			want: []Reason{ReasonNoReadyEndpoints},
		},
		"endpoints of another service do not count": {
			objs: []client.Object{slice("app-blue", ptr.To(true))},
			want: []Reason{ReasonNoEndpointSlices},
		},
		"endpoints on another named port do not count": {
			svc: func() *corev1.Service {
				s := greenService()
				s.Spec.Ports[0].Name = "http"
				return s
			}(),
			objs: []client.Object{named(slice("app-green", ptr.To(true)), "metrics")},
			want: []Reason{ReasonNoEndpointSlices},
		},
		"endpoints on the matching named port pass": {
			svc: func() *corev1.Service {
				s := greenService()
				s.Spec.Ports[0].Name = "http"
				return s
			}(),
			objs: []client.Object{named(slice("app-green", ptr.To(true)), "http")},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			svc := tc.svc
			if svc == nil {
				svc = greenService()
			}
			findings, err := EndpointsReady(t.Context(), &Input{Reader: fakeReader(tc.objs...), Service: svc, Port: svc.Spec.Ports[0]})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, reasons(findings)); diff != "" {
				t.Errorf("reasons (-want +got):\n%s", diff)
			}
			if tc.wantMessage != "" && (len(findings) == 0 || findings[0].String() != tc.wantMessage) {
				t.Errorf("message:\n got %v\nwant %q", findings, tc.wantMessage)
			}
		})
	}
}

func TestGuardEvaluate(t *testing.T) {
	unready := readyDeployment("app-green", 2)
	unready.Status.ReadyReplicas, unready.Status.AvailableReplicas = 0, 0

	tests := map[string]struct {
		objs       []client.Object
		want       []Reason
		wantDenied bool
	}{
		"a ready green with ready endpoints is allowed": {
			objs: []client.Object{greenService(), readyDeployment("app-green", 2), slice("app-green", ptr.To(true))},
			want: []Reason{ReasonDatabaseNotChecked},
		},
		"an unready green is denied by the deployment and the endpoints check": {
			objs:       []client.Object{greenService(), unready, slice("app-green", ptr.To(false), ptr.To(false))},
			want:       []Reason{ReasonNotReady, ReasonNoReadyEndpoints, ReasonDatabaseNotChecked},
			wantDenied: true,
		},
		"a missing service stops after the reference check": {
			want:       []Reason{ReasonServiceNotFound},
			wantDenied: true,
		},
		"an ExternalName service is allowed with a warning": {
			objs: []client.Object{&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "app-green"},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "green.example.invalid", Ports: []corev1.ServicePort{{Port: 80}}}}},
			want: []Reason{ReasonExternalNameNotChecked},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			g := &Guard{Reader: fakeReader(tc.objs...)}
			res, err := g.Evaluate(t.Context(), []Target{greenTarget()})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, reasons(res.Findings)); diff != "" {
				t.Errorf("reasons (-want +got):\n%s", diff)
			}
			if got := denies(res.Findings); got != tc.wantDenied {
				t.Errorf("denied = %v, want %v", got, tc.wantDenied)
			}
		})
	}
}

// A check still running at the deadline becomes a denial that names it.
func TestGuardEvaluateTimeoutNamesTheCheck(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(greenService(), readyDeployment("app-green", 2)).
		WithInterceptorFuncs(interceptor.Funcs{
			List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
				if isList(list, "EndpointSliceList") {
					<-ctx.Done() // an API server that never answers
					return ctx.Err()
				}
				return cl.List(ctx, list, opts...)
			},
		}).Build()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	res, err := (&Guard{Reader: c}).Evaluate(ctx, []Target{greenTarget()})
	if err != nil {
		t.Fatal(err)
	}
	var timedOut []Check
	for _, f := range res.Findings {
		if f.Reason == ReasonTimeout {
			timedOut = append(timedOut, f.Check)
			if !strings.Contains(f.String(), "the endpoints check did not finish before the admission deadline") {
				t.Errorf("timeout message %q does not name the check", f.String())
			}
		}
	}
	if diff := cmp.Diff([]Check{CheckEndpoints}, timedOut); diff != "" {
		t.Errorf("timed out checks (-want +got):\n%s", diff)
	}
	if !denies(res.Findings) {
		t.Error("a timed out check must deny")
	}
}

// A hung first check times out on its own and stops the target's evaluation
// without racing with the abandoned goroutine.
func TestGuardEvaluateReferenceTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	c := fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(greenService()).
		WithInterceptorFuncs(interceptor.Funcs{
			Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				<-release // answers only after the deadline has passed
				return cl.Get(context.Background(), key, obj, opts...)
			},
		}).Build()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	res, err := (&Guard{Reader: c}).Evaluate(ctx, []Target{greenTarget()})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Reason{ReasonTimeout}, reasons(res.Findings)); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
	if len(res.Runs) != 1 || res.Runs[0].Check != CheckReference || !res.Runs[0].TimedOut {
		t.Errorf("runs = %+v, want one timed out reference run", res.Runs)
	}
}

// Targets are checked at most MaxConcurrentTargets at a time, and each is
// still checked: a route with many new backends gets a verdict on every one.
func TestGuardEvaluateBoundsConcurrentTargets(t *testing.T) {
	const targets, limit = 40, 4
	var inFlight, peak atomic.Int32
	c := fake.NewClientBuilder().WithScheme(testScheme()).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			// Hold the read until another would have started, were there no bound.
			select {
			case <-time.After(5 * time.Millisecond):
			case <-ctx.Done():
			}
			return cl.Get(ctx, key, obj, opts...)
		},
	}).Build()
	var ts []Target
	for i := range targets {
		tg := greenTarget()
		tg.Service.Name = fmt.Sprintf("app-%d", i)
		ts = append(ts, tg)
	}
	res, err := (&Guard{Reader: c, MaxConcurrentTargets: limit}).Evaluate(t.Context(), ts)
	if err != nil {
		t.Fatal(err)
	}
	if got := peak.Load(); got > limit {
		t.Errorf("%d targets were read at once, want at most %d", got, limit)
	}
	notFound := 0
	for _, f := range res.Findings {
		if f.Reason == ReasonServiceNotFound {
			notFound++
		}
	}
	if notFound != targets {
		t.Errorf("%d ServiceNotFound findings, want one per target (%d): %v", notFound, targets, reasons(res.Findings))
	}
}

// The Services and Deployments a decision read are reported with the
// resourceVersion read, so a decision can be traced to the state it saw.
func TestGuardEvaluateReportsObservedObjects(t *testing.T) {
	svc, dep := greenService(), readyDeployment("app-green", 2)
	c := fakeReader(svc, dep, slice("app-green", ptr.To(true)))
	res, err := (&Guard{Reader: c}).Evaluate(t.Context(), []Target{greenTarget()})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range res.Observed {
		if o.ResourceVersion == "" {
			t.Errorf("%s was reported without a resourceVersion", o)
		}
		got = append(got, o.Kind+" "+o.Namespace+"/"+o.Name)
	}
	if diff := cmp.Diff([]string{"Service production/app-green", "Deployment production/app-green"}, got); diff != "" {
		t.Errorf("observed (-want +got):\n%s", diff)
	}
	if s := res.Observed[1].String(); !strings.HasPrefix(s, "deployment production/app-green@") {
		t.Errorf("Observed.String() = %q", s)
	}
}

// replicaSetOf is the ReplicaSet the deployment controller makes for d: its
// pod template labels plus pod-template-hash, controlled by d.
func replicaSetOf(d *appsv1.Deployment, hash string, replicas int32) *appsv1.ReplicaSet {
	l := map[string]string{appsv1.DefaultDeploymentUniqueLabelKey: hash}
	for k, v := range d.Spec.Template.Labels {
		l[k] = v
	}
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: d.Name + "-" + hash, Labels: l,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: "uid-" + types.UID(d.Name),
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To(replicas), Selector: &metav1.LabelSelector{MatchLabels: l},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: l}, Spec: d.Spec.Template.Spec}},
	}
}

// pendingPod is a pod of rs that no node took.
func pendingPod(rs *appsv1.ReplicaSet, i int) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: rs.Namespace, Name: fmt.Sprintf("%s-%d", rs.Name, i), Labels: rs.Spec.Template.Labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, Controller: ptr.To(true)}}},
		Spec:   rs.Spec.Template.Spec,
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
}

// renamed is readyDeployment(name) serving the labels of version.
func renamed(name, version string, replicas int32) *appsv1.Deployment {
	d := readyDeployment(name, replicas)
	l := map[string]string{"app": "myapp", "version": version}
	d.Spec.Selector.MatchLabels, d.Spec.Template.Labels = l, l
	return d
}

func scaledToZero(d *appsv1.Deployment) *appsv1.Deployment {
	d.Spec.Replicas = ptr.To[int32](0)
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation}
	return d
}

// SelectDeployments finds the Deployments behind a Service from the
// Service's name and the ReplicaSets its selector matches, never by listing
// the namespace's Deployments.
func TestSelectDeploymentsFromTheTargetsObjects(t *testing.T) {
	green := readyDeployment("app-green", 2)
	web := renamed("web-v2", "green", 2)
	blue := readyDeployment("app-blue", 2)
	tests := map[string]struct {
		svc  *corev1.Service
		objs []client.Object
		want []string
		// wantReasons, when set, are WorkloadReady's reasons on the selected Deployments.
		wantReasons []Reason
	}{
		"the deployment named like the service is found before its controller made a replicaset": {
			objs: []client.Object{green},
			want: []string{"app-green"},
		},
		"a deployment named unlike the service is found through its replicaset": {
			objs: []client.Object{web, replicaSetOf(web, "7d9f", 2)},
			want: []string{"web-v2"},
		},
		"a deployment mid-rollout, with pods from two replicasets, is found once": {
			objs: []client.Object{web, replicaSetOf(web, "old1", 1), replicaSetOf(web, "new2", 2)},
			want: []string{"web-v2"},
		},
		"a deployment whose pods are all pending is found and denied": {
			objs: func() []client.Object {
				d := renamed("web-v2", "green", 2)
				d.Status.ReadyReplicas, d.Status.AvailableReplicas = 0, 0
				rs := replicaSetOf(d, "7d9f", 2)
				return []client.Object{d, rs, pendingPod(rs, 0), pendingPod(rs, 1)}
			}(),
			want:        []string{"web-v2"},
			wantReasons: []Reason{ReasonNotReady},
		},
		"a deployment named unlike the service and scaled to zero is found through the replicaset it keeps": {
			objs:        []client.Object{scaledToZero(renamed("web-v2", "green", 2)), replicaSetOf(web, "7d9f", 0)},
			want:        []string{"web-v2"},
			wantReasons: []Reason{ReasonScaledToZero},
		},
		"the tutorial's app-blue scaled to zero is found and denied as scaled to zero": {
			svc:         service("app-blue", map[string]string{"app": "myapp", "version": "blue"}, 80),
			objs:        []client.Object{scaledToZero(readyDeployment("app-blue", 2)), replicaSetOf(blue, "5c4b", 0), green, replicaSetOf(green, "6a1e", 2)},
			want:        []string{"app-blue"},
			wantReasons: []Reason{ReasonScaledToZero},
		},
		"a deployment whose template no longer matches is not selected, though its old replicaset does": {
			objs: func() []client.Object {
				d := renamed("web-v2", "green", 2)
				old := replicaSetOf(d, "old1", 0)
				d.Spec.Template.Labels = map[string]string{"app": "myapp", "version": "purple"}
				return []client.Object{d, old, replicaSetOf(d, "new2", 2)}
			}(),
			wantReasons: []Reason{ReasonNoDeployment},
		},
		"the deployment named like the service is not selected when its template does not match": {
			objs:        []client.Object{renamed("app-green", "blue", 2)},
			wantReasons: []Reason{ReasonNoDeployment},
		},
		"a replicaset no deployment controls is ignored": {
			objs: func() []client.Object {
				bare := replicaSetOf(web, "7d9f", 2)
				bare.OwnerReferences = nil
				rollout := replicaSetOf(web, "8e0a", 2)
				rollout.OwnerReferences[0].APIVersion, rollout.OwnerReferences[0].Kind = "argoproj.io/v1alpha1", "Rollout"
				notController := replicaSetOf(web, "9f1b", 2)
				notController.OwnerReferences[0].Controller = nil
				return []client.Object{web, bare, rollout, notController}
			}(),
			wantReasons: []Reason{ReasonNoDeployment},
		},
		"a replicaset whose deployment is gone is ignored": {
			objs:        []client.Object{replicaSetOf(web, "7d9f", 2)},
			wantReasons: []Reason{ReasonNoDeployment},
		},
		"a matching deployment in another namespace is not found": {
			objs: func() []client.Object {
				d := renamed("web-v2", "green", 2)
				d.Namespace = "staging"
				return []client.Object{d, replicaSetOf(d, "7d9f", 2)}
			}(),
			wantReasons: []Reason{ReasonNoDeployment},
		},
		"a deployment named unlike the service whose controller made no replicaset yet is not found": {
			objs:        []client.Object{web},
			wantReasons: []Reason{ReasonNoDeployment},
		},
		"every deployment a broad selector matches is found, sorted by name": {
			svc: service("app-green", map[string]string{"app": "myapp"}, 80),
			objs: []client.Object{web, replicaSetOf(web, "7d9f", 2), blue, replicaSetOf(blue, "5c4b", 2), green, replicaSetOf(green, "6a1e", 2),
				renamed("other", "green", 1)},
			want: []string{"app-blue", "app-green", "web-v2"},
		},
		"a service without a selector selects none": {
			svc:  service("app-green", nil, 80),
			objs: []client.Object{green, replicaSetOf(green, "6a1e", 2)},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			svc := tc.svc
			if svc == nil {
				svc = greenService()
			}
			var objs []client.Object
			for _, o := range tc.objs {
				objs = append(objs, o.DeepCopyObject().(client.Object))
			}
			var listedDeployments atomic.Int32
			r := fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
				List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
					if _, ok := list.(*appsv1.DeploymentList); ok {
						listedDeployments.Add(1)
					}
					return cl.List(ctx, list, opts...)
				},
			}).Build()
			selected, err := SelectDeployments(t.Context(), r, svc)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range selected {
				got = append(got, d.Name)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("selected (-want +got):\n%s", diff)
			}
			if n := listedDeployments.Load(); n != 0 {
				t.Errorf("the namespace's deployments were listed %d times", n)
			}
			if tc.wantReasons != nil {
				if diff := cmp.Diff(tc.wantReasons, reasons(deploymentsReady(svc, selected))); diff != "" {
					t.Errorf("reasons (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// What a switch reads to find its Deployment does not grow with the number
// of other Deployments, ReplicaSets and pods in the target's namespace.
func TestSelectDeploymentsReadsDoNotGrowWithTheNamespace(t *testing.T) {
	type reads struct{ Calls, Objects int }
	measure := func(t *testing.T, others int) reads {
		t.Helper()
		green := readyDeployment("app-green", 2)
		objs := []client.Object{green, replicaSetOf(green, "6a1e", 2), replicaSetOf(green, "5b0d", 0)}
		for i := range others {
			d := readyDeployment(fmt.Sprintf("other-%03d", i), 3)
			l := map[string]string{"app": fmt.Sprintf("other-%03d", i)}
			d.Spec.Selector.MatchLabels, d.Spec.Template.Labels = l, l
			rs := replicaSetOf(d, "1a2b", 3)
			objs = append(objs, d, rs, pendingPod(rs, 0), pendingPod(rs, 1), pendingPod(rs, 2))
		}
		var mu sync.Mutex
		var got reads
		count := func(objects int) {
			mu.Lock()
			defer mu.Unlock()
			got.Calls++
			got.Objects += objects
		}
		r := fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
			Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				count(1)
				return cl.Get(ctx, key, obj, opts...)
			},
			List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
				err := cl.List(ctx, list, opts...)
				count(meta.LenList(list))
				return err
			},
		}).Build()
		selected, err := SelectDeployments(t.Context(), r, greenService())
		if err != nil {
			t.Fatal(err)
		}
		if len(selected) != 1 || selected[0].Name != "app-green" {
			t.Fatalf("selected %v, want app-green", selected)
		}
		return got
	}
	alone := measure(t, 0)
	// A GET of app-green, a LIST of its two ReplicaSets and a LIST of
	// its pods (none here).
	if diff := cmp.Diff(reads{Calls: 3, Objects: 3}, alone); diff != "" {
		t.Errorf("reads in an empty namespace (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(alone, measure(t, 100)); diff != "" {
		t.Errorf("reads with 100 other apps in the namespace (-alone +crowded):\n%s", diff)
	}
}

// A read that fails is an error that names what was read; a guard whose
// ClusterRole predates the ReplicaSet read is told how to fix it.
func TestSelectDeploymentsReadErrors(t *testing.T) {
	gr := schema.GroupResource{Group: "apps", Resource: "replicasets"}
	tests := map[string]struct {
		funcs interceptor.Funcs
		want  []string
	}{
		"a forbidden replicaset list says which permission to grant": {
			funcs: interceptor.Funcs{List: forbidListOf("ReplicaSetList", gr)},
			want: []string{"listing replicasets that match the selector of service production/app-green",
				"grant the guard list on replicasets.apps (apply this version's manifests/rbac)"},
		},
		"a forbidden pod list says which permission to grant": {
			funcs: interceptor.Funcs{List: forbidListOf("PodList", schema.GroupResource{Resource: "pods"})},
			want: []string{"listing pods that match the selector of service production/app-green",
				"grant the guard list on pods (apply this version's manifests/rbac)"},
		},
		"a failed deployment read names the deployment": {
			funcs: interceptor.Funcs{Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				return apierrors.NewServiceUnavailable("etcd is down")
			}},
			want: []string{"reading deployment production/app-green: etcd is down"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			green := readyDeployment("app-green", 2)
			r := fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(green, replicaSetOf(green, "6a1e", 2)).
				WithInterceptorFuncs(tc.funcs).Build()
			_, err := SelectDeployments(t.Context(), r, greenService())
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// The warning for a Service whose Deployment cannot be found says where the
// guard looked.
func TestNoDeploymentFoundSaysWhereItLooked(t *testing.T) {
	got := deploymentsReady(greenService(), nil)
	want := "service production/app-green: no deployment named app-green, and no pods or replicasets that match app=myapp,version=green; workload readiness not checked"
	if len(got) != 1 || got[0].Severity != Warn || got[0].String() != want {
		t.Errorf("findings = %v, want one warning %q", got, want)
	}
}

// isList reports whether list is a list of kind (e.g. "EndpointSliceList"),
// full or metadata only.
func isList(list client.ObjectList, kind string) bool {
	if m, ok := list.(*metav1.PartialObjectMetadataList); ok {
		return m.GetObjectKind().GroupVersionKind().Kind == kind
	}
	gvks, _, err := testScheme().ObjectKinds(list)
	return err == nil && len(gvks) > 0 && gvks[0].Kind == kind
}

// asWorkloads wraps Deployments as the workloads the database check reads.
func asWorkloads(deps []appsv1.Deployment) []Workload {
	out := make([]Workload, len(deps))
	for i := range deps {
		out[i] = deploymentWorkload(&deps[i])
	}
	return out
}

// deploymentsReady is WorkloadReady's verdict on Deployments alone.
func deploymentsReady(svc *corev1.Service, deps []appsv1.Deployment) []Finding {
	return workloadsReady(svc, WorkloadSelection{Workloads: asWorkloads(deps)}, DefaultUnknownWorkloads)
}

// forbidListOf refuses metadata lists of kind listKind, as an API server
// would a guard whose ClusterRole lacks the permission.
func forbidListOf(listKind string, gr schema.GroupResource) func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
	return func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		if m, ok := list.(*metav1.PartialObjectMetadataList); ok && m.GroupVersionKind().Kind == listKind {
			return apierrors.NewForbidden(gr, "", errors.New("cannot list resource"))
		}
		return cl.List(ctx, list, opts...)
	}
}
