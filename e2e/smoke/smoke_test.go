package smoke_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// The annotations of the tutorial's smoke test: green's version endpoint
// must name the release being switched to.
const (
	annotationPath     = "cutover-guard.dev/smoke-path"
	annotationBody     = "cutover-guard.dev/smoke-body"
	annotationMinReady = "cutover-guard.dev/smoke-min-ready"
)

// version is what a healthy green answers on /version.
func version(tag string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/version" {
			http.NotFound(w, r)
			return
		}
		_, _ = fmt.Fprintf(w, "myapp %s\n", tag)
	})
}

// unavailable answers 503, as an app whose dependency is down.
var unavailable = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "upstream connect error", http.StatusServiceUnavailable)
})

// hang accepts the request and never answers.
var hang = http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })

// counting wraps h, counting the requests it gets and recording the
// User-Agent of the last.
type counting struct {
	h         http.Handler
	n         atomic.Int32
	userAgent atomic.Value
}

func (c *counting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.n.Add(1)
	c.userAgent.Store(r.UserAgent())
	c.h.ServeHTTP(w, r)
}

// The tutorial's cutover with green's version endpoint as its smoke test:
// each pod of green is called on its own address, and each way a pod can
// fail is its own denial naming the pod and the fix.
func TestSmokeGateOnTheTutorialsCutover(t *testing.T) {
	e := setup(t)
	gate := map[string]string{annotationPath: "/version", annotationBody: "v1.1"}
	tests := map[string]struct {
		annotations map[string]string
		replicas    int32
		// pods are the handlers of green's pods in name order; nil: refused.
		pods []http.Handler
		// denied lists, per failing pod index, what its line must say; nil: allowed.
		denied map[int][]string
		// warning, when allowed, is part of the warning kubectl prints.
		warning string
	}{
		"green answering 200 with its version is allowed": {
			annotations: gate, replicas: 2, pods: []http.Handler{version("v1.1"), version("v1.1")},
		},
		"a 503 is denied with its status and body": {
			annotations: gate, replicas: 2, pods: []http.Handler{version("v1.1"), unavailable},
			denied: map[int][]string{1: {"failed: status 503, body \"upstream connect error\"; expected 200-299"}},
		},
		"the wrong version string is denied": {
			annotations: gate, replicas: 2, pods: []http.Handler{version("v1.0"), version("v1.1")},
			denied: map[int][]string{0: {`failed: status 200, body "myapp v1.0"; expected the body to contain "v1.1"`}},
		},
		"a pod that hangs is denied as a timeout": {
			annotations: gate, replicas: 2, pods: []http.Handler{hang, version("v1.1")},
			denied: map[int][]string{0: {"failed: no answer within 2s"}},
		},
		"a refused connection is denied": {
			annotations: gate, replicas: 2, pods: []http.Handler{version("v1.1"), nil},
			denied: map[int][]string{1: {"failed: connection refused: nothing listens on the port"}},
		},
		"one of three failing is allowed with smoke-min-ready 2": {
			annotations: map[string]string{annotationPath: "/version", annotationBody: "v1.1", annotationMinReady: "2"},
			replicas:    3, pods: []http.Handler{version("v1.1"), unavailable, version("v1.1")},
			warning: "Warning: service production/app-green: smoke test GET /version: 2 of 3 endpoints passed, enough for smoke-min-ready 2",
		},
		"two of three failing is denied with smoke-min-ready 2": {
			annotations: map[string]string{annotationPath: "/version", annotationBody: "v1.1", annotationMinReady: "2"},
			replicas:    3, pods: []http.Handler{nil, unavailable, version("v1.1")},
			denied: map[int][]string{
				0: {"connection refused", "(1 of 3 endpoints called passed; smoke-min-ready 2 needs 2 of 3 ready)"},
				1: {"status 503", "(1 of 3 endpoints called passed; smoke-min-ready 2 needs 2 of 3 ready)"},
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pods := e.serveGreen(t, tc.replicas, tc.annotations)
			served := make([]*counting, len(pods))
			for i, p := range pods {
				if tc.pods[i] != nil {
					served[i] = &counting{h: tc.pods[i]}
					e.serve(t, p, served[i])
				}
			}
			r := e.kubectl().Shell(t.Context(), tutorial.CutoverCommand)
			// A hang detector: the API server gives up after 5 s.
			if r.Took > 5*time.Second {
				t.Errorf("the switch took %s", r.Took)
			}
			if tc.denied == nil {
				if !r.OK() || !strings.Contains(r.Output, tutorial.PatchedOutput) {
					t.Fatalf("want the switch allowed, got:\n%s", r)
				}
				if tc.warning != "" && !strings.Contains(r.Output, tc.warning) {
					t.Errorf("output lacks the warning %q:\n%s", tc.warning, r)
				}
			} else {
				if !r.Denied() {
					t.Fatalf("want a denial, got:\n%s", r)
				}
				for i, p := range pods {
					line := lineAbout(r.Output, "on pod "+p.Name+" ")
					want, fails := tc.denied[i]
					switch {
					case !fails && line != "":
						t.Errorf("pod %s passed, but the denial names it: %s", p.Name, line)
					case fails && line == "":
						t.Errorf("the denial does not name pod %s:\n%s", p.Name, r)
					case fails:
						for _, w := range append(want, fmt.Sprintf("smoke test GET /version on pod %s (%s:8080)", p.Name, p.Status.PodIP),
							fmt.Sprintf("; kubectl logs %s -n production", p.Name)) {
							if !strings.Contains(line, w) {
								t.Errorf("line about pod %s lacks %q:\n%s", p.Name, w, line)
							}
						}
					}
				}
				if backend := e.kubectl().Shell(t.Context(), tutorial.BackendCommand); backend.Stdout != tutorial.Blue {
					t.Errorf("after the denial the route points at %q, want %s", backend.Stdout, tutorial.Blue)
				}
			}
			// Every pod that listens was called once, by the guard.
			for i, c := range served {
				if c == nil {
					continue
				}
				if n := c.n.Load(); n != 1 {
					t.Errorf("pod %s got %d requests, want 1", pods[i].Name, n)
				}
				if ua, _ := c.userAgent.Load().(string); !strings.HasPrefix(ua, "cutover-guard-smoke/") {
					t.Errorf("pod %s was called with User-Agent %q", pods[i].Name, ua)
				}
			}
		})
	}
}

// A denial and the decision's record: the findings counter by check and
// reason, and the decision log line naming the pods the gate read.
func TestSmokeGateIsAudited(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	pods := e.serveGreen(t, 2, map[string]string{annotationPath: "/version"})
	e.serve(t, pods[0], version("v1.1"))
	e.serve(t, pods[1], unavailable)
	before, err := e.guard.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"check": "smoke", "reason": "SmokeStatus", "severity": "deny"}
	r := e.kubectl().Shell(ctx, tutorial.CutoverCommand)
	if !r.Denied() {
		t.Fatalf("want a denial, got:\n%s", r)
	}
	after, err := e.guard.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := tutorial.MetricSum(after, "cutover_guard_findings_total", labels) - tutorial.MetricSum(before, "cutover_guard_findings_total", labels); d != 1 {
		t.Errorf("cutover_guard_findings_total%v rose by %v, want 1", labels, d)
	}
	if n := tutorial.MetricSum(after, "cutover_guard_check_duration_seconds_count", map[string]string{"check": "smoke", "result": "deny"}); n < 1 {
		t.Errorf("no smoke check run recorded as denied")
	}
	log := e.guard.Log()
	for _, p := range pods {
		if !strings.Contains(log, "pod production/"+p.Name+"@") {
			t.Errorf("the decision log does not name pod %s as observed", p.Name)
		}
	}
	if !strings.Contains(log, `"check":"smoke/SmokeStatus"`) && !strings.Contains(log, `smoke/SmokeStatus`) {
		t.Errorf("the decision log does not carry the smoke finding")
	}
}

// lineAbout returns the line of out that contains s, or "".
func lineAbout(out, s string) string {
	for line := range strings.SplitSeq(out, "\n") {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}
