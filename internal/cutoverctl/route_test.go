package cutoverctl

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// routeTo is the tutorial's route with one rule per entry of rules, each
// a list of name or name=weight backendRefs.
func routeTo(rules ...[]string) *gwv1.HTTPRoute {
	r := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "myapp", ResourceVersion: "42"}}
	for _, refs := range rules {
		var rule gwv1.HTTPRouteRule
		for _, ref := range refs {
			name, weight, hasWeight := strings.Cut(ref, "=")
			b := gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
				Name: gwv1.ObjectName(name), Port: ptr.To[gwv1.PortNumber](80),
			}}}
			if hasWeight {
				var w int32
				_, _ = fmt.Sscan(weight, &w)
				b.Weight = &w
			}
			rule.BackendRefs = append(rule.BackendRefs, b)
		}
		r.Spec.Rules = append(r.Spec.Rules, rule)
	}
	return r
}

// applied applies the patch buildPatch makes for plan p to route and
// returns the result, as the API server would.
func applied(t *testing.T, route *gwv1.HTTPRoute, p Plan) *gwv1.HTTPRoute {
	t.Helper()
	patch, err := buildPatch(route, p, Switch{At: time.Unix(0, 0).UTC(), Action: ActionSwitch, From: live(p.Before), To: live(p.After)})
	if err != nil {
		t.Fatal(err)
	}
	return applyPatch(t, route, patch)
}

func applyPatch(t *testing.T, route *gwv1.HTTPRoute, patch []byte) *gwv1.HTTPRoute {
	t.Helper()
	doc, err := json.Marshal(route)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("patch %s: %v", patch, err)
	}
	out, err := ops.Apply(doc)
	if err != nil {
		t.Fatalf("apply %s: %v", patch, err)
	}
	var r gwv1.HTTPRoute
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func traffic(r *gwv1.HTTPRoute) []string {
	var out []string
	for _, rb := range rulesOf(r) {
		out = append(out, describe(rb))
	}
	return out
}

func TestPlanSwitch(t *testing.T) {
	for name, tc := range map[string]struct {
		route   *gwv1.HTTPRoute
		to      string
		rule    int
		want    []string // traffic after, per rule
		wantErr string
		noop    bool
	}{
		"the tutorial's single backendRef gets its name replaced": {
			route: routeTo([]string{"app-blue"}), to: "app-green", rule: -1, want: []string{"app-green"},
		},
		"a split gives the target weight 100 and the others 0": {
			route: routeTo([]string{"app-blue=90", "app-green=10"}), to: "app-green", rule: -1, want: []string{"app-blue=0, app-green=100"},
		},
		"a split with weights unset gets them set": {
			route: routeTo([]string{"app-blue", "app-green"}), to: "app-blue", rule: -1, want: []string{"app-blue=100, app-green=0"},
		},
		"every rule switches unless --rule names one": {
			route: routeTo([]string{"app-blue"}, []string{"app-blue"}), to: "app-green", rule: 1, want: []string{"app-blue", "app-green"},
		},
		"a route already on the target changes nothing": {
			route: routeTo([]string{"app-green"}), to: "app-green", rule: -1, noop: true,
		},
		"a split without the target is refused": {
			route: routeTo([]string{"app-blue=1", "app-red=1"}), to: "app-green", rule: -1,
			wantErr: "rule 0 of httproute production/myapp splits traffic among app-blue, app-red; app-green is not one of them: add it to the rule first (weight 0), then switch",
		},
		"a rule that does not exist is refused": {
			route: routeTo([]string{"app-blue"}), to: "app-green", rule: 3,
			wantErr: "httproute production/myapp has 1 rule(s); --rule 3 does not exist",
		},
	} {
		t.Run(name, func(t *testing.T) {
			p, err := planSwitch(tc.route, tc.to, tc.rule)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.changed() == tc.noop {
				t.Fatalf("changed = %v, want %v", p.changed(), !tc.noop)
			}
			if tc.noop {
				return
			}
			if diff := cmp.Diff(tc.want, traffic(applied(t, tc.route, p))); diff != "" {
				t.Errorf("traffic after the patch (-want +got):\n%s", diff)
			}
		})
	}
}

// The patch of the tutorial's switch holds the tutorial's own operation,
// after tests of the resourceVersion and of the name it replaces.
func TestPatchIsTheTutorials(t *testing.T) {
	route := routeTo([]string{"app-blue"})
	p, err := planSwitch(route, "app-green", -1)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := buildPatch(route, p, newSwitch(p, ActionSwitch, "alice", "release\nv1.1", time.Unix(1700000000, 0)))
	if err != nil {
		t.Fatal(err)
	}
	var ops []jsonPatchOp
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatal(err)
	}
	want := []jsonPatchOp{
		{Op: "test", Path: "/metadata/resourceVersion", Value: "42"},
		{Op: "test", Path: "/spec/rules/0/backendRefs/0/name", Value: "app-blue"},
		{Op: "replace", Path: "/spec/rules/0/backendRefs/0/name", Value: "app-green"},
		{Op: "add", Path: "/metadata/annotations", Value: map[string]any{}},
	}
	if diff := cmp.Diff(want, ops[:4]); diff != "" {
		t.Errorf("patch (-want +got):\n%s", diff)
	}
	after := applyPatch(t, route, patch)
	var prev []RuleBackends
	if err := json.Unmarshal([]byte(after.Annotations[AnnotationPreviousBackends]), &prev); err != nil || len(prev) != 1 || prev[0].Backends[0].Name != "app-blue" {
		t.Errorf("%s = %s (%v), want rule 0 on app-blue", AnnotationPreviousBackends, after.Annotations[AnnotationPreviousBackends], err)
	}
	h := recordedHistory(&gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Annotations: after.Annotations}})
	want1 := []Switch{{At: time.Unix(1700000000, 0).UTC(), By: "alice", Action: ActionSwitch, From: []string{"app-blue"}, To: []string{"app-green"}, Reason: "release v1.1"}}
	if diff := cmp.Diff(want1, h); diff != "" {
		t.Errorf("recorded history (-want +got):\n%s", diff)
	}
}

// A route whose resourceVersion moved on is not patched: the patch's first
// test fails.
func TestPatchFailsOnAChangedRoute(t *testing.T) {
	route := routeTo([]string{"app-blue"})
	p, _ := planSwitch(route, "app-green", -1)
	patch, err := buildPatch(route, p, Switch{Action: ActionSwitch})
	if err != nil {
		t.Fatal(err)
	}
	newer := route.DeepCopy()
	newer.ResourceVersion = "43"
	doc, _ := json.Marshal(newer)
	ops, _ := jsonpatch.DecodePatch(patch)
	if _, err := ops.Apply(doc); err == nil {
		t.Fatal("the patch applied to a newer version of the route")
	}
}

func TestHistoryIsBounded(t *testing.T) {
	route := routeTo([]string{"app-blue"})
	for i := range MaxHistory + 5 {
		to := "app-green"
		if i%2 == 1 {
			to = "app-blue"
		}
		p, err := planSwitch(route, to, -1)
		if err != nil {
			t.Fatal(err)
		}
		route = applied(t, route, p)
		route.ResourceVersion = "42"
	}
	if h := recordedHistory(route); len(h) != MaxHistory {
		t.Errorf("history holds %d switches, want %d", len(h), MaxHistory)
	}
}

func TestPlanRollback(t *testing.T) {
	switched := func(from *gwv1.HTTPRoute, to string) *gwv1.HTTPRoute {
		p, err := planSwitch(from, to, -1)
		if err != nil {
			t.Fatal(err)
		}
		return applied(t, from, p)
	}
	t.Run("restores the recorded backends", func(t *testing.T) {
		for _, from := range []*gwv1.HTTPRoute{routeTo([]string{"app-blue"}), routeTo([]string{"app-blue=80", "app-green=20"})} {
			before := traffic(from)
			r := switched(from, "app-green")
			p, err := planRollback(r)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(before, traffic(applied(t, r, p))); diff != "" {
				t.Errorf("after the rollback (-want +got):\n%s", diff)
			}
		}
	})
	for name, tc := range map[string]struct {
		route   func() *gwv1.HTTPRoute
		wantErr string
	}{
		"no switch recorded": {
			route:   func() *gwv1.HTTPRoute { return routeTo([]string{"app-blue"}) },
			wantErr: "has no switch recorded",
		},
		"a record the plugin did not write": {
			route: func() *gwv1.HTTPRoute {
				r := routeTo([]string{"app-blue"})
				r.Annotations = map[string]string{AnnotationPreviousBackends: "app-green"}
				return r
			},
			wantErr: "is not what the plugin writes",
		},
		"a rule changed since": {
			route: func() *gwv1.HTTPRoute {
				r := switched(routeTo([]string{"app-blue"}), "app-green")
				r.Spec.Rules[0].BackendRefs = append(r.Spec.Rules[0].BackendRefs, r.Spec.Rules[0].BackendRefs[0])
				return r
			},
			wantErr: "changed since the last switch: its rule 0 no longer has the 1 backendRef(s) recorded",
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := planRollback(tc.route())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"release v1.1":            "release v1.1",
		"  two\n\tlines \x1b[31m": "two lines [31m",
		strings.Repeat("é", 200):  strings.Repeat("é", 128),
		"bad \xff utf8":           "bad \uFFFD utf8",
	} {
		if got := oneLine(in, 256); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSibling(t *testing.T) {
	blue := map[string]string{"app": "myapp", "version": "blue"}
	for name, tc := range map[string]struct {
		other map[string]string
		want  bool
	}{
		"the other color":      {map[string]string{"app": "myapp", "version": "green"}, true},
		"the same selector":    {map[string]string{"app": "myapp", "version": "blue"}, false},
		"another app":          {map[string]string{"app": "other", "version": "green"}, false},
		"other keys":           {map[string]string{"app": "myapp", "tier": "green"}, false},
		"no selector":          {nil, false},
		"one more key":         {map[string]string{"app": "myapp", "version": "green", "x": "y"}, false},
		"a subset of the keys": {map[string]string{"app": "myapp"}, false},
	} {
		if got := sibling(blue, tc.other); got != tc.want {
			t.Errorf("%s: sibling = %v, want %v", name, got, tc.want)
		}
	}
}

// Whoever can write the route can write the plugin's annotations: what
// history and status show of them is bounded and cannot drive a terminal,
// and rollback does not go to a name that is no Service name.
func TestRecordedAnnotationsAreUntrusted(t *testing.T) {
	route := routeTo([]string{"app-green"})
	var h []Switch
	for i := range 1000 {
		h = append(h, Switch{At: time.Unix(int64(i), 0).UTC(), Action: "switch\x1b[2J", By: "mallory\x1b]0;pwned\x07",
			From: []string{"app-blue\x1b[31m"}, To: []string{"app-green"}, Reason: strings.Repeat("x", 10000)})
	}
	raw, _ := json.Marshal(h)
	prev, _ := json.Marshal([]RuleBackends{{Rule: 0, Backends: []Backend{{Name: "app-blue\x1b[2J"}}}})
	route.Annotations = map[string]string{AnnotationSwitchHistory: string(raw), AnnotationPreviousBackends: string(prev)}

	got := recordedHistory(route)
	if len(got) != MaxHistory || !got[len(got)-1].At.Equal(time.Unix(999, 0)) {
		t.Fatalf("history kept %d entries ending %v, want the newest %d", len(got), got[len(got)-1].At, MaxHistory)
	}
	var b strings.Builder
	entries := make([]HistoryEntry, 0, len(got))
	for _, s := range got {
		entries = append(entries, HistoryEntry{At: s.At, What: s.Action, Source: "annotation", By: s.By, From: s.From, To: s.To, Reason: s.Reason})
	}
	renderHistory(&b, "myapp", "production", entries)
	if out := b.String(); strings.ContainsAny(out, "\x1b\x07") || len(out) > MaxHistory*(maxReason+400) {
		t.Errorf("history output carries control characters or is unbounded (%d bytes)", len(out))
	}
	_, err := planRollback(route)
	if err == nil || !strings.Contains(err.Error(), "which is no Service name") || strings.ContainsRune(err.Error(), 0x1b) {
		t.Errorf("rollback to a name with an escape: %v", err)
	}
}
