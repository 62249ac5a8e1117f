package faults_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
	"github.com/cutover-guard/cutover-guard/internal/tail"
)

// The storm's clients: client-go patches and the real kubectl.
const (
	stormClientGo = 4
	stormKubectl  = 2
	// stormAllowed is how many switches the guard allows before it is killed.
	stormAllowed = 10
	// downAttempts is how many switches each client tries while the guard
	// is down, after the route has been read back.
	downAttempts = 3
)

// TestKillDuringSwitchStorm kills the guard with SIGKILL while clients
// switch the route back and forth, then restarts it on the same port and
// certificate.
func TestKillDuringSwitchStorm(t *testing.T) {
	e := setup(t)
	e.reset(t, postgresDSN)
	t.Cleanup(func() { e.ensureGuard(t) })
	ctx := t.Context()
	webhookDown := []string{`failed calling webhook "` + tutorial.HTTPRouteWebhook + `"`, "connection refused"}

	s := &storm{e: e, stop: make(chan struct{})}
	s.run(ctx)
	defer s.halt()
	waitFor(t, 2*time.Minute, "allowed switches before the kill", func() (bool, string) {
		n := s.allowed()
		return n >= stormAllowed, fmt.Sprintf("%d of %d allowed; last attempts:\n%s", n, stormAllowed, s.tail(5))
	})

	pid, killing := e.guard.PID(), time.Now()
	if err := e.guard.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("guard (pid %d) killed with SIGKILL after %d allowed switches", pid, s.allowed())

	// Requests in flight at the kill settle first: each client has begun a
	// new attempt since.
	waitFor(t, time.Minute, "every client to begin a switch after the kill", func() (bool, string) {
		return s.everyClientStartedAfter(killed, 1), s.tail(len(s.clients()))
	})
	for _, a := range s.inFlight(killing) {
		t.Logf("in flight at the kill: %s -> %s ok=%v %s", a.client, a.to, a.ok, a.msg)
	}
	atDeath := readRoute(t, e)
	last, ok := s.lastWrite()
	if !ok {
		t.Fatal("no allowed switch recorded before the kill")
	}
	if diff := cmp.Diff(last, atDeath); diff != "" {
		t.Errorf("route after the kill differs from the last allowed switch (-last allowed +read back):\n%s", diff)
	}
	settled := time.Now()
	waitFor(t, time.Minute, "switches while the guard is down", func() (bool, string) {
		return s.everyClientStartedAfter(settled, downAttempts), s.tail(len(s.clients()))
	})
	s.halt()

	// A switch to the backend the route already has changes nothing: the
	// installed matchConditions keep it from the guard, and the API server
	// answers with the route as a switch the guard allowed left it. Every
	// other switch fails closed.
	byGuard := s.writtenBefore(killed)
	down := s.startedAfter(killed)
	var refused []attempt
	refusedAfterSettled := map[string]int{}
	for _, a := range down {
		if a.ok {
			if !byGuard[a.route] {
				t.Errorf("%s: switch to %s allowed while the guard was down, leaving a route no allowed switch wrote: %+v", a.client, a.to, a)
			}
			continue
		}
		refused = append(refused, a)
		if !a.internal || !strings.Contains(a.msg, webhookDown[0]) {
			t.Errorf("%s: switch to %s failed without the API server's webhook error:\n%s", a.client, a.to, a.msg)
		}
		if a.started.After(settled) {
			refusedAfterSettled[a.client]++
			if !strings.Contains(a.msg, webhookDown[1]) {
				t.Errorf("%s: switch to %s failed, but not with %q:\n%s", a.client, a.to, webhookDown[1], a.msg)
			}
		}
	}
	for _, c := range s.clients() {
		if refusedAfterSettled[c] == 0 {
			t.Errorf("%s: no switch refused while the guard was down (of %d it tried, each alternating the backend)", c, downAttempts)
		}
	}
	if len(refused) == 0 {
		t.Fatal("no switch refused while the guard was down")
	}
	t.Logf("%d switches while the guard was down: %d refused by the API server, %d to the backend the route had, unchanged; a refused one:\n%s",
		len(down), len(refused), len(down)-len(refused), refused[len(refused)-1].msg)
	if diff := cmp.Diff(atDeath, readRoute(t, e)); diff != "" {
		t.Errorf("route changed while the guard was down (-at the kill +now):\n%s", diff)
	}
	labelWhileDown(t, e, atDeath, webhookDown)

	restartAndWaitDecided(t, e, atDeath.Backend)
}

// labelWhileDown tries a label-only update while the guard is down: the
// installed registration's matchConditions (only updates that change
// the spec reach the guard) let it through, and a switch still fails
// closed.
func labelWhileDown(t *testing.T, e *env, atDeath routeState, webhookDown []string) {
	t.Helper()
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := e.kube.Get(t.Context(), client.ObjectKey{Name: tutorial.WebhookConfiguration}, vwc); err != nil {
		t.Fatal(err)
	}
	if hook := webhookNamed(t, vwc, tutorial.HTTPRouteWebhook); len(hook.MatchConditions) == 0 {
		t.Fatalf("the registration of %s has no matchConditions; the installed one has", hook.Name)
	}
	if err := labelRoute(t.Context(), e, "while-down"); err != nil {
		t.Errorf("label-only update while the guard was down: %v; the matchConditions keep it away from the guard", err)
	}
	_, err := switchWithClientGo(t.Context(), e, other(atDeath.Backend))
	if err == nil || !strings.Contains(err.Error(), webhookDown[0]) {
		t.Errorf("switch after the label-only update while the guard is down: want the API server's webhook error, got %v", err)
	}
	if got := readRoute(t, e).Backend; got != atDeath.Backend {
		t.Errorf("route backend %q after a switch while the guard was down, want %q", got, atDeath.Backend)
	}
	t.Logf("installed matchConditions: a label-only update passes while the guard is down; a switch fails: %v", err)
}

func labelRoute(ctx context.Context, e *env, value string) error {
	r := &gwv1.HTTPRoute{}
	r.Namespace, r.Name = tutorial.Namespace, tutorial.Route
	return e.kube.Patch(ctx, r, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"faults.cutover-guard.dev/edited":"`+value+`"}}}`)))
}

// webhookNamed returns the webhook name of vwc.
func webhookNamed(t *testing.T, vwc *admissionregistrationv1.ValidatingWebhookConfiguration, name string) *admissionregistrationv1.ValidatingWebhook {
	t.Helper()
	for i := range vwc.Webhooks {
		if vwc.Webhooks[i].Name == name {
			return &vwc.Webhooks[i]
		}
	}
	t.Fatalf("webhook configuration %s has no webhook %s", vwc.Name, name)
	return nil
}

// restartAndWaitDecided restarts the guard and measures, from the new
// process's start, how long until a switch away from backend is decided by
// it again; the switches are tried from before the restart on.
func restartAndWaitDecided(t *testing.T, e *env, backend string) {
	t.Helper()
	to := other(backend)
	type decision struct {
		at  time.Time
		err error // the last switch's error: nil once allowed
	}
	decided := make(chan decision, 1)
	go func() {
		var last error
		err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			_, last = switchWithClientGo(ctx, e, to)
			return last == nil || (apierrors.IsForbidden(last) && strings.Contains(last.Error(), "denied the request")), nil
		})
		if err != nil {
			last = fmt.Errorf("no switch decided by the restarted guard: %w (last: %v)", err, last)
		}
		decided <- decision{at: time.Now(), err: last}
	}()
	if err := e.guard.Restart(t.Context(), time.Minute); err != nil {
		t.Fatal(err)
	}
	ready := time.Since(e.guard.StartedAt)
	d := <-decided
	if d.err != nil {
		t.Fatalf("switch to %s (Ready) after restarting the guard (pid %d): %v", to, e.guard.PID(), d.err)
	}
	if got := readRoute(t, e).Backend; got != to {
		t.Errorf("after the restarted guard allowed the switch, route backend is %q, want %q", got, to)
	}
	page, err := e.guard.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if n := tutorial.MetricSum(page, "cutover_guard_decisions_total", map[string]string{"path": "checked", "result": "allowed"}); n < 1 {
		t.Errorf("restarted guard counts %v allowed checked decisions, want at least 1", n)
	}
	t.Logf("restarted guard (pid %d, port %d): /readyz after %s, first switch decided after %s from process start",
		e.guard.PID(), e.guard.Port, ready.Round(time.Millisecond), d.at.Sub(e.guard.StartedAt).Round(time.Millisecond))
}

// routeState is what a test compares of the route (exported fields for cmp).
type routeState struct {
	ResourceVersion uint64
	Backend         string
}

func readRoute(t *testing.T, e *env) routeState {
	t.Helper()
	var r gwv1.HTTPRoute
	if err := e.kube.Get(t.Context(), client.ObjectKey{Namespace: tutorial.Namespace, Name: tutorial.Route}, &r); err != nil {
		t.Fatal(err)
	}
	st, err := stateOf(r.ResourceVersion, firstBackend(&r))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// stateOf parses a resourceVersion: opaque to clients in general, it is
// etcd's revision here, and so orders the route's writes.
func stateOf(rv, backend string) (routeState, error) {
	n, err := strconv.ParseUint(rv, 10, 64)
	if err != nil {
		return routeState{}, fmt.Errorf("route resourceVersion %q is not an etcd revision: %w", rv, err)
	}
	return routeState{ResourceVersion: n, Backend: backend}, nil
}

func firstBackend(r *gwv1.HTTPRoute) string {
	if len(r.Spec.Rules) == 0 || len(r.Spec.Rules[0].BackendRefs) == 0 {
		return ""
	}
	return string(r.Spec.Rules[0].BackendRefs[0].Name)
}

func other(backend string) string {
	if backend == tutorial.Green {
		return tutorial.Blue
	}
	return tutorial.Green
}

// switchPatch is the tutorial's cutover and rollback patch, to backend.
func switchPatch(backend string) string {
	return fmt.Sprintf(`[{"op":"replace","path":"/spec/rules/0/backendRefs/0/name","value":%q}]`, backend)
}

func switchWithClientGo(ctx context.Context, e *env, to string) (routeState, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r := &gwv1.HTTPRoute{}
	r.Namespace, r.Name = tutorial.Namespace, tutorial.Route
	if err := e.kube.Patch(ctx, r, client.RawPatch(types.JSONPatchType, []byte(switchPatch(to)))); err != nil {
		return routeState{}, err
	}
	return stateOf(r.ResourceVersion, firstBackend(r))
}

// attempt is one switch a storm client tried.
type attempt struct {
	client, to     string
	started, ended time.Time
	ok             bool
	route          routeState // the route as the API server returned it, if ok
	internal       bool       // the API server answered 500 InternalError
	msg            string     // the error as the client shows it, if not ok
}

// storm switches the route back and forth from several clients until halted.
type storm struct {
	e    *env
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	mu       sync.Mutex
	attempts []attempt
}

func (s *storm) clients() []string {
	var names []string
	for i := range stormClientGo {
		names = append(names, fmt.Sprintf("client-go-%d", i))
	}
	for i := range stormKubectl {
		names = append(names, fmt.Sprintf("kubectl-%d", i))
	}
	return names
}

func (s *storm) run(ctx context.Context) {
	for i, name := range s.clients() {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			// Clients start on different colours so that switches overlap.
			to := []string{tutorial.Green, tutorial.Blue}[i%2]
			for {
				select {
				case <-s.stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				a := attempt{client: name, to: to, started: time.Now()}
				if strings.HasPrefix(name, "kubectl") {
					s.kubectlSwitch(ctx, &a)
				} else {
					a.route, a.msg, a.internal = clientGoSwitch(ctx, s.e, to)
					a.ok = a.msg == ""
				}
				a.ended = time.Now()
				s.mu.Lock()
				s.attempts = append(s.attempts, a)
				s.mu.Unlock()
				to = other(to)
			}
		}()
	}
}

func clientGoSwitch(ctx context.Context, e *env, to string) (routeState, string, bool) {
	st, err := switchWithClientGo(ctx, e, to)
	if err != nil {
		return routeState{}, err.Error(), apierrors.IsInternalError(err)
	}
	return st, "", false
}

func (s *storm) kubectlSwitch(ctx context.Context, a *attempt) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r := s.e.kubectl().Run(ctx, "patch", "httproute", tutorial.Route, "-n", tutorial.Namespace, "--type=json", "-p", switchPatch(a.to),
		"-o", "jsonpath={.metadata.resourceVersion} {.spec.rules[0].backendRefs[0].name}")
	if !r.OK() {
		a.msg, a.internal = r.String(), strings.Contains(r.Output, "Error from server (InternalError)")
		return
	}
	rv, backend, _ := strings.Cut(r.Stdout, " ")
	st, err := stateOf(rv, backend)
	if err != nil {
		a.msg = fmt.Sprintf("%v\n%s", err, r)
		return
	}
	a.ok, a.route = true, st
}

// halt stops the clients and waits for them.
func (s *storm) halt() {
	s.once.Do(func() { close(s.stop) })
	s.wg.Wait()
}

func (s *storm) allowed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.attempts {
		if a.ok {
			n++
		}
	}
	return n
}

// lastWrite is the route as the latest allowed switch left it.
func (s *storm) lastWrite() (routeState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last routeState
	for _, a := range s.attempts {
		if a.ok && a.route.ResourceVersion > last.ResourceVersion {
			last = a.route
		}
	}
	return last, last.ResourceVersion > 0
}

// writtenBefore returns the route states that allowed switches begun
// before t left.
func (s *storm) writtenBefore(t time.Time) map[routeState]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	written := map[routeState]bool{}
	for _, a := range s.attempts {
		if a.ok && a.started.Before(t) {
			written[a.route] = true
		}
	}
	return written
}

func (s *storm) startedAfter(t time.Time) []attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []attempt
	for _, a := range s.attempts {
		if a.started.After(t) {
			out = append(out, a)
		}
	}
	return out
}

// inFlight returns the attempts that had begun but not ended at t.
func (s *storm) inFlight(t time.Time) []attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []attempt
	for _, a := range s.attempts {
		if a.started.Before(t) && a.ended.After(t) {
			out = append(out, a)
		}
	}
	return out
}

// everyClientStartedAfter reports whether every client has finished n
// attempts that began after t.
func (s *storm) everyClientStartedAfter(t time.Time, n int) bool {
	count := map[string]int{}
	for _, a := range s.startedAfter(t) {
		count[a.client]++
	}
	for _, c := range s.clients() {
		if count[c] < n {
			return false
		}
	}
	return true
}

// tail renders the last n attempts for a failure message.
func (s *storm) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, a := range tail.Of(s.attempts, n) {
		fmt.Fprintf(&b, "%s -> %s ok=%v %s\n", a.client, a.to, a.ok, a.msg)
	}
	return b.String()
}

// waitFor polls cond until it holds, failing the test with what cond last
// said if it does not within timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		var ok bool
		ok, last = cond()
		return ok, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v; last:\n%s", what, err, last)
	}
}
