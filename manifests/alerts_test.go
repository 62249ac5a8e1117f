package manifests_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/internal/testenv"
)

// extraTool is a binary hack/build-tools.sh builds next to the control
// plane for the install's tests (promtool, helm); missing, the test skips,
// or fails with CUTOVER_GUARD_TEST_REQUIRED=1.
func extraTool(t *testing.T, name string) string {
	t.Helper()
	dir, err := cluster.ToolsDir()
	if err != nil {
		testenv.Unavailable(t, "tools: %v", err)
	}
	bin := filepath.Join(dir, "bin", name)
	if _, err := os.Stat(bin); err != nil {
		testenv.Unavailable(t, "%s not built (make tools): %v", name, err)
	}
	return bin
}

// alertRule is one alerting rule of the PrometheusRule.
type alertRule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type ruleGroups struct {
	Groups []struct {
		Name  string      `json:"name"`
		Rules []alertRule `json:"rules"`
	} `json:"groups"`
}

// prometheusRuleGroups reads the PrometheusRule's spec (the rule groups,
// in the format promtool reads) from a file of the monitoring overlay.
func prometheusRuleGroups(t *testing.T, path string) ([]byte, ruleGroups) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var obj struct {
		Kind string          `json:"kind"`
		Spec json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &obj); err != nil || obj.Kind != "PrometheusRule" {
		t.Fatalf("%s: %v, kind %q, want a PrometheusRule", path, err, obj.Kind)
	}
	var groups ruleGroups
	if err := json.Unmarshal(obj.Spec, &groups); err != nil {
		t.Fatal(err)
	}
	return obj.Spec, groups
}

// alertCase is one promtool alert test: series, and at evalTime the alert
// fires with labels (nil: does not fire).
type alertCase struct {
	alert    string
	name     string
	series   map[string]string
	evalTime string
	fires    []map[string]string
}

const rejectionSeries = `apiserver_admission_webhook_rejection_count{name="httproute.cutover-guard.dev",operation="UPDATE",rejection_code="500",type="validating",error_type="%s"}`

// The series each alert is tested with: every alert fires on one and stays
// quiet on another that looks alike.
var alertCases = []alertCase{
	{alert: "CutoverGuardDown", name: "no replica up for 5 minutes",
		series:   map[string]string{`up{job="cutover-guard",pod="a"}`: "1x3 0x20", `up{job="cutover-guard",pod="b"}`: "1x3 0x20"},
		evalTime: "12m", fires: []map[string]string{{}}},
	{alert: "CutoverGuardDown", name: "one replica of two up",
		series:   map[string]string{`up{job="cutover-guard",pod="a"}`: "1x20", `up{job="cutover-guard",pod="b"}`: "0x20"},
		evalTime: "12m"},
	{alert: "CutoverGuardWebhookCallsFailing", name: "calls to the guard fail",
		series:   map[string]string{fmt.Sprintf(rejectionSeries, "calling_webhook_error"): "0+2x20"},
		evalTime: "10m", fires: []map[string]string{{}}},
	{alert: "CutoverGuardWebhookCallsFailing", name: "denials are not failed calls, nor another webhook's failures",
		series: map[string]string{
			fmt.Sprintf(rejectionSeries, "no_error"): "0+2x20",
			`apiserver_admission_webhook_rejection_count{name="policy.example.com",operation="UPDATE",rejection_code="500",type="validating",error_type="calling_webhook_error"}`: "0+2x20",
		},
		evalTime: "10m"},
	{alert: "CutoverGuardDecisionsSlow", name: "checked decisions take 5 to 10 s",
		series:   histogram("cutover_guard_decision_duration_seconds", `job="cutover-guard",kind="HTTPRoute",path="checked"`, "5"),
		evalTime: "15m", fires: []map[string]string{{}}},
	{alert: "CutoverGuardDecisionsSlow", name: "checked decisions take 100 to 250 ms",
		series:   histogram("cutover_guard_decision_duration_seconds", `job="cutover-guard",kind="HTTPRoute",path="checked"`, "0.1"),
		evalTime: "15m"},
	{alert: "CutoverGuardDenialsSpiking", name: "60 denials of 70 checked in 15 minutes",
		series: map[string]string{
			`cutover_guard_decisions_total{job="cutover-guard",kind="HTTPRoute",path="checked",result="denied"}`:  "0+4x20",
			`cutover_guard_decisions_total{job="cutover-guard",kind="HTTPRoute",path="checked",result="allowed"}`: "0+1x20",
		},
		evalTime: "15m", fires: []map[string]string{{}}},
	{alert: "CutoverGuardDenialsSpiking", name: "many denials among many more allowed switches",
		series: map[string]string{
			`cutover_guard_decisions_total{job="cutover-guard",kind="HTTPRoute",path="checked",result="denied"}`:  "0+4x20",
			`cutover_guard_decisions_total{job="cutover-guard",kind="HTTPRoute",path="checked",result="allowed"}`: "0+10x20",
		},
		evalTime: "15m"},
	{alert: "CutoverGuardDatabaseProbeTimeouts", name: "probes time out",
		series: map[string]string{
			`cutover_guard_database_probes_total{job="cutover-guard",cached="false",result="DatabaseConnectTimeout"}`: "0+1x30",
		},
		evalTime: "20m", fires: []map[string]string{{}}},
	{alert: "CutoverGuardDatabaseProbeTimeouts", name: "cached answers and refusals are not timeouts",
		series: map[string]string{
			`cutover_guard_database_probes_total{job="cutover-guard",cached="true",result="DatabaseConnectTimeout"}`:  "0+1x30",
			`cutover_guard_database_probes_total{job="cutover-guard",cached="false",result="DatabaseConnectRefused"}`: "0+1x30",
		},
		evalTime: "20m"},
	{alert: "CutoverGuardCertificateExpiresSoon", name: "a replica serves a certificate expiring in 10 days",
		// Eval at 2h = 7200 s: expiry 7200 + 10 days; the other replica's in 60 days.
		series: map[string]string{
			`cutover_guard_certificate_expiry_timestamp_seconds{job="cutover-guard",namespace="cutover-guard",pod="a"}`: "871200x180",
			`cutover_guard_certificate_expiry_timestamp_seconds{job="cutover-guard",namespace="cutover-guard",pod="b"}`: "5191200x180",
		},
		evalTime: "2h", fires: []map[string]string{{"namespace": "cutover-guard", "pod": "a"}}},
	{alert: "CutoverGuardCertificateExpiresSoon", name: "certificates with 20 days left",
		series: map[string]string{
			`cutover_guard_certificate_expiry_timestamp_seconds{job="cutover-guard",namespace="cutover-guard",pod="a"}`: "1735200x180",
		},
		evalTime: "2h"},
	{alert: "CutoverGuardFindCacheUntrusted", name: "a replica whose informers never sync",
		series: map[string]string{
			`cutover_guard_find_cache_trusted{job="cutover-guard",namespace="cutover-guard",pod="a"}`: "0x30",
			`cutover_guard_find_cache_trusted{job="cutover-guard",namespace="cutover-guard",pod="b"}`: "1x30",
		},
		evalTime: "20m", fires: []map[string]string{{"namespace": "cutover-guard", "pod": "a"}}},
	{alert: "CutoverGuardFindCacheUntrusted", name: "a watch error distrusts the informers for a minute, now and then",
		series: map[string]string{
			`cutover_guard_find_cache_trusted{job="cutover-guard",namespace="cutover-guard",pod="a"}`: "1x5 0 1x10 0 1x10",
		},
		evalTime: "25m"},
	{alert: "CutoverGuardOverrideUsed", name: "one override",
		series: map[string]string{
			`cutover_guard_overrides_total{job="cutover-guard",kind="HTTPRoute",result="overridden"}`: "0x5 1x20",
		},
		evalTime: "8m", fires: []map[string]string{{"kind": "HTTPRoute"}}},
	{alert: "CutoverGuardOverrideUsed", name: "annotations refused or not needed, and an override 20 minutes ago",
		series: map[string]string{
			`cutover_guard_overrides_total{job="cutover-guard",kind="HTTPRoute",result="refused_not_allowed"}`: "0+1x40",
			`cutover_guard_overrides_total{job="cutover-guard",kind="HTTPRoute",result="not_needed"}`:          "0+1x40",
			`cutover_guard_overrides_total{job="cutover-guard",kind="GRPCRoute",result="overridden"}`:          "0x5 1x40",
		},
		evalTime: "30m"},
}

// histogram is a histogram's bucket series over 30 minutes with 10
// observations a minute, each just above the bucket bound slowFrom (every
// bound below it stays at 0).
func histogram(name, labels, slowFrom string) map[string]string {
	bounds := []string{"0.05", "0.1", "0.25", "1", "2.5", "5", "10", "+Inf"}
	out := map[string]string{}
	reached := false
	for _, le := range bounds {
		v := "0x30"
		if reached {
			v = "0+10x30"
		}
		if le == slowFrom {
			reached = true
		}
		out[fmt.Sprintf(`%s_bucket{%s,le="%s"}`, name, labels, le)] = v
	}
	return out
}

var labelRef = regexp.MustCompile(`\{\{ \$labels\.([a-z_]+) \}\}`)

// promtoolTests is the `promtool test rules` file for the cases: the
// expected annotations are the rule's own, with {{ $labels.x }} filled in.
func promtoolTests(t *testing.T, rules map[string]alertRule) []byte {
	t.Helper()
	type expAlert struct {
		ExpLabels      map[string]string `json:"exp_labels"`
		ExpAnnotations map[string]string `json:"exp_annotations"`
	}
	type alertTest struct {
		EvalTime  string     `json:"eval_time"`
		Alertname string     `json:"alertname"`
		ExpAlerts []expAlert `json:"exp_alerts"`
	}
	type series struct {
		Series string `json:"series"`
		Values string `json:"values"`
	}
	type test struct {
		Name        string      `json:"name"`
		Interval    string      `json:"interval"`
		InputSeries []series    `json:"input_series"`
		AlertTests  []alertTest `json:"alert_rule_test"`
	}
	var tests []test
	for _, c := range alertCases {
		rule, ok := rules[c.alert]
		if !ok {
			t.Fatalf("case %q: no alert %s in the PrometheusRule", c.name, c.alert)
		}
		tc := test{Name: c.alert + ": " + c.name, Interval: "1m", AlertTests: []alertTest{{EvalTime: c.evalTime, Alertname: c.alert, ExpAlerts: []expAlert{}}}}
		for _, s := range slices.Sorted(maps.Keys(c.series)) {
			tc.InputSeries = append(tc.InputSeries, series{Series: s, Values: c.series[s]})
		}
		for _, fired := range c.fires {
			exp := expAlert{ExpLabels: map[string]string{}, ExpAnnotations: map[string]string{}}
			for k, v := range rule.Labels {
				exp.ExpLabels[k] = v
			}
			for k, v := range fired {
				exp.ExpLabels[k] = v
			}
			for k, v := range rule.Annotations {
				exp.ExpAnnotations[k] = labelRef.ReplaceAllStringFunc(v, func(ref string) string {
					return exp.ExpLabels[labelRef.FindStringSubmatch(ref)[1]]
				})
			}
			tc.AlertTests[0].ExpAlerts = append(tc.AlertTests[0].ExpAlerts, exp)
		}
		tests = append(tests, tc)
	}
	out, err := yaml.Marshal(map[string]any{"rule_files": []string{"rules.yaml"}, "evaluation_interval": "1m", "tests": tests})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAlerts checks the PrometheusRule with the real promtool: the rules
// parse (`promtool check rules`), and each alert fires on series made to
// fire it and stays quiet on series that look alike (`promtool test
// rules`). Each alert has a severity and a runbook section in
// docs/operations.md that its runbook_url points to.
func TestAlerts(t *testing.T) {
	promtool := extraTool(t, "promtool")
	spec, groups := prometheusRuleGroups(t, filepath.Join(overlayDir(t, "monitoring"), "prometheusrule.yaml"))
	dir := t.TempDir()
	rulesYAML, err := yaml.JSONToYAML(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rulesYAML, 0o600); err != nil {
		t.Fatal(err)
	}

	ops, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	rules := map[string]alertRule{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			rules[r.Alert] = r
			if !slices.Contains([]string{"critical", "warning", "info"}, r.Labels["severity"]) {
				t.Errorf("%s: severity %q, want critical, warning or info", r.Alert, r.Labels["severity"])
			}
			anchor := strings.ToLower(r.Alert)
			if want := "https://github.com/cutover-guard/cutover-guard/blob/main/docs/operations.md#" + anchor; r.Annotations["runbook_url"] != want {
				t.Errorf("%s: runbook_url %q, want %s", r.Alert, r.Annotations["runbook_url"], want)
			}
			if !strings.Contains(string(ops), "\n### "+r.Alert+"\n") {
				t.Errorf("%s: docs/operations.md has no section \"### %s\"", r.Alert, r.Alert)
			}
			fires, quiet := false, false
			for _, c := range alertCases {
				if c.alert == r.Alert {
					fires = fires || len(c.fires) > 0
					quiet = quiet || len(c.fires) == 0
				}
			}
			if !fires || !quiet {
				t.Errorf("%s: tested firing %v, tested quiet %v; want both", r.Alert, fires, quiet)
			}
		}
	}
	for _, want := range []string{"CutoverGuardDown", "CutoverGuardWebhookCallsFailing", "CutoverGuardDecisionsSlow",
		"CutoverGuardDenialsSpiking", "CutoverGuardDatabaseProbeTimeouts", "CutoverGuardCertificateExpiresSoon", "CutoverGuardFindCacheUntrusted",
		"CutoverGuardOverrideUsed"} {
		if _, ok := rules[want]; !ok {
			t.Errorf("no alert %s", want)
		}
	}

	if out, err := exec.CommandContext(t.Context(), promtool, "check", "rules", filepath.Join(dir, "rules.yaml")).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "tests.yaml"), promtoolTests(t, rules), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), promtool, "test", "rules", "tests.yaml")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// TestMonitoringOverlay: the ServiceMonitor scrapes the Service the
// default install makes, on its metrics port, in its namespace.
func TestMonitoringOverlay(t *testing.T) {
	objs := build(t, "monitoring")
	var svc corev1.Service
	mustFind(t, build(t, "default"), "Service", "cutover-guard", &svc)
	sm := find(objs, "ServiceMonitor", "cutover-guard")
	if sm == nil || find(objs, "PrometheusRule", "cutover-guard") == nil {
		t.Fatalf("manifests/monitoring: want a ServiceMonitor and a PrometheusRule cutover-guard, got %d objects", len(objs))
	}
	var spec struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port string `json:"port"`
			Path string `json:"path"`
		} `json:"endpoints"`
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(sm.Object["spec"].(map[string]any), &spec); err != nil {
		t.Fatal(err)
	}
	sel, err := metav1.LabelSelectorAsSelector(&spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(svc.Labels)) {
		t.Errorf("selector %v (%v) does not select the Service (labels %v)", spec.Selector, err, svc.Labels)
	}
	if !slices.Equal(spec.NamespaceSelector.MatchNames, []string{svc.Namespace}) {
		t.Errorf("namespaceSelector %v, want [%s]", spec.NamespaceSelector.MatchNames, svc.Namespace)
	}
	if len(spec.Endpoints) != 1 || spec.Endpoints[0].Path != "/metrics" ||
		!slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == spec.Endpoints[0].Port }) {
		t.Errorf("endpoints %+v, want /metrics on a port of the Service %v", spec.Endpoints, svc.Spec.Ports)
	}
	// The dashboard, for Grafana's sidecar, as the file is.
	var cm corev1.ConfigMap
	mustFind(t, objs, "ConfigMap", "cutover-guard-dashboard", &cm)
	dash, err := os.ReadFile(filepath.Join(overlayDir(t, "monitoring"), "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if cm.Labels["grafana_dashboard"] != "1" || cm.Data["cutover-guard.json"] != string(dash) {
		t.Errorf("ConfigMap cutover-guard-dashboard: labels %v, want grafana_dashboard=1 and dashboard.json as cutover-guard.json", cm.Labels)
	}
	// The job label the alerts select on is the Service's name.
	if svc.Name != "cutover-guard" {
		t.Errorf("Service %s: the alerts select job=\"cutover-guard\"", svc.Name)
	}
}
