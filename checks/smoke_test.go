package checks

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// loopback is the private range of the unit tests: httptest-style servers
// on 127.0.0.x stand in for pods.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// smokePod is one pod of app-green in a smoke test: its handler (nil:
// nothing listens on its address) and what it saw.
type smokePod struct {
	handler http.Handler
	hits    atomic.Int32
	// userAgent and closeAsked are those of the last request.
	userAgent, host atomic.Value
	closeAsked      atomic.Bool
}

// smokeWorld serves each pod on its own loopback address, 127.0.0.(10+i),
// and returns the objects the check reads: app-green's Service, a pod and
// an EndpointSlice per pod (each slice with the pod's port).
func smokeWorld(t *testing.T, pods ...*smokePod) []client.Object {
	t.Helper()
	stop := make(chan struct{})
	objs := []client.Object{greenService()}
	for i, p := range pods {
		ip := fmt.Sprintf("127.0.0.%d", 10+i)
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := int32(l.Addr().(*net.TCPAddr).Port)
		if p.handler == nil {
			_ = l.Close() // refused
		} else {
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				p.hits.Add(1)
				p.userAgent.Store(r.UserAgent())
				p.host.Store(r.Host)
				p.closeAsked.Store(r.Close)
				p.handler.ServeHTTP(w, withStop(r, stop))
			}), ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = srv.Serve(l) }()
			t.Cleanup(func() { _ = srv.Close() })
		}
		name := fmt.Sprintf("app-green-%d", i)
		objs = append(objs,
			&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: name},
				Status: corev1.PodStatus{PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}},
			&discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Namespace: "production", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "app-green"}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(""), Port: ptr.To(port)}},
				Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
					TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "production", Name: name}}},
			})
	}
	t.Cleanup(func() { close(stop) })
	return objs
}

type stopKey struct{}

func withStop(r *http.Request, stop chan struct{}) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), stopKey{}, stop))
}

// Handlers of the pods.
var (
	answer = func(code int, body string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(code)
			_, _ = w.Write([]byte(body))
		})
	}
	ok200 = answer(http.StatusOK, "ok v1.1\n")
	// hang accepts and never answers (until the client gives up).
	hang = http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-r.Context().Value(stopKey{}).(chan struct{}):
		}
	})
	// reset reads the request and closes the connection with a RST.
	reset = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		_ = c.(*net.TCPConn).SetLinger(0)
		_ = c.Close()
	})
)

// greenWith is app-green's Deployment with the given annotations and a
// container port named http.
func greenWith(annotations map[string]string) appsv1.Deployment {
	d := readyDeployment("app-green", 2)
	d.Annotations = annotations
	d.Spec.Template.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	return *d
}

// smokeInput is the Input SmokeTested sees for app-green, after Reference
// and DeploymentReady.
func smokeInput(objs []client.Object, smoker *Smoker, annotations map[string]string) *Input {
	return &Input{Reader: fakeReader(objs...), Smoker: smoker, Target: greenTarget(), Service: greenService(), Port: greenService().Spec.Ports[0],
		Deployments: []appsv1.Deployment{greenWith(annotations)}}
}

func testSmoker() *Smoker {
	return NewSmoker(SmokeOptions{PrivateCIDRs: loopback, Timeout: 300 * time.Millisecond, Version: "v9.9.9"})
}

// short is a finding as the tests compare it: severity, reason, object and
// message without the per-run address.
type short struct {
	Severity Severity
	Reason   Reason
	Object   string
	Message  string
	Fix      string
}

func shorten(fs []Finding) []short {
	var out []short
	for _, f := range fs {
		msg := f.Message
		// The addresses' ports are random: keep the pod, drop the port.
		for i := 10; i < 40; i++ {
			ip := fmt.Sprintf("(127.0.0.%d:", i)
			if j := strings.Index(msg, ip); j >= 0 {
				k := strings.Index(msg[j:], ")")
				msg = msg[:j] + fmt.Sprintf("(127.0.0.%d:PORT", i) + msg[j+k:]
			}
		}
		out = append(out, short{f.Severity, f.Reason, f.Object, msg, f.Fix})
	}
	return out
}

func TestSmokeTestedVerdict(t *testing.T) {
	path := map[string]string{AnnotationSmokePath: "/version"}
	with := func(kv ...string) map[string]string {
		a := map[string]string{AnnotationSmokePath: "/version"}
		for i := 0; i < len(kv); i += 2 {
			a[kv[i]] = kv[i+1]
		}
		return a
	}
	logs := func(i int) string { return fmt.Sprintf("kubectl logs app-green-%d -n production", i) }
	tests := map[string]struct {
		annotations map[string]string
		pods        []http.Handler
		want        []short
	}{
		"green answering 200 is allowed": {
			annotations: path, pods: []http.Handler{ok200, ok200},
		},
		"a 503 is denied with the status and the body's first line": {
			annotations: path, pods: []http.Handler{ok200, answer(503, "upstream unavailable\nsecond line")},
			want: []short{{Deny, ReasonSmokeStatus, "pod app-green-1",
				`smoke test GET /version on pod app-green-1 (127.0.0.11:PORT) failed: status 503, body "upstream unavailable"; expected 200-299`, logs(1)}},
		},
		"a wrong version string is denied": {
			annotations: with(AnnotationSmokeBody, "v1.2"), pods: []http.Handler{ok200},
			want: []short{{Deny, ReasonSmokeBody, "pod app-green-0",
				`smoke test GET /version on pod app-green-0 (127.0.0.10:PORT) failed: status 200, body "ok v1.1"; expected the body to contain "v1.2" (in its first 4096 bytes)`, logs(0)}},
		},
		"the right version string is allowed": {
			annotations: with(AnnotationSmokeBody, "v1.1"), pods: []http.Handler{ok200},
		},
		"a hang is denied as a timeout": {
			annotations: path, pods: []http.Handler{hang},
			want: []short{{Deny, ReasonSmokeTimeout, "pod app-green-0",
				`smoke test GET /version on pod app-green-0 (127.0.0.10:PORT) failed: no answer within 300ms`, logs(0)}},
		},
		"a refused connection is denied": {
			annotations: path, pods: []http.Handler{nil},
			want: []short{{Deny, ReasonSmokeRefused, "pod app-green-0",
				`smoke test GET /version on pod app-green-0 (127.0.0.10:PORT) failed: connection refused: nothing listens on the port`, logs(0)}},
		},
		"a reset connection is denied": {
			annotations: path, pods: []http.Handler{reset},
			want: []short{{Deny, ReasonSmokeReset, "pod app-green-0",
				`smoke test GET /version on pod app-green-0 (127.0.0.10:PORT) failed: connection reset or closed before a complete answer`, logs(0)}},
		},
		"a redirect is not followed: its status is judged": {
			annotations: path, pods: []http.Handler{http.RedirectHandler("http://example.invalid/", http.StatusFound)},
			want: []short{{Deny, ReasonSmokeStatus, "pod app-green-0",
				`smoke test GET /version on pod app-green-0 (127.0.0.10:PORT) failed: status 302, body "<a href=\"http://example.invalid/\">Found</a>."; expected 200-299`, logs(0)}},
		},
		"smoke-expect lets a 204 and a 418 pass": {
			annotations: with(AnnotationSmokeExpect, "204, 418"), pods: []http.Handler{answer(204, ""), answer(418, "teapot")},
		},
		"an unprintable body is quoted safely": {
			annotations: path, pods: []http.Handler{answer(500, "\x1b[31mboom\x00"+strings.Repeat("x", 200))},
			want: []short{{Deny, ReasonSmokeStatus, "pod app-green-0",
				`smoke test GET /version on pod app-green-0 (127.0.0.10:PORT) failed: status 500, body "?[31mboom?` + strings.Repeat("x", 107) + `..."; expected 200-299`, logs(0)}},
		},
		"a text past the first 4 KiB is not found": {
			annotations: with(AnnotationSmokeBody, "v1.1"), pods: []http.Handler{answer(200, strings.Repeat("-", 5000)+"v1.1")},
			want: []short{{Deny, ReasonSmokeBody, "pod app-green-0",
				`smoke test GET /version on pod app-green-0 (127.0.0.10:PORT) failed: status 200, body "` + strings.Repeat("-", 117) + `..."; expected the body to contain "v1.1" (in its first 4096 bytes)`, logs(0)}},
		},
		"one of three failing is allowed, with a warning, when smoke-min-ready 2": {
			annotations: with(AnnotationSmokeMinReady, "2"), pods: []http.Handler{ok200, answer(503, "down"), ok200},
			want: []short{{Warn, ReasonSmokeStatus, "pod app-green-1",
				"smoke test GET /version: 2 of 3 endpoints passed, enough for smoke-min-ready 2", logs(1)}},
		},
		"two of three failing is denied when smoke-min-ready 2": {
			annotations: with(AnnotationSmokeMinReady, "2"), pods: []http.Handler{answer(503, "down"), hang, ok200},
			want: []short{
				{Deny, ReasonSmokeStatus, "pod app-green-0", `smoke test GET /version on pod app-green-0 (127.0.0.10:PORT) failed: status 503, body "down"; expected 200-299 (1 of 3 endpoints called passed; smoke-min-ready 2 needs 2 of 3 ready)`, logs(0)},
				{Deny, ReasonSmokeTimeout, "pod app-green-1", `smoke test GET /version on pod app-green-1 (127.0.0.11:PORT) failed: no answer within 300ms (1 of 3 endpoints called passed; smoke-min-ready 2 needs 2 of 3 ready)`, logs(1)},
			},
		},
		"half of two passing is enough for smoke-min-ready 50%": {
			annotations: with(AnnotationSmokeMinReady, "50%"), pods: []http.Handler{nil, ok200},
			want: []short{{Warn, ReasonSmokeRefused, "pod app-green-0",
				"smoke test GET /version: 1 of 2 endpoints passed, enough for smoke-min-ready 50%", logs(0)}},
		},
		"fewer ready endpoints than smoke-min-ready is denied": {
			annotations: with(AnnotationSmokeMinReady, "3"), pods: []http.Handler{ok200, ok200},
			want: []short{{Deny, ReasonSmokeMinReady, "deployment app-green",
				"smoke test: service app-green has 2 ready endpoints, fewer than cutover-guard.dev/smoke-min-ready 3 of deployment app-green asks for",
				"scale up, or lower cutover-guard.dev/smoke-min-ready"}},
		},
		"past four failures the rest are counted, not named": {
			annotations: path, pods: []http.Handler{answer(500, ""), answer(500, ""), answer(500, ""), answer(500, ""), answer(500, ""), answer(500, "")},
			want: []short{
				{Deny, ReasonSmokeStatus, "pod app-green-0", `smoke test GET /version on pod app-green-0 (127.0.0.10:PORT) failed: status 500; expected 200-299`, logs(0)},
				{Deny, ReasonSmokeStatus, "pod app-green-1", `smoke test GET /version on pod app-green-1 (127.0.0.11:PORT) failed: status 500; expected 200-299`, logs(1)},
				{Deny, ReasonSmokeStatus, "pod app-green-2", `smoke test GET /version on pod app-green-2 (127.0.0.12:PORT) failed: status 500; expected 200-299`, logs(2)},
				{Deny, ReasonSmokeStatus, "pod app-green-3", `smoke test GET /version on pod app-green-3 (127.0.0.13:PORT) failed: status 500; expected 200-299`, logs(3)},
				{Deny, ReasonSmokeStatus, "service app-green", "and 2 more endpoints failed the smoke test GET /version", "kubectl logs -n production -l app=myapp,version=green"},
			},
		},
		"smoke-port names a port no container declares": {
			annotations: with(AnnotationSmokePort, "metrics"),
			pods:        []http.Handler{ok200},
			want: []short{{Deny, ReasonSmokeAnnotationInvalid, "deployment app-green",
				`cutover-guard.dev/smoke-port of deployment app-green names port "metrics", which no container of the target's workloads declares`,
				"name a containerPort of the pod template, or give the port's number"}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pods := make([]*smokePod, len(tc.pods))
			for i, h := range tc.pods {
				pods[i] = &smokePod{handler: h}
			}
			in := smokeInput(smokeWorld(t, pods...), testSmoker(), tc.annotations)
			got, err := SmokeTested(t.Context(), in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, shorten(got)); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
		})
	}
}

// Each request names the guard, asks for no keep-alive, and sends the
// smoke-host Host header.
func TestSmokeRequest(t *testing.T) {
	p := &smokePod{handler: ok200}
	in := smokeInput(smokeWorld(t, p), testSmoker(), map[string]string{AnnotationSmokePath: "/ready?full=1", AnnotationSmokeHost: "App-Green.production.svc.cluster.local."})
	if got, err := SmokeTested(t.Context(), in); err != nil || len(got) > 0 {
		t.Fatalf("SmokeTested = %v, %v; want a pass", got, err)
	}
	if p.hits.Load() != 1 {
		t.Fatalf("%d requests, want 1", p.hits.Load())
	}
	if ua := p.userAgent.Load(); ua != "cutover-guard-smoke/v9.9.9" {
		t.Errorf("User-Agent %q", ua)
	}
	if h := p.host.Load(); h != "app-green.production.svc.cluster.local" {
		t.Errorf("Host %q", h)
	}
	if !p.closeAsked.Load() {
		t.Error("the request did not ask to close the connection")
	}
}

// The gate is opt-in, and off cluster-wide with --smoke-checks=false.
func TestSmokeTestedOptIn(t *testing.T) {
	p := &smokePod{handler: ok200}
	objs := smokeWorld(t, p)
	if got, err := SmokeTested(t.Context(), smokeInput(objs, testSmoker(), nil)); err != nil || len(got) > 0 {
		t.Errorf("no annotation: %v, %v; want nothing", got, err)
	}
	got, err := SmokeTested(t.Context(), smokeInput(objs, nil, map[string]string{AnnotationSmokePath: "/"}))
	if err != nil {
		t.Fatal(err)
	}
	want := []short{{Warn, ReasonSmokeNotChecked, "deployment app-green", "smoke test not run (the guard runs with --smoke-checks=false)", ""}}
	if diff := cmp.Diff(want, shorten(got)); diff != "" {
		t.Errorf("gate off (-want +got):\n%s", diff)
	}
	// The Service's annotations count when no workload has them.
	in := smokeInput(objs, testSmoker(), nil)
	in.Service.Annotations = map[string]string{AnnotationSmokePath: "/", AnnotationSmokeExpect: "500"}
	got, err = SmokeTested(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Reason{ReasonSmokeStatus}, reasons(got)); diff != "" {
		t.Errorf("service annotations (-want +got):\n%s", diff)
	}
	if p.hits.Load() != 1 {
		t.Errorf("%d requests, want 1", p.hits.Load())
	}
}

// The attacks of a tenant who writes their own EndpointSlices: none
// makes the guard call an address that is not one of the namespace's own
// pods, or lies outside --private-cidrs.
func TestSmokeCallsOnlyTheNamespacesPods(t *testing.T) {
	tests := map[string]struct {
		edit func(objs []client.Object)
		// private replaces the Smoker's CIDRs.
		private []netip.Prefix
		want    string
	}{
		"an endpoint whose address is not its pod's": {
			edit: func(objs []client.Object) { objs[1].(*corev1.Pod).Status.PodIPs = []corev1.PodIP{{IP: "127.0.0.99"}} },
			want: "not called: the address is not the pod's",
		},
		"an endpoint naming a pod of another namespace": {
			edit: func(objs []client.Object) {
				objs[2].(*discoveryv1.EndpointSlice).Endpoints[0].TargetRef.Namespace = "kube-system"
			},
			want: "not called: the endpoint is not a pod of namespace production",
		},
		"an endpoint without a pod": {
			edit: func(objs []client.Object) { objs[2].(*discoveryv1.EndpointSlice).Endpoints[0].TargetRef = nil },
			want: "not called: the endpoint is not a pod of namespace production",
		},
		"a pod on the host network": {
			edit: func(objs []client.Object) { objs[1].(*corev1.Pod).Spec.HostNetwork = true },
			want: "not called: the pod uses the host network",
		},
		"an address outside --private-cidrs": {
			private: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
			want:    "not called: the address is outside --private-cidrs",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := &smokePod{handler: ok200}
			objs := smokeWorld(t, p)
			if tc.edit != nil {
				tc.edit(objs)
			}
			s := testSmoker()
			if tc.private != nil {
				s = NewSmoker(SmokeOptions{PrivateCIDRs: tc.private})
			}
			got, err := SmokeTested(t.Context(), smokeInput(objs, s, map[string]string{AnnotationSmokePath: "/"}))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Reason != ReasonSmokeAddressNotAllowed || got[0].Severity != Deny || !strings.Contains(got[0].Message, tc.want) {
				t.Fatalf("findings %v; want one %s denial saying %q", got, ReasonSmokeAddressNotAllowed, tc.want)
			}
			if n := p.hits.Load(); n != 0 {
				t.Errorf("the pod's server got %d requests, want none", n)
			}
		})
	}
	// And the dialer refuses such an address even if asked directly.
	s := NewSmoker(SmokeOptions{PrivateCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	out := s.call(t.Context(), "production", netip.MustParseAddrPort("127.0.0.1:9"), &smokeSpec{path: "/"})
	if out.reason != ReasonSmokeAddressNotAllowed {
		t.Errorf("direct call to 127.0.0.1: %+v; want %s", out, ReasonSmokeAddressNotAllowed)
	}
}

// A target with more ready endpoints than the cap has the first cap (in
// pod name order) called, and a warning naming the rest.
func TestSmokeCapsEndpointsPerTarget(t *testing.T) {
	pods := make([]*smokePod, 20)
	for i := range pods {
		pods[i] = &smokePod{handler: ok200}
	}
	objs := smokeWorld(t, pods...)
	s := NewSmoker(SmokeOptions{PrivateCIDRs: loopback, MaxEndpoints: 16})
	got, err := SmokeTested(t.Context(), smokeInput(objs, s, map[string]string{AnnotationSmokePath: "/"}))
	if err != nil {
		t.Fatal(err)
	}
	want := []short{{Warn, ReasonSmokeNotAllProbed, "service app-green", "smoke test called 16 of 20 ready endpoints; 4 more not probed", ""}}
	if diff := cmp.Diff(want, shorten(got)); diff != "" {
		t.Errorf("findings (-want +got):\n%s", diff)
	}
	called := 0
	for _, p := range pods {
		called += int(p.hits.Load())
	}
	if called != 16 {
		t.Errorf("%d requests, want 16", called)
	}
}

// Guard runs the gate beside the database check once the workloads are
// known, records its run and the pods it read, and not at all for a
// target that does not opt in.
func TestGuardEvaluateRunsTheSmokeGate(t *testing.T) {
	for name, tc := range map[string]struct {
		annotations map[string]string
		wantRun     bool
		want        []Reason
	}{
		"opted in and failing": {annotations: map[string]string{AnnotationSmokePath: "/", AnnotationSmokeExpect: "404"}, wantRun: true,
			want: []Reason{ReasonDatabaseNotChecked, ReasonSmokeStatus}},
		"not opted in": {want: []Reason{ReasonDatabaseNotChecked}},
	} {
		t.Run(name, func(t *testing.T) {
			objs := smokeWorld(t, &smokePod{handler: ok200})
			d := greenWith(tc.annotations)
			objs = append(objs, &d)
			g := &Guard{Reader: fakeReader(objs...), Smoker: testSmoker()}
			res, err := g.Evaluate(t.Context(), []Target{greenTarget()})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, reasons(res.Findings)); diff != "" {
				t.Errorf("reasons (-want +got):\n%s", diff)
			}
			ran, readPod := false, false
			for _, r := range res.Runs {
				ran = ran || r.Check == CheckSmoke
			}
			for _, o := range res.Observed {
				readPod = readPod || o.Kind == "Pod" && o.Name == "app-green-0"
			}
			if ran != tc.wantRun || readPod != tc.wantRun {
				t.Errorf("smoke run recorded %v, pod observed %v; want %v", ran, readPod, tc.wantRun)
			}
		})
	}
}

func TestParseSmokeAnnotations(t *testing.T) {
	const path = AnnotationSmokePath
	tests := map[string]struct {
		annotations map[string]string
		want        smokeSpec
		wantErr     string // the message, then "; set it to " the syntax
	}{
		"a path alone takes the defaults": {
			annotations: map[string]string{path: "/ready"},
			want:        smokeSpec{path: "/ready", expect: []statusRange{{200, 299}}, expectText: "200-299", minAll: true},
		},
		"every annotation": {
			annotations: map[string]string{path: "/version?full=1", AnnotationSmokePort: "http", AnnotationSmokeExpect: "200, 301-302",
				AnnotationSmokeHost: "app.example.com", AnnotationSmokeBody: "v1.1", AnnotationSmokeMinReady: "50%"},
			want: smokeSpec{path: "/version?full=1", portName: "http", expect: []statusRange{{200, 200}, {301, 302}}, expectText: "200,301-302",
				host: "app.example.com", body: "v1.1", minPercent: 50},
		},
		"a port number and a count": {
			annotations: map[string]string{path: "/", AnnotationSmokePort: "9090", AnnotationSmokeMinReady: "2"},
			want:        smokeSpec{path: "/", portNumber: 9090, expect: []statusRange{{200, 299}}, expectText: "200-299", minCount: 2},
		},
		"a URL instead of a path": {
			annotations: map[string]string{path: "http://169.254.169.254/latest"},
			wantErr:     `annotation cutover-guard.dev/smoke-path is "http://169.254.169.254/latest", not a path: only a path is configurable, never a host or URL; set it to a path beginning with one /, such as /ready or /version?full=1`,
		},
		"a network-path reference": {
			annotations: map[string]string{path: "//evil.example/"},
			wantErr:     `annotation cutover-guard.dev/smoke-path is "//evil.example/", not a path: only a path is configurable, never a host or URL; set it to a path beginning with one /, such as /ready or /version?full=1`,
		},
		"an empty path": {
			annotations: map[string]string{path: ""},
			wantErr:     "annotation cutover-guard.dev/smoke-path is empty; set it to a path beginning with one /, such as /ready or /version?full=1",
		},
		"a path with a newline": {
			annotations: map[string]string{path: "/ready\r\nX-Evil: 1"},
			wantErr:     `annotation cutover-guard.dev/smoke-path is "/ready\r\nX-Evil: 1": only printable ASCII without spaces (percent-encode the rest); set it to a path beginning with one /, such as /ready or /version?full=1`,
		},
		"a long path": {
			annotations: map[string]string{path: "/" + strings.Repeat("a", 600)},
			wantErr:     "annotation cutover-guard.dev/smoke-path is longer than 512 characters; set it to a path beginning with one /, such as /ready or /version?full=1",
		},
		"a port out of range": {
			annotations: map[string]string{path: "/", AnnotationSmokePort: "70000"},
			wantErr:     `annotation cutover-guard.dev/smoke-port is "70000", not a port number; set it to a container port number (1-65535) or name, such as 8080 or http`,
		},
		"a port name with spaces": {
			annotations: map[string]string{path: "/", AnnotationSmokePort: "my port"},
			wantErr:     `annotation cutover-guard.dev/smoke-port is "my port", neither a port number nor a port name; set it to a container port number (1-65535) or name, such as 8080 or http`,
		},
		"a reversed range": {
			annotations: map[string]string{path: "/", AnnotationSmokeExpect: "299-200"},
			wantErr:     `annotation cutover-guard.dev/smoke-expect has "299-200", not a status code or range; set it to status codes or ranges (100-599), comma-separated, at most 16, such as 200-299 or 200,204,301-302`,
		},
		"a status class": {
			annotations: map[string]string{path: "/", AnnotationSmokeExpect: "2xx"},
			wantErr:     `annotation cutover-guard.dev/smoke-expect has "2xx", not a status code or range; set it to status codes or ranges (100-599), comma-separated, at most 16, such as 200-299 or 200,204,301-302`,
		},
		"an empty entry": {
			annotations: map[string]string{path: "/", AnnotationSmokeExpect: "200,"},
			wantErr:     `annotation cutover-guard.dev/smoke-expect has empty, not a status code or range; set it to status codes or ranges (100-599), comma-separated, at most 16, such as 200-299 or 200,204,301-302`,
		},
		"too many codes": {
			annotations: map[string]string{path: "/", AnnotationSmokeExpect: strings.Repeat("200,", 20) + "200"},
			wantErr:     "annotation cutover-guard.dev/smoke-expect lists 21 codes or ranges; set it to status codes or ranges (100-599), comma-separated, at most 16, such as 200-299 or 200,204,301-302",
		},
		"a host with a port": {
			annotations: map[string]string{path: "/", AnnotationSmokeHost: "app:80"},
			wantErr:     `annotation cutover-guard.dev/smoke-host is "app:80", not a DNS name; set it to a DNS name, such as app-green.production.svc.cluster.local`,
		},
		"an empty body": {
			annotations: map[string]string{path: "/", AnnotationSmokeBody: ""},
			wantErr:     "annotation cutover-guard.dev/smoke-body is empty; set it to printable text of 1 to 256 characters that the first 4096 bytes of the answer must contain, such as v1.1",
		},
		"a zero percent": {
			annotations: map[string]string{path: "/", AnnotationSmokeMinReady: "0%"},
			wantErr:     `annotation cutover-guard.dev/smoke-min-ready is "0%", not a percentage from 1% to 100%; set it to all, a count of endpoints (such as 2) or a percentage of the ready endpoints (1%-100%, such as 50%)`,
		},
		"a word": {
			annotations: map[string]string{path: "/", AnnotationSmokeMinReady: "most"},
			wantErr:     `annotation cutover-guard.dev/smoke-min-ready is "most", neither all, a count nor a percentage; set it to all, a count of endpoints (such as 2) or a percentage of the ready endpoints (1%-100%, such as 50%)`,
		},
		"a zero count": {
			annotations: map[string]string{path: "/", AnnotationSmokeMinReady: "0"},
			wantErr:     `annotation cutover-guard.dev/smoke-min-ready is "0", neither all, a count nor a percentage; set it to all, a count of endpoints (such as 2) or a percentage of the ready endpoints (1%-100%, such as 50%)`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseSmoke(annotated{annotations: tc.annotations})
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("parsed %+v; want an error", got)
				}
				if msg := err.Error() + "; set it to " + err.accepted; msg != tc.wantErr {
					t.Errorf("error\n got %s\nwant %s", msg, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(smokeSpec{}, statusRange{})); diff != "" {
				t.Errorf("spec (-want +got):\n%s", diff)
			}
		})
	}
}

// A bad annotation is a denial that names it and its syntax, from the
// object it is on; two workloads that disagree are a denial too.
func TestSmokeAnnotationDenials(t *testing.T) {
	objs := smokeWorld(t, &smokePod{handler: ok200})
	got, err := SmokeTested(t.Context(), smokeInput(objs, testSmoker(), map[string]string{AnnotationSmokePath: "/", AnnotationSmokeMinReady: "most"}))
	if err != nil {
		t.Fatal(err)
	}
	want := []short{{Deny, ReasonSmokeAnnotationInvalid, "deployment app-green",
		`cutover-guard.dev/smoke-min-ready of deployment app-green is "most", neither all, a count nor a percentage`,
		"set it to all, a count of endpoints (such as 2) or a percentage of the ready endpoints (1%-100%, such as 50%)"}}
	if diff := cmp.Diff(want, shorten(got)); diff != "" {
		t.Errorf("bad value (-want +got):\n%s", diff)
	}

	in := smokeInput(objs, testSmoker(), map[string]string{AnnotationSmokePath: "/a"})
	other := greenWith(map[string]string{AnnotationSmokePath: "/b"})
	other.Name = "app-green-canary"
	in.Deployments = append(in.Deployments, other)
	got, err = SmokeTested(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	want = []short{{Deny, ReasonSmokeAnnotationConflict, "service app-green",
		"deployment app-green and deployment app-green-canary set different cutover-guard.dev/smoke-* annotations",
		"set the same smoke annotations on every workload behind the service, or only on the service"}}
	if diff := cmp.Diff(want, shorten(got)); diff != "" {
		t.Errorf("conflict (-want +got):\n%s", diff)
	}
}

func TestSmokeFirstLine(t *testing.T) {
	for in, want := range map[string]string{
		"":                              "",
		"\n\n  hello world  \nnext":     "hello world",
		"a\x00b\xffc":                   "a?b?c",
		strings.Repeat("é", 100):        strings.Repeat("?", 117) + "...",
		strings.Repeat("y", 120):        strings.Repeat("y", 120),
		strings.Repeat("y", 121) + "\n": strings.Repeat("y", 117) + "...",
	} {
		if got := firstLine([]byte(in)); got != want || len(got) > smokeLineLimit {
			t.Errorf("firstLine(%q) = %q, want %q (at most %d)", in, got, want, smokeLineLimit)
		}
	}
}

// FuzzParseSmoke: no annotation value panics the parser, and what it
// accepts is bounded and safe to put in a request line.
func FuzzParseSmoke(f *testing.F) {
	f.Add("/ready", "8080", "200-299", "app.example.com", "v1.1", "50%")
	f.Add("//x", "http", "2xx", "a:1", "", "all")
	f.Fuzz(func(t *testing.T, path, port, expect, host, body, minReady string) {
		spec, err := parseSmoke(annotated{annotations: map[string]string{AnnotationSmokePath: path, AnnotationSmokePort: port,
			AnnotationSmokeExpect: expect, AnnotationSmokeHost: host, AnnotationSmokeBody: body, AnnotationSmokeMinReady: minReady}})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "annotation cutover-guard.dev/smoke-") || err.accepted == "" {
				t.Fatalf("error %q names no annotation or no syntax", err)
			}
			return
		}
		if !strings.HasPrefix(spec.path, "/") || strings.HasPrefix(spec.path, "//") || !printableASCII(spec.path) || strings.ContainsAny(spec.path, " #") {
			t.Fatalf("accepted path %q", spec.path)
		}
		if r := spec.required(10); r < 1 && !spec.minAll {
			t.Fatalf("min-ready %q requires %d of 10", minReady, r)
		}
	})
}

// A namespace whose pods hang holds at most half of the guard's smoke
// slots: another namespace's smoke test still runs at once.
func TestSmokeNamespaceShareLeavesSlotsForOthers(t *testing.T) {
	var inFlight, peak atomic.Int32
	release := make(chan struct{})
	hanging := http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	objs := smokeWorld(t, &smokePod{handler: hanging}, &smokePod{handler: ok200})
	hangAddr := netip.MustParseAddrPort("127.0.0.10:" + fmt.Sprint(*objs[2].(*discoveryv1.EndpointSlice).Ports[0].Port))
	okAddr := netip.MustParseAddrPort("127.0.0.11:" + fmt.Sprint(*objs[4].(*discoveryv1.EndpointSlice).Ports[0].Port))
	s := NewSmoker(SmokeOptions{PrivateCIDRs: loopback, MaxInFlight: 4, Timeout: 2 * time.Second})
	spec := &smokeSpec{path: "/", expect: []statusRange{{200, 299}}}

	done := make(chan smokeOutcome, 6)
	for range 6 {
		go func() { done <- s.call(t.Context(), "tenant-a", hangAddr, spec) }()
	}
	// Wait until tenant-a holds its share.
	deadline := time.Now().Add(5 * time.Second)
	for inFlight.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := s.call(t.Context(), "tenant-b", okAddr, spec); got.reason != "" {
		t.Errorf("tenant-b's smoke test while tenant-a's pods hang: %+v, want a pass", got)
	}
	close(release)
	for range 6 {
		<-done
	}
	if p := peak.Load(); p != 2 {
		t.Errorf("tenant-a's pods had %d requests at once, want its share of 2", p)
	}
}

// smoke-port, by name or number, replaces the port the Service maps to.
func TestSmokePortAnnotation(t *testing.T) {
	p := &smokePod{handler: ok200}
	objs := smokeWorld(t, p)
	sl := objs[2].(*discoveryv1.EndpointSlice)
	listening := *sl.Ports[0].Port
	sl.Ports[0].Port = ptr.To[int32](1) // the Service's port: nothing there
	for name, value := range map[string]string{"by name": "http", "by number": fmt.Sprint(listening)} {
		t.Run(name, func(t *testing.T) {
			in := smokeInput(objs, testSmoker(), map[string]string{AnnotationSmokePath: "/", AnnotationSmokePort: value})
			in.Deployments[0].Spec.Template.Spec.Containers[0].Ports[0].ContainerPort = listening
			got, err := SmokeTested(t.Context(), in)
			if err != nil || len(got) > 0 {
				t.Fatalf("SmokeTested = %v, %v; want a pass on port %d", got, err, listening)
			}
		})
	}
	if n := p.hits.Load(); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

// The gate is configured by any workload kind the workload check finds, not
// only Deployments: a StatefulSet's annotations opt in, and a named
// smoke-port resolves in its pod template.
func TestSmokeGateOfAStatefulSet(t *testing.T) {
	p := &smokePod{handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })}
	objs := smokeWorld(t, p)
	sl := objs[2].(*discoveryv1.EndpointSlice)
	listening := *sl.Ports[0].Port
	sl.Ports[0].Port = ptr.To[int32](1) // the Service's port: nothing there

	in := smokeInput(objs, testSmoker(), nil)
	tmpl := in.Deployments[0].Spec.Template.DeepCopy()
	tmpl.Spec.Containers[0].Ports[0].ContainerPort = listening
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "app-green",
			Annotations: map[string]string{AnnotationSmokePath: "/ready", AnnotationSmokePort: tmpl.Spec.Containers[0].Ports[0].Name}},
		Spec: appsv1.StatefulSetSpec{Template: *tmpl},
	}
	in.Deployments = nil
	in.Workloads = []Workload{{Kind: KindStatefulSet, Object: sts, Template: &sts.Spec.Template}}
	if !smokeOptedIn(in) {
		t.Fatal("a StatefulSet with smoke-path does not opt its target in")
	}
	got, err := SmokeTested(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Reason{ReasonSmokeStatus}, reasons(got)); diff != "" {
		t.Errorf("reasons (-want +got):\n%s\nfindings: %v", diff, got)
	}
	if len(got) > 0 && !strings.Contains(got[0].String(), "503") {
		t.Errorf("finding %q does not say what came back", got[0].String())
	}
	if n := p.hits.Load(); n != 1 {
		t.Errorf("%d requests on the StatefulSet's named port %d, want 1", n, listening)
	}
}
