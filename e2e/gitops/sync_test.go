package gitops_test

import (
	"context"
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/flux"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// TestFluxSyncsTheTutorialThroughTheGuard is the tutorial's release done
// the GitOps way: every change is a commit, kustomize-controller applies
// it, and the guard judges each route change it applies.
func TestFluxSyncsTheTutorialThroughTheGuard(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	kube := e.stack.Kube
	prepare(t, e)

	// 1. The first sync creates Deployments, Services and the route at
	// once; the route's creation is checked, and allowed once blue's pods
	// are Ready, by a retry of the same commit.
	first := e.commit(t, flux.Release{GreenReplicas: tutorial.Replicas, Backends: []flux.Backend{{Name: tutorial.Blue}}}, "release: app-blue serves, app-green deployed")
	for _, o := range []client.Object{
		flux.GitRepository(fluxNamespace, "app", e.repo.URL, interval),
		flux.Kustomization(fluxNamespace, "app", "app", flux.KustomizationOptions{Interval: interval, RetryInterval: interval, ServiceAccountName: applier}),
	} {
		if err := kube.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	st := e.waitKustomization(t, "the first sync applied", func(s flux.Status) bool {
		return s.Ready == metav1.ConditionTrue && s.LastApplied == flux.Revision(first)
	})
	t.Logf("first sync: %s", st)
	e.requireBackends(t, tutorial.Blue)
	if n := len(e.decisions(t, "")); n == 0 {
		t.Fatalf("the guard judged no write of route %s/%s: was its creation checked?", appNamespace, tutorial.Route)
	}

	// 2. A commit that switches to a green that is not Ready: the
	// Kustomization fails with the guard's message, the revision applied
	// stays, the route keeps pointing at blue.
	cutover := e.commit(t, flux.Release{GreenReplicas: tutorial.Replicas, Backends: []flux.Backend{{Name: tutorial.Green}}}, "cutover: app-green")
	st = e.waitKustomization(t, "the cutover denied", func(s flux.Status) bool {
		return s.LastAttempted == flux.Revision(cutover) && s.Ready == metav1.ConditionFalse && strings.Contains(s.Message, "deployment app-green is not ready")
	})
	t.Logf("cutover to an unready green: %s", st)
	if st.LastApplied != flux.Revision(first) {
		t.Errorf("lastAppliedRevision %q after a denied commit, want the one before, %q", st.LastApplied, flux.Revision(first))
	}
	for _, want := range []string{"cutover-guard", "admission webhook", "kubectl rollout status deployment/app-green -n " + appNamespace} {
		if !strings.Contains(st.Message, want) {
			t.Errorf("Ready condition does not say %q:\n%s", want, st.Message)
		}
	}
	e.requireBackends(t, tutorial.Blue)

	// 3. No storm: while the commit stays denied, kustomize-controller
	// retries once per retryInterval, and so the guard decides about that
	// often; each decision names the field manager and the impersonated
	// user.
	const window = time.Minute
	before := len(e.decisions(t, "cutover denied"))
	windowEnds := time.Now().Add(window)
	_ = wait.PollUntilContextTimeout(ctx, time.Second, window+5*time.Second, false, func(context.Context) (bool, error) {
		return time.Now().After(windowEnds), nil
	})
	denied := e.decisions(t, "cutover denied")
	n := len(denied) - before
	t.Logf("guard decisions on the denied commit over %s: %d (retryInterval %s)", window, n, interval)
	if maxN := int(window/interval) * 2; n < 2 || n > maxN {
		t.Errorf("%d denials in %s; want about one per retryInterval (2 to %d)", n, window, maxN)
	}
	last := denied[len(denied)-1]
	if last["fieldManager"] != flux.FieldManager || last["user"] != applierUser {
		t.Errorf("decision log names field manager %v and user %v, want %s and %s", last["fieldManager"], last["user"], flux.FieldManager, applierUser)
	}

	// 4. Green becomes Ready without a new commit (its pods can now be
	// scheduled): the next retry applies the same commit.
	if err := flux.LabelNode(ctx, kube, e.stack.Cluster.NodeName, flux.GreenNode); err != nil {
		t.Fatal(err)
	}
	if err := tutorial.WaitServing(ctx, kube, appNamespace, tutorial.Green); err != nil {
		t.Fatal(err)
	}
	st = e.waitKustomization(t, "the same commit applied once green is Ready", func(s flux.Status) bool {
		return s.Ready == metav1.ConditionTrue && s.LastApplied == flux.Revision(cutover)
	})
	t.Logf("green Ready: %s", st)
	e.requireBackends(t, tutorial.Green)

	// 5. Roll back and scale green to zero (one commit: the route's switch
	// is to blue, which is Ready), then a canary weight moved to the green
	// at zero: denied the same way.
	rollback := e.commit(t, flux.Release{GreenReplicas: 0, Backends: []flux.Backend{{Name: tutorial.Blue, Weight: 100}, {Name: tutorial.Green, Weight: 0}}}, "rollback: app-blue, app-green scaled to zero")
	e.waitKustomization(t, "the rollback applied", func(s flux.Status) bool {
		return s.Ready == metav1.ConditionTrue && s.LastApplied == flux.Revision(rollback)
	})
	canary := e.commit(t, flux.Release{GreenReplicas: 0, Backends: []flux.Backend{{Name: tutorial.Blue, Weight: 90}, {Name: tutorial.Green, Weight: 10}}}, "canary: 10% to app-green")
	st = e.waitKustomization(t, "the canary denied", func(s flux.Status) bool {
		return s.LastAttempted == flux.Revision(canary) && s.Ready == metav1.ConditionFalse && strings.Contains(s.Message, "deployment app-green is scaled to zero")
	})
	t.Logf("canary to a green at zero: %s", st)
	e.requireWeights(t, map[string]int32{tutorial.Blue: 100, tutorial.Green: 0})

	// 6. Break glass through Git: the override annotation, committed and
	// applied by a user in --override-groups, lets the denied switch
	// through, and the override is audited.
	const reason = "INC-4711: app-green verified by hand"
	glass := e.commit(t, flux.Release{GreenReplicas: 0, Backends: []flux.Backend{{Name: tutorial.Blue, Weight: 90}, {Name: tutorial.Green, Weight: 10}}, Override: reason}, "break glass: "+reason)
	st = e.waitKustomization(t, "the override applied", func(s flux.Status) bool {
		return s.Ready == metav1.ConditionTrue && s.LastApplied == flux.Revision(glass)
	})
	t.Logf("override: %s", st)
	e.requireWeights(t, map[string]int32{tutorial.Blue: 90, tutorial.Green: 10})
	overridden := e.decisions(t, "cutover overridden")
	if len(overridden) == 0 {
		t.Fatal("no decision log line says the cutover was overridden")
	}
	if o := overridden[len(overridden)-1]; o["overrideUser"] != applierUser || o["overrideReason"] != reason {
		t.Errorf("override logged by %v with reason %v, want %s and %q", o["overrideUser"], o["overrideReason"], applierUser, reason)
	}
	// 7. A commit that re-parents the route (a second Gateway) while green
	// is still at zero: every backend with a share is judged again, and
	// the annotation left from the override does not count.
	reparent := e.commit(t, flux.Release{GreenReplicas: 0, Backends: []flux.Backend{{Name: tutorial.Blue, Weight: 90}, {Name: tutorial.Green, Weight: 10}},
		Override: reason, ExtraParent: "internal"}, "attach myapp to the internal gateway too")
	st = e.waitKustomization(t, "the re-parenting denied", func(s flux.Status) bool {
		return s.LastAttempted == flux.Revision(reparent) && s.Ready == metav1.ConditionFalse && strings.Contains(s.Message, "deployment app-green is scaled to zero")
	})
	t.Logf("re-parenting with green at zero: %s", st)
	if st.LastApplied != flux.Revision(glass) {
		t.Errorf("lastAppliedRevision %q after a denied re-parenting, want %q", st.LastApplied, flux.Revision(glass))
	}
	if parents := e.route(t).Spec.ParentRefs; len(parents) != 1 {
		t.Errorf("route has %d parentRefs after a denied re-parenting, want 1", len(parents))
	}

	var events corev1.EventList
	if err := kube.List(ctx, &events, client.InNamespace(appNamespace)); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range events.Items {
		if ev.Reason == "CutoverOverridden" && ev.InvolvedObject.Name == tutorial.Route && strings.Contains(ev.Message, applierUser) {
			found = true
		}
	}
	if !found {
		t.Errorf("no CutoverOverridden Event on route %s naming %s", tutorial.Route, applierUser)
	}
}

func prepare(t *testing.T, e *env) {
	t.Helper()
	if err := flux.Prepare(t.Context(), e.stack.Kube, appNamespace, fluxNamespace, applier, postgresDSN); err != nil {
		t.Fatal(err)
	}
}

func (e *env) commit(t *testing.T, r flux.Release, message string) string {
	t.Helper()
	files, err := r.Files(appNamespace)
	if err != nil {
		t.Fatal(err)
	}
	sha, err := e.repo.Commit(files, message)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("commit %s %q", sha[:12], message)
	return sha
}

// waitKustomization polls the Kustomization until done says so.
func (e *env) waitKustomization(t *testing.T, what string, done func(flux.Status) bool) flux.Status {
	t.Helper()
	st, err := flux.WaitKustomization(t.Context(), e.stack.Kube, fluxNamespace, "app", 3*time.Minute, done)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return st
}

func (e *env) route(t *testing.T) *gwv1.HTTPRoute {
	t.Helper()
	var r gwv1.HTTPRoute
	if err := e.stack.Kube.Get(t.Context(), client.ObjectKey{Namespace: appNamespace, Name: tutorial.Route}, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

// requireBackends requires the route's first rule to send traffic to want.
func (e *env) requireBackends(t *testing.T, want string) {
	t.Helper()
	refs := e.route(t).Spec.Rules[0].BackendRefs
	if len(refs) != 1 || string(refs[0].Name) != want {
		t.Fatalf("route %s/%s sends traffic to %v, want %s", appNamespace, tutorial.Route, refs, want)
	}
}

// requireWeights requires the route's first rule to have these weights.
func (e *env) requireWeights(t *testing.T, want map[string]int32) {
	t.Helper()
	got := map[string]int32{}
	for _, ref := range e.route(t).Spec.Rules[0].BackendRefs {
		w := int32(1)
		if ref.Weight != nil {
			w = *ref.Weight
		}
		got[string(ref.Name)] = w
	}
	if !maps.Equal(got, want) {
		t.Fatalf("route %s/%s weights %v, want %v", appNamespace, tutorial.Route, got, want)
	}
}

// decisions are the guard's decision log lines about the route (msg
// "cutover ..."), those whose msg is msg when it is not empty.
func (e *env) decisions(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(e.stack.Guard.Log(), "\n") {
		if !strings.Contains(line, `"cutover `) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		if m["namespace"] != appNamespace || m["name"] != tutorial.Route {
			continue
		}
		if s, _ := m["msg"].(string); strings.HasPrefix(s, "cutover ") && (msg == "" || s == msg) {
			out = append(out, m)
		}
	}
	return out
}
