package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/checks"
)

// evaluatorFunc is an Evaluator that answers as the function does.
type evaluatorFunc func(ctx context.Context, targets []checks.Target) (checks.Result, error)

func (f evaluatorFunc) Evaluate(ctx context.Context, targets []checks.Target) (checks.Result, error) {
	return f(ctx, targets)
}

// tutorialRoute is the tutorial's route myapp sending all traffic to
// backend, with the override annotation set to reason (nil: none) and
// labels.
func tutorialRoute(backend string, reason *string, labels map[string]string) *gwv1.HTTPRoute {
	r := &gwv1.HTTPRoute{
		TypeMeta:   metav1.TypeMeta{APIVersion: gwv1.GroupVersion.String(), Kind: KindHTTPRoute},
		ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "myapp", Labels: labels},
		Spec: gwv1.HTTPRouteSpec{Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{
			BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(backend), Port: ptr.To[gwv1.PortNumber](80)},
		}}}}}},
	}
	if reason != nil {
		r.Annotations = map[string]string{AnnotationOverride: *reason}
	}
	return r
}

// published is what publish recorded for one decision, read back from each
// place it records to.
type published struct {
	decisions map[string]float64 // "kind/result/path" -> count
	timings   map[string]uint64  // "kind/path" -> observations
	findings  map[string]float64 // "check/reason/severity" -> count
	overrides map[string]float64 // "kind/result" -> count
	audit     map[string]string
	logs      []map[string]any
	events    []string
}

// TestPublishedOutputsAgree builds one Decision of every kind from a real
// write, publishes it, and checks that the metrics, the audit annotations,
// the log line and the Event it produced say the same thing.
func TestPublishedOutputsAgree(t *testing.T) {
	guard := &checks.Guard{Reader: fake.NewClientBuilder().WithScheme(Scheme()).WithObjects(tutorialObjects()...).Build()}
	noFindings := evaluatorFunc(func(context.Context, []checks.Target) (checks.Result, error) { return checks.Result{}, nil })
	failing := evaluatorFunc(func(context.Context, []checks.Target) (checks.Result, error) {
		return checks.Result{}, errors.New("reading service production/app-green: the server is currently unable to handle the request")
	})
	tests := map[string]struct {
		guard       Evaluator
		old, new    *gwv1.HTTPRoute
		user        string
		groups      []string
		dryRun      bool
		wantResult  string
		wantPath    string
		wantOutcome string // override outcome; "" for none
		wantEvent   string // Event reason; "" for none
		wantMsg     string // log message
	}{
		"a label-only update is allowed on the fast path": {
			guard: guard, old: tutorialRoute("app-blue", nil, nil), new: tutorialRoute("app-blue", nil, map[string]string{"team": "payments"}),
			wantResult: ResultAllowed, wantPath: pathFast, wantMsg: "no backend's share of traffic grows; allowed",
		},
		"a switch the checks find nothing about is allowed": {
			guard: noFindings, old: tutorialRoute("app-blue", nil, nil), new: tutorialRoute("app-green", nil, nil),
			wantResult: ResultAllowed, wantPath: pathChecked, wantMsg: "cutover allowed",
		},
		"the rollback to a ready blue is allowed with warnings": {
			guard: guard, old: tutorialRoute("app-green", nil, nil), new: tutorialRoute("app-blue", nil, nil),
			wantResult: ResultWarned, wantPath: pathChecked, wantMsg: "cutover with_warnings",
		},
		"the cutover to an unready green is denied with an Event": {
			guard: guard, old: tutorialRoute("app-blue", nil, nil), new: tutorialRoute("app-green", nil, nil),
			wantResult: ResultDenied, wantPath: pathChecked, wantEvent: ReasonCutoverDenied, wantMsg: "cutover denied",
		},
		"a dry-run cutover is denied without an Event": {
			guard: guard, old: tutorialRoute("app-blue", nil, nil), new: tutorialRoute("app-green", nil, nil), dryRun: true,
			wantResult: ResultDenied, wantPath: pathChecked, wantMsg: "cutover denied",
		},
		"an override by an allowed user lets the cutover through with an Event": {
			guard: guard, old: tutorialRoute("app-blue", nil, nil), new: tutorialRoute("app-green", str(reasonINC), nil), user: "alice", groups: []string{"sre"},
			wantResult: ResultOverridden, wantPath: pathChecked, wantOutcome: OverrideApplied, wantEvent: ReasonCutoverOverridden, wantMsg: "cutover overridden",
		},
		"a dry-run override lets the cutover through without an Event": {
			guard: guard, old: tutorialRoute("app-blue", nil, nil), new: tutorialRoute("app-green", str(reasonINC), nil), user: "alice", groups: []string{"sre"}, dryRun: true,
			wantResult: ResultOverridden, wantPath: pathChecked, wantOutcome: OverrideApplied, wantMsg: "cutover overridden",
		},
		"an override by a user in no override group is refused before any check": {
			guard: failing, old: tutorialRoute("app-blue", nil, nil), new: tutorialRoute("app-green", str(reasonINC), nil), user: "mallory",
			wantResult: ResultDenied, wantPath: pathChecked, wantOutcome: OverrideNotAllowed, wantEvent: ReasonCutoverDenied, wantMsg: "cutover override refused",
		},
		"an override without a reason is refused before any check": {
			guard: failing, old: tutorialRoute("app-blue", nil, nil), new: tutorialRoute("app-green", str(" "), nil), user: "alice", groups: []string{"sre"},
			wantResult: ResultDenied, wantPath: pathChecked, wantOutcome: OverrideNoReason, wantEvent: ReasonCutoverDenied, wantMsg: "cutover override refused",
		},
		"an override the checks did not need is noted": {
			guard: guard, old: tutorialRoute("app-green", nil, nil), new: tutorialRoute("app-blue", str(reasonINC), nil), user: "alice", groups: []string{"sre"},
			wantResult: ResultWarned, wantPath: pathChecked, wantOutcome: OverrideNotNeeded, wantMsg: "cutover with_warnings",
		},
		"an annotation left from an earlier update is ignored and the checks deny": {
			guard: guard, old: tutorialRoute("app-blue", str(reasonINC), nil), new: tutorialRoute("app-green", str(reasonINC), nil), user: "alice", groups: []string{"sre"},
			wantResult: ResultDenied, wantPath: pathChecked, wantOutcome: OverrideLeftover, wantEvent: ReasonCutoverDenied, wantMsg: "cutover denied",
		},
		"a switch the checks could not decide is an error without an Event": {
			guard: failing, old: tutorialRoute("app-blue", nil, nil), new: tutorialRoute("app-green", nil, nil),
			wantResult: ResultError, wantPath: pathChecked, wantMsg: "could not check targets",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			recorder := events.NewFakeRecorder(4)
			v := &Validator[*gwv1.HTTPRoute]{Kind: KindHTTPRoute, Reduce: HTTPRouteOf, Guard: tc.guard, Recorder: recorder,
				Metrics: NewMetrics(reg), OverrideGroups: []string{"sre"}}
			var out published
			var mu sync.Mutex
			logger := funcr.NewJSON(func(obj string) {
				var line map[string]any
				if err := json.Unmarshal([]byte(obj), &line); err != nil {
					t.Errorf("log line is not JSON: %v: %s", err, obj)
				}
				mu.Lock()
				defer mu.Unlock()
				out.logs = append(out.logs, line)
			}, funcr.Options{Verbosity: 1})
			a := &audit{}
			req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				Operation: admissionv1.Update, DryRun: ptr.To(tc.dryRun), UserInfo: authenticationv1.UserInfo{Username: tc.user, Groups: tc.groups},
			}}
			ctx := admission.NewContextWithRequest(logf.IntoContext(withAudit(t.Context(), a), logger), req)

			d := v.judge(ctx, tc.old, tc.new)
			v.publisher().publish(ctx, d)
			warnings, err := d.response()

			out.audit = a.annotations()
			out.decisions, out.timings, out.findings, out.overrides = gatherDecision(t, reg)
			close(recorder.Events)
			for e := range recorder.Events {
				out.events = append(out.events, e)
			}

			// The decision is what the case expects.
			if d.Result != tc.wantResult || d.Path != tc.wantPath || d.OverrideOutcome != tc.wantOutcome {
				t.Fatalf("decision %s/%s override %q, want %s/%s override %q", d.Result, d.Path, d.OverrideOutcome, tc.wantResult, tc.wantPath, tc.wantOutcome)
			}
			checkAgreement(t, d, out, warnings, err)
			if len(out.logs) == 1 && out.logs[0]["msg"] != tc.wantMsg {
				t.Errorf("log message %q, want %q", out.logs[0]["msg"], tc.wantMsg)
			}
			if got := eventReason(out.events); got != tc.wantEvent {
				t.Errorf("Event reason %q, want %q (events %q)", got, tc.wantEvent, out.events)
			}
		})
	}
}

// checkAgreement fails t unless the four outputs of publishing d, and the
// response, agree with each other and with d.
func checkAgreement(t *testing.T, d Decision, out published, warnings admission.Warnings, err error) {
	t.Helper()
	kind := KindHTTPRoute

	// Metrics: one decision, one timing, of d's result and path.
	if diff := cmp.Diff(map[string]float64{kind + "/" + d.Result + "/" + d.Path: 1}, out.decisions); diff != "" {
		t.Errorf("cutover_guard_decisions_total (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]uint64{kind + "/" + d.Path: 1}, out.timings); diff != "" {
		t.Errorf("cutover_guard_decision_duration_seconds observations (-want +got):\n%s", diff)
	}

	// One log line.
	if len(out.logs) != 1 {
		t.Fatalf("%d log lines, want 1: %v", len(out.logs), out.logs)
	}
	line := out.logs[0]

	if d.Path == pathFast {
		if out.audit != nil || len(out.events) > 0 || len(out.findings) > 0 || len(out.overrides) > 0 {
			t.Errorf("fast path recorded audit %v, events %q, findings %v, overrides %v; want none", out.audit, out.events, out.findings, out.overrides)
		}
		if line["level"] != float64(1) || err != nil {
			t.Errorf("fast path: log level %v (want 1), error %v (want none)", line["level"], err)
		}
		return
	}

	// Audit decision = metric result = log message.
	if out.audit["decision"] != d.Result {
		t.Errorf("audit decision %q, metric result %q", out.audit["decision"], d.Result)
	}
	msg, _ := line["msg"].(string)
	switch {
	case d.Result == ResultError:
		if msg != "could not check targets" || line["error"] == nil {
			t.Errorf("an error decision logged %q with error %v", msg, line["error"])
		}
	case d.refused():
		if msg != "cutover override refused" {
			t.Errorf("a refused override logged %q", msg)
		}
	case msg != "cutover "+strings.TrimPrefix(out.audit["decision"], "allowed_"):
		t.Errorf("log message %q for audit decision %q", msg, out.audit["decision"])
	}

	// The log's check timings name each check that ran, in the order run.
	if d.Result != ResultError && !d.refused() {
		got := strs(line["checks"])
		if len(got) != len(d.Checks.Runs) {
			t.Errorf("log checks %q, want one per run (%d)", got, len(d.Checks.Runs))
		}
		for i, r := range d.Checks.Runs {
			if i < len(got) && !strings.HasPrefix(got[i], r.Target.Service.Name+" "+string(r.Check)+" ") {
				t.Errorf("log checks[%d] = %q, want the time of %s's %s check", i, got[i], r.Target.Service.Name, r.Check)
			}
		}
	}

	// Audit targets = log targets.
	if got := strings.Join(strs(line["targets"]), ","); got != out.audit["targets"] || got == "" {
		t.Errorf("log targets %q, audit targets %q", got, out.audit["targets"])
	}

	// Audit findings = log findings = findings metric.
	var fromAudit []string
	if f := out.audit["findings"]; f != "" {
		fromAudit = strings.Split(f, ",")
	}
	var fromMetric []string
	for key, n := range out.findings {
		check, rest, _ := strings.Cut(key, "/")
		reason, _, _ := strings.Cut(rest, "/")
		for range int(n) {
			fromMetric = append(fromMetric, check+"/"+reason)
		}
	}
	if d.Result != ResultError && !d.refused() {
		if diff := cmp.Diff(sorted(fromAudit), sorted(strs(line["findings"]))); diff != "" {
			t.Errorf("findings, audit (-) and log (+):\n%s", diff)
		}
	}
	if diff := cmp.Diff(sorted(fromAudit), sorted(fromMetric)); diff != "" {
		t.Errorf("findings, audit (-) and cutover_guard_findings_total (+):\n%s", diff)
	}

	// Audit overrideResult = log override = overrides metric.
	wantOverrides := map[string]float64{}
	if o := out.audit["overrideResult"]; o != "" {
		wantOverrides[KindHTTPRoute+"/"+o] = 1
	}
	if diff := cmp.Diff(wantOverrides, out.overrides); diff != "" {
		t.Errorf("cutover_guard_overrides_total against audit overrideResult %q (-audit +metric):\n%s", out.audit["overrideResult"], diff)
	}
	if got, _ := line["override"].(string); got != out.audit["overrideResult"] {
		t.Errorf("log override %q, audit overrideResult %q", got, out.audit["overrideResult"])
	}
	if got, _ := line["overrideReason"].(string); got != out.audit["override"] {
		t.Errorf("log overrideReason %q, audit override %q", got, out.audit["override"])
	}
	if by := out.audit["overriddenBy"]; by != "" && line["overrideUser"] != by {
		t.Errorf("log overrideUser %v, audit overriddenBy %q", line["overrideUser"], by)
	}

	// The Event: one on a denial or an override unless dry-run, with the
	// response's message; none otherwise.
	wantEvent := (d.Result == ResultDenied || d.Result == ResultOverridden) && !d.DryRun
	if wantEvent != (len(out.events) == 1) || len(out.events) > 1 {
		t.Fatalf("events %q for audit decision %q (dry-run %v)", out.events, out.audit["decision"], d.DryRun)
	}
	switch d.Result {
	case ResultDenied:
		if err == nil {
			t.Fatal("a denial answered no error")
		}
		if wantEvent && out.events[0] != "Warning "+ReasonCutoverDenied+" "+truncate(err.Error(), maxEventNote) {
			t.Errorf("Event %q does not carry the denial %q", out.events[0], err)
		}
	case ResultOverridden:
		if err != nil {
			t.Errorf("an override answered %v", err)
		}
		if !slices.ContainsFunc(warnings, func(w string) bool {
			return strings.HasPrefix(w, "cutover-guard overridden by "+out.audit["overriddenBy"])
		}) {
			t.Errorf("warnings %q do not say who overrode", warnings)
		}
		if wantEvent && !strings.HasPrefix(out.events[0], "Warning "+ReasonCutoverOverridden+" cutover overridden by "+out.audit["overriddenBy"]+" with reason "+`"`+out.audit["override"]+`"`) {
			t.Errorf("Event %q does not say who overrode and why (audit %v)", out.events[0], out.audit)
		}
	case ResultError:
		if err == nil || !strings.HasPrefix(err.Error(), "internal error: ") {
			t.Errorf("an error decision answered %v", err)
		}
	default:
		if err != nil {
			t.Errorf("an allowed decision answered %v", err)
		}
		if (d.Result == ResultWarned) != (len(warnings) > 0) {
			t.Errorf("result %q with warnings %q", d.Result, warnings)
		}
	}
}

// gatherDecision reads the decision metrics from reg.
func gatherDecision(t *testing.T, reg *prometheus.Registry) (decisions map[string]float64, timings map[string]uint64, findings, overrides map[string]float64) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	decisions, timings, findings, overrides = map[string]float64{}, map[string]uint64{}, map[string]float64{}, map[string]float64{}
	key := func(m *dto.Metric, names ...string) string {
		vals := make([]string, len(names))
		for i, n := range names {
			for _, l := range m.GetLabel() {
				if l.GetName() == n {
					vals[i] = l.GetValue()
				}
			}
		}
		return strings.Join(vals, "/")
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "cutover_guard_decisions_total":
				decisions[key(m, "kind", "result", "path")] += m.GetCounter().GetValue()
			case "cutover_guard_decision_duration_seconds":
				timings[key(m, "kind", "path")] += m.GetHistogram().GetSampleCount()
			case "cutover_guard_findings_total":
				findings[key(m, "check", "reason", "severity")] += m.GetCounter().GetValue()
			case "cutover_guard_overrides_total":
				overrides[key(m, "kind", "result")] += m.GetCounter().GetValue()
			}
		}
	}
	return decisions, timings, findings, overrides
}

// eventReason is the reason of the one Event in events; "" for none.
func eventReason(events []string) string {
	if len(events) != 1 {
		return ""
	}
	fields := strings.SplitN(events[0], " ", 3)
	if len(fields) < 2 {
		return ""
	}
	return fields[1]
}

// strs is a JSON array of strings as a slice; nil for anything else.
func strs(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, e := range list {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
