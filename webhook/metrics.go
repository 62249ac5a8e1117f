package webhook

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/cutover-guard/cutover-guard/checks"
	"github.com/cutover-guard/cutover-guard/checks/probe"
)

// Metrics are the guard's Prometheus metrics. Every label value is bounded:
// kinds, results, checks and reasons come from fixed sets, never from names
// users choose.
type Metrics struct {
	decisions     *prometheus.CounterVec
	decisionTime  *prometheus.HistogramVec
	checkDuration *prometheus.HistogramVec
	findings      *prometheus.CounterVec
	dbProbes      *prometheus.CounterVec
	dbProbeTime   *prometheus.HistogramVec
	overrides     *prometheus.CounterVec
	finds         *prometheus.CounterVec
}

// Decision results, used as the "result" label.
const (
	ResultAllowed = "allowed"
	ResultWarned  = "allowed_with_warnings"
	ResultDenied  = "denied"
	ResultError   = "error"
	// ResultOverridden: the checks denied the switch and an allowed user
	// overrode them (see AnnotationOverride).
	ResultOverridden = "overridden"
)

// NewMetrics creates the metrics and registers them with reg (use
// controller-runtime's metrics.Registry to serve them on /metrics).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cutover_guard_decisions_total",
			Help: "Admission decisions on route writes and Service selector switches, by kind, result and path (fast: no backend's share of traffic grows; checked: targets were checked).",
		}, []string{"kind", "result", "path"}),
		decisionTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cutover_guard_decision_duration_seconds",
			Help:    "Time to decide on a route write, by route kind and path.",
			Buckets: buckets,
		}, []string{"kind", "path"}),
		checkDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cutover_guard_check_duration_seconds",
			Help:    "Time one check took for one target, by check and result (pass, deny, timeout).",
			Buckets: buckets,
		}, []string{"check", "result"}),
		findings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cutover_guard_findings_total",
			Help: "Findings on targets, by check, reason and severity (deny or warn).",
		}, []string{"check", "reason", "severity"}),
		dbProbes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cutover_guard_database_probes_total",
			Help: "Database probes, by outcome and whether the result came from the cache.",
		}, []string{"result", "cached"}),
		dbProbeTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cutover_guard_database_probe_duration_seconds",
			Help:    "Time a database probe took (cached answers included), by outcome.",
			Buckets: buckets,
		}, []string{"result"}),
		overrides: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cutover_guard_overrides_total",
			Help: "Switches carrying the " + AnnotationOverride + " annotation, by route kind and outcome (overridden, not_needed, refused_not_allowed, refused_no_reason, ignored_leftover).",
		}, []string{"kind", "result"}),
		finds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cutover_guard_finds_total",
			Help: "LISTs that find which ReplicaSets, pods and EndpointSlices a Service selects, by resource and where they were answered (informer: the guard's metadata informers; apiserver: the API server's watch cache).",
		}, []string{"resource", "source"}),
	}
	reg.MustRegister(m.decisions, m.decisionTime, m.checkDuration, m.findings, m.dbProbes, m.dbProbeTime, m.overrides, m.finds)
	return m
}

// DefaultMetrics registers the metrics on controller-runtime's registry.
func DefaultMetrics() *Metrics { return NewMetrics(metrics.Registry) }

// ObserveProbe records one database probe; it fits probe.Prober's observer hook.
func (m *Metrics) ObserveProbe(result probe.Reason, cached bool, d time.Duration) {
	if m == nil {
		return
	}
	c := "false"
	if cached {
		c = "true"
	}
	m.dbProbes.WithLabelValues(string(result), c).Inc()
	m.dbProbeTime.WithLabelValues(string(result)).Observe(d.Seconds())
}

// ObserveFind counts one find; it fits checks.FindCacheOptions.Observe.
func (m *Metrics) ObserveFind(resource, source string) {
	if m == nil {
		return
	}
	m.finds.WithLabelValues(resource, source).Inc()
}

// FindCacheTrusted is a gauge that is 1 while trusted says the find
// cache's informers answer finds (synced, no recent watch error) and 0
// while finds go to the API server.
func FindCacheTrusted(trusted func() bool) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cutover_guard_find_cache_trusted",
		Help: "1 while the guard's metadata informers answer its finds (every informer synced, no watch error in the last minute); 0 while finds go to the API server.",
	}, func() float64 {
		if trusted() {
			return 1
		}
		return 0
	})
}

// recordDecision records one decision: its count and time, each check's
// time and outcome, each finding, and its override outcome if any.
func (m *Metrics) recordDecision(d Decision) {
	if m == nil {
		return
	}
	if d.OverrideOutcome != "" {
		m.overrides.WithLabelValues(d.Kind, d.OverrideOutcome).Inc()
	}
	m.decisions.WithLabelValues(d.Kind, d.Result, d.Path).Inc()
	m.decisionTime.WithLabelValues(d.Kind, d.Path).Observe(d.Took.Seconds())
	for _, r := range d.Checks.Runs {
		outcome := "pass"
		switch {
		case r.TimedOut:
			outcome = "timeout"
		case r.Denied:
			outcome = "deny"
		}
		m.checkDuration.WithLabelValues(string(r.Check), outcome).Observe(r.Duration.Seconds())
	}
	for _, f := range d.Checks.Findings {
		sev := "deny"
		if f.Severity == checks.Warn {
			sev = "warn"
		}
		m.findings.WithLabelValues(string(f.Check), string(f.Reason), sev).Inc()
	}
}
