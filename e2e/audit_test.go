package e2e_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// A denial leaves a trace an operator can find: a Warning Event
// CutoverDenied on the route, seen with kubectl, and the guard's
// cutover_guard_* metrics on /metrics.
func TestDenialLeavesEventAndMetrics(t *testing.T) {
	e := setup(t)
	e.reset(t, world{})
	route := e.route(t)
	denied := map[string]string{"kind": "HTTPRoute", "result": "denied", "path": "checked"}
	notReady := map[string]string{"check": "deployment", "reason": "NotReady", "severity": "deny"}
	before, err := e.guard.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	requireDenied(t, e.sh(t, tutorial.CutoverCommand), tutorial.HTTPRouteWebhook, greenNotReady...)
	e.checkBackend(t, tutorial.Blue)

	// The Event, through kubectl's field selector on the route.
	ev := e.waitDeniedEvent(t, "HTTPRoute", tutorial.Route, string(route.UID), route.ResourceVersion)
	if ev.Type != "Warning" || ev.Reason != "CutoverDenied" || !strings.Contains(ev.Message, greenNotReady[0]) {
		t.Errorf("Event %+v: want a Warning CutoverDenied saying %q", ev, greenNotReady[0])
	}
	// The same Event through the events.k8s.io API.
	r := e.kubectl().Run(t.Context(), "get", "events.v1.events.k8s.io", "-n", tutorial.Namespace,
		"-o", `jsonpath={range .items[?(@.reason=="CutoverDenied")]}{.regarding.kind}/{.regarding.name}@{.regarding.resourceVersion} {.deprecatedSource.component}{"\n"}{end}`)
	if want := "HTTPRoute/myapp@" + route.ResourceVersion + " cutover-guard"; !r.OK() || !strings.Contains(r.Stdout, want) {
		t.Errorf("events.k8s.io lacks %q:\n%s", want, r)
	}

	// A second denial of the same route for another reason is an Event of
	// its own, not folded into the first.
	missing := strings.Replace(tutorial.CutoverCommand, `"value":"app-green"`, `"value":"app-purple"`, 1)
	requireDenied(t, e.sh(t, missing), tutorial.HTTPRouteWebhook, "service app-purple does not exist in namespace production")
	var messages []string
	err = wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		messages = messages[:0]
		for _, ev := range e.deniedEvents(t, "HTTPRoute", tutorial.Route) {
			if ev.InvolvedObject.UID == string(route.UID) {
				messages = append(messages, ev.Message)
			}
		}
		return len(messages) == 2, nil
	})
	if err != nil || !strings.Contains(strings.Join(messages, "\n"), "app-purple") {
		t.Errorf("want two CutoverDenied Events on the route, one naming app-purple; got %d: %q", len(messages), messages)
	}

	after, err := e.guard.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for name, labels := range map[string]map[string]string{
		"cutover_guard_decisions_total": denied,
		"cutover_guard_findings_total":  notReady,
	} {
		b, a := tutorial.MetricSum(before, name, labels), tutorial.MetricSum(after, name, labels)
		if a < 1 || a-b < 1 {
			t.Errorf("%s%v: %v before the denial, %v after; want an increase", name, labels, b, a)
		}
	}
	if d := tutorial.MetricSum(after, "cutover_guard_decision_duration_seconds_count", map[string]string{"kind": "HTTPRoute", "path": "checked"}); d < 1 {
		t.Errorf("cutover_guard_decision_duration_seconds_count{kind=HTTPRoute,path=checked} is %v, want at least 1", d)
	}
}
