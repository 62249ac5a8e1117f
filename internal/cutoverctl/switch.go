package cutoverctl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pmezard/go-difflib/difflib"
	"golang.org/x/term"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

// DefaultWaitTimeout bounds the wait, after a switch, for the route's
// conditions to be true again.
const DefaultWaitTimeout = 60 * time.Second

// switchOptions are the flags of switch and rollback.
type switchOptions struct {
	route       string
	action      string // ActionSwitch or ActionRollback
	to          string
	rule        int
	reason      string
	yes         bool
	waitTimeout time.Duration
	verify      verifyOptions
	rollback    bool // --rollback-on-failure
}

// SwitchResult is the outcome of switch or rollback.
type SwitchResult struct {
	Route     string   `json:"route"`
	Namespace string   `json:"namespace"`
	Action    string   `json:"action"`
	From      []string `json:"from"`
	To        []string `json:"to"`
	// Warnings are the plugin's own, shown before asking (e.g. a target
	// scaled to zero).
	Warnings []string `json:"warnings,omitempty"`
	Verdict  *Verdict `json:"verdict,omitempty"`
	Diff     string   `json:"diff,omitempty"`
	Applied  bool     `json:"applied"`
	// Unchanged: the route already sends its traffic where asked.
	Unchanged bool `json:"unchanged,omitempty"`
	// Conditions says what became of the route's conditions after the switch.
	Conditions string        `json:"conditions,omitempty"`
	Verify     *VerifyResult `json:"verify,omitempty"`
	// Rollback is the switch back after a failed verification.
	Rollback *SwitchResult `json:"rollback,omitempty"`
}

// switcher runs one switch or rollback: out receives the human progress
// (nil with -o json), ask the confirmation.
type switcher struct {
	e   *env
	o   switchOptions
	out io.Writer
	ask func(question string) (bool, error)
}

func (s *switcher) say(format string, args ...any) {
	if s.out != nil {
		_, _ = fmt.Fprintf(s.out, format+"\n", args...)
	}
}

// run carries out the switch and returns its result and exit code.
func (s *switcher) run(ctx context.Context) (*SwitchResult, int, error) {
	e, o := s.e, s.o
	route, err := e.getRoute(ctx, o.route)
	if err != nil {
		return nil, ExitError, err
	}
	var p Plan
	if o.action == ActionSwitch {
		p, err = planSwitch(route, o.to, o.rule)
	} else {
		p, err = planRollback(route)
	}
	if err != nil {
		return nil, ExitError, err
	}
	res := &SwitchResult{Route: route.Name, Namespace: route.Namespace, Action: o.action, From: live(rulesOf(route)), To: live(rulesOf(route))}
	if !p.changed() {
		res.Unchanged = true
		s.say("httproute %s/%s already sends its traffic to %s; nothing to switch", route.Namespace, route.Name, strings.Join(res.To, ", "))
		return res, ExitOK, nil
	}
	res.From, res.To = live(p.Before), live(p.After)
	s.say("httproute %s/%s: %s %s -> %s", route.Namespace, route.Name, o.action, strings.Join(res.From, ", "), strings.Join(res.To, ", "))

	if res.Warnings, err = e.targetWarnings(ctx, route, p); err != nil {
		return res, ExitError, err
	}
	for _, w := range res.Warnings {
		s.say("warning: %s", w)
	}
	if g := findGuard(ctx, e.c); g.State == GuardMissing {
		return res, ExitError, errNoGuard
	}

	rec := newSwitch(p, o.action, e.whoAmI(ctx), o.reason, time.Now())
	patch, err := buildPatch(route, p, rec)
	if err != nil {
		return res, ExitError, err
	}
	after, v, err := e.decide(ctx, route, patch)
	if err != nil {
		return res, ExitError, err
	}
	res.Verdict = &v
	if s.out != nil {
		renderVerdict(s.out, &v)
	}
	switch {
	case !v.Allowed && v.Reviewed:
		return res, ExitDenied, nil
	case !v.Reviewed:
		return res, ExitError, errors.New(v.Undecided + "; not switching")
	}
	if res.Diff, err = specDiff(route, after); err != nil {
		return res, ExitError, err
	}
	if s.out != nil {
		_, _ = io.WriteString(s.out, res.Diff)
	}
	if !o.yes {
		ok, err := s.ask(fmt.Sprintf("%s httproute %s/%s to %s?", titleCase(o.action), route.Namespace, route.Name, strings.Join(res.To, ", ")))
		if err != nil {
			return res, ExitError, err
		}
		if !ok {
			s.say("not switched")
			return res, ExitError, errors.New("not confirmed; nothing was changed")
		}
	}
	patched, v2, err := e.patchRoute(ctx, route, patch, false)
	if err != nil {
		return res, ExitError, err
	}
	if !v2.Allowed {
		// The state changed between the dry run and the switch.
		res.Verdict = &v2
		if s.out != nil {
			renderVerdict(s.out, &v2)
		}
		return res, ExitDenied, nil
	}
	res.Applied = true
	s.say("switched: httproute %s/%s now sends its traffic to %s", route.Namespace, route.Name, strings.Join(res.To, ", "))
	for _, w := range v2.Warnings {
		if !slices.Contains(v.Warnings, w) {
			s.say("warning: %s", w)
		}
	}
	res.Conditions, err = e.waitConditions(ctx, route, patched.Generation, o.waitTimeout)
	s.say("route status: %s", res.Conditions)
	if err != nil {
		return res, ExitError, err
	}
	if o.verify.url == "" {
		return res, ExitOK, nil
	}
	s.say("verify: %d request(s) to %s, %s apart, each must answer 200", o.verify.count, o.verify.url, o.verify.interval)
	res.Verify = verify(ctx, o.verify, func(q VerifyRequest) { s.say("  %d/%d: %s", q.N, o.verify.count, q) })
	f := res.Verify.failed()
	if f == nil {
		s.say("verify: OK")
		return res, ExitOK, nil
	}
	s.say("verify: FAILED: request %d of %d to %s: %s", f.N, o.verify.count, o.verify.url, f)
	if !o.rollback {
		s.say("traffic stays on %s; roll back with: kubectl cutover rollback %s -n %s", strings.Join(res.To, ", "), route.Name, route.Namespace)
		return res, ExitDenied, nil
	}
	back := &switcher{e: e, out: s.out, o: switchOptions{
		route: o.route, action: ActionRollbackOnFailure, yes: true, waitTimeout: o.waitTimeout,
		reason: fmt.Sprintf("verify failed: request %d of %d to %s: %s", f.N, o.verify.count, o.verify.url, f),
	}}
	s.say("rolling back at once (--rollback-on-failure), through the guard like any switch")
	res.Rollback, _, err = back.runRollbackNow(ctx)
	if err != nil {
		return res, ExitError, fmt.Errorf("verify failed and the rollback failed: %w", err)
	}
	return res, ExitDenied, nil
}

// runRollbackNow switches back to the recorded previous backends without a
// dry run or a question: the guard still reviews the write.
func (s *switcher) runRollbackNow(ctx context.Context) (*SwitchResult, int, error) {
	e := s.e
	route, err := e.getRoute(ctx, s.o.route)
	if err != nil {
		return nil, ExitError, err
	}
	p, err := planRollback(route)
	if err != nil {
		return nil, ExitError, err
	}
	res := &SwitchResult{Route: route.Name, Namespace: route.Namespace, Action: s.o.action, From: live(p.Before), To: live(p.After)}
	if !p.changed() {
		res.Unchanged = true
		return res, ExitOK, nil
	}
	patch, err := buildPatch(route, p, newSwitch(p, s.o.action, e.whoAmI(ctx), s.o.reason, time.Now()))
	if err != nil {
		return res, ExitError, err
	}
	patched, v, err := e.patchRoute(ctx, route, patch, false)
	if err != nil {
		return res, ExitError, err
	}
	res.Verdict = &v
	if !v.Allowed {
		s.say("rollback to %s DENIED:", strings.Join(res.To, ", "))
		if s.out != nil {
			renderVerdict(s.out, &v)
		}
		return res, ExitDenied, nil
	}
	res.Applied = true
	s.say("rolled back: httproute %s/%s now sends its traffic to %s", route.Namespace, route.Name, strings.Join(res.To, ", "))
	res.Conditions, err = e.waitConditions(ctx, route, patched.Generation, s.o.waitTimeout)
	s.say("route status: %s", res.Conditions)
	return res, ExitOK, err
}

// targetWarnings warns about every Service that gets traffic after the
// plan and whose workloads are scaled to zero, with the command that scales
// it back; it fails for a target Service that does not exist.
func (e *env) targetWarnings(ctx context.Context, route *gwv1.HTTPRoute, p Plan) ([]string, error) {
	var liveReplicas int32
	for _, name := range serviceNames(p.Before) {
		var svc corev1.Service
		if err := e.c.Get(ctx, client.ObjectKey{Namespace: route.Namespace, Name: name}, &svc); err != nil {
			continue
		}
		if ws, err := e.workloads(ctx, &svc); err == nil && len(ws) > 0 && ws[0].Replicas > 0 {
			liveReplicas = ws[0].Replicas
			break
		}
	}
	var out []string
	for _, name := range liveServices(p.After) {
		var svc corev1.Service
		err := e.c.Get(ctx, client.ObjectKey{Namespace: route.Namespace, Name: name}, &svc)
		switch {
		case apierrors.IsNotFound(err):
			return nil, fmt.Errorf("service %s/%s not found: the route cannot send traffic to it; list the Services with: kubectl get services -n %s",
				route.Namespace, name, route.Namespace)
		case err != nil:
			return nil, fmt.Errorf("get service %s/%s: %w", route.Namespace, name, err)
		}
		ws, err := e.workloads(ctx, &svc)
		if err != nil {
			return nil, err
		}
		if down, cmd := scaledDown(route.Namespace, ws, liveReplicas); down {
			out = append(out, fmt.Sprintf("%s is scaled down (deployment %s has 0 replicas): the guard denies a switch to it until it serves; scale it up first: %s",
				name, ws[0].Name, cmd))
		}
	}
	return out, nil
}

// liveServices are the same-namespace Services that get traffic in rules.
func liveServices(rules []RuleBackends) []string {
	var out []string
	for _, r := range rules {
		for _, b := range r.Backends {
			if b.isService() && b.Namespace == "" && b.weight() > 0 {
				out = appendNew(out, b.Name)
			}
		}
	}
	return out
}

// waitConditions waits, up to timeout, until every parent of the route
// reports Accepted and ResolvedRefs true for generation gen. A route no
// controller has written status on (no Gateway controller, or not yet) has
// nothing to wait for: the plugin says so instead of waiting in vain.
func (e *env) waitConditions(ctx context.Context, before *gwv1.HTTPRoute, gen int64, timeout time.Duration) (string, error) {
	if len(before.Status.Parents) == 0 {
		return "no Gateway controller has written status on this route (status.parents is empty), so there are no conditions to wait for", nil
	}
	var last string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var r gwv1.HTTPRoute
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(before), &r); err != nil {
			// A read failing at the deadline (the rate limiter refuses
			// to start one) must not hide what the last read saw.
			if last == "" {
				last = err.Error()
			}
			return false, nil
		}
		ok, state := conditionsTrue(&r, gen)
		last = state
		return ok, nil
	})
	if err != nil {
		return last, fmt.Errorf("switched, but the route's conditions are not true for generation %d after %s: %s", gen, timeout, last)
	}
	return "conditions true for generation " + fmt.Sprint(gen) + ": " + last, nil
}

// conditionsTrue reports whether every parent has Accepted and ResolvedRefs
// true, observed for generation gen or later, and describes the state.
func conditionsTrue(r *gwv1.HTTPRoute, gen int64) (bool, string) {
	ok := len(r.Status.Parents) > 0
	var parts []string
	for _, p := range parentsOf(r) {
		var cs []string
		for _, want := range []string{string(gwv1.RouteConditionAccepted), string(gwv1.RouteConditionResolvedRefs)} {
			c := findCondition(p.Conditions, want)
			switch {
			case c == nil:
				ok = false
				cs = append(cs, want+" missing")
			case c.ObservedGeneration < gen:
				ok = false
				cs = append(cs, fmt.Sprintf("%s not yet observed (generation %d)", want, c.ObservedGeneration))
			case c.Status != string(metav1.ConditionTrue):
				ok = false
				cs = append(cs, fmt.Sprintf("%s=%s (%s: %s)", want, c.Status, c.Reason, c.Message))
			default:
				cs = append(cs, want+"=True")
			}
		}
		parts = append(parts, p.Gateway+" "+strings.Join(cs, ", "))
	}
	return ok, strings.Join(parts, "; ")
}

func findCondition(cs []Condition, t string) *Condition {
	for i := range cs {
		if cs[i].Type == t {
			return &cs[i]
		}
	}
	return nil
}

// specDiff is a unified diff of the route's rules, now and after the switch
// (as the API server's dry run returned them).
func specDiff(before, after *gwv1.HTTPRoute) (string, error) {
	a, err := yaml.Marshal(map[string]any{"rules": before.Spec.Rules})
	if err != nil {
		return "", err
	}
	b, err := yaml.Marshal(map[string]any{"rules": after.Spec.Rules})
	if err != nil {
		return "", err
	}
	name := "httproute " + before.Namespace + "/" + before.Name
	return difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: lines(string(a)), B: lines(string(b)),
		FromFile: name + " (now)", ToFile: name + " (after)", Context: 3,
	})
}

// asker asks a yes/no question on a terminal. It refuses to ask anything
// that is not a terminal: a script must say --yes.
type asker struct {
	in  io.Reader
	out io.Writer
}

// errNotTerminal: switch and rollback ask before they change anything.
var errNotTerminal = errors.New("refusing to ask for confirmation: standard input is not a terminal; pass --yes to switch without asking")

// terminal reports whether r is a terminal.
func terminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (a asker) ask(question string) (bool, error) {
	_, _ = fmt.Fprintf(a.out, "%s [y/N]: ", question)
	line, err := bufio.NewReader(a.in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}

func titleCase(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// lines splits s after each newline, without an empty last line.
func lines(s string) []string {
	out := strings.SplitAfter(s, "\n")
	if len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}
