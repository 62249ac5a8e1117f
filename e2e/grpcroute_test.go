package e2e_test

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// A GRPCRoute has the same backendRefs, and the same switch is denied.
func TestGRPCRouteSwitchToUnreadyGreenIsDenied(t *testing.T) {
	e := setup(t)
	e.reset(t, world{})
	route := &gwv1.GRPCRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: "myapp-grpc"},
		Spec: gwv1.GRPCRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: tutorial.Gateway}}},
			Rules: []gwv1.GRPCRouteRule{{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: gwv1.BackendRef{
				BackendObjectReference: gwv1.BackendObjectReference{Name: tutorial.Blue, Port: ptr.To[gwv1.PortNumber](80)},
			}}}}},
		},
	}
	if err := tutorial.Recreate(t.Context(), e.kube, route); err != nil {
		t.Fatal(err)
	}

	r := e.sh(t, `kubectl patch grpcroute myapp-grpc -n production --type=json -p='[{"op":"replace","path":"/spec/rules/0/backendRefs/0/name","value":"app-green"}]'`)
	requireDenied(t, r, tutorial.GRPCRouteWebhook, greenNotReady...)

	got := e.sh(t, `kubectl get grpcroute myapp-grpc -n production -o jsonpath='{.spec.rules[0].backendRefs[0].name}'`)
	if !got.OK() || got.Stdout != tutorial.Blue {
		t.Fatalf("grpcroute backend is %q, want %q:\n%s", got.Stdout, tutorial.Blue, got)
	}
}
