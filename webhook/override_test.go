package webhook

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
)

// overrideHarness is the real handlers over the tutorial's objects (green
// not ready), with --override-groups set, recording logs.
type overrideHarness struct {
	*harness
	mu   sync.Mutex
	logs []string
}

func newOverrideHarness(t *testing.T, overriders []string) *overrideHarness {
	t.Helper()
	h := &overrideHarness{}
	logger := funcr.New(func(prefix, args string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.logs = append(h.logs, prefix+" "+args)
	}, funcr.Options{})
	h.harness = startHarness(t, tutorialObjects(), harnessConfig{options: func(o *Options) {
		o.OverrideGroups, o.Logger = overriders, &logger
	}})
	return h
}

// postBody sends an AdmissionReview to the HTTPRoute path and decodes the response.
func (h *overrideHarness) postBody(t *testing.T, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	return postReview(t, h.server.URL+PathHTTPRoute, body)
}

func (h *overrideHarness) logLines() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.logs...)
}

// overrideReview is a testdata AdmissionReview sent by user (in groups),
// with the override annotation set to newReason on the new object and
// oldReason on the old one (nil: no annotation).
func overrideReview(t *testing.T, file, user string, groups []string, oldReason, newReason *string) []byte {
	t.Helper()
	return reviewVariant(t, file, func(r map[string]any) {
		info := map[string]any{"username": user}
		if groups != nil {
			info["groups"] = groups
		}
		request(r)["userInfo"] = info
		annotate := func(key string, reason *string) {
			if reason != nil {
				meta := routeIn(r, key)["metadata"].(map[string]any)
				meta["annotations"] = map[string]any{AnnotationOverride: *reason, "team": "payments"}
			}
		}
		annotate("oldObject", oldReason)
		annotate("object", newReason)
	})
}

func str(s string) *string { return &s }

const (
	reasonINC   = "INC-1234: green verified by hand"
	notReadyMsg = "service production/app-green: deployment app-green is not ready (0/2 ready, 2 pending); wait for: kubectl rollout status deployment/app-green -n production"
	noEndpoints = "service production/app-green: service app-green has no ready endpoints on port 80 (0 of 1 ready); check its pods: kubectl get pods -n production -l app=myapp,version=green"
	greenAudit  = "deployment/NotReady,endpoints/NoReadyEndpoints,database/DatabaseNotChecked"
)

func TestOverride(t *testing.T) {
	overriders := []string{"sre", "release-bot"}
	overriddenWarnings := func(user string) []string {
		return []string{
			"cutover-guard overridden by " + user + ": 2 finding(s) would deny this switch",
			truncate("overridden: "+notReadyMsg, maxWarning),
			truncate("overridden: "+noEndpoints, maxWarning),
		}
	}
	overriddenEvent := func(user string) string {
		return "Warning CutoverOverridden cutover overridden by " + user + ` with reason "` + reasonINC + `"; the checks found:` + "\n" + deniedGreen
	}
	tests := map[string]struct {
		file        string
		overriders  []string // default overriders
		nobody      bool     // --override-groups empty
		user        string
		groups      []string
		old, new    *string
		wantAllowed bool
		wantMessage string
		// wantWarnings are the first warnings (the override's), in order.
		wantWarnings []string
		wantEvents   []string
		wantAudit    map[string]string
		wantNoReads  bool
		wantDecision string // the decision result on the checked path
		wantOverride string // the cutover_guard_overrides_total result, or none
		wantLog      []string
	}{
		"a member of an override group lets the denied cutover through, and it is recorded everywhere": {
			file: "cutover-to-green.json", user: "alice", groups: []string{"system:authenticated", "sre"}, new: str(reasonINC),
			wantAllowed: true, wantWarnings: overriddenWarnings("alice"), wantEvents: []string{overriddenEvent("alice")},
			wantAudit: map[string]string{"decision": "overridden", "targets": "service production/app-green:80", "findings": greenAudit,
				"override": reasonINC, "overriddenBy": "alice", "overrideResult": "overridden"},
			wantDecision: ResultOverridden, wantOverride: OverrideApplied,
			wantLog: []string{`"msg"="cutover overridden"`, `"overrideUser"="alice"`, `"overrideReason"="` + reasonINC + `"`, `"fieldManager"="kubectl-patch"`},
		},
		"a user listed by name lets the denied cutover through": {
			file: "cutover-to-green.json", user: "release-bot", new: str(reasonINC),
			wantAllowed: true, wantWarnings: overriddenWarnings("release-bot"), wantEvents: []string{overriddenEvent("release-bot")},
			wantAudit: map[string]string{"decision": "overridden", "targets": "service production/app-green:80", "findings": greenAudit,
				"override": reasonINC, "overriddenBy": "release-bot", "overrideResult": "overridden"},
			wantDecision: ResultOverridden, wantOverride: OverrideApplied,
		},
		"a user in no override group is refused before any check runs": {
			file: "cutover-to-green.json", user: "mallory", groups: []string{"dev", "system:authenticated"}, new: str(reasonINC),
			wantMessage: "httproute production/myapp: cutover-guard.dev/override is set by user mallory, who is not in --override-groups (sre, release-bot); " +
				"ask one of them to make this switch, or remove the annotation",
			wantEvents: []string{"Warning CutoverDenied httproute production/myapp: cutover-guard.dev/override is set by user mallory, who is not in --override-groups (sre, release-bot); " +
				"ask one of them to make this switch, or remove the annotation"},
			wantAudit:   map[string]string{"decision": "denied", "targets": "service production/app-green:80", "override": reasonINC, "overrideResult": "refused_not_allowed"},
			wantNoReads: true, wantDecision: ResultDenied, wantOverride: OverrideNotAllowed,
			wantLog: []string{`"msg"="cutover override refused"`, `"overrideUser"="mallory"`},
		},
		"a user in no override group is refused even when the checks would allow the switch": {
			file: "rollback-to-blue.json", user: "mallory", new: str(reasonINC),
			wantMessage: "httproute production/myapp: cutover-guard.dev/override is set by user mallory, who is not in --override-groups (sre, release-bot); " +
				"ask one of them to make this switch, or remove the annotation",
			wantEvents: []string{"Warning CutoverDenied httproute production/myapp: cutover-guard.dev/override is set by user mallory, who is not in --override-groups (sre, release-bot); " +
				"ask one of them to make this switch, or remove the annotation"},
			wantAudit:   map[string]string{"decision": "denied", "targets": "service production/app-blue:80", "override": reasonINC, "overrideResult": "refused_not_allowed"},
			wantNoReads: true, wantDecision: ResultDenied, wantOverride: OverrideNotAllowed,
		},
		"nobody may override when --override-groups is empty": {
			file: "cutover-to-green.json", nobody: true, user: "alice", groups: []string{"sre"}, new: str(reasonINC),
			wantMessage: "httproute production/myapp: cutover-guard.dev/override is set by user alice, but no one may override the guard (--override-groups is empty); " +
				"remove the annotation and fix what the checks find, or ask the guard's operators to list you in --override-groups",
			wantEvents: []string{"Warning CutoverDenied httproute production/myapp: cutover-guard.dev/override is set by user alice, but no one may override the guard (--override-groups is empty); " +
				"remove the annotation and fix what the checks find, or ask the guard's operators to list you in --override-groups"},
			wantAudit:   map[string]string{"decision": "denied", "targets": "service production/app-green:80", "override": reasonINC, "overrideResult": "refused_not_allowed"},
			wantNoReads: true, wantDecision: ResultDenied, wantOverride: OverrideNotAllowed,
		},
		"an allowed user with a blank reason is refused": {
			file: "cutover-to-green.json", user: "alice", groups: []string{"sre"}, new: str(" \n\t "),
			wantMessage: "httproute production/myapp: cutover-guard.dev/override is set by user alice without a reason; " +
				`set it to why this switch must go through despite the checks (e.g. "INC-1234: green verified by hand"), or remove the annotation`,
			wantEvents: []string{"Warning CutoverDenied httproute production/myapp: cutover-guard.dev/override is set by user alice without a reason; " +
				`set it to why this switch must go through despite the checks (e.g. "INC-1234: green verified by hand"), or remove the annotation`},
			wantAudit:   map[string]string{"decision": "denied", "targets": "service production/app-green:80", "overrideResult": "refused_no_reason"},
			wantNoReads: true, wantDecision: ResultDenied, wantOverride: OverrideNoReason,
		},
		"an annotation left from an earlier override is ignored and the checks deny as usual": {
			file: "cutover-to-green.json", user: "alice", groups: []string{"sre"}, old: str(reasonINC), new: str(reasonINC),
			wantMessage: deniedGreen,
			wantWarnings: []string{
				"cutover-guard.dev/override is left from an earlier update and was ignored; set a new reason to override",
			},
			wantEvents: []string{"Warning CutoverDenied " + deniedGreen},
			wantAudit: map[string]string{"decision": "denied", "targets": "service production/app-green:80", "findings": greenAudit,
				"overrideResult": "ignored_leftover"},
			wantDecision: ResultDenied, wantOverride: OverrideLeftover,
		},
		"a changed reason is a new override": {
			file: "cutover-to-green.json", user: "alice", groups: []string{"sre"}, old: str("INC-1000: an older incident"), new: str(reasonINC),
			wantAllowed: true, wantWarnings: overriddenWarnings("alice"), wantEvents: []string{overriddenEvent("alice")},
			wantAudit: map[string]string{"decision": "overridden", "targets": "service production/app-green:80", "findings": greenAudit,
				"override": reasonINC, "overriddenBy": "alice", "overrideResult": "overridden"},
			wantDecision: ResultOverridden, wantOverride: OverrideApplied,
		},
		"an override on a switch the checks allow was not needed": {
			file: "rollback-to-blue.json", user: "alice", groups: []string{"sre"}, new: str(reasonINC),
			wantAllowed: true,
			wantWarnings: []string{
				"cutover-guard.dev/override was not needed: the checks allow this switch; nothing was overridden",
			},
			wantAudit: map[string]string{"decision": "allowed_with_warnings", "targets": "service production/app-blue:80", "findings": "database/DatabaseNotChecked",
				"override": reasonINC, "overrideResult": "not_needed"},
			wantDecision: ResultWarned, wantOverride: OverrideNotNeeded,
		},
		"a dry-run override is allowed and audited but records no Event": {
			file: "cutover-to-green-dry-run.json", user: "alice", groups: []string{"sre"}, new: str(reasonINC),
			wantAllowed: true, wantWarnings: overriddenWarnings("alice"),
			wantAudit: map[string]string{"decision": "overridden", "targets": "service production/app-green:80", "findings": greenAudit,
				"override": reasonINC, "overriddenBy": "alice", "overrideResult": "overridden"},
			wantDecision: ResultOverridden, wantOverride: OverrideApplied,
		},
		"an annotation set on an update that switches nothing is not looked at": {
			file: "labels-only.json", user: "mallory", new: str(reasonINC),
			wantAllowed: true, wantNoReads: true,
		},
		"a cutover without the annotation is denied as usual": {
			file: "cutover-to-green.json", user: "alice", groups: []string{"sre"},
			wantMessage: deniedGreen, wantEvents: []string{"Warning CutoverDenied " + deniedGreen},
			wantAudit:    map[string]string{"decision": "denied", "targets": "service production/app-green:80", "findings": greenAudit},
			wantDecision: ResultDenied,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			groups := overriders
			if tc.nobody {
				groups = nil
			}
			h := newOverrideHarness(t, groups)
			resp := h.postBody(t, overrideReview(t, tc.file, tc.user, tc.groups, tc.old, tc.new))
			if resp.Allowed != tc.wantAllowed {
				t.Errorf("allowed = %v, want %v (result %+v)", resp.Allowed, tc.wantAllowed, resp.Result)
			}
			if !tc.wantAllowed {
				if resp.Result == nil || resp.Result.Code != http.StatusForbidden || resp.Result.Message != tc.wantMessage {
					t.Errorf("result = %+v, want 403 with message:\n%s", resp.Result, tc.wantMessage)
				}
			}
			got := resp.Warnings
			if len(got) > len(tc.wantWarnings) {
				got = got[:len(tc.wantWarnings)]
			}
			if diff := cmp.Diff(tc.wantWarnings, got); len(tc.wantWarnings) > 0 && diff != "" {
				t.Errorf("first warnings (-want +got):\n%s\nall: %q", diff, resp.Warnings)
			}
			if tc.wantWarnings == nil {
				for _, w := range resp.Warnings {
					if strings.Contains(w, "overrid") {
						t.Errorf("unexpected override warning %q", w)
					}
				}
			}
			for _, w := range resp.Warnings {
				if len(w) > maxWarning {
					t.Errorf("warning of %d characters, want at most %d: %q", len(w), maxWarning, w)
				}
			}
			if diff := cmp.Diff(tc.wantEvents, h.events()); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantAudit, resp.AuditAnnotations); diff != "" {
				t.Errorf("audit annotations (-want +got):\n%s", diff)
			}
			if tc.wantNoReads && h.reads.Load() != 0 {
				t.Errorf("%d reads from the API server, want none", h.reads.Load())
			}
			for _, result := range []string{ResultAllowed, ResultWarned, ResultDenied, ResultError, ResultOverridden} {
				want := 0.0
				if result == tc.wantDecision {
					want = 1
				}
				if got := testutil.ToFloat64(h.metrics.decisions.WithLabelValues(KindHTTPRoute, result, "checked")); got != want {
					t.Errorf("cutover_guard_decisions_total{result=%q,path=checked} = %v, want %v", result, got, want)
				}
			}
			for _, result := range []string{OverrideApplied, OverrideNotNeeded, OverrideNotAllowed, OverrideNoReason, OverrideLeftover} {
				want := 0.0
				if result == tc.wantOverride {
					want = 1
				}
				if got := testutil.ToFloat64(h.metrics.overrides.WithLabelValues(KindHTTPRoute, result)); got != want {
					t.Errorf("cutover_guard_overrides_total{result=%q} = %v, want %v", result, got, want)
				}
			}
			logs := strings.Join(h.logLines(), "\n")
			for _, want := range tc.wantLog {
				if !strings.Contains(logs, want) {
					t.Errorf("logs lack %s:\n%s", want, logs)
				}
			}
		})
	}
}

// A reason is user text: newlines cannot forge a second line in an Event,
// a log line or the audit log, and a long one is bounded everywhere.
func TestOverrideReasonIsOneBoundedLine(t *testing.T) {
	reason := "INC-9\nWarning CutoverDenied forged line\r\n\t" + strings.Repeat("é", 600)
	h := newOverrideHarness(t, []string{"sre"})
	resp := h.postBody(t, overrideReview(t, "cutover-to-green.json", "alice", []string{"sre"}, nil, &reason))
	if !resp.Allowed {
		t.Fatalf("denied: %+v", resp.Result)
	}
	got := resp.AuditAnnotations["override"]
	if strings.ContainsAny(got, "\r\n\t") || len(got) > maxOverrideReason || !strings.HasPrefix(got, "INC-9 Warning CutoverDenied forged line éé") || !strings.HasSuffix(got, "é...") {
		t.Errorf("audit override = %q (%d bytes), want one line of at most %d bytes", got, len(got), maxOverrideReason)
	}
	evs := h.events()
	if len(evs) != 1 {
		t.Fatalf("events = %q, want one", evs)
	}
	header, findings, _ := strings.Cut(evs[0], "\n")
	if want := `Warning CutoverOverridden cutover overridden by alice with reason "` + got + `"; the checks found:`; header != want {
		t.Errorf("event first line:\n got %q\nwant %q", header, want)
	}
	if !strings.HasPrefix(findings, notReadyMsg) {
		t.Errorf("event findings = %q, want them to begin with %q", findings, notReadyMsg)
	}
	for _, line := range h.logLines() {
		if strings.Contains(line, "forged line") && strings.Contains(line, "\n") {
			t.Errorf("log line spans lines: %q", line)
		}
	}
}

func TestOverrideOneLine(t *testing.T) {
	tests := map[string]struct {
		in   string
		n    int
		want string
	}{
		"plain text is kept":                            {"green verified", 64, "green verified"},
		"newlines, tabs and runs of space become one":   {"  a\n\n\tb  \r\nc ", 64, "a b c"},
		"control characters are dropped as space":       {"a\x00\x1bb\u2028c", 64, "a b c"},
		"invalid UTF-8 is replaced":                     {"a\xffb", 64, "a\uFFFDb"},
		"a long text is cut on a rune boundary":         {strings.Repeat("é", 10), 10, "ééé..."},
		"a text of exactly the bound is kept":           {"abcdefghij", 10, "abcdefghij"},
		"blank text is empty":                           {" \t\n", 64, ""},
		"a text one over the bound loses its last four": {"abcdefghijk", 10, "abcdefg..."},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := oneLine(tc.in, tc.n); got != tc.want {
				t.Errorf("oneLine(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
			}
		})
	}
}

// An override annotation on an update that switches no traffic changes
// nothing: the fast path answers it exactly as the full path would.
func TestOverrideWithoutSwitchTakesTheFastPath(t *testing.T) {
	body := overrideReview(t, "labels-only.json", "mallory", nil, nil, str(reasonINC))
	full := serveOnce(t, false, PathHTTPRoute, "application/json", body)
	fast := serveOnce(t, true, PathHTTPRoute, "application/json", body)
	if fast.reachedInner {
		t.Error("the fast path passed the update on")
	}
	full.reachedInner, fast.reachedInner = false, false
	if diff := cmp.Diff(full, fast, cmp.AllowUnexported(answered{})); diff != "" {
		t.Errorf("fast path differs from the full path (-full +fast):\n%s", diff)
	}
	if !strings.Contains(fast.body, `"allowed":true`) {
		t.Errorf("answer is not an allow: %s", fast.body)
	}
}
