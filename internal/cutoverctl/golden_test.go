package cutoverctl

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the current output")

// golden compares got with testdata/name.golden (or rewrites it with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}

// times replaces RFC 3339 times, which the clock chooses, by a placeholder.
var times = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)

const notReady = "service production/app-green: deployment app-green is not ready (0/2 ready, 2 pending); wait for: kubectl rollout status deployment/app-green -n production"

func TestStatusOutput(t *testing.T) {
	for name, tc := range map[string]struct {
		greenReady, blueReplicas int32
		guard                    bool
		denyGreen                bool
		parents                  bool
	}{
		"status-green-pending":    {greenReady: 0, blueReplicas: 2, guard: true, denyGreen: true},
		"status-green-ready":      {greenReady: 2, blueReplicas: 2, guard: true, parents: true},
		"status-no-guard":         {greenReady: 2, blueReplicas: 2},
		"status-blue-scaled-down": {greenReady: 2, blueReplicas: 0, guard: true},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			f := newFake(t, tc.greenReady, tc.blueReplicas, tc.guard)
			if tc.denyGreen {
				f.denied["app-green"] = []string{notReady}
			}
			e := f.env()
			if tc.blueReplicas == 0 {
				// Traffic is on green; blue is idle and scaled down.
				switchTo(t, f, "app-green")
				f.denied["app-blue"] = []string{"service production/app-blue: deployment app-blue is scaled to zero"}
			}
			if tc.parents {
				setParents(t, f.c)
			}
			s, err := e.status(ctx, "myapp")
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			renderStatus(&b, s)
			golden(t, name, times.ReplaceAllString(b.String(), "TIME"))
		})
	}
}

// switchTo switches the fake's route with the plugin, as a user would.
func switchTo(t *testing.T, f *fakeCluster, to string) {
	t.Helper()
	s := &switcher{e: f.env(), o: switchOptions{route: "myapp", action: ActionSwitch, to: to, rule: -1, yes: true, reason: "release v1.1", waitTimeout: time.Second}}
	if _, code, err := s.run(t.Context()); err != nil || code != ExitOK {
		t.Fatalf("switch to %s: exit %d, %v", to, code, err)
	}
}

func setParents(t *testing.T, c client.Client) {
	t.Helper()
	var r gwv1.HTTPRoute
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: "production", Name: "myapp"}, &r); err != nil {
		t.Fatal(err)
	}
	r.Status.Parents = []gwv1.RouteParentStatus{{
		ParentRef: gwv1.ParentReference{Name: "public"}, ControllerName: "example.com/gateway",
		Conditions: []metav1.Condition{
			{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", ObservedGeneration: r.Generation},
			{Type: "ResolvedRefs", Status: metav1.ConditionFalse, Reason: "BackendNotFound", ObservedGeneration: r.Generation - 1},
		},
	}}
	if err := c.Status().Update(t.Context(), &r); err != nil {
		t.Fatal(err)
	}
}

func TestCheckOutput(t *testing.T) {
	for name, v := range map[string]*Verdict{
		"check-allowed": {Allowed: true, Reviewed: true, Warnings: []string{"service production/app-green: database not checked"}},
		"check-denied": {Webhook: "httproute.cutover-guard.dev", Reviewed: true, Findings: []string{
			notReady, "service production/app-green: service app-green has no endpoints on port 80",
		}},
		"check-undecided": {Allowed: true, Undecided: notReviewed("kube-system")},
	} {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			renderCheck(&b, &CheckResult{Route: "myapp", Namespace: "production", From: []string{"app-blue"}, To: []string{"app-green"}, Verdict: v})
			golden(t, name, b.String())
		})
	}
}

func TestHistoryOutput(t *testing.T) {
	at := func(s int) time.Time { return time.Date(2026, 12, 2, 6, 0, s, 0, time.UTC) }
	denied := &corev1.Event{
		Reason: ReasonCutoverDenied, Count: 2, LastTimestamp: metav1.NewTime(at(1)),
		Message: notReady + "\nservice production/app-green: service app-green has no endpoints on port 80",
	}
	overridden := &corev1.Event{
		Reason: ReasonCutoverOverridden, Count: 1, LastTimestamp: metav1.NewTime(at(3)),
		Message: `cutover overridden by alice with reason "INC-1234: \"green\" verified by hand"; the checks found:` + "\n" + notReady,
	}
	h := []HistoryEntry{entryOfEvent(denied), entryOfEvent(overridden),
		{At: at(3).Add(400 * time.Millisecond), What: ActionSwitch, Source: "annotation", By: "alice", From: []string{"app-blue"}, To: []string{"app-green"}, Reason: "release v1.1"},
		{At: at(5), What: ActionRollback, Source: "annotation", By: "bob", From: []string{"app-green"}, To: []string{"app-blue"}},
	}
	sortNewestFirst(h)
	var b bytes.Buffer
	renderHistory(&b, "myapp", "production", h)
	golden(t, "history", b.String())
	if h[3].By != "" || h[2].By != "alice" || h[2].Reason != `INC-1234: "green" verified by hand` {
		t.Errorf("events read as %+v", h)
	}

	b.Reset()
	renderHistory(&b, "myapp", "production", nil)
	golden(t, "history-empty", b.String())
}

// The switch's human output, step by step: the verdict, the diff, the
// question, the switch and the route's status.
func TestSwitchOutput(t *testing.T) {
	for name, tc := range map[string]struct {
		greenReady int32
		deny       bool
		answer     string
		wantCode   int
		wantPatch  int
	}{
		"switch-allowed-confirmed":     {greenReady: 2, answer: "y\n", wantCode: ExitOK, wantPatch: 1},
		"switch-allowed-not-confirmed": {greenReady: 2, answer: "\n", wantCode: ExitError},
		"switch-denied":                {greenReady: 0, deny: true, wantCode: ExitDenied},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFake(t, tc.greenReady, 2, true)
			if tc.deny {
				f.denied["app-green"] = []string{notReady}
			}
			var out bytes.Buffer
			s := &switcher{e: f.env(), out: &out, o: switchOptions{route: "myapp", action: ActionSwitch, to: "app-green", rule: -1, waitTimeout: time.Second}}
			s.ask = asker{in: strings.NewReader(tc.answer), out: &out}.ask
			_, code, err := s.run(t.Context())
			if err != nil {
				out.WriteString("error: " + err.Error() + "\n")
			}
			if code != tc.wantCode || f.patches != tc.wantPatch {
				t.Errorf("exit %d with %d write(s), want %d with %d", code, f.patches, tc.wantCode, tc.wantPatch)
			}
			golden(t, name, out.String())
		})
	}
}

// A rollback to a scaled-down blue warns before the verdict, with the
// command that scales blue up.
func TestRollbackOutputWarnsWhenScaledDown(t *testing.T) {
	f := newFake(t, 2, 2, true)
	switchTo(t, f, "app-green")
	var d = deployment("app-blue", "blue", 0, 0)
	if err := f.c.Update(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	f.denied["app-blue"] = []string{"service production/app-blue: deployment app-blue is scaled to zero"}
	var out bytes.Buffer
	s := &switcher{e: f.env(), out: &out, o: switchOptions{route: "myapp", action: ActionRollback, yes: true, waitTimeout: time.Second}}
	_, code, err := s.run(t.Context())
	if err != nil || code != ExitDenied {
		t.Fatalf("rollback: exit %d, %v; want %d", code, err, ExitDenied)
	}
	golden(t, "rollback-scaled-down", out.String())
}
