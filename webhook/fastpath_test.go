package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/checks"
)

// reviewVariant returns the testdata AdmissionReview file with edit applied
// to its decoded JSON.
func reviewVariant(t *testing.T, file string, edit func(review map[string]any)) []byte {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	var review map[string]any
	if err := json.Unmarshal(body, &review); err != nil {
		t.Fatal(err)
	}
	edit(review)
	out, err := json.Marshal(review)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func request(review map[string]any) map[string]any { return review["request"].(map[string]any) }

func routeIn(review map[string]any, key string) map[string]any {
	return request(review)[key].(map[string]any)
}

func firstBackendRef(review map[string]any, key string) map[string]any {
	rules := routeIn(review, key)["spec"].(map[string]any)["rules"].([]any)
	return rules[0].(map[string]any)["backendRefs"].([]any)[0].(map[string]any)
}

// answered is what a handler did with one request.
type answered struct {
	status       int
	body         string
	reads        int64
	events       []string
	decisions    map[string]float64
	logs         []string
	reachedInner bool
}

// took and checkTook match the decision's and each check's time in a log
// line, the one thing that differs from run to run.
var (
	took      = regexp.MustCompile(`"took"="[^"]*"`)
	checkTook = regexp.MustCompile(`"([^" ]+ [a-z]+) [0-9][^" ]*`)
)

// serveOnce sends body to path of a fresh set of handlers, with or without
// the fast path.
func serveOnce(t *testing.T, fast bool, path, contentType string, body []byte) answered {
	t.Helper()
	var reads atomic.Int64
	count := func() { reads.Add(1) }
	reader := fake.NewClientBuilder().WithScheme(Scheme()).WithObjects(tutorialObjects()...).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			count()
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			count()
			return c.List(ctx, list, opts...)
		},
	}).Build()
	recorder := events.NewFakeRecorder(16)
	metrics := NewMetrics(prometheus.NewRegistry())
	var out answered
	var logMu sync.Mutex
	logger := funcr.New(func(prefix, args string) {
		logMu.Lock()
		defer logMu.Unlock()
		out.logs = append(out.logs, prefix+" "+checkTook.ReplaceAllString(took.ReplaceAllString(args, `"took"="-"`), `"$1 -`))
	}, funcr.Options{Verbosity: 1})
	hs := handlers(Scheme(), Options{
		Guard: &checks.Guard{Reader: reader}, Recorder: recorder, Metrics: metrics, RequestTimeout: 5 * time.Second, Logger: &logger,
	}, fast)
	reached := func(inner http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			out.reachedInner = true
			inner.ServeHTTP(w, r)
		})
	}
	handler := hs[path]
	switch f := handler.(type) {
	case *fastPath[*gwv1.HTTPRoute]:
		f.next = reached(f.next)
	case *fastPath[*gwv1.GRPCRoute]:
		f.next = reached(f.next)
	default:
		handler = reached(handler)
	}
	req := httptest.NewRequest(http.MethodPost, path+"?timeout=10s", bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, req)
	out.status, out.body, out.reads = rec.Code, rec.Body.String(), reads.Load()
	for {
		select {
		case e := <-recorder.Events:
			out.events = append(out.events, e)
			continue
		default:
		}
		break
	}
	out.decisions = map[string]float64{}
	for _, kind := range []string{KindHTTPRoute, KindGRPCRoute} {
		for _, result := range []string{ResultAllowed, ResultWarned, ResultDenied, ResultError} {
			for _, p := range []string{"fast", "checked"} {
				if n := testutil.ToFloat64(metrics.decisions.WithLabelValues(kind, result, p)); n > 0 {
					out.decisions[kind+"/"+result+"/"+p] = n
				}
			}
		}
	}
	return out
}

// TestFastPathAnswersAsTheFullPath sends every kind of request to the
// handlers with and without the fast path: responses, reads, Events and
// metrics must be the same, and only updates that switch no traffic may be
// answered without the full path.
func TestFastPathAnswersAsTheFullPath(t *testing.T) {
	file := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := map[string]struct {
		path        string
		contentType string
		body        []byte
		wantFast    bool
	}{
		"a label-only update":         {body: file("labels-only.json"), wantFast: true},
		"the cutover to green":        {body: file("cutover-to-green.json")},
		"a dry-run cutover":           {body: file("cutover-to-green-dry-run.json")},
		"the rollback to blue":        {body: file("rollback-to-blue.json")},
		"a status update":             {body: file("status-subresource.json")},
		"a malformed review":          {body: file("malformed.json")},
		"an undecodable route":        {body: file("undecodable-route.json")},
		"a Pod":                       {body: file("unknown-kind.json")},
		"an HTTPRoute sent to GRPC":   {path: PathGRPCRoute, body: file("labels-only.json")},
		"a label-only update as text": {contentType: "text/plain", body: file("labels-only.json")},
		"a v1beta1 label-only update": {wantFast: true, body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
			r["apiVersion"] = "admission.k8s.io/v1beta1"
		})},
		"a weight shift among live backends": {wantFast: true, body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
			firstBackendRef(r, "object")["weight"] = 7
		})},
		"a canary from 99/1 to 0/100":          {body: file("canary-1-to-100.json")},
		"a route moved to another gateway":     {body: file("reparent-to-public.json")},
		"a mirror added to an unready green":   {body: file("mirror-to-green.json")},
		"a create, as the API server sends it": {body: file("create-to-green.json")},
		"a parentRef added": {body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
			spec := routeIn(r, "object")["spec"].(map[string]any)
			spec["parentRefs"] = append(spec["parentRefs"].([]any), map[string]any{"name": "other"})
		})},
		"a parentRef removed": {wantFast: true, body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
			spec := routeIn(r, "oldObject")["spec"].(map[string]any)
			spec["parentRefs"] = append(spec["parentRefs"].([]any), map[string]any{"name": "other"})
		})},
		"hostnames narrowed": {wantFast: true, body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
			routeIn(r, "oldObject")["spec"].(map[string]any)["hostnames"] = []any{"a.example.com", "b.example.com"}
			routeIn(r, "object")["spec"].(map[string]any)["hostnames"] = []any{"a.example.com"}
		})},
		"a backend whose weight goes from 0 to 1": {body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
			firstBackendRef(r, "oldObject")["weight"] = 0
		})},
		"a backend that is not a Service": {body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
			firstBackendRef(r, "object")["kind"] = "Bucket"
			firstBackendRef(r, "object")["group"] = "storage.example.com"
		})},
		"a route with a field of the wrong type outside its backends": {body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
			routeIn(r, "object")["spec"].(map[string]any)["hostnames"] = 5
		})},
		"a route sent as another kind": {body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
			routeIn(r, "object")["kind"] = "GRPCRoute"
		})},
		"a route without apiVersion and kind": {body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
			delete(routeIn(r, "object"), "apiVersion")
			delete(routeIn(r, "object"), "kind")
		})},
		"a status update that switches no traffic": {body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
			request(r)["subResource"] = "status"
		})},
		"a create": {body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
			request(r)["operation"] = "CREATE"
			delete(request(r), "oldObject")
		})},
		"a delete": {body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
			request(r)["operation"] = "DELETE"
		})},
		"an update without its old object": {body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
			delete(request(r), "oldObject")
		})},
		"a request field of the wrong type": {body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
			request(r)["dryRun"] = "yes"
		})},
		"a review with keys in the wrong case": {body: reviewVariant(t, "labels-only.json", func(r map[string]any) {
			r["Request"] = r["request"]
			delete(r, "request")
		})},
		"an empty body": {body: []byte{}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if tc.path == "" {
				tc.path = PathHTTPRoute
			}
			if tc.contentType == "" {
				tc.contentType = "application/json"
			}
			full := serveOnce(t, false, tc.path, tc.contentType, tc.body)
			fast := serveOnce(t, true, tc.path, tc.contentType, tc.body)
			if fast.reachedInner == tc.wantFast {
				t.Errorf("answered by the fast path = %v, want %v", !fast.reachedInner, tc.wantFast)
			}
			full.reachedInner, fast.reachedInner = false, false
			if diff := cmp.Diff(full, fast, cmp.AllowUnexported(answered{})); diff != "" {
				t.Errorf("fast path differs from the full path (-full +fast):\n%s", diff)
			}
			if tc.wantFast && !strings.Contains(fast.body, `"allowed":true`) {
				t.Errorf("fast path answer is not an allow: %s", fast.body)
			}
		})
	}
}

// TestFastPathPassesTheWholeBodyOn checks that a request the fast path does
// not answer reaches the full path with every byte, also past what it read.
func TestFastPathPassesTheWholeBodyOn(t *testing.T) {
	body := bytes.Repeat([]byte("x"), maxReviewSize+10)
	var got int
	f := &fastPath[*gwv1.HTTPRoute]{v: &Validator[*gwv1.HTTPRoute]{Kind: KindHTTPRoute, Reduce: HTTPRouteOf}, log: admissionLogger(nil),
		next: http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			got = len(b)
		})}
	req := httptest.NewRequest(http.MethodPost, PathHTTPRoute, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	f.ServeHTTP(httptest.NewRecorder(), req)
	if got != len(body) {
		t.Errorf("the full path read %d bytes, want %d", got, len(body))
	}
}
