package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// controllerRuntimeLimit is maxRequestSize in controller-runtime v0.25.2
// (pkg/webhook/admission/http.go): it refuses a body once it has read this
// many bytes, so the largest body it accepts is one byte less.
const controllerRuntimeLimit = 7 * 1024 * 1024

// postBody sends body to path of h's server as the API server does and
// returns the HTTP status and the AdmissionReview response (nil when the
// status is not 200).
func (h *harness) postBody(t *testing.T, path string, body []byte) (int, *admissionv1.AdmissionResponse) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, h.server.URL+path+"?timeout=10s", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	// A hang fails the request instead of the whole test binary.
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(raw, &review); err != nil {
		t.Fatalf("response is not an AdmissionReview: %v: %q", err, raw)
	}
	if review.Response == nil {
		t.Fatalf("no response in the AdmissionReview: %q", raw)
	}
	return resp.StatusCode, review.Response
}

func testdataFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// padded is body with trailing whitespace up to size bytes: still the same
// JSON document.
func padded(t *testing.T, body []byte, size int) []byte {
	t.Helper()
	if len(body) > size {
		t.Fatalf("body of %d bytes is already over %d", len(body), size)
	}
	return append(slices.Clip(body), bytes.Repeat([]byte(" "), size-len(body))...)
}

// TestHostileRequests sends malformed and unexpected AdmissionReviews: each
// is either decided as usual or refused with a 400 (413 for size) whose
// message says what was wrong and what to send instead; none is a 500, a
// panic or a hang.
func TestHostileRequests(t *testing.T) {
	if maxReviewSize != controllerRuntimeLimit {
		t.Fatalf("maxReviewSize = %d, want controller-runtime's limit %d", maxReviewSize, controllerRuntimeLimit)
	}
	tests := map[string]struct {
		path        string
		body        []byte
		wantAllowed bool
		wantCode    int32
		wantMessage string // exact, unless wantPrefix
		wantPrefix  string
		wantUID     string // "" when the request could not be read
		wantNoReads bool
	}{
		"unknown fields in the route are ignored (the API server prunes them) and the cutover is decided": {
			path: PathHTTPRoute, body: testdataFile(t, "unknown-fields.json"),
			wantCode: http.StatusForbidden, wantMessage: deniedGreen, wantUID: "a1f0c2d4-0101-4000-8000-000000000101",
		},
		"unknown fields in a label-only update are ignored and it is allowed without a read": {
			path: PathHTTPRoute, wantAllowed: true, wantCode: http.StatusOK, wantNoReads: true, wantUID: "a1f0c2d4-0003-4000-8000-000000000003",
			body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
				routeIn(r, "object")["spec"].(map[string]any)["futureField"] = map[string]any{"x": 1}
				firstBackendRef(r, "object")["futureRefField"] = "y"
			}),
		},
		"the tutorial's cutover as a GRPCRoute is decided on the GRPCRoute path": {
			path: PathGRPCRoute, body: testdataFile(t, "grpcroute-cutover-to-green.json"),
			wantCode: http.StatusForbidden, wantMessage: deniedGreen, wantUID: "a1f0c2d4-0102-4000-8000-000000000102",
		},
		"a GRPCRoute sent to the HTTPRoute path names both kinds and the webhook rules": {
			path: PathHTTPRoute, body: testdataFile(t, "grpcroute-cutover-to-green.json"),
			wantCode: http.StatusBadRequest, wantNoReads: true, wantUID: "a1f0c2d4-0102-4000-8000-000000000102",
			wantMessage: `internal error: this endpoint validates HTTPRoute.gateway.networking.k8s.io, got kind "GRPCRoute" in group "gateway.networking.k8s.io": check the rules of the webhook configuration`,
		},
		"an HTTPRoute sent to the GRPCRoute path names both kinds and the webhook rules": {
			path: PathGRPCRoute, body: testdataFile(t, "cutover-to-green.json"),
			wantCode: http.StatusBadRequest, wantNoReads: true, wantUID: "a1f0c2d4-0001-4000-8000-000000000001",
			wantMessage: `internal error: this endpoint validates GRPCRoute.gateway.networking.k8s.io, got kind "HTTPRoute" in group "gateway.networking.k8s.io": check the rules of the webhook configuration`,
		},
		"a Pod, not a gateway kind, names its kind and group": {
			path: PathHTTPRoute, body: testdataFile(t, "unknown-kind.json"),
			wantCode: http.StatusBadRequest, wantNoReads: true, wantUID: "a1f0c2d4-0005-4000-8000-000000000005",
			wantMessage: `internal error: this endpoint validates HTTPRoute.gateway.networking.k8s.io, got kind "Pod" in group "": check the rules of the webhook configuration`,
		},
		"an UPDATE without oldObject says which field is missing": {
			path: PathHTTPRoute, body: testdataFile(t, "update-without-old-object.json"),
			wantCode: http.StatusBadRequest, wantNoReads: true, wantUID: "a1f0c2d4-0103-4000-8000-000000000103",
			wantMessage: "internal error: the update of HTTPRoute production/myapp carries no request.oldObject: send the route as the API server does, in request.object and (on UPDATE and DELETE) request.oldObject",
		},
		"an UPDATE with a null object says which field is missing": {
			path: PathHTTPRoute, wantCode: http.StatusBadRequest, wantNoReads: true, wantUID: "a1f0c2d4-0003-4000-8000-000000000003",
			body:        reviewVariant(t, "labels-only.json", func(r map[string]any) { request(r)["object"] = nil }),
			wantMessage: "internal error: the update of HTTPRoute production/myapp carries no request.object: send the route as the API server does, in request.object and (on UPDATE and DELETE) request.oldObject",
		},
		"an UPDATE whose object is YAML in a string, not JSON, says so": {
			path: PathHTTPRoute, body: testdataFile(t, "update-object-not-json.json"),
			wantCode: http.StatusBadRequest, wantNoReads: true, wantUID: "a1f0c2d4-0104-4000-8000-000000000104",
			wantMessage: "internal error: request.object in the update of HTTPRoute production/myapp is a JSON string, not an object: send the route as a JSON object, as the API server does",
		},
		"an UPDATE whose oldObject is a list says so": {
			path: PathGRPCRoute, wantCode: http.StatusBadRequest, wantNoReads: true, wantUID: "a1f0c2d4-0102-4000-8000-000000000102",
			body:        reviewVariant(t, "grpcroute-cutover-to-green.json", func(r map[string]any) { request(r)["oldObject"] = []any{1} }),
			wantMessage: "internal error: request.oldObject in the update of GRPCRoute production/myapp is a JSON array, not an object: send the route as a JSON object, as the API server does",
		},
		"an AdmissionReview of apiVersion admission.k8s.io/v2 is refused, not answered in a version nobody reads": {
			path: PathHTTPRoute, body: testdataFile(t, "review-wrong-version.json"),
			wantCode: http.StatusBadRequest, wantNoReads: true, wantUID: "a1f0c2d4-0105-4000-8000-000000000105",
			wantMessage: `internal error: request body is apiVersion "admission.k8s.io/v2" kind "AdmissionReview", not an AdmissionReview of admission.k8s.io/v1 or admission.k8s.io/v1beta1: list v1 in admissionReviewVersions of the webhook configuration`,
		},
		"a body that is another kind of object is refused": {
			path: PathHTTPRoute, wantCode: http.StatusBadRequest, wantNoReads: true, wantUID: "a1f0c2d4-0003-4000-8000-000000000003",
			body:        reviewVariant(t, "labels-only.json", func(r map[string]any) { r["apiVersion"], r["kind"] = "v1", "Pod" }),
			wantMessage: `internal error: request body is apiVersion "v1" kind "Pod", not an AdmissionReview of admission.k8s.io/v1 or admission.k8s.io/v1beta1: list v1 in admissionReviewVersions of the webhook configuration`,
		},
		"an empty body says what to send": {
			path: PathHTTPRoute, body: nil, wantCode: http.StatusBadRequest, wantNoReads: true,
			wantMessage: "internal error: request body is empty: send an admission.k8s.io/v1 AdmissionReview as JSON, as the API server does",
		},
		"a body one byte over the limit is refused as too large": {
			path: PathHTTPRoute, body: padded(t, testdataFile(t, "labels-only.json"), controllerRuntimeLimit+1),
			wantCode: http.StatusRequestEntityTooLarge, wantNoReads: true,
			wantMessage: "internal error: request body is 7340032 bytes or more, over the limit of an AdmissionReview (less than 7340032 bytes): the API server never sends one this large (objects are limited to 1.5 MiB); check what sends it",
		},
		"a body of exactly the limit is refused too (controller-runtime stops reading there)": {
			path: PathGRPCRoute, body: padded(t, testdataFile(t, "grpcroute-cutover-to-green.json"), controllerRuntimeLimit),
			wantCode: http.StatusRequestEntityTooLarge, wantNoReads: true, wantPrefix: "internal error: request body is 7340032 bytes or more",
		},
		"a body one byte under the limit is decided": {
			path: PathHTTPRoute, body: padded(t, testdataFile(t, "labels-only.json"), controllerRuntimeLimit-1),
			wantAllowed: true, wantCode: http.StatusOK, wantNoReads: true, wantUID: "a1f0c2d4-0003-4000-8000-000000000003",
		},
		"a status update one byte under the limit is answered by the full path": {
			path: PathHTTPRoute, body: padded(t, testdataFile(t, "status-subresource.json"), controllerRuntimeLimit-1),
			wantAllowed: true, wantCode: http.StatusOK, wantNoReads: true, wantUID: "a1f0c2d4-0006-4000-8000-000000000006",
			wantMessage: "subresource status is not checked",
		},
		"an AdmissionReview whose request comes before its apiVersion is read all the same": {
			path: PathHTTPRoute, wantCode: http.StatusForbidden, wantMessage: deniedGreen, wantUID: "a1f0c2d4-0001-4000-8000-000000000001",
			body: func() []byte {
				var review struct {
					Request    json.RawMessage `json:"request"`
					APIVersion string          `json:"apiVersion"`
					Kind       string          `json:"kind"`
				}
				if err := json.Unmarshal(testdataFile(t, "cutover-to-green.json"), &review); err != nil {
					t.Fatal(err)
				}
				b, err := json.Marshal(review)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}(),
		},
		"an AdmissionReview of a wrong apiVersion after its request is refused": {
			path: PathHTTPRoute, wantCode: http.StatusBadRequest, wantNoReads: true, wantUID: "a1f0c2d4-0003-4000-8000-000000000003",
			body: func() []byte {
				var review struct {
					Request    json.RawMessage `json:"request"`
					APIVersion string          `json:"apiVersion"`
					Kind       string          `json:"kind"`
				}
				if err := json.Unmarshal(testdataFile(t, "labels-only.json"), &review); err != nil {
					t.Fatal(err)
				}
				review.APIVersion = "admission.k8s.io/v1alpha9"
				b, err := json.Marshal(review)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}(),
			wantMessage: `internal error: request body is apiVersion "admission.k8s.io/v1alpha9" kind "AdmissionReview", not an AdmissionReview of admission.k8s.io/v1 or admission.k8s.io/v1beta1: list v1 in admissionReviewVersions of the webhook configuration`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, tutorialObjects()...)
			status, resp := h.postBody(t, tc.path, tc.body)
			if status != http.StatusOK {
				t.Fatalf("HTTP status %d, want 200 with an AdmissionReview", status)
			}
			var code int32
			var msg string
			if resp.Result != nil {
				code, msg = resp.Result.Code, resp.Result.Message
			}
			if resp.Allowed != tc.wantAllowed || code != tc.wantCode {
				t.Errorf("allowed = %v, code = %d; want %v, %d (message %q)", resp.Allowed, code, tc.wantAllowed, tc.wantCode, msg)
			}
			if tc.wantPrefix == "" && msg != tc.wantMessage {
				t.Errorf("message:\n got %q\nwant %q", msg, tc.wantMessage)
			}
			if !strings.HasPrefix(msg, tc.wantPrefix) {
				t.Errorf("message %q does not begin %q", msg, tc.wantPrefix)
			}
			if code >= http.StatusInternalServerError {
				t.Errorf("a failure to decide (%d %q), want a verdict or a 4xx that says what was wrong", code, msg)
			}
			// A request the guard could not read is an error, never a verdict.
			if unreadable := code >= 400 && code != http.StatusForbidden; unreadable != strings.HasPrefix(msg, "internal error: ") {
				t.Errorf("code %d with message %q: only a request the guard could not read begins \"internal error: \"", code, msg)
			}
			if string(resp.UID) != tc.wantUID {
				t.Errorf("response uid = %q, want %q", resp.UID, tc.wantUID)
			}
			if tc.wantNoReads && h.reads.Load() != 0 {
				t.Errorf("%d reads from the API server, want none", h.reads.Load())
			}
		})
	}
}

// wideNamespace is n Services in namespace wide, svc-000 to svc-<n-1>, each
// with its Deployment and EndpointSlice: the even ones rolled out and
// serving, the odd ones 0/1 ready with no ready endpoint.
func wideNamespace(n int) []client.Object {
	var objs []client.Object
	for i := range n {
		name := fmt.Sprintf("svc-%03d", i)
		objs = append(objs, app("wide", name, "app:v1", map[string]string{"app": name}, 1, int32(1-i%2))...)
	}
	return objs
}

// newIndexedHarness is newHarness whose fake client answers EndpointSlice
// metadata lists by kubernetes.io/service-name from an index: the fake
// otherwise encodes and decodes every slice of the namespace on each list,
// which for 256 Services costs more under -race than the admission budget.
// The slices are read by GET from the fake as usual.
func newIndexedHarness(t *testing.T, objs ...client.Object) *harness {
	t.Helper()
	index := map[client.ObjectKey][]discoveryv1.EndpointSlice{}
	var rest []client.Object
	for _, o := range objs {
		rest = append(rest, o)
		s, ok := o.(*discoveryv1.EndpointSlice)
		if !ok {
			continue
		}
		key := client.ObjectKey{Namespace: s.Namespace, Name: s.Labels[discoveryv1.LabelServiceName]}
		index[key] = append(index[key], *s)
	}
	return startHarness(t, rest, harnessConfig{list: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
		slices, ok := list.(*metav1.PartialObjectMetadataList)
		if !ok || slices.GetObjectKind().GroupVersionKind().Kind != "EndpointSliceList" {
			return c.List(ctx, list, opts...)
		}
		var o client.ListOptions
		o.ApplyOptions(opts)
		name, found := o.LabelSelector.RequiresExactMatch(discoveryv1.LabelServiceName)
		if !found {
			t.Errorf("EndpointSlices listed without a %s selector: %v", discoveryv1.LabelServiceName, o.LabelSelector)
		}
		for _, s := range index[client.ObjectKey{Namespace: o.Namespace, Name: name}] {
			slices.Items = append(slices.Items, metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
				ObjectMeta: *s.ObjectMeta.DeepCopy()})
		}
		return nil
	}})
}

// wideRoute is an HTTPRoute in ns with rules x perRule backendRefs, the j-th
// of rule i named by backend(i*perRule+j) with weight weightOf(i*perRule+j).
// Rule i matches path prefix /r<i>, so that each rule serves requests (of
// rules with the same match only the first would).
func wideRoute(ns string, rules, perRule int, backend func(int) string, weightOf func(int) int32) *gwv1.HTTPRoute {
	r := &gwv1.HTTPRoute{TypeMeta: metav1.TypeMeta{APIVersion: gwv1.GroupVersion.String(), Kind: KindHTTPRoute},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "wide"}}
	for i := range rules {
		rule := gwv1.HTTPRouteRule{Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{
			Type: ptr.To(gwv1.PathMatchPathPrefix), Value: ptr.To(fmt.Sprintf("/r%d", i)),
		}}}}
		for j := range perRule {
			k := i*perRule + j
			rule.BackendRefs = append(rule.BackendRefs, gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{
				BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(backend(k)), Port: ptr.To[gwv1.PortNumber](80)},
				Weight:                 ptr.To(weightOf(k)),
			}})
		}
		r.Spec.Rules = append(r.Spec.Rules, rule)
	}
	return r
}

// updateReview is the AdmissionReview of an update from old to updated.
func updateReview(t *testing.T, old, updated *gwv1.HTTPRoute) []byte {
	t.Helper()
	raw := func(o *gwv1.HTTPRoute) runtime.RawExtension {
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		return runtime.RawExtension{Raw: b}
	}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "a1f0c2d4-0256-4000-8000-000000000256",
			Kind:      metav1.GroupVersionKind{Group: gwv1.GroupName, Version: "v1", Kind: KindHTTPRoute},
			Resource:  metav1.GroupVersionResource{Group: gwv1.GroupName, Version: "v1", Resource: "httproutes"},
			Name:      updated.Name,
			Namespace: updated.Namespace,
			Operation: admissionv1.Update,
			Object:    raw(updated),
			OldObject: raw(old),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// TestHostileWideRoute switches a route to 16 rules x 16 backendRefs, 256
// new Services of which half cannot serve: with at most 16 targets checked
// at once, every unready one is found (its two findings) inside the API
// server's default 10s timeout, and none is a Timeout; the message and the
// audit annotations hold the first ones, whole, within their 4 KiB, and
// count the rest.
func TestHostileWideRoute(t *testing.T) {
	const rules, perRule = 16, 16
	h := newIndexedHarness(t, wideNamespace(rules*perRule)...)
	old := wideRoute("wide", 1, 1, func(int) string { return "previous" }, func(int) int32 { return 1 })
	updated := wideRoute("wide", rules, perRule, func(k int) string { return fmt.Sprintf("svc-%03d", k) }, func(int) int32 { return 1 })

	status, resp := h.postBody(t, PathHTTPRoute, updateReview(t, old, updated))
	if status != http.StatusOK || resp.Result == nil || resp.Allowed || resp.Result.Code != http.StatusForbidden {
		t.Fatalf("HTTP %d, response %+v; want a 403 denial", status, resp)
	}
	var want []string
	for k := 1; k < rules*perRule; k += 2 {
		name := fmt.Sprintf("svc-%03d", k)
		want = append(want,
			fmt.Sprintf("service wide/%s: deployment %s is not ready (0/1 ready, 1 pending); wait for: kubectl rollout status deployment/%s -n wide", name, name, name),
			fmt.Sprintf("service wide/%s: service %s has no ready endpoints on port 80 (0 of 1 ready); check its pods: kubectl get pods -n wide -l app=%s", name, name, name))
	}
	// 256 denials are some 37 KiB: the message keeps the first ones whole,
	// in the route's order, and counts the rest exactly.
	msg := resp.Result.Message
	if len(msg) > maxMessage {
		t.Errorf("the denial is %d bytes, want at most %d", len(msg), maxMessage)
	}
	got := strings.Split(msg, "\n")
	kept := len(got) - 1
	if kept < 1 || kept >= len(want) {
		t.Fatalf("the denial has %d lines; want some of the %d findings and a count of the rest", len(got), len(want))
	}
	if diff := cmp.Diff(want[:kept], got[:kept]); diff != "" {
		t.Errorf("denial lines (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(moreFindings(len(want)-kept), got[kept]); diff != "" {
		t.Errorf("last line (-want +got):\n%s", diff)
	}
	if next := len(want[kept]) + len("\n"); len(msg)+next <= maxMessage-len("\n")-len(moreFindings(len(want))) {
		t.Errorf("the denial stops at %d bytes though the next finding (%d bytes) would fit", len(msg), next)
	}
	for _, line := range got {
		if strings.Contains(line, "did not finish before the admission deadline") {
			t.Errorf("a check timed out: %q", line)
		}
	}
	for _, k := range []string{"findings", "targets"} {
		if v := resp.AuditAnnotations[k]; len(v) > maxAuditValue {
			t.Errorf("audit annotation %s is %d bytes, want at most %d", k, len(v), maxAuditValue)
		}
	}
	if f := resp.AuditAnnotations["findings"]; strings.Contains(f, "Timeout") {
		t.Errorf("audit findings hold a Timeout: %s", f)
	}
	// Each target also has its database-not-checked warning: the
	// annotation names the denials first.
	if n := auditCount(t, resp.AuditAnnotations["findings"]); n != len(want)+rules*perRule {
		t.Errorf("audit findings count %d, want %d", n, len(want)+rules*perRule)
	}
	if f := resp.AuditAnnotations["findings"]; !strings.HasPrefix(f, "deployment/NotReady,endpoints/NoReadyEndpoints,") || strings.Contains(f, "DatabaseNotChecked") {
		t.Errorf("audit findings do not begin with the denials: %.200s", f)
	}
	if n := len(resp.Warnings); n != maxWarnings {
		t.Errorf("%d warnings, want %d", n, maxWarnings)
	}
	if n := auditCount(t, resp.AuditAnnotations["targets"]); n != rules*perRule {
		t.Errorf("audit targets count %d, want %d", n, rules*perRule)
	}
	if first := strings.Split(resp.AuditAnnotations["targets"], ",")[0]; first != "service wide/svc-000:80" {
		t.Errorf("audit targets begin with %q, want service wide/svc-000:80", first)
	}

	t.Run("the same Service 256 times with different weights is one target, and allowed", func(t *testing.T) {
		h := newHarness(t, tutorialNamespace(true)...)
		old := wideRoute("production", 1, 1, func(int) string { return "app-blue" }, func(int) int32 { return 1 })
		updated := wideRoute("production", rules, perRule, func(int) string { return "app-green" }, func(k int) int32 { return int32(k + 1) })
		status, resp := h.postBody(t, PathHTTPRoute, updateReview(t, old, updated))
		if status != http.StatusOK || !resp.Allowed {
			t.Fatalf("HTTP %d, response %+v; want allowed", status, resp.Result)
		}
		if diff := cmp.Diff("service production/app-green:80", resp.AuditAnnotations["targets"]); diff != "" {
			t.Errorf("audit targets (-want +got):\n%s", diff)
		}
	})
}

// auditCount is how many items an audit annotation names, counting its
// "... and N more".
func auditCount(t *testing.T, v string) int {
	t.Helper()
	items := strings.Split(v, ",")
	last := items[len(items)-1]
	var more int
	if _, err := fmt.Sscanf(last, "... and %d more", &more); err != nil {
		return len(items)
	}
	return len(items) - 1 + more
}
