package e2e_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// overrideGroup is the shared guard's --override-groups: members may let a
// denied switch through with the override annotation.
const overrideGroup = "sre"

// overrideAnnotation is the guard's break-glass annotation.
const overrideAnnotation = "cutover-guard.dev/override"

// releaseBot may patch routes (RBAC) but is not in overrideGroup.
const releaseBot = "release-bot"

// The break glass, with the real kubectl impersonating users: an override
// by a member of the override group lets the cutover to an unready green
// through and leaves an Event and a metric; the annotation from anyone
// else, or without a reason, is refused with the why; and the annotation
// left on the route overrides nothing the next time.
func TestOverride(t *testing.T) {
	e := setup(t)
	e.reset(t, world{greenReady: false})
	e.grantRoutePatch(t)
	const reason = "INC-1234: green verified by hand"
	before, err := e.guard.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	// Someone who may patch routes but is not in --override-groups.
	r := e.patchAs(t, []string{"--as=" + releaseBot}, e.overridePatch(t, tutorial.Green, reason))
	requireDenied(t, r, tutorial.HTTPRouteWebhook,
		"httproute production/myapp: cutover-guard.dev/override is set by user release-bot, who is not in --override-groups (sre); "+
			"ask one of them to make this switch, or remove the annotation")
	e.checkBackend(t, tutorial.Blue)

	// A member, without a reason.
	r = e.patchAs(t, []string{"--as=alice", "--as-group=" + overrideGroup}, e.overridePatch(t, tutorial.Green, ""))
	requireDenied(t, r, tutorial.HTTPRouteWebhook, "httproute production/myapp: cutover-guard.dev/override is set by user alice without a reason; ")
	e.checkBackend(t, tutorial.Blue)
	if _, ok := e.route(t).Annotations[overrideAnnotation]; ok {
		t.Fatalf("a refused override left its annotation on the route")
	}

	// A member, with a reason: the switch goes through and is recorded.
	r = e.patchAs(t, []string{"--as=alice", "--as-group=" + overrideGroup}, e.overridePatch(t, tutorial.Green, reason))
	if !r.OK() || !strings.Contains(r.Stdout, tutorial.PatchedOutput) {
		t.Fatalf("want the override to go through, got:\n%s", r)
	}
	for _, want := range []string{
		"Warning: cutover-guard overridden by alice: 2 finding(s) would deny this switch",
		"Warning: overridden: service production/app-green: deployment app-green is not ready",
	} {
		if !strings.Contains(r.Output, want) {
			t.Errorf("kubectl output lacks %q:\n%s", want, r.Output)
		}
	}
	e.checkBackend(t, tutorial.Green)
	route := e.route(t)
	ev := e.waitEvent(t, "CutoverOverridden", string(route.UID))
	for _, want := range []string{"cutover overridden by alice", `reason "` + reason + `"`, greenNotReady[0]} {
		if ev.Type != "Warning" || !strings.Contains(ev.Message, want) {
			t.Errorf("Event %+v: want a Warning CutoverOverridden saying %q", ev, want)
		}
	}
	after, err := e.guard.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for name, labels := range map[string]map[string]string{
		"cutover_guard_overrides_total": {"kind": "HTTPRoute", "result": "overridden"},
		"cutover_guard_decisions_total": {"kind": "HTTPRoute", "result": "overridden", "path": "checked"},
	} {
		if b, a := tutorial.MetricSum(before, name, labels), tutorial.MetricSum(after, name, labels); a-b != 1 {
			t.Errorf("%s%v: %v before the override, %v after; want one more", name, labels, b, a)
		}
	}
	for _, labels := range []map[string]string{{"result": "refused_not_allowed"}, {"result": "refused_no_reason"}} {
		if b, a := tutorial.MetricSum(before, "cutover_guard_overrides_total", labels), tutorial.MetricSum(after, "cutover_guard_overrides_total", labels); a-b != 1 {
			t.Errorf("cutover_guard_overrides_total%v: %v before, %v after; want one more", labels, b, a)
		}
	}

	// The rollback leaves the annotation in place; the checks pass and the
	// leftover annotation is named as ignored.
	r = e.kubectl().Shell(t.Context(), strings.Replace(tutorial.RollbackCommand, "kubectl ", "kubectl --as="+releaseBot+" ", 1))
	t.Logf("%s", r)
	if !r.OK() || !strings.Contains(r.Output, "Warning: cutover-guard.dev/override is left from an earlier update and was ignored; set a new reason to override") {
		t.Fatalf("want the rollback allowed with a warning about the leftover annotation, got:\n%s", r)
	}
	e.checkBackend(t, tutorial.Blue)

	// The next cutover to the still unready green, by someone else and by
	// another member of the group, is denied by the checks as usual: the
	// override was one-shot.
	for _, as := range [][]string{{"--as=" + releaseBot}, {"--as=carol", "--as-group=" + overrideGroup}} {
		r = e.kubectl().Shell(t.Context(), strings.Replace(tutorial.CutoverCommand, "kubectl ", "kubectl "+strings.Join(as, " ")+" ", 1))
		t.Logf("%s", r)
		requireDenied(t, r, tutorial.HTTPRouteWebhook, greenNotReady...)
		if strings.Contains(r.Output, "--override-groups") {
			t.Errorf("the leftover annotation was taken for an override attempt:\n%s", r)
		}
		e.checkBackend(t, tutorial.Blue)
	}
	if got := e.route(t).Annotations[overrideAnnotation]; got != reason {
		t.Errorf("route annotation %s = %q, want the leftover %q", overrideAnnotation, got, reason)
	}
}

// grantRoutePatch lets user release-bot and group sre get and patch
// HTTPRoutes in the tutorial's namespace, and waits until the API server's
// authorizer says so.
func (e *env) grantRoutePatch(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-httproute-patcher"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{gwv1.GroupName}, Resources: []string{"httproutes"}, Verbs: []string{"get", "patch"},
		}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: "e2e-httproute-patcher"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{
			{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: releaseBot},
			{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: overrideGroup},
		},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := tutorial.CreateOrReplace(ctx, e.kube, obj); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, obj := range []client.Object{binding, role} {
			if err := client.IgnoreNotFound(e.kube.Delete(context.Background(), obj)); err != nil {
				t.Errorf("delete %s: %v", obj.GetName(), err)
			}
		}
	})
	for _, as := range [][]string{{"--as=" + releaseBot}, {"--as=alice", "--as-group=" + overrideGroup}} {
		var last *tutorial.Result
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			last = e.kubectl().Run(ctx, append(as, "auth", "can-i", "patch", "httproutes", "-n", tutorial.Namespace)...)
			return last.OK() && last.Stdout == "yes\n", nil
		})
		if err != nil {
			t.Fatalf("RBAC for %v not in effect: %v\n%s", as, err, last)
		}
	}
}

// overridePatch is a merge patch that sets the override annotation to
// reason and points the route's first backendRef at backend, in one update.
func (e *env) overridePatch(t *testing.T, backend, reason string) string {
	t.Helper()
	rules := e.route(t).Spec.Rules
	rules[0].BackendRefs[0].Name = gwv1.ObjectName(backend)
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{overrideAnnotation: reason}},
		"spec":     map[string]any{"rules": rules},
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(patch)
}

// patchAs merge-patches the tutorial's route with the real kubectl as the
// user and groups that as names.
func (e *env) patchAs(t *testing.T, as []string, patch string) *tutorial.Result {
	t.Helper()
	args := append(append([]string(nil), as...), "patch", "httproute", tutorial.Route, "-n", tutorial.Namespace, "--type=merge", "-p", patch)
	r := e.kubectl().Run(t.Context(), args...)
	t.Logf("%s", r)
	return r
}

// waitEvent waits for an Event with reason on the tutorial's route with uid
// and returns it.
func (e *env) waitEvent(t *testing.T, reason, uid string) event {
	t.Helper()
	var found *event
	var last *tutorial.Result
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		last = e.kubectl().Run(ctx, "get", "events", "-n", tutorial.Namespace, "-o", "json",
			"--field-selector", "involvedObject.kind=HTTPRoute,involvedObject.name="+tutorial.Route+",reason="+reason)
		if !last.OK() {
			return false, nil
		}
		var list struct{ Items []event }
		if err := json.Unmarshal([]byte(last.Stdout), &list); err != nil {
			return false, err
		}
		for i, ev := range list.Items {
			if ev.InvolvedObject.UID == uid {
				found = &list.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s Event on HTTPRoute %s (uid %s): %v\n%s", reason, tutorial.Route, uid, err, last)
	}
	return *found
}
