package cutoverctl

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/cutover-guard/cutover-guard/webhook"
)

// The plugin keeps its own copies of the guard's Event reasons (it does not
// link the webhook package); they must not drift.
func TestNamesMatchTheGuard(t *testing.T) {
	if ReasonCutoverDenied != webhook.ReasonCutoverDenied || ReasonCutoverOverridden != webhook.ReasonCutoverOverridden {
		t.Errorf("Event reasons %q, %q; the guard records %q, %q", ReasonCutoverDenied, ReasonCutoverOverridden,
			webhook.ReasonCutoverDenied, webhook.ReasonCutoverOverridden)
	}
	for _, a := range []string{AnnotationPreviousBackends, AnnotationSwitchHistory} {
		if a == webhook.AnnotationOverride || !strings.HasPrefix(a, "cutover-guard.dev/") {
			t.Errorf("annotation %q: want a name of its own under cutover-guard.dev/", a)
		}
	}
}

func TestFindGuard(t *testing.T) {
	other := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "policy"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{Name: "routes.policy.example", Rules: []admissionregistrationv1.RuleWithOperations{{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
			Rule:       admissionregistrationv1.Rule{Resources: []string{"httproutes"}},
		}}}},
	}
	for name, tc := range map[string]struct {
		guard bool
		objs  []client.Object
		deny  bool // listing is forbidden
		want  GuardState
	}{
		"the install's configuration":               {guard: true, want: GuardInstalled},
		"no configuration":                          {want: GuardMissing},
		"only another webhook for httproutes":       {objs: []client.Object{other}, want: GuardMissing},
		"a user who may not list the configuration": {guard: true, deny: true, want: GuardUnknown},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFake(t, 2, 2, tc.guard, tc.objs...)
			c := f.c
			if tc.deny {
				c = interceptor.NewClient(f.c.(client.WithWatch), interceptor.Funcs{List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
					return apierrors.NewForbidden(admissionregistrationv1.Resource("validatingwebhookconfigurations"), "", errors.New("no"))
				}})
			}
			if got := findGuard(t.Context(), c); got.State != tc.want {
				t.Errorf("findGuard = %+v, want %s", got, tc.want)
			}
		})
	}
}

// How the API server's answers to a patch are read.
func TestPatchAnswers(t *testing.T) {
	route := routeTo([]string{"app-blue"})
	for name, tc := range map[string]struct {
		err         error
		wantVerdict Verdict
		wantErr     string
	}{
		"the guard's denial, one finding a line": {
			err:         denial("service production/app-green: not ready", "service production/app-green: no endpoints"),
			wantVerdict: Verdict{Reviewed: true, Webhook: "httproute.cutover-guard.dev", Findings: []string{"service production/app-green: not ready", "service production/app-green: no endpoints"}},
		},
		"another webhook's denial": {
			err: &apierrors.StatusError{ErrStatus: metav1.Status{Code: 403, Reason: metav1.StatusReasonForbidden,
				Message: `admission webhook "routes.policy.example" denied the request: no`}},
			wantVerdict: Verdict{Webhook: "routes.policy.example", Findings: []string{"no"}},
		},
		"a failed resourceVersion test": {
			err:     apierrors.NewInvalid(gvk.GroupKind(), "myapp", nil),
			wantErr: "patch httproute production/myapp",
		},
		"the route deleted meanwhile": {
			err:     apierrors.NewNotFound(gvr.GroupResource(), "myapp"),
			wantErr: "httproute production/myapp not found; list the routes with: kubectl get httproutes -n production",
		},
		"the JSON patch test failing": {
			err:     apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, "", schema.GroupResource{}, "", "testing value /metadata/resourceVersion failed: test failed", 0, false),
			wantErr: errStale.Error(),
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithScheme(scheme()).WithObjects(route.DeepCopy()).WithInterceptorFuncs(interceptor.Funcs{
				Patch: func(context.Context, client.WithWatch, client.Object, client.Patch, ...client.PatchOption) error {
					return tc.err
				},
			}).Build()
			e := &env{c: c, namespace: "production", warnings: &warningCollector{}}
			_, v, err := e.patchRoute(t.Context(), route, []byte(`[]`), true)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.Allowed != tc.wantVerdict.Allowed || v.Reviewed != tc.wantVerdict.Reviewed || v.Webhook != tc.wantVerdict.Webhook ||
				strings.Join(v.Findings, "|") != strings.Join(tc.wantVerdict.Findings, "|") {
				t.Errorf("verdict = %+v, want %+v", v, tc.wantVerdict)
			}
		})
	}
}

// A dry run allowed without the guard having seen it (its webhook skips
// the namespace) is undecided, not allowed.
func TestAllowedButNotReviewedIsUndecided(t *testing.T) {
	f := newFake(t, 2, 2, true)
	f.guard = false // the configuration exists, but nothing reviews
	e := f.env()
	res, code, err := e.check(t.Context(), "myapp", "app-green", -1)
	if err != nil || code != ExitError || res.Verdict == nil || res.Verdict.Reviewed || !strings.Contains(res.Verdict.Undecided, "did not review") {
		t.Fatalf("check = %+v, exit %d, %v; want undecided, exit 2", res, code, err)
	}
	if f.patches != 0 {
		t.Errorf("check wrote the route %d time(s)", f.patches)
	}
}

func TestVerify(t *testing.T) {
	var calls int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		switch {
		case r.URL.Path == "/redirect":
			http.Redirect(w, r, "/", http.StatusFound)
		case r.URL.Path == "/fail-third" && calls == 3:
			w.WriteHeader(http.StatusBadGateway)
		}
	}))
	defer srv.Close()
	for name, tc := range map[string]struct {
		path     string
		count    int
		wantOK   bool
		wantReqs int
		wantLast string
	}{
		"five 200s":                       {path: "/", count: 5, wantOK: true, wantReqs: 5, wantLast: "HTTP 200"},
		"the third fails":                 {path: "/fail-third", count: 5, wantReqs: 3, wantLast: "HTTP 502"},
		"a redirect is not 200":           {path: "/redirect", count: 5, wantReqs: 1, wantLast: "HTTP 302"},
		"a closed port fails at once too": {path: "", count: 2, wantReqs: 1},
	} {
		t.Run(name, func(t *testing.T) {
			calls = 0
			url := srv.URL + tc.path
			if tc.path == "" {
				url = "http://127.0.0.1:1/"
			}
			o := verifyOptions{url: url, count: tc.count, interval: time.Millisecond, timeout: 5 * time.Second}
			if err := o.validate(); err != nil {
				t.Fatal(err)
			}
			var seen int
			res := verify(t.Context(), o, func(VerifyRequest) { seen++ })
			if res.OK != tc.wantOK || len(res.Requests) != tc.wantReqs || seen != tc.wantReqs {
				t.Fatalf("verify = %+v (%d reported), want ok %v after %d", res, seen, tc.wantOK, tc.wantReqs)
			}
			if last := res.Requests[len(res.Requests)-1].String(); tc.wantLast != "" && last != tc.wantLast {
				t.Errorf("last request: %s, want %s", last, tc.wantLast)
			}
		})
	}
	for _, bad := range []verifyOptions{
		{url: "ftp://x/", count: 1, timeout: time.Second},
		{url: "example.com", count: 1, timeout: time.Second},
		{url: "http://x/", count: 0, timeout: time.Second},
		{url: "http://x/", count: 1, interval: -time.Second, timeout: time.Second},
	} {
		if err := bad.validate(); err == nil {
			t.Errorf("verify options %+v accepted", bad)
		}
	}
}

// Flags default to the package's Default* values.
func TestFlagDefaultsArePackageDefaults(t *testing.T) {
	cmd := NewCommand(genericiooptions.IOStreams{In: &bytes.Buffer{}, Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}})
	want := map[string]map[string]string{
		"status":   {"interval": DefaultWatchInterval.String()},
		"switch":   {"verify-count": "5", "verify-interval": DefaultVerifyInterval.String(), "verify-timeout": DefaultVerifyTimeout.String(), "wait-timeout": DefaultWaitTimeout.String()},
		"rollback": {"wait-timeout": DefaultWaitTimeout.String()},
	}
	if DefaultVerifyCount != 5 {
		t.Errorf("DefaultVerifyCount = %d, want the tutorial's 5", DefaultVerifyCount)
	}
	for sub, flags := range want {
		c, _, err := cmd.Find([]string{sub})
		if err != nil {
			t.Fatal(err)
		}
		for name, def := range flags {
			if f := c.Flags().Lookup(name); f == nil || f.DefValue != def {
				t.Errorf("%s --%s: default %v, want %s", sub, name, f, def)
			}
		}
	}
}

// Off a terminal, switch and rollback refuse to ask before touching the
// cluster (no kubeconfig is needed to be told).
func TestRefusesToAskOffATerminal(t *testing.T) {
	for _, args := range [][]string{{"switch", "myapp", "--to", "app-green"}, {"rollback", "myapp"}} {
		var out, errOut bytes.Buffer
		code := Main(append(args, "--kubeconfig", "/nonexistent"), genericiooptions.IOStreams{In: strings.NewReader("y\n"), Out: &out, ErrOut: &errOut})
		if code != ExitError || !strings.Contains(errOut.String(), errNotTerminal.Error()) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", args, code, errOut.String(), errNotTerminal)
		}
	}
}

var (
	gvk = gvr.GroupVersion().WithKind("HTTPRoute")
	gvr = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
)
