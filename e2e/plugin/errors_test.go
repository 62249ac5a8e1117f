package plugin_test

import (
	"context"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
	"github.com/cutover-guard/cutover-guard/internal/cutoverctl"
)

// Bad input and a missing guard get a clear message and exit 2, and change
// nothing.
func TestClearErrors(t *testing.T) {
	e := setup(t)
	e.reset(t, true)
	ns := []string{"-n", tutorial.Namespace}
	for name, tc := range map[string]struct {
		args []string
		want []string
	}{
		"a route that does not exist": {
			args: append([]string{"status", "nope"}, ns...),
			want: []string{"error: httproute production/nope not found; list the routes with: kubectl get httproutes -n production"},
		},
		"a backend that does not exist": {
			args: append([]string{"check", tutorial.Route, "--to", "app-purple"}, ns...),
			want: []string{"error: service production/app-purple not found", "kubectl get services -n production"},
		},
		"a switch to a backend that does not exist": {
			args: append([]string{"switch", tutorial.Route, "--to", "app-purple", "--yes"}, ns...),
			want: []string{"error: service production/app-purple not found"},
		},
		"check without --to": {
			args: append([]string{"check", tutorial.Route}, ns...),
			want: []string{"error: --to SERVICE is required"},
		},
		"a verify URL that is not http": {
			args: append([]string{"switch", tutorial.Route, "--to", tutorial.Green, "--yes", "--verify", "ftp://example/"}, ns...),
			want: []string{`error: --verify "ftp://example/": want an http:// or https:// URL`},
		},
		"--rollback-on-failure without --verify": {
			args: append([]string{"switch", tutorial.Route, "--to", tutorial.Green, "--yes", "--rollback-on-failure"}, ns...),
			want: []string{"error: --rollback-on-failure needs --verify URL"},
		},
		"an output format other than json": {
			args: append([]string{"history", tutorial.Route, "-o", "yaml"}, ns...),
			want: []string{`error: -o "yaml": the only output format is json`},
		},
		"impersonating a user who may not read the route (--as)": {
			args: append([]string{"status", tutorial.Route, "--as", "nobody", "--as-group", "nobodies"}, ns...),
			want: []string{"error: get httproute production/myapp:", `User "nobody" cannot get resource "httproutes"`},
		},
		"rollback with no switch recorded": {
			args: append([]string{"rollback", tutorial.Route, "--yes"}, ns...),
			want: []string{"has no switch recorded", "kubectl cutover switch myapp -n production --to SERVICE"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			r := e.cutover(t, tc.args...)
			mustExit(t, r, 2)
			mustContain(t, r, tc.want...)
		})
	}
	if got := e.backend(t); got != tutorial.Blue {
		t.Fatalf("after the failed commands the route sends traffic to %s", got)
	}

	// The plugin reads a 422 with the server's generic words and no causes
	// as "the route changed since it was read" (its patch starts with a
	// resourceVersion test): this is what the API server answers then.
	r := e.sh(t, `kubectl patch httproute myapp -n production --type=json -p='[{"op":"test","path":"/metadata/resourceVersion","value":"1"}]'`)
	mustContain(t, r, "the server rejected our request due to an error in our request")
}

// A route in a namespace the guard's webhook skips (kube-system, by its
// namespaceSelector): the API server alone answers the dry run, and check
// says it cannot decide instead of reporting "allowed".
func TestCheckCannotDecideWhenTheGuardDoesNotReview(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	const ns = "kube-system"
	for _, name := range []string{"unguarded-blue", "unguarded-green"} {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		}
		if err := tutorial.CreateOrReplace(ctx, e.kube, svc); err != nil {
			t.Fatal(err)
		}
	}
	route := &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unguarded"},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "public"}}},
			Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{
				BackendObjectReference: gwv1.BackendObjectReference{Name: "unguarded-blue", Port: ptr.To[gwv1.PortNumber](80)},
			}}}}},
		},
	}
	if err := tutorial.Recreate(ctx, e.kube, route); err != nil {
		t.Fatal(err)
	}
	r := e.cutover(t, "check", "unguarded", "-n", ns, "--to", "unguarded-green")
	mustExit(t, r, 2)
	mustContain(t, r, "guard: cannot decide: the guard did not review the dry run")
	var ck cutoverctl.CheckResult
	e.cutoverJSON(t, &ck, "check", "unguarded", "-n", ns, "--to", "unguarded-green")
	if ck.Verdict == nil || ck.Verdict.Reviewed || ck.Verdict.Undecided == "" {
		t.Errorf("check -o json: %+v, want an unreviewed, undecided verdict", ck.Verdict)
	}
	r = e.cutover(t, "switch", "unguarded", "-n", ns, "--to", "unguarded-green", "--yes")
	mustExit(t, r, 2)
	mustContain(t, r, "the guard did not review the dry run", "not switching")
}

// Without the guard's webhook configuration, check cannot decide and
// switch does not switch; status says so. The configuration is put back
// afterwards.
func TestNoGuardInstalled(t *testing.T) {
	e := setup(t)
	e.reset(t, true)
	ctx := t.Context()
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: tutorial.WebhookConfiguration}}
	if err := e.kube.Delete(ctx, vwc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tutorial.Register(context.Background(), e.kube, e.stack.Guard, time.Minute); err != nil {
			t.Errorf("re-register the guard: %v", err)
		}
	})
	ns := []string{"-n", tutorial.Namespace}
	r := e.cutover(t, append([]string{"check", tutorial.Route, "--to", tutorial.Green}, ns...)...)
	mustExit(t, r, 2)
	mustContain(t, r, "error: no guard installed: no ValidatingWebhookConfiguration has a cutover-guard webhook for httproutes", "cannot decide")
	r = e.cutover(t, append([]string{"switch", tutorial.Route, "--to", tutorial.Green, "--yes"}, ns...)...)
	mustExit(t, r, 2)
	mustContain(t, r, "error: no guard installed")
	r = e.cutover(t, append([]string{"status", tutorial.Route}, ns...)...)
	mustExit(t, r, 0)
	mustContain(t, r, "guard: NOT INSTALLED")
	if got := e.backend(t); got != tutorial.Blue {
		t.Fatalf("without a guard the route was switched to %s", got)
	}
}
