package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/cutover-guard/cutover-guard/checks"
)

// tutorialObjects is the tutorial's production namespace: app-blue rolled out
// with a ready endpoint, app-green created but 0/2 ready.
func tutorialObjects() []client.Object { return tutorialNamespace(false) }

// tutorialNamespace is the tutorial's production namespace with app-blue
// rolled out and app-green rolled out or 0/2 ready.
func tutorialNamespace(greenReady bool) []client.Object {
	var objs []client.Object
	for _, color := range []string{"blue", "green"} {
		ready := int32(2)
		if color == "green" && !greenReady {
			ready = 0
		}
		objs = append(objs, app("production", "app-"+color, "myapp:v1", map[string]string{"app": "myapp", "version": color}, 2, ready)...)
	}
	return objs
}

// app is a Service selecting labels, its Deployment of replicas (ready of
// them ready, all updated) and an EndpointSlice with one endpoint, ready
// when any replica is.
func app(namespace, name, image string, labels map[string]string, replicas, ready int32) []client.Object {
	return []client.Object{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
			Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80}}}},
		&appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Generation: 1},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To(replicas), Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: image, ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{}}},
				}}}}},
			Status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: replicas, UpdatedReplicas: replicas, ReadyReplicas: ready, AvailableReplicas: ready},
		},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: namespace, Name: name + "-x1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(""), Port: ptr.To[int32](8080)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready > 0)}}},
		},
	}
}

type harness struct {
	server   *httptest.Server
	recorder *events.FakeRecorder
	metrics  *Metrics
	reads    *atomic.Int64
}

func newHarness(t *testing.T, objs ...client.Object) *harness {
	t.Helper()
	return startHarness(t, objs, harnessConfig{})
}

// harnessConfig varies what startHarness serves.
type harnessConfig struct {
	// list, if set, answers every List in place of the fake client (the
	// read is still counted).
	list func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error
	// options, if set, changes the handlers' Options.
	options func(*Options)
}

// startHarness serves the real handlers over a fake client holding objs,
// counting every read.
func startHarness(t *testing.T, objs []client.Object, cfg harnessConfig) *harness {
	t.Helper()
	h := &harness{recorder: events.NewFakeRecorder(16), metrics: NewMetrics(prometheus.NewRegistry()), reads: &atomic.Int64{}}
	list := cfg.list
	if list == nil {
		list = func(ctx context.Context, c client.WithWatch, l client.ObjectList, opts ...client.ListOption) error {
			return c.List(ctx, l, opts...)
		}
	}
	reader := fake.NewClientBuilder().WithScheme(Scheme()).WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			h.reads.Add(1)
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, l client.ObjectList, opts ...client.ListOption) error {
			h.reads.Add(1)
			return list(ctx, c, l, opts...)
		},
	}).Build()
	o := Options{Guard: &checks.Guard{Reader: reader}, Recorder: h.recorder, Metrics: h.metrics, RequestTimeout: 5 * time.Second}
	if cfg.options != nil {
		cfg.options(&o)
	}
	mux := http.NewServeMux()
	for path, handler := range Handlers(Scheme(), o) {
		mux.Handle(path, handler)
	}
	h.server = httptest.NewServer(mux)
	t.Cleanup(h.server.Close)
	return h
}

// post sends a testdata AdmissionReview to path and decodes the response.
func (h *harness) post(t *testing.T, path, file string) *admissionv1.AdmissionResponse {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	return postReview(t, h.server.URL+path, body)
}

// postReview sends an AdmissionReview to url as the API server does (with a
// 10 s timeout parameter) and decodes the response, which must be a 200.
func postReview(t *testing.T, url string, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	resp, err := http.Post(url+"?timeout=10s", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP status %d", resp.StatusCode)
	}
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&review); err != nil {
		t.Fatal(err)
	}
	if review.Response == nil {
		t.Fatal("no response in the AdmissionReview")
	}
	return review.Response
}

func (h *harness) events() []string {
	var out []string
	for {
		select {
		case e := <-h.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

const deniedGreen = "service production/app-green: deployment app-green is not ready (0/2 ready, 2 pending); wait for: kubectl rollout status deployment/app-green -n production\n" +
	"service production/app-green: service app-green has no ready endpoints on port 80 (0 of 1 ready); check its pods: kubectl get pods -n production -l app=myapp,version=green"

func TestHandler(t *testing.T) {
	tests := map[string]struct {
		path, file    string
		wantAllowed   bool
		wantCode      int32
		wantMessage   string // exact, unless wantContains
		wantContains  string
		wantEvents    []string
		wantAudit     map[string]string
		wantNoReads   bool
		wantWarnings  []string
		wantDecisions map[string]float64 // result/path -> count
	}{
		"the tutorial's cutover to an unready green is denied with one line per finding and an Event": {
			path: PathHTTPRoute, file: "cutover-to-green.json",
			wantCode: http.StatusForbidden, wantMessage: deniedGreen,
			wantEvents: []string{"Warning CutoverDenied " + deniedGreen},
			wantAudit: map[string]string{"decision": "denied", "targets": "service production/app-green:80",
				"findings": "deployment/NotReady,endpoints/NoReadyEndpoints,database/DatabaseNotChecked"},
			wantDecisions: map[string]float64{"denied/checked": 1},
		},
		"a dry-run cutover is denied the same way but records no Event": {
			path: PathHTTPRoute, file: "cutover-to-green-dry-run.json",
			wantCode: http.StatusForbidden, wantMessage: deniedGreen,
			wantAudit: map[string]string{"decision": "denied", "targets": "service production/app-green:80",
				"findings": "deployment/NotReady,endpoints/NoReadyEndpoints,database/DatabaseNotChecked"},
		},
		"the rollback to a ready blue is allowed": {
			path: PathHTTPRoute, file: "rollback-to-blue.json",
			wantAllowed: true, wantCode: http.StatusOK,
			wantAudit:     map[string]string{"decision": "allowed_with_warnings", "targets": "service production/app-blue:80", "findings": "database/DatabaseNotChecked"},
			wantDecisions: map[string]float64{"allowed_with_warnings/checked": 1},
		},
		"a canary from 99/1 to 0/100 to an unready green is denied, though green was live": {
			path: PathHTTPRoute, file: "canary-1-to-100.json",
			wantCode: http.StatusForbidden, wantMessage: deniedGreen,
			wantEvents: []string{"Warning CutoverDenied " + deniedGreen},
			wantAudit: map[string]string{"decision": "denied", "targets": "service production/app-green:80",
				"findings": "deployment/NotReady,endpoints/NoReadyEndpoints,database/DatabaseNotChecked"},
		},
		"moving a route to an unready green from the staging gateway to production is denied": {
			path: PathHTTPRoute, file: "reparent-to-public.json",
			wantCode: http.StatusForbidden, wantMessage: deniedGreen,
			wantEvents: []string{"Warning CutoverDenied " + deniedGreen},
			wantAudit: map[string]string{"decision": "denied", "targets": "service production/app-green:80",
				"findings": "deployment/NotReady,endpoints/NoReadyEndpoints,database/DatabaseNotChecked"},
		},
		"a new mirror to an unready green is allowed with warnings, no Event": {
			path: PathHTTPRoute, file: "mirror-to-green.json",
			wantAllowed: true, wantCode: http.StatusOK,
			wantWarnings: []string{
				"service production/app-green: mirror only, not denied: deployment app-green is not ready (0/2 ready, 2 pending); wait...",
				"service production/app-green: mirror only, not denied: service app-green has no ready endpoints on port 80 (0 of 1 re...",
				"service production/app-green: mirror only, not denied: database not checked (the guard runs with --skip-database-check)",
			},
			wantAudit: map[string]string{"decision": "allowed_with_warnings", "targets": "mirror service production/app-green:80",
				"findings": "deployment/NotReady,endpoints/NoReadyEndpoints,database/DatabaseNotChecked"},
			wantDecisions: map[string]float64{"allowed_with_warnings/checked": 1},
		},
		"a create is allowed without a look when creates are not checked": {
			path: PathHTTPRoute, file: "create-to-green.json",
			wantAllowed: true, wantCode: http.StatusOK, wantNoReads: true,
		},
		"a label-only update is allowed without reading anything": {
			path: PathHTTPRoute, file: "labels-only.json",
			wantAllowed: true, wantCode: http.StatusOK, wantNoReads: true,
			wantDecisions: map[string]float64{"allowed/fast": 1},
		},
		"the status subresource is never checked": {
			path: PathHTTPRoute, file: "status-subresource.json",
			wantAllowed: true, wantCode: http.StatusOK, wantNoReads: true,
		},
		"a malformed AdmissionReview is a 400": {
			path: PathHTTPRoute, file: "malformed.json",
			wantCode: http.StatusBadRequest, wantContains: "json parse error", wantNoReads: true,
		},
		"a route that does not decode is a 400": {
			path: PathHTTPRoute, file: "undecodable-route.json",
			wantCode: http.StatusBadRequest, wantContains: "cannot unmarshal", wantNoReads: true,
		},
		"a Pod sent to the HTTPRoute endpoint is an error naming the kind": {
			path: PathHTTPRoute, file: "unknown-kind.json",
			wantCode: http.StatusBadRequest, wantNoReads: true,
			wantMessage: `internal error: this endpoint validates HTTPRoute.gateway.networking.k8s.io, got kind "Pod" in group "": check the rules of the webhook configuration`,
		},
		"an HTTPRoute sent to the GRPCRoute endpoint is an error": {
			path: PathGRPCRoute, file: "cutover-to-green.json",
			wantCode: http.StatusBadRequest, wantNoReads: true, wantContains: "internal error: this endpoint validates GRPCRoute",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, tutorialObjects()...)
			resp := h.post(t, tc.path, tc.file)
			if resp.Allowed != tc.wantAllowed {
				t.Errorf("allowed = %v, want %v (result %+v)", resp.Allowed, tc.wantAllowed, resp.Result)
			}
			var code int32
			var msg string
			if resp.Result != nil {
				code, msg = resp.Result.Code, resp.Result.Message
			}
			if code != tc.wantCode {
				t.Errorf("code = %d, want %d", code, tc.wantCode)
			}
			if tc.wantMessage != "" && msg != tc.wantMessage {
				t.Errorf("message:\n got %q\nwant %q", msg, tc.wantMessage)
			}
			if tc.wantContains != "" && !strings.Contains(msg, tc.wantContains) {
				t.Errorf("message %q does not contain %q", msg, tc.wantContains)
			}
			if diff := cmp.Diff(tc.wantEvents, h.events()); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantAudit, resp.AuditAnnotations); diff != "" {
				t.Errorf("audit annotations (-want +got):\n%s", diff)
			}
			if tc.wantNoReads && h.reads.Load() != 0 {
				t.Errorf("%d reads from the API server, want none", h.reads.Load())
			}
			if tc.wantWarnings != nil {
				if diff := cmp.Diff(tc.wantWarnings, resp.Warnings); diff != "" {
					t.Errorf("warnings (-want +got):\n%s", diff)
				}
			}
			for key, want := range tc.wantDecisions {
				result, path, _ := strings.Cut(key, "/")
				if got := testutil.ToFloat64(h.metrics.decisions.WithLabelValues(KindHTTPRoute, result, path)); got != want {
					t.Errorf("cutover_guard_decisions_total{result=%q,path=%q} = %v, want %v", result, path, got, want)
				}
			}
		})
	}
}

// With creates checked (the guard's default), a new route to an unready
// green is denied with a line saying to retry once green is Ready (a dry
// run of that create is allowed, told the same as warnings), and one to a
// ready blue is allowed.
func TestHandlerChecksCreates(t *testing.T) {
	checkCreates := harnessConfig{options: func(o *Options) { o.CheckCreate = DefaultCheckCreate }}
	t.Run("a route to an unready green", func(t *testing.T) {
		h := startHarness(t, tutorialObjects(), checkCreates)
		resp := h.post(t, PathHTTPRoute, "create-to-green.json")
		want := deniedGreen + "\nthe route is new: retry once app-green is Ready: GitOps tools retry a failed apply"
		if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusForbidden || resp.Result.Message != want {
			t.Fatalf("allowed %v, result %+v; want a 403 saying:\n%s", resp.Allowed, resp.Result, want)
		}
		if diff := cmp.Diff([]string{"Warning CutoverDenied " + want}, h.events()); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
	})
	t.Run("a dry-run create of a route to an unready green", func(t *testing.T) {
		// A GitOps tool dry-runs the whole commit first; the Services and
		// Deployments of the same commit do not exist yet.
		h := startHarness(t, tutorialObjects(), checkCreates)
		body := reviewVariant(t, "create-to-green.json", func(r map[string]any) { request(r)["dryRun"] = true })
		resp := postReview(t, h.server.URL+PathHTTPRoute, body)
		if !resp.Allowed {
			t.Fatalf("dry-run create denied: %+v", resp.Result)
		}
		want := deniedGreen + "\nthe route is new: retry once app-green is Ready: GitOps tools retry a failed apply"
		var wantWarnings, got []string
		for _, line := range strings.Split(want, "\n") {
			wantWarnings = append(wantWarnings, truncate(dryRunCreateNote+line, maxWarning))
		}
		for _, w := range resp.Warnings {
			if strings.HasPrefix(w, dryRunCreateNote) {
				got = append(got, w)
			}
		}
		if diff := cmp.Diff(wantWarnings, got); diff != "" {
			t.Errorf("warnings saying what the create would be told (-want +got):\n%s\nall warnings: %q", diff, resp.Warnings)
		}
		if ev := h.events(); len(ev) != 0 {
			t.Errorf("events for a dry run: %q", ev)
		}
		if got := resp.AuditAnnotations["decision"]; got != ResultWarned {
			t.Errorf("audit decision %q, want %q", got, ResultWarned)
		}
	})
	t.Run("a route to a ready green", func(t *testing.T) {
		h := startHarness(t, tutorialNamespace(true), checkCreates)
		resp := h.post(t, PathHTTPRoute, "create-to-green.json")
		if !resp.Allowed {
			t.Fatalf("denied: %+v", resp.Result)
		}
		if got := resp.AuditAnnotations["targets"]; got != "service production/app-green:80" {
			t.Errorf("audit targets %q, want green's", got)
		}
	})
}

func TestRetryOnCreate(t *testing.T) {
	deny := func(ns, name string) checks.Finding {
		return checks.Finding{Severity: checks.Deny, Service: types.NamespacedName{Namespace: ns, Name: name}}
	}
	got := retryOnCreate("production", []checks.Finding{
		deny("production", "app-green"), deny("production", "app-green"), deny("shared", "auth"),
		{Severity: checks.Warn, Service: types.NamespacedName{Namespace: "production", Name: "app-blue"}},
	})
	want := "the route is new: retry once app-green, shared/auth are Ready: GitOps tools retry a failed apply"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestHandlerWarningsAreShort(t *testing.T) {
	objs := tutorialObjects()
	for _, o := range objs {
		if d, ok := o.(*appsv1.Deployment); ok && d.Name == "app-blue" {
			d.Spec.Template.Spec.Containers[0].ReadinessProbe = nil
			d.Name = "app-blue-with-a-long-name-that-makes-the-warning-line-run-on-and-on-past-the-limit"
		}
	}
	h := newHarness(t, objs...)
	resp := h.post(t, PathHTTPRoute, "rollback-to-blue.json")
	if !resp.Allowed {
		t.Fatalf("denied: %v", resp.Result)
	}
	if len(resp.Warnings) == 0 {
		t.Fatal("want warnings for a missing readinessProbe and the skipped database check")
	}
	for _, w := range resp.Warnings {
		if len(w) > maxWarning {
			t.Errorf("warning of %d characters, want at most %d: %q", len(w), maxWarning, w)
		}
	}
}

func TestBudget(t *testing.T) {
	tests := map[string]struct {
		param string
		want  time.Duration
	}{
		"the API server's default 10s leaves a 1s margin": {"10s", 9 * time.Second},
		"5s leaves a 500ms margin":                        {"5s", 4500 * time.Millisecond},
		"1s leaves at least 250ms":                        {"1s", 750 * time.Millisecond},
		"a tiny timeout keeps half":                       {"300ms", 150 * time.Millisecond},
		"a missing parameter uses the fallback":           {"", 8 * time.Second},
		"a malformed parameter uses the fallback":         {"soon", 8 * time.Second},
		"a negative parameter uses the fallback":          {"-3s", 8 * time.Second},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Budget(tc.param, 8*time.Second); got != tc.want {
				t.Errorf("Budget(%q) = %v, want %v", tc.param, got, tc.want)
			}
		})
	}
}
