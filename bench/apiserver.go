package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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
}

const setupLabel = "bench.cutover-guard.dev/setup"

func setups(conditions []admissionregistrationv1.MatchCondition) []setup {
	return []setup{
		{name: "no webhook", route: "route-none"},
		{name: "guard, no matchConditions", route: "route-plain", webhook: "plain.httproutes.cutover-guard.dev"},
		{name: "guard + matchConditions", route: "route-mc", webhook: "mc.httproutes.cutover-guard.dev", conditions: conditions},
	}
}

// webhookConfiguration registers the warm guard for UPDATE of httproutes,
// one webhook per guarded setup, each selecting its route by label.
func (l *lab) webhookConfiguration(ss []setup) *admissionregistrationv1.ValidatingWebhookConfiguration {
	fail := admissionregistrationv1.Fail
	side := admissionregistrationv1.SideEffectClassNoneOnDryRun
	equivalent := admissionregistrationv1.Equivalent
	scope := admissionregistrationv1.NamespacedScope
	timeout := int32(10)
	url := fmt.Sprintf("https://127.0.0.1:%d/validate-httproute", l.warm.Port)
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: webhookConfigName}}
	for _, s := range ss {
		if s.webhook == "" {
			continue
		}
		vwc.Webhooks = append(vwc.Webhooks, admissionregistrationv1.ValidatingWebhook{
			Name:         s.webhook,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: l.certs.CAPEM},
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
		route := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
			"metadata": map[string]any{"name": s.route, "namespace": labNamespace, "labels": map[string]any{setupLabel: s.route}},
			"spec": map[string]any{
				"parentRefs": []any{map[string]any{"name": "public", "namespace": labNamespace}},
				"rules":      routeRules("app-blue"),
			},
		}}
		if _, err := l.dyn.Resource(httpRoutes).Namespace(labNamespace).Create(ctx, route, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	api := l.cs.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	if _, err := api.Create(ctx, l.webhookConfiguration(ss), metav1.CreateOptions{}); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, s := range ss {
			denied, err := l.dryRunSwitchDenied(ctx, s.route)
			if err != nil || denied != (s.webhook != "") {
				return false, err
			}
			calls, err := l.guardCalls(ctx, func(ctx context.Context) error { return l.patchLabel(ctx, s.route, "probe", true) })
			if err != nil {
				return false, err
			}
			if (calls > 0) != (s.webhook != "" && len(s.conditions) == 0) {
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
	reset func(ctx context.Context, route string) error
	do    func(ctx context.Context, route string, i int) error
}

// throughAPIServer is part 3: client-go patches of HTTPRoutes through the
// real API server, with no webhook, the guard without matchConditions and
// the guard with the install manifests' matchConditions, interleaved patch
// by patch.
func throughAPIServer(ctx context.Context, l *lab, r *report) error {
	logf("patches through the API server")
	conditions, source := manifestMatchConditions(l.s.repo)
	ss := setups(conditions)
	if err := l.register(ctx, ss); err != nil {
		return fmt.Errorf("registering the guard: %w", err)
	}
	n, switches, paced := 200, 60, 20
	if l.s.quick {
		n, switches, paced = 40, 20, 8
	}
	const pause = 250 * time.Millisecond
	other := func(i int) string { return []string{"app-green", "app-blue"}[i%2] }
	toBlue := func(ctx context.Context, route string) error { return l.switchTo(ctx, route, "app-blue", false) }
	ops := []patchOp{
		{name: "label-only update", rounds: n,
			reset: func(context.Context, string) error { return nil },
			do: func(ctx context.Context, route string, i int) error {
				return l.patchLabel(ctx, route, strconv.Itoa(i), false)
			}},
		{name: "backend switch (blue <-> green, both Ready), back to back", rounds: switches, reset: toBlue,
			do: func(ctx context.Context, route string, i int) error { return l.switchTo(ctx, route, other(i), false) }},
		{name: fmt.Sprintf("backend switch, one every %s", pause), rounds: paced, pause: pause, reset: toBlue,
			do: func(ctx context.Context, route string, i int) error { return l.switchTo(ctx, route, other(i), false) }},
	}
	type sample struct{ p50, p99, mean, calls []float64 }
	samples := map[[2]int]*sample{}
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
			lat := make([][]time.Duration, len(ss))
			for i := range op.rounds {
				for k := range ss {
					si := (k + i + run) % len(ss) // rotate who goes first
					if op.pause > 0 {
						time.Sleep(op.pause)
					}
					t0 := time.Now()
					if err := op.do(ctx, ss[si].route, i); err != nil {
						return fmt.Errorf("%s, %s: %w", op.name, ss[si].name, err)
					}
					lat[si] = append(lat[si], time.Since(t0))
				}
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
	if err := l.unregister(ctx); err != nil {
		return err
	}

	t := r.table("3. Route patches through the real API server",
		fmt.Sprintf("client-go (dynamic client, JSON merge patch, no client-side rate limit) patches three HTTPRoutes in `%s`, one per set-up, in rounds: one patch of each route, the order rotating, "+
			"so the three set-ups share the machine's drift. Per run %d rounds of label updates, %d of back-to-back switches, %d of switches with %s before each; medians over %d runs. "+
			"The guard is registered as one ValidatingWebhookConfiguration with a webhook per guarded route (objectSelector on its label): UPDATE of httproutes, "+
			"failurePolicy Fail, sideEffects NoneOnDryRun, timeoutSeconds 10, calling the warm guard of part 2 at https://127.0.0.1. "+
			"matchConditions from %s. \"guard calls/patch\" is read from the guard's `cutover_guard_decisions_total` over 4 patches of each route alone; "+
			"the ratio is the median latency against the same patch of the unguarded route.",
			labNamespace, n, switches, paced, pause, l.s.runs, source),
		"update", "set-up", "p50", "p99", "mean", "p50 vs no webhook", "guard calls/patch")
	for oi, op := range ops {
		base := gobench.Median(samples[[2]int{0, oi}].p50)
		for si, s := range ss {
			sm := samples[[2]int{si, oi}]
			p50 := gobench.Median(sm.p50)
			ratio := p50 / base
			t.add(op.name, s.name, dur(ns(p50)), dur(ns(gobench.Median(sm.p99))), dur(ns(gobench.Median(sm.mean))),
				fmt.Sprintf("%.2fx", ratio), fmt.Sprintf("%.2f", gobench.Median(sm.calls)))
			if oi == 0 && s.webhook != "" {
				r.goal("label-only patch through the API server, "+s.name, "<= 1.10x no webhook", fmt.Sprintf("%.2fx (%s vs %s)", ratio, dur(ns(p50)), dur(ns(base))), ratio <= 1.10)
			}
		}
	}
	return nil
}
