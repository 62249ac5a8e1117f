package webhook

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	kjson "sigs.k8s.io/json"

	"github.com/cutover-guard/cutover-guard/checks"
)

// BenchmarkDecodeReviewOnePass is the fast path's floor: the one decoding
// pass over an AdmissionReview with both HTTPRoutes decoded in place.
func BenchmarkDecodeReviewOnePass(b *testing.B) {
	body := fixture(b, "labels-only.json")
	b.ReportAllocs()
	for b.Loop() {
		var in reviewOf[*gwv1.HTTPRoute]
		if err := kjson.UnmarshalCaseSensitivePreserveInts(body, &in); err != nil {
			b.Fatal(err)
		}
		if in.Request == nil || in.Request.Object == nil || in.Request.OldObject == nil {
			b.Fatal("routes not decoded")
		}
	}
}

// BenchmarkFastPathFullDecode is BenchmarkFastPath without the fast path in
// front: controller-runtime decodes the review and each route, then the
// validator finds no target. It is what the fast path replaced.
func BenchmarkFastPathFullDecode(b *testing.B) {
	hs := handlers(Scheme(), Options{
		Guard:    &checks.Guard{Reader: fake.NewClientBuilder().WithScheme(Scheme()).Build()},
		Recorder: events.NewFakeRecorder(1 << 20), Metrics: NewMetrics(prometheus.NewRegistry()), RequestTimeout: 5 * time.Second,
	}, false)
	serve(b, hs[PathHTTPRoute], fixture(b, "labels-only.json"), true)
}

// BenchmarkFastPathTLS is BenchmarkFastPath served over TLS with kept-alive
// HTTP/1.1 connections, 8 requests in flight, client in the same process:
// what the network layer adds to the handler.
func BenchmarkFastPathTLS(b *testing.B) {
	h := benchHandler(b, PathHTTPRoute, nil)
	srv := httptest.NewUnstartedServer(h)
	srv.StartTLS()
	b.Cleanup(srv.Close)
	client := srv.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	body := fixture(b, "labels-only.json")
	url := srv.URL + PathHTTPRoute + "?timeout=10s"
	b.SetParallelism(4) // 4 x GOMAXPROCS in flight
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Post(url, "application/json", bytes.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			got, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err != nil || !bytes.Contains(got, []byte(`"allowed":true`)) {
				b.Errorf("unexpected response: %s %v", got, err)
				return
			}
		}
	})
}
