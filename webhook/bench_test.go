package webhook

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/checks"
	"github.com/cutover-guard/cutover-guard/checks/probe"
)

// benchHandler serves path with a fake reader over objs and, when prober is
// set, the database check.
func benchHandler(b *testing.B, path string, prober *probe.Prober, objs ...client.Object) http.Handler {
	b.Helper()
	builder := fake.NewClientBuilder().WithScheme(Scheme()).WithObjects(objs...)
	hs := Handlers(Scheme(), Options{
		Guard:    &checks.Guard{Reader: builder.Build(), Prober: prober, DatabaseEnv: []string{"DATABASE_URL"}},
		Recorder: events.NewFakeRecorder(1 << 20), Metrics: NewMetrics(prometheus.NewRegistry()), RequestTimeout: 5 * time.Second,
	})
	return hs[path]
}

func fixture(b *testing.B, name string) []byte {
	b.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		b.Fatal(err)
	}
	return body
}

func serve(b *testing.B, h http.Handler, body []byte, wantAllowed bool) {
	b.Helper()
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, PathHTTPRoute+"?timeout=10s", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || bytes.Contains(rec.Body.Bytes(), []byte(`"allowed":true`)) != wantAllowed {
			b.Fatalf("unexpected response: %s", rec.Body.String())
		}
	}
}

// BenchmarkDecodeReview is the floor: decoding an AdmissionReview and both
// HTTPRoutes in it, as every request must.
func BenchmarkDecodeReview(b *testing.B) {
	body := fixture(b, "labels-only.json")
	var captured admission.Request
	wh := &admission.Webhook{Handler: admission.HandlerFunc(func(_ context.Context, req admission.Request) admission.Response {
		captured = req
		return admission.Allowed("")
	})}
	dec := admission.NewDecoder(Scheme())
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, PathHTTPRoute, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		wh.ServeHTTP(httptest.NewRecorder(), req)
		var o, n gwv1.HTTPRoute
		if err := dec.DecodeRaw(captured.OldObject, &o); err != nil {
			b.Fatal(err)
		}
		if err := dec.DecodeRaw(captured.Object, &n); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFastPath is a label-only update: decoded, found to switch no
// traffic, allowed without a read.
func BenchmarkFastPath(b *testing.B) {
	serve(b, benchHandler(b, PathHTTPRoute, nil), fixture(b, "labels-only.json"), true)
}

// BenchmarkSwitchPathDenied is the tutorial's cutover to an unready green:
// every Kubernetes check against an in-memory reader.
func BenchmarkSwitchPathDenied(b *testing.B) {
	serve(b, benchHandler(b, PathHTTPRoute, nil, tutorialObjects()...), fixture(b, "cutover-to-green.json"), false)
}

// BenchmarkSwitchPathWarmDB is the cutover to a ready green whose database
// (the local PostgreSQL) was probed moments ago: every check runs, the
// database answer comes from the cache (a pass is reused for at most 1 s,
// so about one iteration a second probes again).
func BenchmarkSwitchPathWarmDB(b *testing.B) {
	prober := probe.NewProber(probe.ProberOptions{
		PrivateCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Timeout: 2 * time.Second, CacheTTL: time.Hour,
	})
	h := benchHandler(b, PathHTTPRoute, prober, readyGreenWithSecretDSN("postgresql://postgres@127.0.0.1:5432/test?sslmode=disable")...)
	body := fixture(b, "cutover-to-green.json")
	warm := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, PathHTTPRoute, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(warm, req)
	if !bytes.Contains(warm.Body.Bytes(), []byte(`"allowed":true`)) {
		b.Skipf("the local PostgreSQL at 127.0.0.1:5432 is needed: %s", warm.Body.String())
	}
	serve(b, h, body, true)
}
