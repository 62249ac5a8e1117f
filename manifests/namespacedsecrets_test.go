package manifests_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cutover-guard/cutover-guard/certs"
	"github.com/cutover-guard/cutover-guard/webhook"
)

const (
	namespacedOverlay = "namespaced-secrets"
	namespaceReader   = "cutover-guard-namespace-reader"
	optInLabel        = "cutover-guard.dev/enabled"
)

// ruleVerbs maps "resource.group" to the verbs a role grants on it.
func ruleVerbs(t *testing.T, o *unstructured.Unstructured) map[string][]string {
	t.Helper()
	var role rbacv1.ClusterRole
	if err := runtimeFrom(o, &role); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, r := range role.Rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("%s: unexpected rule %+v", role.Name, r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				got[res+"."+g] = append(got[res+"."+g], r.Verbs...)
			}
		}
	}
	for k := range got {
		slices.Sort(got[k])
	}
	return got
}

// The overlay is the default install except for three things: the guard's
// ClusterRole reads no Secret or ConfigMap, a ClusterRole grants that per
// namespace once bound there, and the webhooks match only namespaces that
// carry the opt-in label.
func TestNamespacedSecretsOverlay(t *testing.T) {
	def, objs := build(t, "default"), build(t, namespacedOverlay)

	// The guard's ClusterRole: the default's, less Secrets and ConfigMaps.
	want := ruleVerbs(t, find(def, "ClusterRole", name))
	delete(want, "secrets.")
	delete(want, "configmaps.")
	role := find(objs, "ClusterRole", name)
	if role == nil {
		t.Fatal("no ClusterRole " + name)
	}
	if diff := cmp.Diff(want, ruleVerbs(t, role)); diff != "" {
		t.Errorf("ClusterRole %s (-want +got):\n%s", name, diff)
	}
	reader := find(objs, "ClusterRole", namespaceReader)
	if reader == nil {
		t.Fatal("no ClusterRole " + namespaceReader)
	}
	if diff := cmp.Diff(map[string][]string{"secrets.": {"get"}, "configmaps.": {"get"}}, ruleVerbs(t, reader)); diff != "" {
		t.Errorf("ClusterRole %s (-want +got):\n%s", namespaceReader, diff)
	}
	for _, o := range ofKinds(objs, "Role", "ClusterRole") {
		checkNoSecretListing(t, o)
	}
	for _, b := range ofKinds(objs, "ClusterRoleBinding") {
		var crb rbacv1.ClusterRoleBinding
		if err := runtimeFrom(b, &crb); err != nil {
			t.Fatal(err)
		}
		if crb.RoleRef.Name == namespaceReader {
			t.Errorf("ClusterRoleBinding %s grants %s cluster-wide; it is bound per namespace", crb.Name, namespaceReader)
		}
	}

	// The webhooks: the default's selector, and the opt-in label.
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	mustFind(t, objs, "ValidatingWebhookConfiguration", certs.DefaultWebhookConfigName, &vwc)
	var defVWC admissionregistrationv1.ValidatingWebhookConfiguration
	mustFind(t, def, "ValidatingWebhookConfiguration", certs.DefaultWebhookConfigName, &defVWC)
	if len(vwc.Webhooks) != len(defVWC.Webhooks) || len(vwc.Webhooks) != 3 {
		t.Fatalf("%d webhooks, want the default's %d", len(vwc.Webhooks), len(defVWC.Webhooks))
	}
	for i, w := range vwc.Webhooks {
		sel := w.NamespaceSelector
		if sel == nil || sel.MatchLabels[optInLabel] != "true" || len(sel.MatchLabels) != 1 {
			t.Errorf("%s: namespaceSelector %+v does not require %s=true", w.Name, sel, optInLabel)
			continue
		}
		if diff := cmp.Diff(defVWC.Webhooks[i].NamespaceSelector.MatchExpressions, sel.MatchExpressions); diff != "" {
			t.Errorf("%s: namespaceSelector expressions differ from the default's (-want +got):\n%s", w.Name, diff)
		}
		w.NamespaceSelector = defVWC.Webhooks[i].NamespaceSelector
		if diff := cmp.Diff(defVWC.Webhooks[i], w); diff != "" {
			t.Errorf("%s differs from the default's beyond its namespaceSelector (-want +got):\n%s", w.Name, diff)
		}
	}

	// Everything else is the default's, as it is.
	for _, o := range def {
		if (o.GetKind() == "ClusterRole" && o.GetName() == name) || o.GetKind() == "ValidatingWebhookConfiguration" {
			continue
		}
		got := find(objs, o.GetKind(), o.GetName())
		if got == nil {
			t.Errorf("the overlay lacks %s %s", o.GetKind(), o.GetName())
			continue
		}
		if diff := cmp.Diff(o.Object, got.Object); diff != "" {
			t.Errorf("%s %s differs from the default's (-want +got):\n%s", o.GetKind(), o.GetName(), diff)
		}
	}
	if len(objs) != len(def)+1 {
		t.Errorf("%d objects, want the default's %d and %s", len(objs), len(def), namespaceReader)
	}

	// The example a platform team applies per namespace binds the reader
	// to the guard's ServiceAccount in that namespace, and labels it.
	example := optInExample(t)
	var ns corev1.Namespace
	mustFind(t, example, "Namespace", "shop", &ns)
	if ns.Labels[optInLabel] != "true" {
		t.Errorf("the example namespace's labels %v lack %s=true", ns.Labels, optInLabel)
	}
	var rb rbacv1.RoleBinding
	mustFind(t, example, "RoleBinding", name, &rb)
	var d appsv1.Deployment
	mustFind(t, objs, "Deployment", name, &d)
	if rb.Namespace != "shop" || rb.RoleRef.Kind != "ClusterRole" || rb.RoleRef.Name != namespaceReader || !boundTo(rb.Subjects, d.Spec.Template.Spec.ServiceAccountName) {
		t.Errorf("the example RoleBinding %s/%s does not bind %s to the guard's ServiceAccount: %+v", rb.Namespace, rb.Name, namespaceReader, rb)
	}
	for _, want := range []string{"kubectl label namespace shop " + optInLabel + "=true", "--clusterrole=" + namespaceReader, "--serviceaccount=" + namespace + ":" + name} {
		b, _ := os.ReadFile(filepath.Join(overlayDir(t, namespacedOverlay), "opt-in-example.yaml"))
		if !strings.Contains(string(b), want) {
			t.Errorf("opt-in-example.yaml does not show %q", want)
		}
	}
}

// optInExample decodes the overlay's opt-in-example.yaml.
func optInExample(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(overlayDir(t, namespacedOverlay), "opt-in-example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeAll(b)
	if err != nil {
		t.Fatalf("opt-in-example.yaml: %v", err)
	}
	return objs
}

// With the overlay installed and namespace shop opted in as the example
// shows, the guard's ServiceAccount may get Secrets and ConfigMaps in shop,
// by name only, and nowhere else.
func TestNamespacedSecretsRBAC(t *testing.T) {
	c := sharedCluster(t)
	// The overlay's ClusterRole has the default's name: put the default's
	// back for the tests that judge it (before t.Context ends).
	defaultRoles := ofKinds(build(t, "default"), "ClusterRole")
	defer applyForReal(t, c, defaultRoles)
	applyForReal(t, c, ofKinds(build(t, namespacedOverlay),
		"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"))
	applyForReal(t, c, optInExample(t))

	for _, tc := range []struct {
		why  string
		args []string
		want bool
	}{
		{"reads a Secret by name in an opted-in namespace", []string{"get", "secrets/app-db", "-n=shop"}, true},
		{"reads a ConfigMap by name in an opted-in namespace", []string{"get", "configmaps/app-config", "-n=shop"}, true},
		{"still reads Services everywhere", []string{"get", "services", "-n=production"}, true},
		{"still asks whether requesters may read", []string{"create", "subjectaccessreviews.authorization.k8s.io"}, true},
		{"no Secrets in a namespace that has not opted in", []string{"get", "secrets/app-db", "-n=production"}, false},
		{"no ConfigMaps in a namespace that has not opted in", []string{"get", "configmaps/app-config", "-n=production"}, false},
		{"no listing Secrets in an opted-in namespace", []string{"list", "secrets", "-n=shop"}, false},
		{"no watching Secrets in an opted-in namespace", []string{"watch", "secrets", "-n=shop"}, false},
		{"no writing Secrets in an opted-in namespace", []string{"update", "secrets/app-db", "-n=shop"}, false},
		{"no Secrets across namespaces", []string{"get", "secrets", "--all-namespaces"}, false},
	} {
		args := append([]string{"auth", "can-i", "--as=" + serviceAccount}, tc.args...)
		// The authorizer learns of new bindings from a watch: a grant
		// is waited for (a refusal holds before and after).
		var out string
		var err error
		for deadline := time.Now().Add(30 * time.Second); ; {
			out, err = kubectl(t, c, nil, args...)
			if !tc.want || strings.TrimSpace(out) == "yes" || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		got := strings.TrimSpace(out) == "yes"
		if err != nil && !got && strings.TrimSpace(out) != "no" {
			t.Errorf("%s: %v", tc.why, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s: kubectl %s: %s, want %v", tc.why, strings.Join(args, " "), strings.TrimSpace(out), tc.want)
		}
	}
}

// The overlay's webhook configuration, pointed at a counting webhook: the
// API server sends a backendRef change in a namespace that opted in, and
// none from a namespace that has not.
func TestNamespacedSecretsWebhookMatchesOnlyOptedIn(t *testing.T) {
	c := sharedCluster(t)
	ctx := t.Context()
	cl := routeClient(t, c)

	counter := registerCounting(t, cl, namespacedOverlay, "cutover-guard-count-opted-in")

	for ns, labels := range map[string]map[string]string{"opted-in": {optInLabel: "true"}, "not-opted-in": nil} {
		err := cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	in := createHTTPRoute(t, cl, "opted-in", "app", "app-blue")
	out := createHTTPRoute(t, cl, "not-opted-in", "app", "app-blue")

	// The API server picks up the configuration asynchronously: wait
	// until a backendRef change (dry run) in the opted-in namespace
	// reaches the webhook.
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		r := in.DeepCopy()
		r.Spec.Rules[0].BackendRefs[0].Name = "app-probe"
		if err := cl.Update(ctx, r, client.DryRunAll); err != nil {
			return false, err
		}
		return counter.get(webhook.PathHTTPRoute) > 0, nil
	})
	if err != nil {
		t.Fatalf("the webhook configuration never took effect: %v", err)
	}
	green := `{"spec":{"rules":[{"backendRefs":[{"name":"app-green","port":80}]}]}}`
	before := counter.get(webhook.PathHTTPRoute)
	if err := patchRoute(ctx, cl, out, green); err != nil {
		t.Fatal(err)
	}
	if got := counter.get(webhook.PathHTTPRoute) - before; got != 0 {
		t.Errorf("a backendRef change in a namespace that has not opted in reached the webhook %d times, want never", got)
	}
	before = counter.get(webhook.PathHTTPRoute)
	if err := patchRoute(ctx, cl, in, green); err != nil {
		t.Fatal(err)
	}
	if got := counter.get(webhook.PathHTTPRoute) - before; got == 0 {
		t.Error("a backendRef change in a namespace that opted in never reached the webhook")
	}
}
