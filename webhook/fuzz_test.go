package webhook

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	admissionmetrics "sigs.k8s.io/controller-runtime/pkg/webhook/admission/metrics"
	kjson "sigs.k8s.io/json"

	"github.com/cutover-guard/cutover-guard/checks"
)

// FuzzHandler sends arbitrary bodies to both paths of the real handlers (fast
// path in front of controller-runtime's decoder, a real Guard without a
// Prober over a fake client holding the tutorial's namespace). Whatever the
// body: no panic (recovered or not), an AdmissionReview with a response or
// an HTTP error status, the request's UID echoed whenever the request
// decodes, and never allowed=true with a denial or an error.
func FuzzHandler(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(seeds) == 0 {
		f.Fatalf("no seed fixtures in testdata: %v", err)
	}
	for _, name := range seeds {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	reader := fake.NewClientBuilder().WithScheme(Scheme()).WithObjects(tutorialObjects()...).Build()
	discard := logr.Discard()
	hs := Handlers(Scheme(), Options{
		Guard:          &checks.Guard{Reader: reader},
		Recorder:       &events.FakeRecorder{}, // no channel: records nothing, never blocks
		Metrics:        NewMetrics(prometheus.NewRegistry()),
		RequestTimeout: 5 * time.Second,
		Logger:         &discard,
	})
	paths := []string{PathHTTPRoute, PathGRPCRoute}
	boundMinimization(f, "100x")
	f.Fuzz(func(t *testing.T, body []byte) {
		uid, decodes := requestUID(body)
		for _, path := range paths {
			panics := testutil.ToFloat64(admissionmetrics.WebhookPanics.WithLabelValues())
			req := httptest.NewRequest(http.MethodPost, path+"?timeout=10s", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			hs[path].ServeHTTP(rec, req)
			if n := testutil.ToFloat64(admissionmetrics.WebhookPanics.WithLabelValues()); n != panics {
				t.Fatalf("%s: the handler panicked (recovered); body %q; response %s", path, body, rec.Body)
			}
			checkAnswer(t, path, body, rec, uid, decodes)
		}
	})
}

// boundMinimization caps the candidates the fuzzer tries when it minimizes
// an input that found new coverage, unless -fuzzminimizetime says otherwise.
// Minimizing an n-byte input tries O(n²) candidates, each a run of the fuzz
// function followed by a snapshot of the coverage counters of every linked
// package (about 800 here): for a 1 KB AdmissionReview that is far more
// than the default budget of 60 s, so both workers minimized the first
// inputs they found while the fuzzing time ran out (tens of execs, then 0
// execs/s and at times "context deadline exceeded").
func boundMinimization(f *testing.F, limit string) {
	f.Helper()
	const name = "test.fuzzminimizetime"
	given := false
	flag.Visit(func(fl *flag.Flag) { given = given || fl.Name == name })
	if given {
		return
	}
	if err := flag.Set(name, limit); err != nil {
		f.Fatal(err)
	}
}

// requestUID is the UID of the request in body; decodes is false when body
// does not decode as an AdmissionReview with a request.
func requestUID(body []byte) (uid types.UID, decodes bool) {
	var in admissionv1.AdmissionReview
	if len(body) >= maxReviewSize || kjson.UnmarshalCaseSensitivePreserveInts(body, &in) != nil || in.Request == nil {
		return "", false
	}
	return in.Request.UID, true
}

// checkAnswer fails t unless rec holds a well-formed answer to body, whose
// request (if it decodes) has uid.
func checkAnswer(t *testing.T, path string, body []byte, rec *httptest.ResponseRecorder, uid types.UID, decodes bool) {
	t.Helper()
	if rec.Code != http.StatusOK {
		if rec.Code < http.StatusBadRequest {
			t.Fatalf("%s: HTTP %d, want 200 with an AdmissionReview or an error status; body %q", path, rec.Code, body)
		}
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil || review.Response == nil {
		t.Fatalf("%s: answer is not an AdmissionReview with a response (%v): %q; body %q", path, err, rec.Body, body)
	}
	resp := review.Response
	var msg string
	var code int32
	if resp.Result != nil {
		code, msg = resp.Result.Code, resp.Result.Message
	}
	if strings.HasPrefix(msg, "panic: ") || strings.Contains(msg, "[recovered]") {
		t.Fatalf("%s: a panic reached the response: %q; body %q", path, msg, body)
	}
	if resp.Allowed && code >= http.StatusBadRequest {
		t.Fatalf("%s: allowed with code %d %q; body %q", path, code, msg, body)
	}
	if !resp.Allowed && (code < http.StatusBadRequest || msg == "") {
		t.Fatalf("%s: not allowed, but code %d and message %q say nothing; body %q", path, code, msg, body)
	}
	if decodes && resp.UID != uid {
		t.Fatalf("%s: response uid %q, request uid %q; message %q; body %q", path, resp.UID, uid, msg, body)
	}
}
