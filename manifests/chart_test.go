package manifests_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
)

// helmLabels are the labels the chart adds to every object that the
// kustomize install does not have: Helm's own bookkeeping.
var helmLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}

// chartDir is the Helm chart.
func chartDir(t *testing.T) string { return filepath.Join(repoRoot(t), "charts", "cutover-guard") }

// helmCmd runs the real helm with its own, empty configuration and cache.
func helmCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	return helmCmdContext(t.Context(), t, args...)
}

func helmCmdContext(ctx context.Context, t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	home := filepath.Join(tmpRoot, "helm-home")
	cmd := exec.CommandContext(ctx, extraTool(t, "helm"), args...)
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+filepath.Join(home, "config"), "HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"))
	return cmd
}

func runHelm(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := helmCmd(t, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String()
}

// helmTemplate renders the chart into namespace cutover-guard with --set
// values and decodes every object.
func helmTemplate(t *testing.T, set ...string) []*unstructured.Unstructured {
	t.Helper()
	args := []string{"template", "cutover-guard", chartDir(t), "--namespace=cutover-guard"}
	for _, s := range set {
		args = append(args, "--set="+s)
	}
	objs, err := decodeAll([]byte(runHelm(t, args...)))
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	return objs
}

// byKey indexes objects by kind/namespace/name, without Helm's labels.
func byKey(t *testing.T, objs []*unstructured.Unstructured) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, o := range objs {
		o = o.DeepCopy()
		if l := o.GetLabels(); l != nil {
			for _, k := range helmLabels {
				delete(l, k)
			}
			o.SetLabels(l)
		}
		key := o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
		if _, dup := out[key]; dup {
			t.Errorf("%s rendered twice", key)
		}
		out[key] = o.Object
	}
	return out
}

// TestChartMatchesKustomize: one source of truth. The chart with default
// values renders the objects of manifests/default, with cert-manager mode
// those of manifests/cert-manager, and with the monitoring toggles on adds
// those of manifests/monitoring, each equal field for field but for Helm's
// labels. The one documented difference: the chart does not own the
// Namespace (Helm stores its release there before installing anything), so
// README has it applied first from manifests/base/namespace.yaml.
func TestChartMatchesKustomize(t *testing.T) {
	for name, tc := range map[string]struct {
		overlays []string
		set      []string
	}{
		"default":      {overlays: []string{"default"}},
		"cert-manager": {overlays: []string{"cert-manager"}, set: []string{"certificates.mode=cert-manager"}},
		"monitoring": {overlays: []string{"default", "monitoring"},
			set: []string{"monitoring.serviceMonitor.enabled=true", "monitoring.prometheusRule.enabled=true", "monitoring.dashboard.enabled=true"}},
	} {
		t.Run(name, func(t *testing.T) {
			var kustomized []*unstructured.Unstructured
			for _, o := range tc.overlays {
				for _, obj := range build(t, o) {
					if obj.GetKind() != "Namespace" {
						kustomized = append(kustomized, obj)
					}
				}
			}
			want, got := byKey(t, kustomized), byKey(t, helmTemplate(t, tc.set...))
			for _, k := range slices.Sorted(maps.Keys(want)) {
				if _, ok := got[k]; !ok {
					t.Errorf("the chart lacks %s", k)
					continue
				}
				if diff := cmp.Diff(want[k], got[k]); diff != "" {
					t.Errorf("%s (-kustomize +chart):\n%s", k, diff)
				}
			}
			for _, k := range slices.Sorted(maps.Keys(got)) {
				if _, ok := want[k]; !ok {
					t.Errorf("the chart renders %s, which %v does not have", k, tc.overlays)
				}
			}
		})
	}
}

// TestChartValues: the values platform teams set reach the objects.
func TestChartValues(t *testing.T) {
	objs := helmTemplate(t,
		"replicas=3", "resources.limits.memory=512Mi", "nodeSelector.pool=system",
		"tolerations[0].key=dedicated", "tolerations[0].operator=Exists",
		"affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
		"affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
		"topologySpreadConstraints=null", "priorityClassName=high", "podDisruptionBudget.enabled=false", "networkPolicy.enabled=false",
		"guard.privateCIDRs={10.0.0.0/8,172.16.0.0/12}", "guard.databasePorts=5432\\,25060", "guard.dbTimeout=2s",
		"guard.requestTimeout=7s", "guard.checkCreate=false", "guard.redactUnreadable=false", "guard.smokeChecks=false",
		"guard.unknownWorkloads=warn", "guard.findFrom=apiserver", "guard.overrideGroups={sre,release-admins}", "guard.maxChecksPerNamespace=16",
		"guard.logLevel=debug", "guard.skipDatabaseCheck=true", "guard.databaseURLEnv={DATABASE_URL,DB_URL}",
		"webhook.timeoutSeconds=10", "webhook.failurePolicy=Ignore", "webhook.excludedNamespaces={kube-system,flux-system}",
		"webhook.extraMatchConditions[0].name=not-flux",
		"webhook.extraMatchConditions[0].expression=request.userInfo.username != 'system:serviceaccount:flux-system:kustomize-controller'",
		"image.repository=registry.example.com/cutover-guard", "image.tag=v1.2.3",
	)
	var d appsv1.Deployment
	mustFind(t, objs, "Deployment", "cutover-guard", &d)
	spec := d.Spec.Template.Spec
	c := spec.Containers[0]
	if *d.Spec.Replicas != 3 || c.Resources.Limits.Memory().String() != "512Mi" || spec.NodeSelector["pool"] != "system" ||
		len(spec.Tolerations) != 1 || spec.Affinity == nil || spec.Affinity.NodeAffinity == nil || spec.PriorityClassName != "high" ||
		c.Image != "registry.example.com/cutover-guard:v1.2.3" {
		t.Errorf("scheduling values not applied: replicas %d, resources %v, nodeSelector %v, tolerations %v, affinity %v, priority %q, image %q",
			*d.Spec.Replicas, c.Resources, spec.NodeSelector, spec.Tolerations, spec.Affinity, spec.PriorityClassName, c.Image)
	}
	if len(spec.TopologySpreadConstraints) != 2 {
		t.Errorf("topologySpreadConstraints=null keeps the defaults, got %v", spec.TopologySpreadConstraints)
	}
	for _, want := range []string{"--private-cidrs=10.0.0.0/8,172.16.0.0/12", "--database-ports=5432,25060", "--db-timeout=2s",
		"--request-timeout=7s", "--check-create=false", "--redact-unreadable=false", "--smoke-checks=false", "--unknown-workloads=warn",
		"--find-from=apiserver", "--override-groups=sre,release-admins", "--max-checks-per-namespace=16", "--zap-log-level=debug", "--skip-database-check=true",
		"--database-url-env=DATABASE_URL,DB_URL", "--cert-rotation=true"} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("args %v lack %s", c.Args, want)
		}
	}
	var role rbacv1.ClusterRole
	mustFind(t, objs, "ClusterRole", "cutover-guard", &role)
	for _, r := range role.Rules {
		if slices.Contains(r.Verbs, "watch") {
			t.Errorf("guard.findFrom=apiserver: the ClusterRole still grants watch on %v", r.Resources)
		}
	}
	for _, kind := range []string{"PodDisruptionBudget", "NetworkPolicy", "ResourceQuota"} {
		if len(ofKinds(objs, kind)) != 0 {
			t.Errorf("%s rendered although disabled (or not system-cluster-critical)", kind)
		}
	}
	vwc := find(objs, "ValidatingWebhookConfiguration", "cutover-guard")
	webhooks, _, _ := unstructured.NestedSlice(vwc.Object, "webhooks")
	if len(webhooks) != 3 {
		t.Fatalf("%d webhooks, want 3", len(webhooks))
	}
	for _, w := range webhooks {
		w := w.(map[string]any)
		conds := w["matchConditions"].([]any)
		ns := fmt.Sprint(w["namespaceSelector"])
		if w["timeoutSeconds"] != float64(10) || w["failurePolicy"] != "Ignore" || len(conds) != 2 ||
			conds[1].(map[string]any)["name"] != "not-flux" || !strings.Contains(ns, "flux-system") || !strings.Contains(ns, "cutover-guard") {
			t.Errorf("webhook %s: timeout %v, failurePolicy %v, matchConditions %v, namespaceSelector %s", w["name"], w["timeoutSeconds"], w["failurePolicy"], conds, ns)
		}
	}

	// A ClusterIssuer of one's own signs the serving certificate: no chain is made.
	objs = helmTemplate(t, "certificates.mode=cert-manager", "certificates.certManager.issuerRef.kind=ClusterIssuer", "certificates.certManager.issuerRef.name=internal-ca")
	if n := len(ofKinds(objs, "Issuer")); n != 0 {
		t.Errorf("%d Issuers made with an issuerRef given", n)
	}
	if cert := find(objs, "Certificate", "cutover-guard-serving"); cert == nil || fmt.Sprint(cert.Object["spec"].(map[string]any)["issuerRef"]) != "map[kind:ClusterIssuer name:internal-ca]" {
		t.Errorf("serving Certificate does not name the ClusterIssuer: %v", cert)
	}

	// values.schema.json refuses what the chart would not use, naming it.
	for set, want := range map[string]string{
		"certificates.mode=vault":      "at '/certificates/mode': value must be one of 'rotation', 'cert-manager'",
		"replica=3":                    "additional properties 'replica' not allowed",
		"webhook.failurePolicy=Deny":   "at '/webhook/failurePolicy': value must be one of 'Fail', 'Ignore'",
		"guard.dbTimeout=2":            "at '/guard/dbTimeout': got number, want string",
		"guard.unknownWorkloads=allow": "at '/guard/unknownWorkloads'",
		"guard.findFrom=etcd":          "at '/guard/findFrom'",
	} {
		cmd := helmCmd(t, "template", "cutover-guard", chartDir(t), "--set="+set)
		if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), want) {
			t.Errorf("--set %s: %v, want %q\n%s", set, err, want, out)
		}
	}
}

// TestChartLint runs helm lint, strict, with default values and with every
// toggle on.
func TestChartLint(t *testing.T) {
	runHelm(t, "lint", "--strict", chartDir(t))
	runHelm(t, "lint", "--strict", chartDir(t), "--set=certificates.mode=cert-manager", "--set=monitoring.serviceMonitor.enabled=true",
		"--set=monitoring.prometheusRule.enabled=true", "--set=monitoring.dashboard.enabled=true")
}

// TestChartInstall, against a control plane of its own (the chart's objects
// would clash with those the other tests apply): the rendered chart passes
// `kubectl apply --dry-run=server` in both certificate modes, then `helm
// install` makes the objects `helm template` renders, `helm upgrade` with
// new values changes the Deployment and leaves the caBundle and the
// certificate Secret's contents (written by the guard, not the chart)
// alone, and `helm uninstall` removes every object but the Namespace.
func TestChartInstall(t *testing.T) {
	c := cluster.StartT(t, cluster.Options{ToolsDir: toolsDir(t)})
	if out, err := kubectl(t, c, nil, "apply", "--server-side", "-f", filepath.Join(overlayDir(t, "base"), "namespace.yaml")); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	installCertManagerCRDs(t, c)
	kubeconfig := "--kubeconfig=" + c.Kubeconfig

	for _, set := range [][]string{nil, {"--set=certificates.mode=cert-manager"}} {
		rendered := runHelm(t, append([]string{"template", "cutover-guard", chartDir(t), "--namespace=cutover-guard"}, set...)...)
		out, err := kubectl(t, c, []byte(rendered), "apply", "--server-side", "--dry-run=server", "-f", "-")
		if err != nil {
			t.Fatalf("dry run %v: %v\n%s", set, err, out)
		}
		if n := strings.Count(out, "(server dry run)"); n != strings.Count(rendered, "\nkind: ") {
			t.Errorf("dry run %v: %d objects applied of %d:\n%s", set, n, strings.Count(rendered, "\nkind: "), out)
		}
	}

	// The guard's image cannot run here (no container runtime): failurePolicy
	// Ignore keeps the control plane usable while the fake pods are "ready".
	runHelm(t, "install", "cutover-guard", chartDir(t), "--namespace=cutover-guard", kubeconfig, "--set=webhook.failurePolicy=Ignore")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = helmCmdContext(ctx, t, "uninstall", "cutover-guard", "--namespace=cutover-guard", "--kubeconfig="+c.Kubeconfig, "--ignore-not-found").Run()
	})
	want := byKey(t, helmTemplate(t, "webhook.failurePolicy=Ignore"))
	for key := range want {
		parts := strings.SplitN(key, "/", 3)
		args := []string{"get", parts[0], parts[2], "-o", "name"}
		if parts[1] != "" {
			args = append(args, "-n", parts[1])
		}
		if _, err := kubectl(t, c, nil, args...); err != nil {
			t.Errorf("after helm install: %v", err)
		}
	}
	// What the guard would do at start: fill the Secret, inject the CA.
	if out, err := kubectl(t, c, nil, "patch", "secret", "cutover-guard-cert", "-n", "cutover-guard", "--type=merge", "-p", `{"data":{"ca.crt":"Y2E="}}`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := kubectl(t, c, nil, "patch", "validatingwebhookconfiguration", "cutover-guard", "--type=json",
		"-p", `[{"op":"add","path":"/webhooks/1/clientConfig/caBundle","value":"Y2E="}]`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	runHelm(t, "upgrade", "cutover-guard", chartDir(t), "--namespace=cutover-guard", kubeconfig, "--set=webhook.failurePolicy=Ignore",
		"--set=replicas=3", "--set=guard.overrideGroups={sre}")
	var d appsv1.Deployment
	getJSON(t, c, &d, "deployment", "cutover-guard", "-n", "cutover-guard")
	if *d.Spec.Replicas != 3 || !slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "--override-groups=sre") {
		t.Errorf("after helm upgrade: replicas %d, args %v", *d.Spec.Replicas, d.Spec.Template.Spec.Containers[0].Args)
	}
	var s corev1.Secret
	getJSON(t, c, &s, "secret", "cutover-guard-cert", "-n", "cutover-guard")
	if string(s.Data["ca.crt"]) != "ca" {
		t.Errorf("helm upgrade reset the certificate Secret the guard fills: %v", s.Data)
	}
	if out, err := kubectl(t, c, nil, "get", "validatingwebhookconfiguration", "cutover-guard", "-o", "jsonpath={.webhooks[1].clientConfig.caBundle}"); err != nil || out != "Y2E=" {
		t.Errorf("helm upgrade reset the injected caBundle: %q, %v", out, err)
	}

	runHelm(t, "uninstall", "cutover-guard", "--namespace=cutover-guard", kubeconfig, "--wait")
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for key := range want {
			parts := strings.SplitN(key, "/", 3)
			args := []string{"get", parts[0], parts[2], "-o", "name", "--ignore-not-found"}
			if parts[1] != "" {
				args = append(args, "-n", parts[1])
			}
			if out, err := kubectl(t, c, nil, args...); err != nil || out != "" {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Errorf("objects left after helm uninstall: %v", err)
	}
	if _, err := kubectl(t, c, nil, "get", "namespace", "cutover-guard"); err != nil {
		t.Errorf("helm uninstall removed the namespace it does not own: %v", err)
	}
}

func getJSON(t *testing.T, c *cluster.Cluster, out any, args ...string) {
	t.Helper()
	data, err := kubectl(t, c, nil, append(append([]string{"get"}, args...), "-o", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(data), out); err != nil {
		t.Fatal(err)
	}
}
