package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	"github.com/cutover-guard/cutover-guard/bench/gobench"
	"github.com/cutover-guard/cutover-guard/bench/loadgen"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

const webhookConfigName = "cutover-guard-bench"

// builtinMatchConditions stand in for the install manifests' when the
// repository has none yet: call the guard only when some rule's backendRefs
// changed (a label-only update then never leaves the API server).
var builtinMatchConditions = []admissionregistrationv1.MatchCondition{{
	Name: "backend-refs-changed",
	Expression: "oldObject == null || !has(object.spec.rules) || !has(oldObject.spec.rules) || " +
		"object.spec.rules.map(r, has(r.backendRefs) ? r.backendRefs : []) != " +
		"oldObject.spec.rules.map(r, has(r.backendRefs) ? r.backendRefs : [])",
}}

// manifestMatchConditions returns the matchConditions of the HTTPRoute
// webhook in the install manifests (any ValidatingWebhookConfiguration
// under manifests/), and where they came from.
func manifestMatchConditions(repo string) ([]admissionregistrationv1.MatchCondition, string) {
	var found []admissionregistrationv1.MatchCondition
	source := ""
	_ = filepath.WalkDir(filepath.Join(repo, "manifests"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || source != "" || (!strings.HasSuffix(path, ".yaml") && !strings.HasSuffix(path, ".yml")) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		for _, doc := range strings.Split(string(b), "\n---") {
			var vwc admissionregistrationv1.ValidatingWebhookConfiguration
			if yaml.Unmarshal([]byte(doc), &vwc) != nil || vwc.Kind != "ValidatingWebhookConfiguration" {
				continue
			}
			for _, w := range vwc.Webhooks {
				if len(w.MatchConditions) > 0 && (strings.Contains(w.Name, "httproute") || len(vwc.Webhooks) == 1 || source == "") {
					found = w.MatchConditions
					rel, _ := filepath.Rel(repo, path)
					source = rel + " (webhook " + w.Name + ")"
				}
			}
		}
		return nil
	})
	if source == "" {
		return builtinMatchConditions, "built in to bench/apiserver.go: manifests/ has no ValidatingWebhookConfiguration with matchConditions yet"
	}
	return found, source
}

// setup is one way a route is guarded. All three exist at once, one route
// each, so their patches can be interleaved one by one and drift in the
// machine's load falls on all of them alike.
type setup struct {
	name  string
	route string
	// webhook is the name of the webhook selecting the route ("": none).
	webhook    string
	conditions []admissionregistrationv1.MatchCondition
	// allow sends the route's reviews to the always-allow server instead
	// of the guard.
	allow bool
}

// guarded reports whether the guard decides the route's updates.
func (s setup) guarded() bool { return s.webhook != "" && !s.allow }

const setupLabel = "bench.cutover-guard.dev/setup"

// clients is how many clients switch at once in the concurrent rows, each
// on its own route.
const clients = 8

// routes are the setup's routes: the one the one-client rows patch, then
// one per concurrent client. All carry the setup's label.
func (s setup) routes() []string {
	out := []string{s.route}
	for k := range clients {
		out = append(out, fmt.Sprintf("%s-c%d", s.route, k))
	}
	return out
}

func setups(conditions []admissionregistrationv1.MatchCondition) []setup {
	return []setup{
		{name: "no webhook", route: "route-none"},
		{name: "always-allow webhook", route: "route-allow", webhook: "allow.httproutes.cutover-guard.dev", allow: true},
		{name: "guard, no matchConditions", route: "route-plain", webhook: "plain.httproutes.cutover-guard.dev"},
		{name: "guard + matchConditions", route: "route-mc", webhook: "mc.httproutes.cutover-guard.dev", conditions: conditions},
	}
}

// webhookConfiguration registers the warm guard (or, for the always-allow
// setup, the allow server) for UPDATE of httproutes, one webhook per setup
// with a webhook, each selecting its routes by label.
func (l *lab) webhookConfiguration(ss []setup) *admissionregistrationv1.ValidatingWebhookConfiguration {
	fail := admissionregistrationv1.Fail
	side := admissionregistrationv1.SideEffectClassNoneOnDryRun
	equivalent := admissionregistrationv1.Equivalent
	scope := admissionregistrationv1.NamespacedScope
	timeout := int32(10)
	guardURL := fmt.Sprintf("https://127.0.0.1:%d/validate-httproute", l.warm.Port)
	allowURL := l.allow.url()
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: webhookConfigName}}
	for _, s := range ss {
		if s.webhook == "" {
			continue
		}
		url := &guardURL
		if s.allow {
			url = &allowURL
		}
		vwc.Webhooks = append(vwc.Webhooks, admissionregistrationv1.ValidatingWebhook{
			Name:         s.webhook,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: url, CABundle: l.certs.CAPEM},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{"gateway.networking.k8s.io"}, APIVersions: []string{"v1"},
					Resources: []string{"httproutes"}, Scope: &scope},
			}},
			ObjectSelector: &metav1.LabelSelector{MatchLabels: map[string]string{setupLabel: s.route}},
			FailurePolicy:  &fail, SideEffects: &side, MatchPolicy: &equivalent, TimeoutSeconds: &timeout,
			AdmissionReviewVersions: []string{"v1"},
			MatchConditions:         s.conditions,
		})
	}
	return vwc
}

// register creates the routes and the webhook configuration and waits until
// the API server acts on it: for each setup, a dry-run switch to the unready
// app-red is denied exactly when the route is guarded, and a dry-run label
// update reaches the guard exactly when it is guarded without conditions.
func (l *lab) register(ctx context.Context, ss []setup) error {
	for _, s := range ss {
		for _, name := range s.routes() {
			route := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
				"metadata": map[string]any{"name": name, "namespace": labNamespace, "labels": map[string]any{setupLabel: s.route}},
				"spec": map[string]any{
					"parentRefs": []any{map[string]any{"name": "public", "namespace": labNamespace}},
					"rules":      routeRules("app-blue"),
				},
			}}
			if _, err := l.dyn.Resource(httpRoutes).Namespace(labNamespace).Create(ctx, route, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return err
			}
		}
	}
	api := l.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	if _, err := api.Create(ctx, l.webhookConfiguration(ss), metav1.CreateOptions{}); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, s := range ss {
			denied, err := l.dryRunSwitchDenied(ctx, s.route)
			if err != nil || denied != s.guarded() {
				return false, err
			}
			calls, err := l.guardCalls(ctx, func(ctx context.Context) error { return l.patchLabel(ctx, s.route, "probe", true) })
			if err != nil {
				return false, err
			}
			if (calls > 0) != (s.guarded() && len(s.conditions) == 0) {
				return false, nil
			}
		}
		return true, nil
	})
}

func (l *lab) unregister(ctx context.Context) error {
	err := l.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, webhookConfigName, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func (l *lab) patchRoute(ctx context.Context, route string, patch any, dryRun bool) error {
	data, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	opts := metav1.PatchOptions{FieldManager: "cutover-guard-bench"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = l.dyn.Resource(httpRoutes).Namespace(labNamespace).Patch(ctx, route, types.MergePatchType, data, opts)
	return err
}

func (l *lab) patchLabel(ctx context.Context, route, value string, dryRun bool) error {
	return l.patchRoute(ctx, route, map[string]any{"metadata": map[string]any{"labels": map[string]any{"bench.cutover-guard.dev/seq": value}}}, dryRun)
}

func (l *lab) switchTo(ctx context.Context, route, backend string, dryRun bool) error {
	return l.patchRoute(ctx, route, map[string]any{"spec": map[string]any{"rules": routeRules(backend)}}, dryRun)
}

func (l *lab) dryRunSwitchDenied(ctx context.Context, route string) (bool, error) {
	err := l.switchTo(ctx, route, "app-red", true)
	switch {
	case err == nil:
		return false, nil
	case apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || strings.Contains(err.Error(), "denied the request"):
		return true, nil
	default:
		return false, err
	}
}

// guardCalls returns how many decisions the warm guard made while fn ran.
func (l *lab) guardCalls(ctx context.Context, fn func(context.Context) error) (float64, error) {
	before, err := decisions(ctx, l.warm)
	if err != nil {
		return 0, err
	}
	if err := fn(ctx); err != nil {
		return 0, err
	}
	after, err := decisions(ctx, l.warm)
	return after - before, err
}

// decisions sums cutover_guard_decisions_total on a guard's /metrics.
func decisions(ctx context.Context, g *guard) (float64, error) {
	page, err := g.Metrics(ctx)
	if err != nil {
		return 0, err
	}
	return tutorial.MetricSum(page, "cutover_guard_decisions_total", nil), nil
}

// patchOp is one kind of route update, as a numbered sequence.
type patchOp struct {
	name   string
	rounds int
	// pause is an untimed wait before each patch.
	pause time.Duration
	// background runs the op while backgroundWrites updates unrelated
	// objects at backgroundRate writes per second.
	background bool
	reset      func(ctx context.Context, route string) error
	do         func(ctx context.Context, route string, i int) error
}

// backgroundRate is the write rate to unrelated objects of the "under
// background writes" rows: about what a small cluster's node leases,
// Events and status updates make.
const backgroundRate = 50

// throughAPIServer is part 3: client-go patches of HTTPRoutes through the
// real API server, with no webhook, an always-allow webhook, the guard
// without matchConditions and the guard with the install manifests'
// matchConditions, interleaved patch by patch; then the same switches
// under background writes, and 8 clients at once.
func throughAPIServer(ctx context.Context, l *lab, r *report) (err error) {
	logf("patches through the API server")
	if l.allow, err = startAllowServer(l.certs); err != nil {
		return fmt.Errorf("always-allow webhook: %w", err)
	}
	defer func() {
		if stopErr := l.allow.stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	conditions, source := manifestMatchConditions(l.s.repo)
	ss := setups(conditions)
	if err := l.register(ctx, ss); err != nil {
		return fmt.Errorf("registering the guard: %w", err)
	}
	n, switches, paced, perClient := 200, 60, 20, 40
	if l.s.quick {
		n, switches, paced, perClient = 40, 20, 8, 15
	}
	const pause = 250 * time.Millisecond
	other := func(i int) string { return []string{"app-green", "app-blue"}[i%2] }
	toBlue := func(ctx context.Context, route string) error { return l.switchTo(ctx, route, "app-blue", false) }
	switchOp := func(ctx context.Context, route string, i int) error { return l.switchTo(ctx, route, other(i), false) }
	ops := []patchOp{
		{name: "label-only update", rounds: n,
			reset: func(context.Context, string) error { return nil },
			do: func(ctx context.Context, route string, i int) error {
				return l.patchLabel(ctx, route, strconv.Itoa(i), false)
			}},
		{name: "backend switch (blue <-> green, both Ready), back to back", rounds: switches, reset: toBlue, do: switchOp},
		{name: fmt.Sprintf("backend switch, one every %s", pause), rounds: paced, pause: pause, reset: toBlue, do: switchOp},
		{name: fmt.Sprintf("backend switch, back to back, under %d background writes/s", backgroundRate), rounds: switches, background: true,
			reset: toBlue, do: switchOp},
	}
	type sample struct{ p50, p99, mean, calls []float64 }
	samples := map[[2]int]*sample{}
	var noise []float64 // background writes/s achieved, per run
	for run := range l.s.runs {
		for oi, op := range ops {
			for _, s := range ss {
				if err := op.reset(ctx, s.route); err != nil {
					return err
				}
			}
			// Guard calls per patch, from a few patches of each set-up alone.
			calls := make([]float64, len(ss))
			for si, s := range ss {
				c, err := l.guardCalls(ctx, func(ctx context.Context) error {
					for i := range 4 {
						if err := op.do(ctx, s.route, 1000+i); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					return err
				}
				calls[si] = c / 4
			}
			var stopNoise func() (float64, error)
			if op.background {
				if stopNoise, err = backgroundWrites(ctx, l.cs, backgroundRate); err != nil {
					return err
				}
			}
			lat := make([][]time.Duration, len(ss))
			for i := range op.rounds {
				for k := range ss {
					si := (k + i + run) % len(ss) // rotate who goes first
					if op.pause > 0 {
						time.Sleep(op.pause)
					}
					t0 := time.Now()
					if err := op.do(ctx, ss[si].route, i); err != nil {
						if stopNoise != nil {
							_, _ = stopNoise()
						}
						return fmt.Errorf("%s, %s: %w", op.name, ss[si].name, err)
					}
					lat[si] = append(lat[si], time.Since(t0))
				}
			}
			if stopNoise != nil {
				rate, err := stopNoise()
				if err != nil {
					return err
				}
				noise = append(noise, rate)
			}
			for si := range ss {
				slices.Sort(lat[si])
				var total time.Duration
				for _, d := range lat[si] {
					total += d
				}
				key := [2]int{si, oi}
				if samples[key] == nil {
					samples[key] = &sample{}
				}
				sm := samples[key]
				sm.p50 = append(sm.p50, float64(loadgen.Percentile(lat[si], 50)))
				sm.p99 = append(sm.p99, float64(loadgen.Percentile(lat[si], 99)))
				sm.mean = append(sm.mean, float64(total)/float64(len(lat[si])))
				sm.calls = append(sm.calls, calls[si])
				if l.s.verbose {
					logf("run %d %s / %s: p50 %s p99 %s, %.2f guard calls per patch", run+1, ss[si].name, op.name,
						dur(loadgen.Percentile(lat[si], 50)), dur(loadgen.Percentile(lat[si], 99)), calls[si])
				}
			}
		}
	}
	concurrent, err := l.concurrentSwitches(ctx, ss, perClient)
	if err != nil {
		return err
	}
	if l.s.profile > 0 {
		if err := l.profileSwitches(ctx, ss[1], ss[len(ss)-1], r); err != nil {
			return err
		}
	}
	if err := l.unregister(ctx); err != nil {
		return err
	}
	if err := readsFloor(ctx, l, r); err != nil {
		return err
	}

	t := r.table("3. Route patches through the real API server",
		fmt.Sprintf("client-go (dynamic client, JSON merge patch, no client-side rate limit) patches HTTPRoutes in `%s`, one per set-up, in rounds: one patch of each route, the order rotating, "+
			"so the set-ups share the machine's drift. Per run %d rounds of label updates, %d of back-to-back switches, %d of switches with %s before each, "+
			"and %d back-to-back switches while a background writer patches ConfigMaps in `%s` at %d writes/s (measured: %.0f/s); medians over %d runs. "+
			"The always-allow webhook is an HTTPS server in the bench process, served like the guard, that decodes each review and allows it: the floor of any webhook. "+
			"The webhooks are one ValidatingWebhookConfiguration with a webhook per set-up (objectSelector on its label): UPDATE of httproutes, "+
			"failurePolicy Fail, sideEffects NoneOnDryRun, timeoutSeconds 10, calling the warm guard of part 2 (or the allow server) at https://127.0.0.1. "+
			"matchConditions from %s. \"guard calls/patch\" is read from the guard's `cutover_guard_decisions_total` over 4 patches of each route alone; "+
			"the ratios are the median latency against the same patch of the unguarded route and of the always-allow route.",
			labNamespace, n, switches, paced, pause, switches, backgroundNamespace, backgroundRate, gobench.Median(noise), l.s.runs, source),
		"update", "set-up", "p50", "p99", "mean", "p50 vs no webhook", "p50 vs always-allow", "guard calls/patch")
	const noneIdx, allowIdx = 0, 1
	for oi, op := range ops {
		base := gobench.Median(samples[[2]int{noneIdx, oi}].p50)
		floor := gobench.Median(samples[[2]int{allowIdx, oi}].p50)
		for si, s := range ss {
			sm := samples[[2]int{si, oi}]
			p50 := gobench.Median(sm.p50)
			ratio := p50 / base
			t.add(op.name, s.name, dur(ns(p50)), dur(ns(gobench.Median(sm.p99))), dur(ns(gobench.Median(sm.mean))),
				fmt.Sprintf("%.2fx", ratio), fmt.Sprintf("%.2fx", p50/floor), fmt.Sprintf("%.2f", gobench.Median(sm.calls)))
			if oi == 0 && s.guarded() {
				r.goal("label-only patch through the API server, "+s.name, "<= 1.10x no webhook", fmt.Sprintf("%.2fx (%s vs %s)", ratio, dur(ns(p50)), dur(ns(base))), ratio <= 1.10)
			}
			if op.rounds == switches && op.pause == 0 && oi > 0 && s.guarded() && len(s.conditions) > 0 {
				where := "one client"
				if op.background {
					where = fmt.Sprintf("one client, %d background writes/s", backgroundRate)
				}
				r.goal("back-to-back switch through the API server, "+where, "p50 <= 2x no webhook",
					fmt.Sprintf("%.2fx (%s vs %s)", ratio, dur(ns(p50)), dur(ns(base))), ratio <= 2)
				gap := time.Duration(p50 - floor)
				r.goal("back-to-back switch through the API server, "+where, "p50 <= always-allow webhook + 5 ms",
					fmt.Sprintf("+%s (%s vs %s)", dur(gap), dur(ns(p50)), dur(ns(floor))), gap <= 5*time.Millisecond)
			}
		}
	}

	ct := r.table("3b. Concurrent switches through the real API server",
		fmt.Sprintf("%d clients, each switching its own route of the set-up back to back (%d switches each, blue <-> green, both Ready), the set-ups one after another in an order rotating per run, "+
			"quiet and under %d background writes/s; switches/s is all switches over the wall time from the first start to the last answer; medians over %d runs.",
			clients, perClient, backgroundRate, l.s.runs),
		"load", "set-up", "switches/s", "p50", "p99", "vs always-allow")
	for bi, label := range []string{"quiet", fmt.Sprintf("%d background writes/s", backgroundRate)} {
		floor := gobench.Median(concurrent[[2]int{allowIdx, bi}].rate)
		for si, s := range ss {
			c := concurrent[[2]int{si, bi}]
			rate := gobench.Median(c.rate)
			ct.add(fmt.Sprintf("%d clients, %s", clients, label), s.name, fmt.Sprintf("%.0f", rate),
				dur(ns(gobench.Median(c.p50))), dur(ns(gobench.Median(c.p99))), fmt.Sprintf("%.0f %%", 100*rate/floor))
			if s.guarded() && len(s.conditions) > 0 {
				r.goal(fmt.Sprintf("%d clients on %d routes, %s", clients, clients, label), ">= 80 % of the always-allow webhook's switches/s",
					fmt.Sprintf("%.0f %% (%.0f/s vs %.0f/s)", 100*rate/floor, rate, floor), rate >= 0.8*floor)
			}
		}
	}
	return nil
}

// concurrentSample is one set-up's concurrent switches over the runs.
type concurrentSample struct{ rate, p50, p99 []float64 }

// concurrentSwitches measures, for each set-up and with and without
// background writes, clients clients switching their own routes back to
// back. The result is keyed by (set-up, 0 quiet / 1 background).
func (l *lab) concurrentSwitches(ctx context.Context, ss []setup, perClient int) (map[[2]int]*concurrentSample, error) {
	out := map[[2]int]*concurrentSample{}
	for run := range l.s.runs {
		for bi := range 2 {
			var stopNoise func() (float64, error)
			if bi == 1 {
				var err error
				if stopNoise, err = backgroundWrites(ctx, l.cs, backgroundRate); err != nil {
					return nil, err
				}
			}
			for k := range ss {
				si := (k + run) % len(ss)
				rate, lat, err := l.switchAtOnce(ctx, ss[si], perClient)
				if err != nil {
					if stopNoise != nil {
						_, _ = stopNoise()
					}
					return nil, fmt.Errorf("%d clients, %s: %w", clients, ss[si].name, err)
				}
				key := [2]int{si, bi}
				if out[key] == nil {
					out[key] = &concurrentSample{}
				}
				c := out[key]
				c.rate = append(c.rate, rate)
				c.p50 = append(c.p50, float64(loadgen.Percentile(lat, 50)))
				c.p99 = append(c.p99, float64(loadgen.Percentile(lat, 99)))
				if l.s.verbose {
					logf("run %d, %d clients (%s) %s: %.0f switches/s, p50 %s", run+1, clients, []string{"quiet", "background"}[bi],
						ss[si].name, rate, dur(loadgen.Percentile(lat, 50)))
				}
			}
			if stopNoise != nil {
				if _, err := stopNoise(); err != nil {
					return nil, err
				}
			}
		}
	}
	return out, nil
}

// switchAtOnce runs clients goroutines, each switching one of s's concurrent
// routes perClient times back to back, and returns switches per second over
// the wall time and the sorted latencies.
func (l *lab) switchAtOnce(ctx context.Context, s setup, perClient int) (float64, []time.Duration, error) {
	routes := s.routes()[1:]
	for _, route := range routes {
		if err := l.switchTo(ctx, route, "app-blue", false); err != nil {
			return 0, nil, err
		}
	}
	lat := make([][]time.Duration, len(routes))
	errs := make([]error, len(routes))
	var wg sync.WaitGroup
	began := time.Now()
	for k, route := range routes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perClient {
				t0 := time.Now()
				if err := l.switchTo(ctx, route, []string{"app-green", "app-blue"}[i%2], false); err != nil {
					errs[k] = err
					return
				}
				lat[k] = append(lat[k], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	took := time.Since(began)
	if err := errors.Join(errs...); err != nil {
		return 0, nil, err
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	return float64(len(all)) / took.Seconds(), all, nil
}
