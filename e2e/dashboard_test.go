package e2e_test

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// promqlNames finds what a PromQL expression names: metric selectors
// (an identifier before "{": the dashboard writes every selector with its
// job matcher) and anything left that is neither a function, a keyword, a
// label in by (...), nor a number, so that a metric written without
// matchers is not missed.
var (
	quoted    = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	selector  = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{[^}]*\}`)
	grouping  = regexp.MustCompile(`\b(by|without)\s*\([^)]*\)`)
	ranges    = regexp.MustCompile(`\[[^\]]*\]`)
	call      = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*\(`)
	ident     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	variables = regexp.MustCompile(`\$\{?[a-zA-Z_]+\}?`)
)

func promqlNames(expr string) (metrics, unknown []string) {
	expr = variables.ReplaceAllString(quoted.ReplaceAllString(expr, `""`), "")
	for _, m := range selector.FindAllStringSubmatch(expr, -1) {
		metrics = append(metrics, m[1])
	}
	rest := grouping.ReplaceAllString(ranges.ReplaceAllString(selector.ReplaceAllString(expr, " "), " "), " ")
	rest = call.ReplaceAllString(rest, " ")
	for _, id := range ident.FindAllString(rest, -1) {
		switch id {
		case "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "bool", "offset":
		default:
			unknown = append(unknown, id)
		}
	}
	return metrics, unknown
}

func TestPromqlNames(t *testing.T) {
	m, u := promqlNames(`histogram_quantile(0.99, sum by (le, path) (rate(a_bucket{job=~"$job",x="y{z}"}[$__rate_interval]))) / b - time()`)
	if !slices.Equal(m, []string{"a_bucket"}) || !slices.Equal(u, []string{"b"}) {
		t.Errorf("promqlNames = %v, %v; want [a_bucket], [b]", m, u)
	}
}

// TestDashboardQueriesExportedMetrics: every metric the Grafana dashboard
// queries is on the /metrics page of the real guard, after decisions that
// give each of its metrics a sample (a create with database probes, a
// denial, an override). up is Prometheus's own.
func TestDashboardQueriesExportedMetrics(t *testing.T) {
	root, err := tutorial.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "manifests", "monitoring", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	queried := map[string][]string{} // metric -> panels
	var exprs int
	add := func(where, expr string) {
		exprs++
		metrics, unknown := promqlNames(expr)
		if len(metrics) == 0 {
			t.Errorf("%s: %q queries no metric", where, expr)
		}
		for _, u := range unknown {
			t.Errorf("%s: %q names %q, not a selector with matchers, a function or a label", where, expr, u)
		}
		for _, m := range metrics {
			queried[m] = append(queried[m], where)
		}
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			add("panel "+p.Title, tg.Expr)
		}
	}
	labelValues := regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*),`)
	for _, v := range dash.Templating.List {
		q, ok := v.Query.(map[string]any)
		if !ok {
			continue
		}
		if s, _ := q["query"].(string); s != "" {
			m := labelValues.FindStringSubmatch(s)
			if m == nil {
				t.Errorf("variable %s: %q is not label_values(METRIC, label)", v.Name, s)
				continue
			}
			exprs++
			queried[m[1]] = append(queried[m[1]], "variable "+v.Name)
		}
	}
	if exprs < 15 {
		t.Fatalf("only %d queries found in the dashboard", exprs)
	}

	e := setup(t)
	// The route's create probes blue's database; the switch to the unready
	// green is denied, then overridden.
	e.reset(t, world{greenReady: false})
	e.grantRoutePatch(t)
	if r := e.sh(t, tutorial.CutoverCommand); !r.Denied() {
		t.Fatalf("want the switch to the unready green denied:\n%s", r)
	}
	if r := e.patchAs(t, []string{"--as=alice", "--as-group=" + overrideGroup}, e.overridePatch(t, tutorial.Green, "dashboard test")); !r.OK() {
		t.Fatalf("the override did not go through:\n%s", r)
	}
	page, err := e.guard.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{"up": true}
	for _, line := range strings.Split(page, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		exported[line[:strings.IndexAny(line, "{ ")]] = true
	}
	for _, m := range slices.Sorted(maps.Keys(queried)) {
		if !exported[m] {
			t.Errorf("the dashboard queries %s (%s), which the guard does not export", m, strings.Join(queried[m], ", "))
		}
	}
	for _, want := range []string{"cutover_guard_decisions_total", "cutover_guard_findings_total", "cutover_guard_database_probes_total",
		"cutover_guard_overrides_total", "cutover_guard_certificate_expiry_timestamp_seconds", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if _, ok := queried[want]; !ok {
			t.Errorf("the dashboard has no panel on %s", want)
		}
	}
}
