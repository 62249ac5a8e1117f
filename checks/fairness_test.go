package checks

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/cutover-guard/cutover-guard/checks/probe"
	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"
	"github.com/cutover-guard/cutover-guard/internal/testenv"
)

// tenantApp is a ready app-green in namespace ns whose pods use env, and
// the target of a route in ns switching to it.
func tenantApp(ns string, env []corev1.EnvVar, annotations map[string]string) ([]client.Object, Target) {
	dep := readyDeployment("app-green", 2)
	dep.Namespace, dep.Annotations, dep.Spec.Template.Spec.Containers[0].Env = ns, annotations, env
	svc := service("app-green", dep.Spec.Template.Labels, 80)
	svc.Namespace = ns
	sl := slice("app-green", ptr.To(true))
	sl.Namespace = ns
	return []client.Object{svc, dep, replicaSetOf(dep, "6a1e", 2), sl},
		Target{Route: types.NamespacedName{Namespace: ns, Name: "myapp"}, RouteKind: "HTTPRoute", Service: types.NamespacedName{Namespace: ns, Name: "app-green"}, Port: ptr.To[int32](80)}
}

// denialReasons counts the Deny findings of res by reason.
func denialReasons(res Result) map[Reason]int {
	n := map[Reason]int{}
	for _, f := range res.Findings {
		if f.Severity == Deny {
			n[f.Reason]++
		}
	}
	return n
}

// Namespace tenant-a floods the guard with fifty switches whose databases
// accept and never answer; tenant-b's one switch, to the local PostgreSQL,
// is allowed well inside its deadline. tenant-a's decisions past its bound
// are denied NamespaceBusy at once, and its probes hold no more than their
// share of the slots.
func TestGuardNamespaceFloodLeavesOtherNamespacesAlone(t *testing.T) {
	const flood, inFlight = 50, 4
	if c, err := net.DialTimeout("tcp", "127.0.0.1:5432", time.Second); err != nil {
		testenv.Unavailable(t, "the local PostgreSQL at 127.0.0.1:5432 is needed: %v", err)
		return
	} else {
		_ = c.Close()
	}
	silent := probetest.NewSilent(t)
	env, annotations := manyDSNs(8, "127.0.0.1", silent.Port(), "a")
	objsA, targetA := tenantApp("tenant-a", env, annotations)
	objsB, targetB := tenantApp("tenant-b", []corev1.EnvVar{literal("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")}, nil)
	p := probe.NewProber(probe.ProberOptions{PrivateCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Ports: probetest.AnyPort(),
		Timeout: time.Minute, MaxInFlight: inFlight})
	g := &Guard{Reader: fakeReader(append(objsA, objsB...)...), Prober: p}

	floodCtx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
	defer cancel()
	results := make([]Result, flood)
	took := make([]time.Duration, flood)
	var wg sync.WaitGroup
	for i := range flood {
		wg.Go(func() {
			start := time.Now()
			var err error
			if results[i], err = g.Evaluate(floodCtx, []Target{targetA}); err != nil {
				t.Error(err)
			}
			took[i] = time.Since(start)
		})
	}
	// tenant-a's probes hold their share of the slots before tenant-b asks.
	for deadline := time.Now().Add(3 * time.Second); silent.Open() < inFlight/2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the flood opened %d connections, want %d", silent.Open(), inFlight/2)
		}
	}

	ctxB, cancelB := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancelB()
	start := time.Now()
	resB, err := g.Evaluate(ctxB, []Target{targetB})
	tookB := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if d := denialReasons(resB); len(d) > 0 {
		t.Errorf("tenant-b denied: %v", resB.Findings)
	}
	if tookB > time.Second {
		t.Errorf("tenant-b answered in %v, want well inside its 3s deadline", tookB)
	}

	// The share is judged while the flood waits: when one decision's
	// deadline frees its slots, another's waiting probe may dial before the
	// listener has seen the freed connections close.
	peak := silent.Peak()
	wg.Wait()
	busy, timedOut := 0, 0
	var slowestBusy time.Duration
	for i, r := range results {
		d := denialReasons(r)
		switch {
		case d[ReasonNamespaceBusy] > 0:
			busy++
			slowestBusy = max(slowestBusy, took[i])
		case d[ReasonTimeout] > 0:
			timedOut++
		default:
			t.Errorf("tenant-a decision %d: %v", i, r.Findings)
		}
	}
	t.Logf("tenant-b allowed in %v; tenant-a: %d busy (slowest %v), %d timed out; peak %d connections",
		tookB.Round(time.Millisecond), busy, slowestBusy.Round(time.Millisecond), timedOut, peak)
	if busy != flood-DefaultMaxDecisionsPerNamespace || timedOut != DefaultMaxDecisionsPerNamespace {
		t.Errorf("%d busy and %d timed out, want %d and %d", busy, timedOut, flood-DefaultMaxDecisionsPerNamespace, DefaultMaxDecisionsPerNamespace)
	}
	if slowestBusy > 200*time.Millisecond {
		t.Errorf("a NamespaceBusy denial took %v, want it at once", slowestBusy)
	}
	if peak > inFlight/2 {
		t.Errorf("tenant-a held %d connections at once, want at most its share %d", peak, inFlight/2)
	}
	g.busy.mu.Lock()
	left := len(g.busy.n)
	g.busy.mu.Unlock()
	if left != 0 {
		t.Errorf("%d namespaces still counted busy after every decision", left)
	}
}

// The NamespaceBusy denial names the namespace, the bound and when to
// retry, for each target.
func TestNamespaceBusyFinding(t *testing.T) {
	_, tg := tenantApp("tenant-a", nil, nil)
	got := namespaceBusy("tenant-a", 4, []Target{tg}).Findings
	want := []Finding{{Check: CheckCapacity, Severity: Deny, Service: tg.Service, Reason: ReasonNamespaceBusy,
		Message: "namespace tenant-a has 4 cutover checks in flight; the guard checks at most 4 at once per namespace", Fix: "retry in a few seconds"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Thirty-one distinct connection strings in one minute from one namespace:
// the thirty-first is denied without a dial and says when to retry; a
// string already counted costs nothing; another namespace is unaffected;
// a minute on, the namespace may probe again.
func TestDatabaseBudgetPerNamespacePerMinute(t *testing.T) {
	var dials atomic.Int64
	p := probe.NewProber(probe.ProberOptions{Resolver: probetest.FixedResolver("10.0.0.5"),
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return probetest.RefuseDial(ctx, network, addr)
		}})
	clock := &fakeClock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	budget := newNamespaceURLs(DefaultDatabaseURLsPerNamespacePerMinute, clock.now)
	check := func(ns string, i int) []Reason {
		t.Helper()
		svc := types.NamespacedName{Namespace: ns, Name: "app-green"}
		in := &Input{Reader: fake.NewClientBuilder().Build(), Prober: p, Target: Target{Service: svc}, namespaceURLs: budget,
			Deployments: literalDSN(fmt.Sprintf("postgres://app:pw@db.internal:5432/app_%d?sslmode=disable", i))}
		f, err := DatabaseReachable(t.Context(), in)
		if err != nil {
			t.Fatal(err)
		}
		return reasons(f)
	}
	refused := []Reason{ReasonDatabaseConnectRefused}
	if diff := cmp.Diff(refused, check("tenant-a", 0)); diff != "" {
		t.Fatalf("first string (-want +got):\n%s", diff)
	}
	clock.advance(10 * time.Second)
	for i := 1; i < DefaultDatabaseURLsPerNamespacePerMinute; i++ {
		if diff := cmp.Diff(refused, check("tenant-a", i)); diff != "" {
			t.Fatalf("string %d (-want +got):\n%s", i, diff)
		}
	}
	before := dials.Load()
	if before != DefaultDatabaseURLsPerNamespacePerMinute {
		t.Fatalf("%d dials for %d strings", before, DefaultDatabaseURLsPerNamespacePerMinute)
	}

	svc := types.NamespacedName{Namespace: "tenant-a", Name: "app-green"}
	in := &Input{Reader: fake.NewClientBuilder().Build(), Prober: p, Target: Target{Service: svc}, namespaceURLs: budget,
		Deployments: literalDSN("postgres://app:pw@db.internal:5432/app_30?sslmode=disable")}
	got, err := DatabaseReachable(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	want := []Finding{{Check: CheckDatabase, Severity: Deny, Service: svc, Reason: ReasonDatabaseBudgetExceeded,
		Message: "namespace tenant-a has had 30 distinct connection strings checked in the last minute; the guard checks at most 30 per namespace per minute, so 1 connection string of service tenant-a/app-green was not checked",
		Fix:     "retry in 50s"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the 31st string (-want +got):\n%s", diff)
	}
	if n := dials.Load(); n != before {
		t.Errorf("the 31st string was dialled (%d dials, want %d)", n, before)
	}

	if diff := cmp.Diff(refused, check("tenant-a", 7)); diff != "" {
		t.Errorf("a string counted already (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(refused, check("tenant-b", 30)); diff != "" {
		t.Errorf("another namespace (-want +got):\n%s", diff)
	}
	clock.advance(50 * time.Second) // the first string leaves the window
	if diff := cmp.Diff(refused, check("tenant-a", 30)); diff != "" {
		t.Errorf("a minute on (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Reason{ReasonDatabaseBudgetExceeded}, check("tenant-a", 31)); diff != "" {
		t.Errorf("the window full again (-want +got):\n%s", diff)
	}
}

// The budget remembers at most maxNamespaces namespaces and at most the
// budget of hashes in each, forgetting idle namespaces first.
func TestNamespaceURLsMemoryIsBounded(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	u := newNamespaceURLs(3, clock.now)
	u.maxNamespaces = 8
	for i := range 100 {
		for j := range 10 {
			u.take(fmt.Sprintf("ns-%d", i), fmt.Sprintf("dsn-%d", j))
		}
		clock.advance(time.Second)
	}
	if len(u.ns) > u.maxNamespaces {
		t.Errorf("%d namespaces remembered, cap %d", len(u.ns), u.maxNamespaces)
	}
	for name, s := range u.ns {
		if len(s.at) > u.limit {
			t.Errorf("%s: %d strings remembered, budget %d", name, len(s.at), u.limit)
		}
	}
	if _, ok := u.ns["ns-99"]; !ok {
		t.Error("the namespace used last was forgotten")
	}
	clock.advance(2 * time.Minute)
	u.maxNamespaces = len(u.ns)
	u.take("late", "dsn")
	if len(u.ns) != 1 {
		t.Errorf("%d namespaces remembered after every other went idle, want 1", len(u.ns))
	}
}
