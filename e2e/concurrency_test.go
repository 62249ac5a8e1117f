package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// The storm's shape.
const (
	stormClients = 50
	// Every kubectlEvery-th client runs the real kubectl; the rest use
	// client-go, half with JSON patches, half with merge patches.
	kubectlEvery  = 10
	stormDuration = 25 * time.Second
	// stormQPS bounds each client-go client, so the storm leaves the two
	// shared cores enough to roll green out between flaps.
	stormQPS = 4
	// verdictsPerPhase is how many guard verdicts on switches to green the
	// flapper waits for before it flips green again; phaseTimeout bounds
	// that wait.
	verdictsPerPhase = 4
	phaseTimeout     = 10 * time.Second
	// requestTimeout bounds one client request; a request is never cut
	// short by the end of the storm, so its outcome is always known.
	requestTimeout = 30 * time.Second
)

// 50 clients switch a route between blue and green while green flaps
// between fully Ready and not Ready. Every switch the guard allowed to
// green read the Deployment at a resourceVersion that, by the test's own
// restatement of the rule (cluster.FullyReady) and the history a watch
// recorded, was fully Ready, and that the API server had not replaced
// before the request began; every verdict a client saw on a switch to
// green is a decision in the guard's log for that client's user; every
// decision the guard counted was logged; blue, serving throughout, is
// never denied.
//
// "Ready when read" is about the Deployment only: the guard also requires
// a ready endpoint, read in a separate request, so a Deployment that was
// Ready may still be denied (endpoints lag the Deployment); such denials
// are counted, not judged.
func TestConcurrentSwitchesWhileGreenFlaps(t *testing.T) {
	e := setup(t)
	e.reset(t, world{greenReady: true})
	// Counted from before the storm route's create, a decision the guard
	// logs for the route like every switch.
	before, err := e.guard.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	route := e.stormRoute(t)
	hist := watchDeployment(t, e.cluster.Config, tutorial.Namespace, tutorial.Green)
	s := &storm{e: e, route: route.Name}
	s.run(t, hist)
	hist.catchUp(t, e.kube)
	after, err := e.guard.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	decisions := readDecisions(t, e.guard.Log(), route.Namespace, route.Name)
	v := verify(hist, decisions, s.attempts())
	counted := countedDecisions(before, after)
	t.Logf("%s", v.summary(hist, s, sumCounts(counted), len(decisions)))
	for _, p := range v.problems {
		t.Errorf("%s: %s", p.kind, p.message)
	}
	for kind, n := range v.kinds {
		if n > maxProblems {
			t.Errorf("%s: %d times in all (%d shown)", kind, n, maxProblems)
		}
	}
	if v.allowedGreen == 0 || v.deniedGreen == 0 {
		t.Errorf("the flap was not observed: the guard allowed %d and denied %d switches to %s over %d flaps; "+
			"want some of each (is green rolling out between flaps? see the summary above)", v.allowedGreen, v.deniedGreen, tutorial.Green, hist.flaps())
	}
	if diff := cmp.Diff(counted, loggedDecisions(decisions)); diff != "" {
		t.Errorf("decisions by result during the storm, as cutover_guard_decisions_total{kind=HTTPRoute,path=checked} counted them (-) and as the guard logged them for route %s (+):\n%s"+
			"every decision must be logged (zap's production sampler keeps only every 100th line of a message past 100 a second, unless the log level is 2 or more)",
			route.Name, diff)
	}
	if s.failed.Load() > 0 {
		t.Errorf("%d client requests failed other than by a denial, a conflict or a stale JSON patch test, e.g.:\n%s",
			s.failed.Load(), strings.Join(s.failures(5), "\n"))
	}
}

// decisionResults are the values of cutover_guard_decisions_total's result label.
var decisionResults = []string{"allowed", "allowed_with_warnings", "denied", "error", "overridden"}

// countedDecisions is the increase of the guard's checked HTTPRoute
// decisions between two /metrics pages, by result (those that rose only).
func countedDecisions(before, after string) map[string]int {
	out := map[string]int{}
	for _, r := range decisionResults {
		labels := map[string]string{"kind": "HTTPRoute", "path": "checked", "result": r}
		if n := int(tutorial.MetricSum(after, "cutover_guard_decisions_total", labels) - tutorial.MetricSum(before, "cutover_guard_decisions_total", labels)); n != 0 {
			out[r] = n
		}
	}
	return out
}

// loggedDecisions counts logged decisions by result.
func loggedDecisions(ds []decision) map[string]int {
	out := map[string]int{}
	for _, d := range ds {
		out[d.result()]++
	}
	return out
}

func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// stormRoute creates a route of its own for the storm, to app-blue, so the
// guard's log lines for it are told apart by name.
func (e *env) stormRoute(t *testing.T) *gwv1.HTTPRoute {
	t.Helper()
	route := e.manifests.Route.DeepCopy()
	route.Name = "storm-" + rand.String(6)
	if err := e.kube.Create(t.Context(), route); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.kube.Delete(context.WithoutCancel(t.Context()), route); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete route %s: %v", route.Name, err)
		}
	})
	return route
}

// version is the Deployment as one resourceVersion held it.
type version struct {
	ready bool
	// rolling: not Ready although every wanted replica is ready (a rollout
	// in progress, old pods left): a guard that counted ready pods only
	// would allow it.
	rolling bool
	state   string
	seen    time.Time // when the watch delivered it: after the API server stored it
}

// history records every resourceVersion of one Deployment a watch saw.
type history struct {
	mu    sync.Mutex
	byRV  map[string]version
	order []string // resourceVersions as the watch delivered them
	err   error    // a watch error: events may be missing
}

// watchDeployment records Deployment namespace/name from now on, from a GET
// and a watch that resumes where it left off; it stops at test cleanup.
func watchDeployment(t *testing.T, cfg *rest.Config, namespace, name string) *history {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	deployments := cs.AppsV1().Deployments(namespace)
	d, err := deployments.Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := &history{byRV: map[string]version{}}
	h.record(d)
	selector := fields.OneTermEqualSelector("metadata.name", name).String()
	rw, err := watchtools.NewRetryWatcherWithContext(t.Context(), d.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			return deployments.Watch(ctx, o)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	go h.consume(rw.ResultChan())
	t.Cleanup(func() {
		rw.Stop()
		<-rw.Done()
	})
	return h
}

func (h *history) consume(events <-chan watch.Event) {
	for ev := range events {
		switch ev.Type {
		case watch.Added, watch.Modified:
			if d, ok := ev.Object.(*appsv1.Deployment); ok {
				h.record(d)
			}
		case watch.Deleted:
			if d, ok := ev.Object.(*appsv1.Deployment); ok {
				h.set(d.ResourceVersion, version{state: "deleted"})
			}
		case watch.Error:
			h.mu.Lock()
			if h.err == nil {
				h.err = apierrors.FromObject(ev.Object)
			}
			h.mu.Unlock()
		}
	}
}

func (h *history) record(d *appsv1.Deployment) {
	ready := cluster.FullyReady(d)
	rolling := !ready && d.Spec.Replicas != nil && *d.Spec.Replicas >= 1 && d.Status.ReadyReplicas >= *d.Spec.Replicas
	h.set(d.ResourceVersion, version{ready: ready, rolling: rolling, state: cluster.DeploymentState(d)})
}

func (h *history) set(rv string, v version) {
	v.seen = time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, seen := h.byRV[rv]; seen {
		return
	}
	h.order = append(h.order, rv)
	h.byRV[rv] = v
}

// next returns the version that replaced resourceVersion rv, if the watch saw one.
func (h *history) next(rv string) (string, version, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i := slices.Index(h.order, rv)
	if i < 0 || i+1 == len(h.order) {
		return "", version{}, false
	}
	return h.order[i+1], h.byRV[h.order[i+1]], true
}

// catchUp waits until the watch has delivered the Deployment's current
// resourceVersion, so that every version a decision read is in the history.
func (h *history) catchUp(t *testing.T, c client.Client) {
	t.Helper()
	var rv string
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, tutorial.WaitTimeout, true, func(ctx context.Context) (bool, error) {
		var d appsv1.Deployment
		if err := c.Get(ctx, client.ObjectKey{Namespace: tutorial.Namespace, Name: tutorial.Green}, &d); err != nil {
			return false, nil
		}
		rv = d.ResourceVersion
		_, seen := h.at(rv)
		return seen, nil
	})
	if err != nil {
		_, werr := h.size()
		t.Fatalf("the watch on deployment %s never delivered its current resourceVersion %s: %v (watch error: %v)", tutorial.Green, rv, err, werr)
	}
}

// at returns the Deployment as resourceVersion rv held it.
func (h *history) at(rv string) (version, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.byRV[rv]
	return v, ok
}

// latest is the last version the watch delivered.
func (h *history) latest() version {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byRV[h.order[len(h.order)-1]]
}

// flaps counts the changes between Ready and not Ready.
func (h *history) flaps() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for i := 1; i < len(h.order); i++ {
		if h.byRV[h.order[i]].ready != h.byRV[h.order[i-1]].ready {
			n++
		}
	}
	return n
}

// size is the number of distinct resourceVersions seen, and the watch error if any.
func (h *history) size() (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.order), h.err
}

// outcome is how one switch request ended, as the client saw it.
type outcome string

const (
	moved    outcome = "moved"    // the route now sends traffic where the client asked
	denied   outcome = "denied"   // the guard denied the request
	stale    outcome = "stale"    // a JSON patch's test op failed: the route had moved already
	conflict outcome = "conflict" // a merge patch's resourceVersion precondition failed
	failed   outcome = "failed"   // anything else
)

// attempt is one switch request by one client.
type attempt struct {
	user, via  string
	to         string
	start, end time.Time
	outcome    outcome
	detail     string // the error, for failed
}

// storm is 50 clients switching one route while the flapper flips green.
type storm struct {
	e     *env
	route string
	end   time.Time

	mu   sync.Mutex
	done []attempt
	// greenVerdicts counts switches to green the guard answered (moved or
	// denied); the flapper paces itself by it.
	greenVerdicts atomic.Int64
	failed        atomic.Int64
	phaseTimeouts atomic.Int64
	took          time.Duration // from the first request to the last answer
}

// switcher sends one switch request from one backend to another.
type switcher interface {
	// switchTo asks to move the route to backend to; from is the backend
	// the client believes the route has ("" if it reads it itself). It
	// returns the backend the route had, when the client learnt it.
	switchTo(ctx context.Context, from, to string) (had string, err error)
}

// run starts the clients and the flapper, and returns once all have stopped.
func (s *storm) run(t *testing.T, hist *history) {
	t.Helper()
	switchers := make([]switcher, stormClients)
	for i := range switchers {
		switchers[i] = s.newSwitcher(t, i)
	}
	began := time.Now()
	s.end = began.Add(stormDuration)
	var wg sync.WaitGroup
	for i, sw := range switchers {
		wg.Go(func() { s.client(t.Context(), i, sw) })
	}
	flapErr := make(chan error, 1)
	go func() { flapErr <- s.flap(t.Context(), hist) }()
	wg.Wait()
	s.took = time.Since(began)
	if err := <-flapErr; err != nil {
		t.Errorf("flapping green: %v", err)
	}
}

func user(i int) string { return fmt.Sprintf("storm-client-%02d", i) }

// newSwitcher builds client i: every kubectlEvery-th runs kubectl, the
// others client-go with a JSON patch (even) or a merge patch (odd), each
// impersonating a user of its own so that the guard's log names it.
func (s *storm) newSwitcher(t *testing.T, i int) switcher {
	t.Helper()
	if i%kubectlEvery == 0 {
		k := s.e.kubectl()
		k.Transcript = nil
		k.Home = filepath.Join(t.TempDir(), "kubectl")
		return &kubectlSwitcher{k: k, user: user(i), route: s.route}
	}
	cfg := rest.CopyConfig(s.e.cluster.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user(i), Groups: []string{"system:masters"}}
	cfg.QPS, cfg.Burst = stormQPS, stormQPS
	c, err := client.New(cfg, client.Options{Scheme: tutorial.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKey{Namespace: tutorial.Namespace, Name: s.route}
	if i%2 == 0 {
		return &jsonPatchSwitcher{c: c, key: key}
	}
	return &mergePatchSwitcher{c: c, key: key}
}

// via names how a switcher writes the route.
func via(sw switcher) string {
	switch sw.(type) {
	case *kubectlSwitcher:
		return "kubectl json patch"
	case *jsonPatchSwitcher:
		return "client-go json patch"
	default:
		return "client-go merge patch"
	}
}

// client switches back and forth until the storm ends: to green after a
// move to blue and the other way round; after a denial it asks again.
func (s *storm) client(ctx context.Context, i int, sw switcher) {
	from, to := tutorial.Blue, tutorial.Green
	if i%4 == 2 {
		// Half the JSON patch clients start from green.
		from, to = to, from
	}
	for time.Now().Before(s.end) && ctx.Err() == nil {
		a := attempt{user: user(i), via: via(sw), to: to, start: time.Now()}
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		had, err := sw.switchTo(rctx, from, to)
		cancel()
		a.end = time.Now()
		a.outcome, a.detail = classify(err)
		if had != "" {
			// A merge patch client switches away from what it read.
			a.to = otherBackend(had)
		}
		s.add(a)
		if a.outcome == moved || a.outcome == stale {
			from, to = to, from
		}
	}
}

func otherBackend(b string) string {
	if b == tutorial.Green {
		return tutorial.Blue
	}
	return tutorial.Green
}

func (s *storm) add(a attempt) {
	if a.to == tutorial.Green && (a.outcome == moved || a.outcome == denied) {
		s.greenVerdicts.Add(1)
	}
	if a.outcome == failed {
		s.failed.Add(1)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = append(s.done, a)
}

func (s *storm) attempts() []attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.done)
}

// failures lists up to n failed requests.
func (s *storm) failures(n int) []string {
	var out []string
	for _, a := range s.attempts() {
		if a.outcome == failed && len(out) < n {
			out = append(out, fmt.Sprintf("%s (%s) to %s: %s", a.user, a.via, a.to, a.detail))
		}
	}
	return out
}

// classify reads a client-go or kubectl error.
func classify(err error) (outcome, string) {
	if err == nil {
		return moved, ""
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "denied the request"):
		return denied, ""
	case errors.Is(err, errStale):
		return stale, ""
	case apierrors.IsConflict(err), strings.Contains(msg, "the object has been modified"):
		return conflict, ""
	}
	return failed, msg
}

const backendPath = "/spec/rules/0/backendRefs/0/name"

// errStale is a JSON patch whose test op failed. The API server answers
// 422 "the server rejected our request due to an error in our request"
// without saying which op failed; the patch is otherwise always valid (the
// same patch moves the route when the test holds).
var errStale = errors.New("the route did not have the backend the JSON patch tested for")

// jsonPatchSwitcher sends the tutorial's JSON patch, guarded by a test op
// on the backend it believes the route has: a success is a real move.
type jsonPatchSwitcher struct {
	c   client.Client
	key client.ObjectKey
}

func jsonPatch(from, to string) []byte {
	return fmt.Appendf(nil, `[{"op":"test","path":%q,"value":%q},{"op":"replace","path":%q,"value":%q}]`, backendPath, from, backendPath, to)
}

func (j *jsonPatchSwitcher) switchTo(ctx context.Context, from, to string) (string, error) {
	r := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: j.key.Namespace, Name: j.key.Name}}
	err := j.c.Patch(ctx, r, client.RawPatch(types.JSONPatchType, jsonPatch(from, to)))
	if apierrors.IsInvalid(err) {
		return "", fmt.Errorf("%w: %w", errStale, err)
	}
	return "", err
}

// mergePatchSwitcher reads the route and sends a merge patch of its rules
// with the resourceVersion read as a precondition: a success is a move
// away from the backend read.
type mergePatchSwitcher struct {
	c   client.Client
	key client.ObjectKey
}

func (m *mergePatchSwitcher) switchTo(ctx context.Context, _, _ string) (string, error) {
	var r gwv1.HTTPRoute
	if err := m.c.Get(ctx, m.key, &r); err != nil {
		return "", err
	}
	if len(r.Spec.Rules) == 0 || len(r.Spec.Rules[0].BackendRefs) == 0 {
		return "", fmt.Errorf("route %s has no backendRef", m.key)
	}
	had := string(r.Spec.Rules[0].BackendRefs[0].Name)
	rules := r.Spec.Rules
	rules[0].BackendRefs[0].Name = gwv1.ObjectName(otherBackend(had))
	body, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": r.ResourceVersion},
		"spec":     map[string]any{"rules": rules},
	})
	if err != nil {
		return had, err
	}
	return had, m.c.Patch(ctx, &r, client.RawPatch(types.MergePatchType, body))
}

// kubectlSwitcher runs the tutorial's kubectl patch (with the test op) as
// its own user.
type kubectlSwitcher struct {
	k     *tutorial.Kubectl
	user  string
	route string
}

func (k *kubectlSwitcher) switchTo(ctx context.Context, from, to string) (string, error) {
	r := k.k.Run(ctx, "patch", "httproute", k.route, "-n", tutorial.Namespace, "--type=json", "-p", string(jsonPatch(from, to)),
		"--as="+k.user, "--as-group=system:masters")
	switch {
	case r.OK():
		return "", nil
	case strings.Contains(r.Output, "The request is invalid: the server rejected our request due to an error in our request"):
		return "", fmt.Errorf("%w: %s", errStale, r)
	}
	return "", fmt.Errorf("%s", r)
}

// flap alternates green between not Ready and fully Ready until the storm
// ends, two ways in turn: scaling 2 -> 0 -> 2, and a rollout whose new
// pods stay Pending (old pods still ready, so ready == spec.replicas while
// status.replicas is higher) rolled back. Each state is held until the
// guard has answered verdictsPerPhase switches to green in it.
func (s *storm) flap(ctx context.Context, hist *history) error {
	ways := []struct{ notReady, ready string }{
		{`{"spec":{"replicas":0}}`, fmt.Sprintf(`{"spec":{"replicas":%d}}`, tutorial.Replicas)},
		{pendingPatch(), `{"spec":{"template":{"spec":{"nodeSelector":null}}}}`},
	}
	for i := 0; time.Now().Before(s.end); i++ {
		w := ways[i%len(ways)]
		if err := s.patchGreen(ctx, w.notReady); err != nil {
			return err
		}
		s.hold(ctx)
		if err := s.patchGreen(ctx, w.ready); err != nil {
			return err
		}
		err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, tutorial.WaitTimeout, true, func(context.Context) (bool, error) {
			return hist.latest().ready, nil
		})
		if err != nil {
			return fmt.Errorf("deployment %s not fully Ready again after flap %d: %w (%s)", tutorial.Green, i, err, hist.latest().state)
		}
		s.hold(ctx)
	}
	return nil
}

func pendingPatch() string {
	sel, _ := json.Marshal(tutorial.UnschedulableNodeSelector)
	return fmt.Sprintf(`{"spec":{"template":{"spec":{"nodeSelector":%s}}}}`, sel)
}

func (s *storm) patchGreen(ctx context.Context, patch string) error {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: tutorial.Green}}
	if err := s.e.kube.Patch(ctx, d, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		return fmt.Errorf("patch deployment %s with %s: %w", tutorial.Green, patch, err)
	}
	return nil
}

// hold waits until the guard has answered verdictsPerPhase more switches
// to green, the storm ends, or phaseTimeout passes (counted).
func (s *storm) hold(ctx context.Context) {
	base := s.greenVerdicts.Load()
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, phaseTimeout, true, func(context.Context) (bool, error) {
		return s.greenVerdicts.Load()-base >= verdictsPerPhase || !time.Now().Before(s.end), nil
	})
	if err != nil {
		s.phaseTimeouts.Add(1)
	}
}

// decision is one line the guard logged for a checked update of the route.
type decision struct {
	Msg      string          `json:"msg"`
	TS       json.RawMessage `json:"ts"`
	Name     string          `json:"name"`
	NS       string          `json:"namespace"`
	User     string          `json:"user"`
	Targets  []string        `json:"targets"`
	Findings []string        `json:"findings"`
	Observed []string        `json:"observed"`
	Took     string          `json:"took"`

	at  time.Time
	raw string
}

// couldNotCheck is the message of a decision that failed (an internal error).
const couldNotCheck = "could not check targets"

// result is the decision's result as cutover_guard_decisions_total labels it.
func (d decision) result() string {
	switch d.Msg {
	case couldNotCheck:
		return "error"
	case "cutover with_warnings":
		return "allowed_with_warnings"
	}
	return strings.TrimPrefix(d.Msg, "cutover ")
}

// allowed reports whether the decision let the update through: anything
// but a denial or an error does.
func (d decision) allowed() bool { r := d.result(); return r != "denied" && r != "error" }

// readDecisions parses the guard's log for the decisions on route
// namespace/name: lines "cutover <result>" or couldNotCheck that carry targets.
func readDecisions(t *testing.T, log, namespace, name string) []decision {
	t.Helper()
	var out []decision
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `"cutover `) && !strings.Contains(line, couldNotCheck) || !strings.Contains(line, name) {
			continue
		}
		var d decision
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatalf("guard log line is not JSON: %v\n%s", err, line)
		}
		if d.Name != name || d.NS != namespace || !strings.HasPrefix(d.Msg, "cutover ") && d.Msg != couldNotCheck || d.Targets == nil {
			continue
		}
		at, err := parseTS(d.TS)
		if err != nil {
			t.Fatalf("guard log line: %v\n%s", err, line)
		}
		d.at, d.raw = at, line
		out = append(out, d)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the guard log: %v", err)
	}
	return out
}

// parseTS reads zap's "ts": seconds since the epoch, or an RFC 3339 time.
func parseTS(raw json.RawMessage) (time.Time, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return time.Parse(time.RFC3339Nano, s)
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("ts %s is neither a time nor a number", raw)
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)), nil
}

// targets reports whether the decision had Service namespace/name among its targets.
func (d decision) targets(namespace, name string) bool {
	want := "service " + namespace + "/" + name
	for _, t := range d.Targets {
		if t == want || strings.HasPrefix(t, want+":") {
			return true
		}
	}
	return false
}

// observedRV returns the resourceVersion at which the decision read the
// Deployment namespace/name.
func (d decision) observedRV(namespace, name string) (string, bool) {
	prefix := "deployment " + namespace + "/" + name + "@"
	for _, o := range d.Observed {
		if rv, ok := strings.CutPrefix(o, prefix); ok {
			return rv, true
		}
	}
	return "", false
}

// verdict is what verify found.
type verdict struct {
	allowedGreen, deniedGreen, allowedBlue, deniedBlue int
	// deniedWhileReady counts denials of green that read a fully Ready
	// Deployment (denied for its endpoints or otherwise), by finding.
	deniedWhileReady map[string]int
	observedRVs      map[string]bool
	took             []time.Duration // of decisions to green
	freshChecked     int             // decisions judgeFresh could place in time
	readRolling      int             // denials of green that read a rolling version
	problems         []problem
	kinds            map[problemKind]int // problems found, kept or not
	outcomes         map[string]int
}

// verify judges every decision to green against the watch's history and
// matches every client-side verdict on a switch to green with a decision.
func verify(hist *history, decisions []decision, attempts []attempt) *verdict {
	v := &verdict{deniedWhileReady: map[string]int{}, observedRVs: map[string]bool{}, outcomes: map[string]int{}}
	if n, err := hist.size(); err != nil {
		v.problem(watchFailed, "the watch on deployment %s reported an error after %d versions, so its history may miss some: %v", tutorial.Green, n, err)
	}
	for _, d := range decisions {
		v.judge(hist, d, attempts)
	}
	v.match(decisions, attempts)
	return v
}

// problem is one thing verify found wrong.
type problem struct {
	kind    problemKind
	message string
}

// problemKind says what kind of thing verify found wrong.
type problemKind string

const (
	watchFailed     problemKind = "the watch failed"
	allowedNotReady problemKind = "allowed to a Deployment that was not Ready"
	allowedUnread   problemKind = "allowed without reading the Deployment"
	unknownVersion  problemKind = "read a resourceVersion the watch never delivered"
	staleRead       problemKind = "read a version the API server had already replaced"
	unloggedVerdict problemKind = "a client saw a verdict the guard did not log"
	blueDenied      problemKind = "a switch to blue, which stays serving, was denied"
)

// maxProblems bounds the problems kept per kind, so a broken guard does not
// flood the test output.
const maxProblems = 5

func (v *verdict) problem(kind problemKind, format string, args ...any) {
	if v.kinds == nil {
		v.kinds = map[problemKind]int{}
	}
	if v.kinds[kind]++; v.kinds[kind] <= maxProblems {
		v.problems = append(v.problems, problem{kind, fmt.Sprintf(format, args...)})
	}
}

// judge checks one decision: a switch allowed to green must have read a
// fully Ready Deployment, at a resourceVersion the watch knows, and one the
// API server still held when the request began.
func (v *verdict) judge(hist *history, d decision, attempts []attempt) {
	if !d.targets(tutorial.Namespace, tutorial.Green) {
		if d.allowed() {
			v.allowedBlue++
		} else {
			v.deniedBlue++
			v.problem(blueDenied, "the guard denied a switch to %s, which serves throughout the storm:\n%s", tutorial.Blue, d.raw)
		}
		return
	}
	if d.allowed() {
		v.allowedGreen++
	} else {
		v.deniedGreen++
	}
	if took, err := time.ParseDuration(d.Took); err == nil {
		v.took = append(v.took, took)
	}
	rv, ok := d.observedRV(tutorial.Namespace, tutorial.Green)
	if !ok {
		if d.allowed() {
			v.problem(allowedUnread, "the guard allowed a switch to %s without reading deployment %s:\n%s", tutorial.Green, tutorial.Green, d.raw)
		}
		return
	}
	v.observedRVs[rv] = true
	was, known := hist.at(rv)
	switch {
	case !known:
		v.problem(unknownVersion, "decision read deployment %s at resourceVersion %s, which the watch never delivered (missed event, or another object?):\n%s", tutorial.Green, rv, d.raw)
	case d.allowed() && !was.ready:
		v.problem(allowedNotReady, "the guard allowed a switch to %s that read deployment %s at resourceVersion %s, when it was not fully Ready (%s):\n%s",
			tutorial.Green, tutorial.Green, rv, was.state, d.raw)
	case !d.allowed() && was.ready:
		v.deniedWhileReady[strings.Join(d.Findings, ",")]++
	case was.rolling:
		v.readRolling++
	}
	if known {
		v.judgeFresh(hist, d, rv, attempts)
	}
}

// judgeFresh requires a decision to have read the Deployment as the API
// server held it then, not a version already replaced: one the watch had
// delivered a successor of before the earliest request of that user that
// the decision can belong to began. Decisions read live state; a stale
// read would let a cache decide.
func (v *verdict) judgeFresh(hist *history, d decision, rv string, attempts []attempt) {
	began, ok := earliestStart(attempts, d)
	if !ok {
		return
	}
	v.freshChecked++
	nextRV, next, replaced := hist.next(rv)
	if replaced && next.seen.Before(began) {
		v.problem(staleRead, "a decision read deployment %s at resourceVersion %s, but resourceVersion %s (%s) had replaced it before the request began:\n%s",
			tutorial.Green, rv, nextRV, next.state, d.raw)
	}
}

// earliestStart is when the earliest request of d's user that overlaps
// the second of d's timestamp began: d was decided after it.
func earliestStart(attempts []attempt, d decision) (time.Time, bool) {
	var began time.Time
	for _, a := range attempts {
		if a.user == d.User && a.start.Before(d.at.Add(time.Second)) && !a.end.Before(d.at) && (began.IsZero() || a.start.Before(began)) {
			began = a.start
		}
	}
	return began, !began.IsZero()
}

// match pairs, per client, each switch to green the client saw allowed
// (or denied) with a later unmatched decision of the same kind logged for
// that client's user within the request's time (log timestamps may be
// whole seconds).
func (v *verdict) match(decisions []decision, attempts []attempt) {
	byUser := map[string][]decision{}
	for _, d := range decisions {
		if d.targets(tutorial.Namespace, tutorial.Green) {
			byUser[d.User] = append(byUser[d.User], d)
		}
	}
	next := map[string]int{}
	for _, a := range attempts {
		v.outcomes[a.via+" to "+a.to+": "+string(a.outcome)]++
		if a.to != tutorial.Green || (a.outcome != moved && a.outcome != denied) {
			continue
		}
		list, i := byUser[a.user], next[a.user]
		for ; i < len(list); i++ {
			d := list[i]
			if d.allowed() == (a.outcome == moved) && !d.at.Before(a.start.Truncate(time.Second)) && !d.at.After(a.end) {
				break
			}
		}
		if i == len(list) {
			v.problem(unloggedVerdict, "%s (%s) saw its switch to %s %s between %s and %s, but the guard logged no such decision for that user then",
				a.user, a.via, tutorial.Green, a.outcome, a.start.Format(time.RFC3339Nano), a.end.Format(time.RFC3339Nano))
			continue
		}
		next[a.user] = i + 1
	}
}

// summary renders the numbers of the storm.
func (v *verdict) summary(hist *history, s *storm, counted, logged int) string {
	var b strings.Builder
	versions, _ := hist.size()
	fmt.Fprintf(&b, "storm: %d clients for %s; deployment %s: %d flaps, %d distinct resourceVersions watched, %d read by decisions to green; %d flapper phases hit the %s hold timeout\n",
		stormClients, stormDuration, tutorial.Green, hist.flaps(), versions, len(v.observedRVs), s.phaseTimeouts.Load(), phaseTimeout)
	fmt.Fprintf(&b, "guard decisions on the route: %d logged, %d counted; to %s: %d allowed, %d denied (of which %d read a fully Ready Deployment); to %s: %d allowed, %d denied\n",
		logged, counted, tutorial.Green, v.allowedGreen, v.deniedGreen, sumCounts(v.deniedWhileReady), tutorial.Blue, v.allowedBlue, v.deniedBlue)
	fmt.Fprintf(&b, "  %d denials of %s read a version not Ready although every wanted replica was ready (a rollout in progress)\n", v.readRolling, tutorial.Green)
	fmt.Fprintf(&b, "  %d decisions to %s placed after the start of a request of their user, so checked for a stale read\n", v.freshChecked, tutorial.Green)
	if n := len(v.took); n > 0 {
		slices.Sort(v.took)
		fmt.Fprintf(&b, "  decision time to %s as the guard logged it: p50 %s, p99 %s, max %s\n",
			tutorial.Green, v.took[n/2], v.took[n*99/100], v.took[n-1])
	}
	for _, k := range sortedKeys(v.deniedWhileReady) {
		fmt.Fprintf(&b, "  denied while the Deployment was Ready, findings %q: %d\n", k, v.deniedWhileReady[k])
	}
	fmt.Fprintf(&b, "client-side outcomes (%d requests in %s):\n", len(s.attempts()), s.took.Round(time.Millisecond))
	for _, k := range sortedKeys(v.outcomes) {
		fmt.Fprintf(&b, "  %s: %d\n", k, v.outcomes[k])
	}
	return b.String()
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// verify catches each kind of wrong decision it is meant to, and finds
// nothing wrong in a storm where the guard behaved.
func TestConcurrentVerifyCatchesWrongDecisions(t *testing.T) {
	at := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	const user = "storm-client-01"
	tests := map[string]struct {
		decisions []decision
		attempts  []attempt
		want      []problemKind
	}{
		"a guard that allowed only Ready versions and logged every verdict passes": {
			decisions: []decision{toGreen("cutover denied", user, "11", at), toGreen("cutover allowed", user, "10", at.Add(time.Second)), toBlue("cutover allowed", user, at)},
			attempts:  []attempt{clientSaw(user, denied, at), clientSaw(user, moved, at.Add(time.Second))},
		},
		"an allowed switch that read a version that was not Ready is caught": {
			decisions: []decision{toGreen("cutover allowed", user, "11", at)},
			want:      []problemKind{allowedNotReady},
		},
		"an allowed switch with warnings counts as allowed": {
			decisions: []decision{toGreen("cutover with_warnings", user, "11", at)},
			want:      []problemKind{allowedNotReady},
		},
		"an allowed switch that read no Deployment is caught": {
			decisions: []decision{toGreen("cutover allowed", user, "", at)},
			want:      []problemKind{allowedUnread},
		},
		"a version the watch never delivered is caught, even on a denial": {
			decisions: []decision{toGreen("cutover denied", user, "12", at)},
			want:      []problemKind{unknownVersion},
		},
		"a client-side move with no decision logged for its user is caught": {
			decisions: []decision{toGreen("cutover allowed", "storm-client-02", "10", at)},
			attempts:  []attempt{clientSaw(user, moved, at)},
			want:      []problemKind{unloggedVerdict},
		},
		"a client-side move matched by a denial only is caught": {
			decisions: []decision{toGreen("cutover denied", user, "11", at)},
			attempts:  []attempt{clientSaw(user, moved, at)},
			want:      []problemKind{unloggedVerdict},
		},
		"a decision logged before the request began does not vouch for it": {
			decisions: []decision{toGreen("cutover allowed", user, "10", at)},
			attempts:  []attempt{clientSaw(user, moved, at.Add(2*time.Second))},
			want:      []problemKind{unloggedVerdict},
		},
		"one allowed decision cannot vouch for two client-side moves": {
			decisions: []decision{toGreen("cutover allowed", user, "10", at)},
			attempts:  []attempt{clientSaw(user, moved, at), clientSaw(user, moved, at)},
			want:      []problemKind{unloggedVerdict},
		},
		"a switch that read a version replaced before the request began is caught": {
			decisions: []decision{toGreen("cutover allowed", user, "10", at.Add(6*time.Second))},
			attempts:  []attempt{clientSaw(user, moved, at.Add(6*time.Second))},
			want:      []problemKind{staleRead},
		},
		"a switch that read a version replaced only after the request began passes": {
			decisions: []decision{toGreen("cutover allowed", user, "10", at.Add(5*time.Second))},
			attempts:  []attempt{clientSaw(user, moved, at.Add(5*time.Second))},
		},
		"a decision that failed counts as no switch": {
			decisions: []decision{toGreen(couldNotCheck, user, "11", at)},
			attempts:  []attempt{clientSaw(user, moved, at)},
			want:      []problemKind{unloggedVerdict},
		},
		"a denied switch to blue is caught": {
			decisions: []decision{toBlue("cutover denied", user, at)},
			want:      []problemKind{blueDenied},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			// 10 is Ready; 11, scaled to zero, replaces it 5.5 s after at.
			h := &history{byRV: map[string]version{
				"10": {ready: true, seen: at.Add(-time.Second)},
				"11": {state: "scaled to zero", seen: at.Add(5500 * time.Millisecond)},
			}, order: []string{"10", "11"}}
			var got []problemKind
			for _, p := range verify(h, tc.decisions, tc.attempts).problems {
				got = append(got, p.kind)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

// toGreen is a logged decision on a switch to green that read the
// Deployment at rv ("" for none).
func toGreen(msg, user, rv string, at time.Time) decision {
	d := decision{Msg: msg, User: user, Targets: []string{"service production/app-green:80"}, at: at,
		Observed: []string{"service production/app-green@5"}}
	if rv != "" {
		d.Observed = append(d.Observed, "deployment production/app-green@"+rv)
	}
	return d
}

func toBlue(msg, user string, at time.Time) decision {
	return decision{Msg: msg, User: user, Targets: []string{"service production/app-blue:80"}, at: at,
		Observed: []string{"service production/app-blue@4", "deployment production/app-blue@6"}}
}

// clientSaw is a client's switch to green that ended as o, within a
// second from start.
func clientSaw(user string, o outcome, start time.Time) attempt {
	return attempt{user: user, via: "client-go json patch", to: tutorial.Green, start: start, end: start.Add(time.Second - time.Millisecond), outcome: o}
}
