package plugin_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
	"github.com/cutover-guard/cutover-guard/internal/cutoverctl"
)

// The tutorial's whole release through the plugin: status while green
// cannot start, check denied, switch refused without --yes off a terminal,
// switch once green is Ready, blue scaled to zero and the rollback warned
// and denied, blue back and the rollback allowed, and history listing the
// guard's denials and the recorded switches, newest first.
func TestTutorialReleaseThroughThePlugin(t *testing.T) {
	e := setup(t)
	e.reset(t, false)
	// args is the subcommand, the route and the namespace, then more.
	args := func(sub string, more ...string) []string {
		return append([]string{sub, tutorial.Route, "-n", tutorial.Namespace}, more...)
	}

	// status: blue carries all traffic; green (a sibling Service: the same
	// selector keys, version blue/green) is Pending and the guard would deny.
	r := e.cutover(t, args("status")...)
	mustExit(t, r, 0)
	mustContain(t, r, "HTTPRoute production/myapp", "rule 0: app-blue 100% (weight 1)", "app-blue (live",
		"app-green (idle)", "replicas 2: 0 ready, 2 updated, 0 available",
		"a switch to it now would be DENIED", "deployment app-green is not ready",
		"production/public: no status yet", "guard: installed (cutover-guard/httproute.cutover-guard.dev)")
	var st cutoverctl.Status
	e.cutoverJSON(t, &st, args("status")...)
	blue, green := colorOf(t, &st, tutorial.Blue), colorOf(t, &st, tutorial.Green)
	if !blue.Live || blue.SharePercent != 100 || blue.ReadyEndpoints != 2 || blue.Verdict != nil {
		t.Errorf("status -o json: blue = %+v, want live, 100%%, 2 ready endpoints, no verdict", blue)
	}
	if green.Live || green.ReadyEndpoints != 0 || green.Verdict == nil || green.Verdict.Allowed || !green.Verdict.Reviewed {
		t.Errorf("status -o json: green = %+v, want idle, 0 endpoints, denied by the guard", green)
	}

	// check: the guard denies; exit 1; -o json has the findings.
	r = e.cutover(t, args("check", "--to", tutorial.Green)...)
	mustExit(t, r, 1)
	mustContain(t, r, "check switch app-blue -> app-green", "guard: DENIED by httproute.cutover-guard.dev",
		"service production/app-green: deployment app-green is not ready (0/2 ready, 2 pending)")
	var ck cutoverctl.CheckResult
	r = e.cutoverJSON(t, &ck, args("check", "--to", tutorial.Green)...)
	mustExit(t, r, 1)
	if ck.Verdict == nil || ck.Verdict.Allowed || !ck.Verdict.Reviewed || len(ck.Verdict.Findings) == 0 ||
		!strings.Contains(ck.Patch, `{"op":"replace","path":"/spec/rules/0/backendRefs/0/name","value":"app-green"}`) {
		t.Errorf("check -o json = %+v, want a reviewed denial with findings and the tutorial's patch", ck)
	}

	// Someone runs the tutorial's patch by hand: the guard denies it for
	// real and records a CutoverDenied Event (dry runs record none).
	if r := e.sh(t, tutorial.CutoverCommand); !r.Denied() {
		t.Fatalf("the tutorial's cutover while green is Pending: want a denial:\n%s", r)
	}

	// switch without --yes, standard input not a terminal: refused before
	// anything is asked or changed.
	r = e.cutover(t, args("switch", "--to", tutorial.Green)...)
	mustExit(t, r, 2)
	mustContain(t, r, "standard input is not a terminal; pass --yes")
	if got := e.backend(t); got != tutorial.Blue {
		t.Fatalf("after the refused switch the route sends traffic to %s", got)
	}

	// Green rolls out: check allows, switch switches and records.
	if err := tutorial.Serve(t.Context(), e.kube, e.manifests.Deployment(tutorial.Green, tutorial.Replicas, false)); err != nil {
		t.Fatal(err)
	}
	r = e.cutover(t, args("check", "--to", tutorial.Green)...)
	mustExit(t, r, 0)
	mustContain(t, r, "guard: allowed (the server-side dry run was reviewed by cutover-guard)")
	r = e.cutover(t, args("switch", "--to", tutorial.Green, "--yes", "--reason", "release v1.1")...)
	mustExit(t, r, 0)
	mustContain(t, r, "switch app-blue -> app-green", "guard: allowed", "-    name: app-blue", "+    name: app-green",
		"switched: httproute production/myapp now sends its traffic to app-green",
		"no Gateway controller has written status on this route")
	if got := e.backend(t); got != tutorial.Green {
		t.Fatalf("after the switch the route sends traffic to %s, want %s", got, tutorial.Green)
	}
	var prev []cutoverctl.RuleBackends
	if err := json.Unmarshal([]byte(e.route(t).Annotations[cutoverctl.AnnotationPreviousBackends]), &prev); err != nil ||
		len(prev) != 1 || prev[0].Backends[0].Name != tutorial.Blue {
		t.Fatalf("annotation %s = %+v (%v), want rule 0 on app-blue", cutoverctl.AnnotationPreviousBackends, prev, err)
	}

	// Blue is scaled to zero to save resources: rollback warns before
	// asking, with the command to scale it up, and the guard denies it.
	e.scaleBlueToZero(t)
	r = e.cutover(t, args("status")...)
	mustContain(t, r, "SCALED DOWN: no instant rollback to app-blue; scale it up first: "+tutorial.ScaleBlueUpCommand)
	r = e.cutover(t, args("rollback", "--yes")...)
	mustExit(t, r, 1)
	mustContain(t, r, "rollback app-green -> app-blue",
		"warning: app-blue is scaled down (deployment app-blue has 0 replicas)", "scale it up first: "+tutorial.ScaleBlueUpCommand,
		"guard: DENIED", "deployment app-blue is scaled to zero")
	if strings.Index(r.Output, "warning: app-blue is scaled down") > strings.Index(r.Output, "guard: DENIED") {
		t.Errorf("the scaled-down warning comes after the verdict:\n%s", r.Output)
	}
	if got := e.backend(t); got != tutorial.Green {
		t.Fatalf("after the denied rollback the route sends traffic to %s", got)
	}
	// The tutorial's rollback by hand is denied too, for real: an Event.
	if r := e.sh(t, tutorial.RollbackCommand); !r.Denied() {
		t.Fatalf("the tutorial's rollback while blue is at zero: want a denial:\n%s", r)
	}

	// Blue back: the rollback goes through.
	if r := e.sh(t, tutorial.ScaleBlueUpCommand); !r.OK() {
		t.Fatal(r)
	}
	if err := tutorial.WaitServing(t.Context(), e.kube, tutorial.Namespace, tutorial.Blue); err != nil {
		t.Fatal(err)
	}
	r = e.cutover(t, args("rollback", "--yes", "--reason", "errors on green")...)
	mustExit(t, r, 0)
	if got := e.backend(t); got != tutorial.Blue {
		t.Fatalf("after the rollback the route sends traffic to %s", got)
	}

	// history: both real denials, the switch and the rollback, newest first.
	var h []cutoverctl.HistoryEntry
	e.cutoverJSON(t, &h, args("history")...)
	// Events carry whole seconds: entries of one second may come in either
	// order, so the order is judged on the times, by the second.
	at := map[string]time.Time{}
	for _, x := range h {
		k := x.What + " " + strings.Join(x.To, ",")
		if _, seen := at[k]; !seen {
			at[k] = x.At.Truncate(time.Second)
		}
	}
	want := []string{"rollback app-blue", "CutoverDenied app-blue", "switch app-green", "CutoverDenied app-green"}
	for i, w := range want {
		if _, ok := at[w]; !ok {
			t.Errorf("history -o json has no %q: %+v", w, h)
		} else if i > 0 && at[w].After(at[want[i-1]]) {
			t.Errorf("history: %q (%s) is newer than %q (%s)", w, at[w], want[i-1], at[want[i-1]])
		}
	}
	for i := 1; i < len(h); i++ {
		if h[i].At.Truncate(time.Second).After(h[i-1].At.Truncate(time.Second)) {
			t.Errorf("history not newest first: %s before %s", h[i-1].At, h[i].At)
		}
	}
	for _, x := range h {
		if x.What == "switch" && (x.Reason != "release v1.1" || x.By == "") {
			t.Errorf("recorded switch = %+v, want reason %q and the user", x, "release v1.1")
		}
	}
	r = e.cutover(t, args("history")...)
	mustExit(t, r, 0)
	mustContain(t, r, "CutoverDenied -> app-green", "service production/app-green: deployment app-green is not ready",
		"CutoverDenied -> app-blue", "rollback app-green -> app-blue", "(reason: errors on green)")
}

func colorOf(t *testing.T, s *cutoverctl.Status, svc string) cutoverctl.BackendStatus {
	t.Helper()
	for _, b := range s.Backends {
		if b.Service == svc {
			return b
		}
	}
	t.Fatalf("status -o json has no backend %s: %+v", svc, s.Backends)
	return cutoverctl.BackendStatus{}
}
