package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

func TestClassify(t *testing.T) {
	routes := schema.GroupResource{Group: "gateway.networking.k8s.io", Resource: "httproutes"}
	tests := map[string]struct {
		err  error
		want outcome
	}{
		"no error is an allowed update": {err: nil, want: allowed},
		"the guard's denial is a verdict": {
			err:  apierrors.NewForbidden(routes, "myapp", errors.New(`admission webhook "httproute.cutover-guard.dev" denied the request: service production/app-green: deployment app-green is not ready`)),
			want: denied,
		},
		"a forbidden that is not the guard's (RBAC) is not a verdict": {
			err:  apierrors.NewForbidden(routes, "myapp", errors.New(`user "bob" cannot patch resource "httproutes"`)),
			want: failed,
		},
		"a failed JSON patch test means another client switched first": {
			err:  apierrors.NewGenericServerResponse(422, "", schema.GroupResource{}, "", "testing value /spec/rules/0/backendRefs/0/name failed: test failed", 0, false),
			want: stale,
		},
		"an invalid route is not a stale switch": {
			err:  apierrors.NewInvalid(schema.GroupKind{Group: "gateway.networking.k8s.io", Kind: "HTTPRoute"}, "myapp", field.ErrorList{field.Invalid(field.NewPath("spec", "rules"), nil, "too many")}),
			want: failed,
		},
		"a webhook that cannot be called is not a verdict": {
			err:  apierrors.NewInternalError(errors.New(`failed calling webhook "httproute.cutover-guard.dev": context deadline exceeded`)),
			want: failed,
		},
		"a transport error is not a verdict": {err: errors.New("dial tcp 127.0.0.1:6443: connection refused"), want: failed},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, _ := classify(tc.err)
			if got != tc.want {
				t.Errorf("classify(%v) = %s, want %s", tc.err, got, tc.want)
			}
		})
	}
}

func TestTimelineCovering(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	tl := &timeline{}
	tl.add(window{from: at(10), to: at(20), why: whyGreenNotReady})
	tl.add(window{from: at(30), to: at(30), why: "empty: dropped"})
	tests := map[string]struct {
		from, to int
		want     string
	}{
		"a request wholly inside is covered":           {from: 11, to: 19, want: whyGreenNotReady},
		"a request on the window's edges is covered":   {from: 10, to: 20, want: whyGreenNotReady},
		"a request that began before is not":           {from: 9, to: 12, want: ""},
		"a request that ended after is not":            {from: 19, to: 21, want: ""},
		"a request outside every window is not":        {from: 25, to: 26, want: ""},
		"an empty window covers nothing, not even 30s": {from: 30, to: 30, want: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tl.covering(at(tc.from), at(tc.to)); got != tc.want {
				t.Errorf("covering(%d, %d) = %q, want %q", tc.from, tc.to, got, tc.want)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var ds []time.Duration
		for _, n := range ns {
			ds = append(ds, time.Duration(n)*time.Millisecond)
		}
		return ds
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // unsorted
	}
	tests := map[string]struct {
		ds   []time.Duration
		p    float64
		want time.Duration
	}{
		"no samples give zero":                   {ds: nil, p: 0.99, want: 0},
		"one sample is every percentile":         {ds: ms(7), p: 0.5, want: 7 * time.Millisecond},
		"the median of 1..100 is 50":             {ds: ms(hundred...), p: 0.5, want: 50 * time.Millisecond},
		"p99 of 1..100 is 99":                    {ds: ms(hundred...), p: 0.99, want: 99 * time.Millisecond},
		"p99 of three samples is the largest":    {ds: ms(3, 1, 2), p: 0.99, want: 3 * time.Millisecond},
		"the median of an even count is the low": {ds: ms(4, 1, 3, 2), p: 0.5, want: 2 * time.Millisecond},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := percentile(tc.ds, tc.p); got != tc.want {
				t.Errorf("percentile(%v, %v) = %s, want %s", tc.ds, tc.p, got, tc.want)
			}
		})
	}
}

func TestParseStats(t *testing.T) {
	page := strings.Join([]string{
		`# TYPE cutover_guard_decisions_total counter`,
		`cutover_guard_decisions_total{kind="HTTPRoute",path="fast",result="allowed"} 40`,
		`cutover_guard_decisions_total{kind="HTTPRoute",path="checked",result="allowed"} 3`,
		`cutover_guard_decisions_total{kind="HTTPRoute",path="checked",result="allowed_with_warnings"} 2`,
		`cutover_guard_decisions_total{kind="HTTPRoute",path="checked",result="denied"} 7`,
		`cutover_guard_decisions_total{kind="GRPCRoute",path="checked",result="denied"} 1`,
		`go_goroutines 83`,
		`process_resident_memory_bytes 4.194304e+07`,
	}, "\n")
	got := parseStats(page, time.Time{})
	want := guardStats{
		decisions: map[decisionKey]float64{
			{"allowed", "fast"}: 40, {"allowed", "checked"}: 5,
			{"denied", "fast"}: 0, {"denied", "checked"}: 8,
			{"error", "fast"}: 0, {"error", "checked"}: 0,
		},
		goroutines: 83,
		rssBytes:   40 << 20,
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(guardStats{}, decisionKey{})); diff != "" {
		t.Errorf("parseStats (-want +got):\n%s", diff)
	}
}

func TestViolations(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	req := func(kind string, o outcome, from, to int) sample {
		return sample{kind: kind, outcome: o, start: at(from), end: at(to), msg: "service production/app-green: not ready"}
	}
	stats := func(allowed, denied, goroutines float64) guardStats {
		return guardStats{decisions: map[decisionKey]float64{{"allowed", "checked"}: allowed, {"denied", "checked"}: denied}, goroutines: goroutines}
	}
	tests := map[string]struct {
		samples []sample
		end     guardStats
		open    int
		want    []string // a phrase of each violation, in order
	}{
		"a denied switch inside a window and an allowed one outside break nothing": {
			samples: []sample{req(kindSwitchGreen, denied, 11, 12), req(kindSwitchGreen, allowed, 21, 22)},
			end:     stats(1, 1, 100),
		},
		"a switch to green allowed inside a window is an unsafe cutover": {
			samples: []sample{req(kindSwitchGreen, allowed, 11, 12)},
			end:     stats(1, 0, 100),
			want:    []string{"switch to green allowed at 12:00:11.000 (took 1s) while green not ready"},
		},
		"a weight shift toward green allowed inside a window is an unsafe cutover": {
			samples: []sample{req(kindWeightGreen, allowed, 11, 12)},
			end:     stats(1, 0, 100),
			want:    []string{"weight shift to green allowed at 12:00:11.000 (took 1s) while green not ready"},
		},
		"a weight shift toward green denied inside a window breaks nothing": {
			samples: []sample{req(kindWeightGreen, denied, 11, 12)},
			end:     stats(0, 1, 100),
		},
		"a switch that straddles the window's end is not judged": {
			samples: []sample{req(kindSwitchGreen, allowed, 19, 21)},
			end:     stats(1, 0, 100),
		},
		"a denied edit breaks the fast path": {
			samples: []sample{req(kindLabel, denied, 1, 2)},
			end:     stats(0, 1, 100),
			want:    []string{"label edit denied"},
		},
		"a client error that is not a verdict is counted": {
			samples: []sample{req(kindWeightBlue, failed, 1, 2)},
			end:     stats(0, 0, 100),
			want:    []string{"1 client errors that are not verdicts"},
		},
		"the guard counting fewer decisions than the clients saw": {
			samples: []sample{req(kindSwitchBlue, allowed, 1, 2), req(kindSwitchBlue, allowed, 3, 4)},
			end:     stats(1, 0, 100),
			want:    []string{"the guard counted 1 allowed decisions, fewer than the 2"},
		},
		"label and annotation edits never reach the guard, so it counts none": {
			samples: []sample{req(kindLabel, allowed, 1, 2), req(kindAnnotation, allowed, 3, 4), req(kindWeightBlue, allowed, 5, 6)},
			end:     stats(1, 0, 100),
		},
		"goroutines that stay up and open database connections are leaks": {
			end:  stats(0, 0, 100+goroutineSlack+1),
			open: 2,
			want: []string{"goroutines after the load", "2 connections to green's database still open"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tl := &timeline{}
			tl.add(window{from: at(10), to: at(20), why: whyGreenNotReady})
			r := &results{samples: tc.samples, tl: tl, start: stats(0, 0, 100), end: tc.end, proxyOpen: tc.open}
			got := r.violations()
			if len(got) != len(tc.want) {
				t.Fatalf("violations = %q, want %d matching %q", got, len(tc.want), tc.want)
			}
			for i, phrase := range tc.want {
				if !strings.Contains(got[i], phrase) {
					t.Errorf("violation %d = %q, want it to contain %q", i, got[i], phrase)
				}
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	tests := map[string]struct {
		args    []string
		wantErr string
	}{
		"the defaults are valid":               {},
		"a zero duration is refused":           {args: []string{"-duration=0s"}, wantErr: "-duration must be positive"},
		"no switcher is refused":               {args: []string{"-switchers=0"}, wantErr: "-switchers must be at least 1"},
		"a fault phase under the cache's TTL":  {args: []string{"-fault-phase=5s"}, wantErr: "-fault-phase 5s is too short to tell a fault apart from a cached answer: use at least 13s"},
		"a shorter cache allows a short phase": {args: []string{"-fault-phase=5s", "-db-cache-ttl=0"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := parseFlags(tc.args)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("parseFlags(%q): %v", tc.args, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("parseFlags(%q) = %v, want an error containing %q", tc.args, err, tc.wantErr)
			}
		})
	}
}

func TestTopLines(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	const (
		prefix   = `admission webhook "httproute.cutover-guard.dev" denied the request: `
		notReady = "service production/app-green: deployment app-green is not ready (0/2 ready, 2 pending); wait for it"
		noEPs    = "service production/app-green: service app-green has no endpoints on port 80; check its pods"
	)
	denial := func(from int, lines ...string) sample {
		return sample{kind: kindSwitchGreen, outcome: denied, start: at(from), end: at(from + 1), msg: prefix + strings.Join(lines, "\n")}
	}
	tl := &timeline{}
	tl.add(window{from: at(10), to: at(20), why: whyGreenNotReady})
	r := &results{tl: tl, samples: []sample{
		denial(11, notReady, noEPs),
		denial(12, notReady),
		denial(30, noEPs), // outside the window
		{kind: kindLabel, outcome: denied, start: at(13), end: at(14), msg: prefix + noEPs},
	}}
	want := []string{`2x "` + notReady + `"`, `1x "` + noEPs + `"`}
	if diff := cmp.Diff(want, r.topLines(whyGreenNotReady, 5)); diff != "" {
		t.Errorf("topLines (-want +got):\n%s", diff)
	}
	if got := r.topLines(whyDatabaseFault+" blackhole", 5); len(got) != 0 {
		t.Errorf("topLines of a window with no switches = %q, want none", got)
	}
}

func TestJudgeLog(t *testing.T) {
	line := func(msg, name, target, rv string) string {
		return fmt.Sprintf(`{"level":"info","msg":%q,"namespace":"production","name":%q,"requestID":"r-%s","targets":["service production/%s:80"],"findings":[],"observed":["service production/%s@1","deployment production/%s@%s"]}`,
			msg, name, rv, target, target, target, rv)
	}
	log := strings.Join([]string{
		"+ cutover-guard --port=1",
		line("cutover allowed", "myapp", "app-green", "10"),
		line("cutover with_warnings", "myapp", "app-green", "11"),
		line("cutover allowed", "myapp", "app-green", "12"),
		line("cutover allowed", "myapp", "app-green", "99"),
		line("cutover denied", "myapp", "app-green", "11"),
		line("cutover allowed", "myapp", "app-blue", "11"),
		line("cutover allowed", "myapp-weights", "app-green", "11"),
	}, "\n")
	path := filepath.Join(t.TempDir(), "cutover-guard.log")
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	ready := tutorial.MustLoad().Deployment(tutorial.Green, 2, false)
	ready.Generation, ready.Status = 1, appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2}
	pending := ready.DeepCopy()
	pending.Status.ReadyReplicas, pending.Status.AvailableReplicas = 0, 0
	h := &history{ready: map[string]bool{}, state: map[string]string{}}
	for rv, d := range map[string]*appsv1.Deployment{"10": ready, "11": ready, "12": pending} {
		d = d.DeepCopy()
		d.ResourceVersion = rv
		h.record(d)
	}
	got, err := judgeLog(path, h)
	if err != nil {
		t.Fatal(err)
	}
	if got.allowed != 4 {
		t.Errorf("allowed switches to green = %d, want 4 (denials, other targets and other routes are not judged)", got.allowed)
	}
	if len(got.notReady) != 1 || !strings.Contains(got.notReady[0], "r-12") || !strings.Contains(got.notReady[0], "ready 0") {
		t.Errorf("not ready = %q, want request r-12 with its state", got.notReady)
	}
	if len(got.unknown) != 1 || !strings.Contains(got.unknown[0], `resourceVersion "99"`) {
		t.Errorf("unknown = %q, want the one that read resourceVersion 99", got.unknown)
	}
}

func TestPrint(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tl := &timeline{}
	tl.add(window{from: at(0), to: at(10_000), why: whyGreenNotReady})
	stats := func(allowed, denied float64) guardStats {
		return guardStats{decisions: map[decisionKey]float64{{"allowed", "fast"}: allowed, {"denied", "checked"}: denied}, goroutines: 30, rssBytes: 32 << 20}
	}
	tests := map[string]struct {
		samples []sample
		want    []string // regular expressions
	}{
		"a clean run says every invariant held": {
			samples: []sample{
				{kind: kindSwitchGreen, outcome: denied, start: at(100), end: at(200), msg: `admission webhook "x" denied the request: service production/app-green: not ready`},
				{kind: kindLabel, outcome: allowed, start: at(20_000), end: at(20_010)},
			},
			want: []string{
				`switch to green +1 +0 +1 +0 +0 +100ms +100ms`,
				`label edit +1 +1 +0 +0 +0 +10ms +10ms`,
				`allowed +1 +0 +1 +1`,
				`green not ready +1 +1 +0`,
				`green not ready: 1x "service production/app-green: not ready"`,
				`every invariant held`,
			},
		},
		"a broken invariant is printed": {
			samples: []sample{{kind: kindSwitchGreen, outcome: allowed, start: at(100), end: at(200)}},
			want:    []string{`INVARIANTS BROKEN \(1\):`, `switch to green allowed at 12:00:00\.100`},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := &results{samples: tc.samples, tl: tl, start: stats(0, 0), end: stats(1, 1)}
			var b strings.Builder
			if err := r.print(&b, settings{}, time.Minute); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !regexp.MustCompile(w).MatchString(b.String()) {
					t.Errorf("report does not match %q:\n%s", w, b.String())
				}
			}
		})
	}
}

// The hostile tenant's invariants: its attacks all denied, its probes
// within a namespace's share, and the tutorial tenant's switches inside the
// deadline and never refused for load.
func TestHostileViolations(t *testing.T) {
	at := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s := func(kind string, o outcome, took time.Duration, msg string) sample {
		return sample{kind: kind, outcome: o, start: at, end: at.Add(took), msg: msg}
	}
	tests := map[string]struct {
		samples []sample
		peak    int
		want    []string
	}{
		"attacks denied, the tenant's switches in time": {
			samples: []sample{s(kindHostileFlood, denied, 2*time.Second, "x"), s(kindHostileBusy, denied, time.Millisecond, "namespace soak-hostile has 8 cutover checks in flight"), s(kindSwitchGreen, allowed, time.Second, "")},
			peak:    8,
		},
		"an attack allowed": {
			samples: []sample{s(kindHostileBomb, allowed, time.Second, "")},
			want:    []string{"hostile: env bomb allowed at 12:00:00.000: the hostile tenant's switch must be denied"},
		},
		"a switch of the tutorial tenant past the deadline": {
			samples: []sample{s(kindSwitchBlue, denied, 11*time.Second, "x")},
			want:    []string{"1 of the tutorial tenant's switches took longer than the API server's 10s deadline while the hostile tenant attacked, e.g. switch to blue at 12:00:00.000 took 11s"},
		},
		"a switch of the tutorial tenant refused for load": {
			samples: []sample{s(kindSwitchGreen, denied, time.Millisecond, "namespace production has 8 cutover checks in flight; the guard checks at most 8")},
			want:    []string{"1 of the tutorial tenant's switches were refused for load, e.g. namespace production has 8 cutover checks in flight; the guard checks at most 8"},
		},
		"more connections than a namespace's share": {
			peak: 17,
			want: []string{"the hostile tenant held 17 connections open at once, more than a namespace's 16 probe slots"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := &results{samples: tc.samples, silentPeak: tc.peak}
			if diff := cmp.Diff(tc.want, r.hostileViolations()); diff != "" {
				t.Errorf("violations (-want +got):\n%s", diff)
			}
		})
	}
}
