package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// guardStats is what the guard's /metrics said at one moment.
type guardStats struct {
	at time.Time
	// decisions counts cutover_guard_decisions_total by result (allowed
	// includes allowed_with_warnings) and path (fast, checked).
	decisions  map[decisionKey]float64
	goroutines float64
	rssBytes   float64
}

// decisionKey is a result and a path of cutover_guard_decisions_total.
type decisionKey struct{ result, path string }

// Results and paths of cutover_guard_decisions_total, as the guard labels them.
var (
	metricResults = map[string][]string{
		"allowed": {"allowed", "allowed_with_warnings"},
		"denied":  {"denied"},
		"error":   {"error"},
	}
	metricPaths = []string{"fast", "checked"}
)

func (e *env) snapshot(ctx context.Context) (guardStats, error) {
	page, err := e.guard.Metrics(ctx)
	if err != nil {
		return guardStats{}, fmt.Errorf("guard /metrics: %w", err)
	}
	return parseStats(page, time.Now()), nil
}

func parseStats(page string, at time.Time) guardStats {
	g := guardStats{at: at, decisions: map[decisionKey]float64{}}
	for result, labels := range metricResults {
		for _, path := range metricPaths {
			for _, l := range labels {
				g.decisions[decisionKey{result, path}] += tutorial.MetricSum(page, "cutover_guard_decisions_total", map[string]string{"result": l, "path": path})
			}
		}
	}
	g.goroutines = tutorial.MetricSum(page, "go_goroutines", nil)
	g.rssBytes = tutorial.MetricSum(page, "process_resident_memory_bytes", nil)
	return g
}

// decided is the guard's count of result over both paths between two
// snapshots.
func decided(before, after guardStats, result string) float64 {
	var n float64
	for _, p := range metricPaths {
		k := decisionKey{result, p}
		n += after.decisions[k] - before.decisions[k]
	}
	return n
}

// results is everything the run measured.
type results struct {
	samples []sample
	tl      *timeline
	// start is taken once the objects are set up, before the load; end
	// once the load has stopped and the guard has drained.
	start, end guardStats
	// maxGoroutines and maxRSS are the highest values sampled during the load.
	maxGoroutines, maxRSS float64
	// proxyAccepted and proxyOpen are the fault proxy's connection counts
	// at the end.
	proxyAccepted int64
	proxyOpen     int
	// began is when the load began; loadBefore the load average then.
	began      time.Time
	loadBefore string
	// log is the guard's log judged against the watch's history of green;
	// logErr says why it could not be.
	log    logJudgement
	logErr error
	// faultErr is an error of the fault makers (not of the guard).
	faultErr error
	// silentPeak and silentAccepted are the connections the hostile
	// tenant's silent listener saw open at once, and in all.
	silentPeak, silentAccepted int
}

// maxTenantProbes is the most probes one namespace may have in flight:
// half of --db-max-in-flight's default 32.
const maxTenantProbes = 16

// hostileViolations are the invariants the hostile tenant's attacks must
// not break: its switches are all denied (a verdict, never an error),
// its probes never hold more than its share of the slots, and the
// tutorial tenant's switches are answered inside the deadline and never
// refused for another namespace's load.
func (r *results) hostileViolations() []string {
	var v []string
	late, crowded := 0, 0
	var lateEx, crowdedEx string
	for _, s := range r.samples {
		took := s.end.Sub(s.start)
		switch {
		case isHostile(s.kind) && s.outcome == allowed:
			v = append(v, fmt.Sprintf("%s allowed at %s: the hostile tenant's switch must be denied", s.kind, s.start.Format("15:04:05.000")))
		case isHostile(s.kind):
		case (s.kind == kindSwitchGreen || s.kind == kindSwitchBlue) && took > admissionDeadline:
			late++
			lateEx = fmt.Sprintf("%s at %s took %s", s.kind, s.start.Format("15:04:05.000"), took.Round(time.Millisecond))
		case s.outcome == denied && (strings.Contains(s.msg, "cutover checks in flight") || strings.Contains(s.msg, "distinct connection strings checked in the last minute")):
			crowded++
			crowdedEx = firstLine(s.msg)
		}
	}
	if late > 0 {
		v = append(v, fmt.Sprintf("%d of the tutorial tenant's switches took longer than the API server's %s deadline while the hostile tenant attacked, e.g. %s", late, admissionDeadline, lateEx))
	}
	if crowded > 0 {
		v = append(v, fmt.Sprintf("%d of the tutorial tenant's switches were refused for load, e.g. %s", crowded, crowdedEx))
	}
	if r.silentPeak > maxTenantProbes {
		v = append(v, fmt.Sprintf("the hostile tenant held %d connections open at once, more than a namespace's %d probe slots", r.silentPeak, maxTenantProbes))
	}
	return v
}

// goroutineSlack is how far above its count before the load the guard's
// goroutines may stay once the load has stopped (idle connections of the
// API server, timers): a leak of one per request is thousands.
const goroutineSlack = 50

// violations are the invariants the run broke, one sentence each.
func (r *results) violations() []string {
	var v []string
	for _, s := range r.samples {
		if (s.kind == kindSwitchGreen || s.kind == kindWeightGreen) && s.outcome == allowed {
			if why := r.tl.covering(s.start, s.end); why != "" {
				v = append(v, fmt.Sprintf("%s allowed at %s (took %s) while %s: the guard let an unsafe cutover through",
					s.kind, s.start.Format("15:04:05.000"), s.end.Sub(s.start).Round(time.Millisecond), why))
			}
		}
		if s.outcome == denied && (s.kind == kindLabel || s.kind == kindAnnotation || s.kind == kindWeightBlue) {
			v = append(v, fmt.Sprintf("%s denied: it grows no unready backend's share and must be allowed (%s)", s.kind, firstLine(s.msg)))
		}
	}
	if msgs := r.messages(failed); len(msgs) > 0 {
		n := r.count("", failed)
		v = append(v, fmt.Sprintf("%d client errors that are not verdicts, e.g.:\n    %s", n, strings.Join(msgs, "\n    ")))
	}
	for _, res := range []struct {
		name string
		o    outcome
	}{{"allowed", allowed}, {"denied", denied}} {
		client, guard := float64(r.countSentToGuard(res.o)), decided(r.start, r.end, res.name)
		if guard < client {
			v = append(v, fmt.Sprintf("the guard counted %.0f %s decisions, fewer than the %.0f the clients saw: a decision went unrecorded, or came from elsewhere", guard, res.name, client))
		}
	}
	if n := len(r.log.notReady); n > 0 {
		v = append(v, fmt.Sprintf("the guard's log has %d allowed switches to green that read it not fully Ready, e.g. %s", n, r.log.notReady[0]))
	}
	if n := len(r.log.unknown); n > 0 {
		v = append(v, fmt.Sprintf("the guard's log has %d allowed switches to green that read a version of it the watch never saw, e.g. %s", n, r.log.unknown[0]))
	}
	if r.logErr != nil {
		v = append(v, r.logErr.Error())
	}
	if n := decided(r.start, r.end, "error"); n > 0 {
		v = append(v, fmt.Sprintf("the guard counted %.0f internal errors: see its log", n))
	}
	if r.end.goroutines > r.start.goroutines+goroutineSlack {
		v = append(v, fmt.Sprintf("the guard has %.0f goroutines after the load, %.0f before: more than %d above, so they grow with the load", r.end.goroutines, r.start.goroutines, goroutineSlack))
	}
	if r.proxyOpen > 0 {
		v = append(v, fmt.Sprintf("%d connections to green's database still open through the proxy after the load: the guard leaks database connections", r.proxyOpen))
	}
	if r.faultErr != nil {
		v = append(v, fmt.Sprintf("the faults could not be driven: %v", r.faultErr))
	}
	return append(v, r.hostileViolations()...)
}

// notes are findings that break no invariant but deserve a look.
func (r *results) notes() []string {
	var n []string
	if msgs := r.messagesOf(kindSwitchBlue, denied); len(msgs) > 0 {
		n = append(n, fmt.Sprintf("%d switches to blue (always Ready, database direct) denied, e.g.:\n    %s", r.count(kindSwitchBlue, denied), strings.Join(msgs, "\n    ")))
	}
	for _, why := range r.windowKinds() {
		if r.inWindow(why, "") == 0 {
			n = append(n, fmt.Sprintf("no switch to green was tried while %s: run longer (-duration) to cover it", why))
		}
	}
	return n
}

// windowKinds are the reasons the fault makers could give a window.
func (r *results) windowKinds() []string {
	w := []string{whyGreenNotReady}
	for _, o := range (settings{}).faultPhases() {
		if o.Fault.String() != "forward" && !slices.Contains(w, whyDatabaseFault+" "+o.Fault.String()) {
			w = append(w, whyDatabaseFault+" "+o.Fault.String())
		}
	}
	return w
}

// inWindow counts the switches to green wholly inside a window for why
// with outcome o ("" for any).
func (r *results) inWindow(why string, o outcome) int {
	n := 0
	for _, s := range r.samples {
		if s.kind == kindSwitchGreen && (o == "" || s.outcome == o) && r.tl.covering(s.start, s.end) == why {
			n++
		}
	}
	return n
}

// topLines returns the n lines most often in the denials of switches to
// green inside windows for why, with their counts: what the clients were
// told.
func (r *results) topLines(why string, n int) []string {
	seen := map[string]int{}
	for _, s := range r.samples {
		if s.kind != kindSwitchGreen || s.outcome != denied || r.tl.covering(s.start, s.end) != why {
			continue
		}
		_, text, _ := strings.Cut(s.msg, "denied the request: ")
		for l := range strings.SplitSeq(text, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				seen[l]++
			}
		}
	}
	lines := slices.Collect(maps.Keys(seen))
	slices.SortFunc(lines, func(a, b string) int { return cmp.Or(seen[b]-seen[a], strings.Compare(a, b)) })
	var out []string
	for _, l := range lines[:min(n, len(lines))] {
		out = append(out, fmt.Sprintf("%dx %q", seen[l], l))
	}
	return out
}

// countSentToGuard counts the requests with outcome o that the installed
// webhook configuration sends to the guard: switches and weight shifts,
// which change the spec; label and annotation edits never reach it.
func (r *results) countSentToGuard(o outcome) int {
	return r.count("", o) - r.count(kindLabel, o) - r.count(kindAnnotation, o)
}

// countKinds counts the samples of kinds with outcome o.
func (r *results) countKinds(kinds []string, o outcome) int {
	n := 0
	for _, k := range kinds {
		n += r.count(k, o)
	}
	return n
}

func (r *results) count(kind string, o outcome) int {
	n := 0
	for _, s := range r.samples {
		if (kind == "" || s.kind == kind) && s.outcome == o {
			n++
		}
	}
	return n
}

func (r *results) messages(o outcome) []string { return r.messagesOf("", o) }

// messagesOf returns up to 5 distinct first lines of the messages of
// requests of kind ("" for any) with outcome o.
func (r *results) messagesOf(kind string, o outcome) []string {
	var out []string
	for _, s := range r.samples {
		if (kind == "" || s.kind == kind) && s.outcome == o {
			if m := s.kind + ": " + firstLine(s.msg); !slices.Contains(out, m) && len(out) < 5 {
				out = append(out, m)
			}
		}
	}
	return out
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// percentile returns the p-th percentile (0 < p <= 1) of ds, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(float64(len(s))*p)) - 1
	return s[max(0, min(i, len(s)-1))]
}

// print writes the report.
func (r *results) print(w io.Writer, s settings, took time.Duration) error {
	b := &strings.Builder{}
	fmt.Fprintf(b, "\nsoak: %s UTC, %d CPUs, load average %s at the start of the load, %s at the end\n", r.began.UTC().Format("2006-01-02 15:04"), runtime.NumCPU(), r.loadBefore, loadAvg())
	fmt.Fprintf(b, "soak: %s of load (%d switchers, %d editors, %d shifters), green flapping every %s, database faults every %s\n\n",
		took.Round(time.Second), s.switchers, s.editors, s.shifters, s.flap, s.faultPhase)
	rows := [][]string{{"kind", "requests", "allowed", "denied", "stale", "failed", "p50", "p99"}}
	for _, k := range kinds {
		var ds []time.Duration
		for _, x := range r.samples {
			if x.kind == k {
				ds = append(ds, x.end.Sub(x.start))
			}
		}
		if len(ds) == 0 {
			continue
		}
		rows = append(rows, []string{k, itoa(len(ds)), itoa(r.count(k, allowed)), itoa(r.count(k, denied)), itoa(r.count(k, stale)), itoa(r.count(k, failed)),
			round(percentile(ds, 0.5)).String(), round(percentile(ds, 0.99)).String()})
	}
	rows = append(rows, []string{"all", itoa(len(r.samples)), itoa(r.count("", allowed)), itoa(r.count("", denied)), itoa(r.count("", stale)), itoa(r.count("", failed)), "", ""})
	table(b, rows)

	fmt.Fprintf(b, "\nguard decisions (cutover_guard_decisions_total during the load):\n")
	rows = [][]string{{"result", "fast", "checked", "all", "clients saw"}}
	for _, res := range []struct {
		name string
		o    outcome
	}{{"allowed", allowed}, {"denied", denied}, {"error", failed}} {
		k := func(p string) float64 {
			return r.end.decisions[decisionKey{res.name, p}] - r.start.decisions[decisionKey{res.name, p}]
		}
		rows = append(rows, []string{res.name, ftoa(k("fast")), ftoa(k("checked")), ftoa(decided(r.start, r.end, res.name)), itoa(r.count("", res.o))})
	}
	table(b, rows)
	fmt.Fprintf(b, "(the API server runs admission again when it retries a patch, after its write conflicted or its cached copy of the route was stale,\n so the guard may count more decisions than the clients saw; never fewer)\n")

	fmt.Fprintf(b, "\nswitches to green wholly inside a window where they must be denied:\n")
	rows = [][]string{{"window", "switches", "denied", "allowed"}}
	for _, why := range r.windowKinds() {
		rows = append(rows, []string{why, itoa(r.inWindow(why, "")), itoa(r.inWindow(why, denied)), itoa(r.inWindow(why, allowed))})
	}
	table(b, rows)
	for _, why := range r.windowKinds() {
		for _, l := range r.topLines(why, 2) {
			fmt.Fprintf(b, "  %s: %s\n", why, l)
		}
	}
	var phases []string
	for k, n := range r.tl.counts {
		phases = append(phases, fmt.Sprintf("%s %d", k, n))
	}
	slices.Sort(phases)
	fmt.Fprintf(b, "phases entered: %s\n", strings.Join(phases, ", "))
	fmt.Fprintf(b, "guard log: %d decisions allowed a switch to green; by a watch's history of deployment %s, %d read it not fully Ready, %d read a version the watch never saw\n",
		r.log.allowed, tutorial.Green, len(r.log.notReady), len(r.log.unknown))
	fmt.Fprintf(b, "proxy: %d connections to green's database accepted, %d open at the end\n", r.proxyAccepted, r.proxyOpen)

	var tenant []time.Duration
	for _, x := range r.samples {
		if x.kind == kindSwitchGreen || x.kind == kindSwitchBlue {
			tenant = append(tenant, x.end.Sub(x.start))
		}
	}
	hostile := 0
	for _, x := range r.samples {
		if isHostile(x.kind) {
			hostile++
		}
	}
	fmt.Fprintf(b, "\nhostile tenant (namespace %s): %d attacks, %d denied, %d allowed, %d failed; its silent listener: %d connections, at most %d open at once (bound %d)\n",
		hostileNamespace, hostile, r.countKinds(hostileKinds, denied), r.countKinds(hostileKinds, allowed), r.countKinds(hostileKinds, failed), r.silentAccepted, r.silentPeak, maxTenantProbes)
	fmt.Fprintf(b, "tutorial tenant's switches meanwhile: p50 %s, p99 %s, slowest %s (deadline %s)\n",
		round(percentile(tenant, 0.5)), round(percentile(tenant, 0.99)), round(percentile(tenant, 1)), admissionDeadline)

	fmt.Fprintf(b, "\nguard process (go_goroutines, process_resident_memory_bytes):\n")
	fmt.Fprintf(b, "  goroutines: %.0f at the start, %.0f at most during the load, %.0f at the end\n", r.start.goroutines, r.maxGoroutines, r.end.goroutines)
	fmt.Fprintf(b, "  RSS:        %s at the start, %s at most during the load, %s at the end\n", mib(r.start.rssBytes), mib(r.maxRSS), mib(r.end.rssBytes))

	if n := r.notes(); len(n) > 0 {
		fmt.Fprintf(b, "\nnotes:\n  %s\n", strings.Join(n, "\n  "))
	}
	if v := r.violations(); len(v) > 0 {
		fmt.Fprintf(b, "\nINVARIANTS BROKEN (%d):\n  %s\n", len(v), strings.Join(v, "\n  "))
	} else {
		fmt.Fprintf(b, "\nevery invariant held: no unsafe switch allowed (by the fault windows and by the guard's log), no edit denied, no client error that is not a verdict, the guard's counts cover the clients', goroutines and database connections back down, every attack of the hostile tenant denied while the others' switches were answered inside the deadline\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// table renders rows, the first a header, right-aligned into b.
func table(b *strings.Builder, rows [][]string) {
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, row := range rows {
		// A tabwriter over a strings.Builder cannot fail.
		_, _ = io.WriteString(tw, strings.Join(row, "\t")+"\t\n")
	}
	_ = tw.Flush()
}

func itoa(n int) string     { return strconv.Itoa(n) }
func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', 0, 64) }

func round(d time.Duration) time.Duration {
	return d.Round(100 * time.Microsecond)
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

// loadAvg is the 1, 5 and 15 minute load average: the machine may be shared.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " / ")
	}
	return "unknown"
}
