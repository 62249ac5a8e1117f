package manifests_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/cutover-guard/cutover-guard/certs"
	"github.com/cutover-guard/cutover-guard/manifests"
	"github.com/cutover-guard/cutover-guard/webhook"
)

const (
	namespace      = certs.DefaultNamespace
	name           = "cutover-guard"
	serviceAccount = "system:serviceaccount:" + namespace + ":" + name
)

// TestGeneratedManifestsUpToDate regenerates the RBAC and webhook
// configuration from the controller-gen markers and compares.
func TestGeneratedManifestsUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("runs controller-gen")
	}
	root := repoRoot(t)
	out := t.TempDir()
	cmd := exec.CommandContext(t.Context(), "bash", filepath.Join(root, "manifests", "generate.sh"), out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("manifests/generate.sh: %v\n%s", err, b)
	}
	for _, f := range []string{"rbac/role.yaml", "webhook/manifests.yaml", "rotator/role.yaml"} {
		want, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(root, "manifests", f))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), string(got)); diff != "" {
			t.Errorf("manifests/%s is stale; run `make manifests` (-generated +committed):\n%s", f, diff)
		}
	}
}

// The webhook configuration the Go code registers (manifests.
// WebhookConfiguration: the end-to-end tests, the demo, the soak) has the
// webhooks each overlay installs.
func TestEmbeddedWebhookConfigurationIsInstalled(t *testing.T) {
	embedded, err := manifests.WebhookConfiguration()
	if err != nil {
		t.Fatal(err)
	}
	for _, overlay := range []string{"default", "cert-manager"} {
		t.Run(overlay, func(t *testing.T) {
			var installed admissionregistrationv1.ValidatingWebhookConfiguration
			mustFind(t, build(t, overlay), "ValidatingWebhookConfiguration", embedded.Name, &installed)
			if diff := cmp.Diff(installed.Webhooks, embedded.Webhooks); diff != "" {
				t.Errorf("webhooks (-installed by %s +embedded):\n%s", overlay, diff)
			}
		})
	}
}

// TestManifests checks what each installable overlay builds to, offline.
func TestManifests(t *testing.T) {
	for overlay, certManager := range map[string]bool{"default": false, "cert-manager": true} {
		t.Run(overlay, func(t *testing.T) {
			objs := build(t, overlay)
			for _, o := range objs {
				if o.GetNamespace() != "" && o.GetNamespace() != namespace {
					t.Errorf("%s %s is in namespace %s, want %s", o.GetKind(), o.GetName(), o.GetNamespace(), namespace)
				}
			}

			var ns corev1.Namespace
			mustFind(t, objs, "Namespace", namespace, &ns)
			if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
				t.Errorf("namespace enforces pod security %q, want restricted", got)
			}

			var d appsv1.Deployment
			mustFind(t, objs, "Deployment", name, &d)
			checkDeployment(t, &d, certManager)
			pods := labels.Set(d.Spec.Template.Labels)

			var pdb policyv1.PodDisruptionBudget
			mustFind(t, objs, "PodDisruptionBudget", name, &pdb)
			if !selects(pdb.Spec.Selector.MatchLabels, pods) {
				t.Errorf("PodDisruptionBudget selects %v, not the guard's pods %v", pdb.Spec.Selector.MatchLabels, pods)
			}
			if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 1 || pdb.Spec.MinAvailable.IntValue() >= int(*d.Spec.Replicas) {
				t.Errorf("PodDisruptionBudget minAvailable %v: want at least 1 and fewer than the %d replicas", pdb.Spec.MinAvailable, *d.Spec.Replicas)
			}

			var svc corev1.Service
			mustFind(t, objs, "Service", name, &svc)
			if !selects(svc.Spec.Selector, pods) {
				t.Errorf("Service selects %v, not the guard's pods %v", svc.Spec.Selector, pods)
			}

			var np networkingv1.NetworkPolicy
			mustFind(t, objs, "NetworkPolicy", name, &np)
			if !selects(np.Spec.PodSelector.MatchLabels, pods) {
				t.Errorf("NetworkPolicy selects %v, not the guard's pods", np.Spec.PodSelector.MatchLabels)
			}

			var vwc admissionregistrationv1.ValidatingWebhookConfiguration
			mustFind(t, objs, "ValidatingWebhookConfiguration", certs.DefaultWebhookConfigName, &vwc)
			checkWebhooks(t, &vwc, &svc)

			var role rbacv1.ClusterRole
			mustFind(t, objs, "ClusterRole", name, &role)
			checkGuardRole(t, &role)
			var binding rbacv1.ClusterRoleBinding
			mustFind(t, objs, "ClusterRoleBinding", name, &binding)
			if binding.RoleRef.Name != name || !boundTo(binding.Subjects, d.Spec.Template.Spec.ServiceAccountName) {
				t.Errorf("ClusterRoleBinding %s does not bind ClusterRole %s to the guard's ServiceAccount", binding.Name, name)
			}
			for _, o := range ofKinds(objs, "Role", "ClusterRole") {
				checkNoSecretListing(t, o)
			}

			secret := find(objs, "Secret", certs.DefaultSecretName)
			rotator := find(objs, "Role", "cutover-guard-cert-rotator")
			annotation := vwc.Annotations["cert-manager.io/inject-ca-from"]
			if certManager {
				if secret != nil || rotator != nil {
					t.Error("the cert-manager overlay ships the rotator's Secret or Role; cert-manager owns the certificate")
				}
				var cert struct {
					Spec struct {
						SecretName string   `json:"secretName"`
						DNSNames   []string `json:"dnsNames"`
					} `json:"spec"`
				}
				mustFind(t, objs, "Certificate", "cutover-guard-serving", &cert)
				if annotation != namespace+"/cutover-guard-serving" {
					t.Errorf("inject-ca-from = %q, want %s/cutover-guard-serving", annotation, namespace)
				}
				if want := svc.Name + "." + namespace + ".svc"; !slices.Contains(cert.Spec.DNSNames, want) {
					t.Errorf("Certificate names %v, not the Service %s", cert.Spec.DNSNames, want)
				}
				if v := d.Spec.Template.Spec.Volumes[0]; v.Secret == nil || v.Secret.SecretName != cert.Spec.SecretName {
					t.Errorf("the certificate folder is not cert-manager's Secret %s: %+v", cert.Spec.SecretName, v)
				}
			} else {
				if secret == nil || rotator == nil {
					t.Fatal("the default overlay lacks the rotator's Secret or Role")
				}
				if _, found, _ := unstructured.NestedMap(secret.Object, "data"); found {
					t.Error("the certificate Secret ships with data; the guard fills it")
				}
				if annotation != "" {
					t.Errorf("the default overlay asks cert-manager to inject the CA (%s)", annotation)
				}
			}
		})
	}
}

func selects(selector map[string]string, pods labels.Set) bool {
	return len(selector) > 0 && labels.SelectorFromSet(selector).Matches(pods)
}

func boundTo(subjects []rbacv1.Subject, sa string) bool {
	return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
		return s.Kind == "ServiceAccount" && s.Name == sa && s.Namespace == namespace
	})
}

func checkDeployment(t *testing.T, d *appsv1.Deployment, certManager bool) {
	t.Helper()
	spec := d.Spec.Template.Spec
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Fatal("replicas: want 2 or more (unset means 1)")
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Error("a rollout may take a ready replica away before its successor is ready (maxUnavailable != 0)")
	}
	if !slices.ContainsFunc(spec.TopologySpreadConstraints, func(c corev1.TopologySpreadConstraint) bool {
		return c.TopologyKey == corev1.LabelHostname
	}) {
		t.Error("no topology spread over nodes")
	}
	if spec.PriorityClassName != "system-cluster-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	if spec.ServiceAccountName != name {
		t.Errorf("serviceAccountName %q", spec.ServiceAccountName)
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and seccomp RuntimeDefault", psc)
	}
	if psc != nil && (psc.RunAsUser == nil || *psc.RunAsUser != 65532) {
		t.Error("pod does not run as the image's user 65532")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("container securityContext %+v: want read-only root, no privilege escalation, drop ALL", sc)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
		t.Error("no /readyz readiness probe")
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
		t.Error("no /healthz liveness probe")
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Error("no preStop delay: the Service may still send requests to a stopping pod")
	} else if grace := spec.TerminationGracePeriodSeconds; grace == nil || *grace <= c.Lifecycle.PreStop.Sleep.Seconds+5 {
		t.Errorf("terminationGracePeriodSeconds %v leaves no time to finish requests after preStop", grace)
	}
	var certDir string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--cert-dir="); ok {
			certDir = v
		}
	}
	mount := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == certDir })
	if certDir == "" || mount < 0 {
		t.Fatalf("--cert-dir %q is not a mounted volume", certDir)
	}
	// Rotation is asked for, never left to auto: a restarted container
	// finds its last key pair in --cert-dir, and auto would stop rotating.
	wantRotation := "--cert-rotation=true"
	if certManager {
		wantRotation = "--cert-rotation=false"
	}
	if !slices.Contains(c.Args, wantRotation) {
		t.Errorf("args %v, want %s", c.Args, wantRotation)
	}
	if !certManager {
		vol := spec.Volumes[slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == c.VolumeMounts[mount].Name })]
		if vol.EmptyDir == nil || vol.EmptyDir.Medium != corev1.StorageMediumMemory || c.VolumeMounts[mount].ReadOnly {
			t.Errorf("the rotating guard writes its key pair to a writable in-memory folder, got %+v", vol)
		}
	}
}

func checkWebhooks(t *testing.T, vwc *admissionregistrationv1.ValidatingWebhookConfiguration, svc *corev1.Service) {
	t.Helper()
	wantPaths := map[string]string{"httproutes": webhook.PathHTTPRoute, "grpcroutes": webhook.PathGRPCRoute, "services": webhook.PathService}
	// Each resource's API group and the field whose change its matchCondition requires.
	wantGroup := map[string]string{"httproutes": "gateway.networking.k8s.io", "grpcroutes": "gateway.networking.k8s.io", "services": ""}
	// Routes: any spec change (rules, parentRefs, hostnames can each move
	// traffic); Services: only a selector change.
	wantField := map[string]string{"httproutes": "object.spec != oldObject.spec", "grpcroutes": "object.spec != oldObject.spec", "services": "spec.selector"}
	// Routes are checked on create too; a Service's create moves no traffic.
	wantOps := map[string][]admissionregistrationv1.OperationType{
		"httproutes": {admissionregistrationv1.Create, admissionregistrationv1.Update},
		"grpcroutes": {admissionregistrationv1.Create, admissionregistrationv1.Update},
		"services":   {admissionregistrationv1.Update},
	}
	if len(vwc.Webhooks) != len(wantPaths) {
		t.Fatalf("%d webhooks, want %d", len(vwc.Webhooks), len(wantPaths))
	}
	for _, w := range vwc.Webhooks {
		if len(w.Rules) != 1 || len(w.Rules[0].Resources) != 1 {
			t.Errorf("%s: rules %+v, want one rule for one resource", w.Name, w.Rules)
			continue
		}
		r := w.Rules[0]
		resource := r.Resources[0]
		if !slices.Equal(r.Operations, wantOps[resource]) {
			t.Errorf("%s: operations %v, want %v", w.Name, r.Operations, wantOps[resource])
		}
		if !slices.Equal(r.APIGroups, []string{wantGroup[resource]}) || strings.Contains(resource, "/") {
			t.Errorf("%s: %v %v: want routes of gateway.networking.k8s.io or core Services, never a subresource", w.Name, r.APIGroups, resource)
		}
		s := w.ClientConfig.Service
		if s == nil || s.Name != svc.Name || s.Namespace != namespace || s.Path == nil || *s.Path != wantPaths[resource] ||
			s.Port == nil || *s.Port != svc.Spec.Ports[0].Port {
			t.Errorf("%s: calls %+v, want Service %s/%s port %d path %s", w.Name, s, namespace, svc.Name, svc.Spec.Ports[0].Port, wantPaths[resource])
		}
		if w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Fail {
			t.Errorf("%s: failurePolicy %v, want Fail", w.Name, w.FailurePolicy)
		}
		if w.TimeoutSeconds == nil || *w.TimeoutSeconds != 5 {
			t.Errorf("%s: timeoutSeconds %v, want 5", w.Name, w.TimeoutSeconds)
		}
		if w.SideEffects == nil || *w.SideEffects != admissionregistrationv1.SideEffectClassNoneOnDryRun {
			t.Errorf("%s: sideEffects %v, want NoneOnDryRun", w.Name, w.SideEffects)
		}
		if field := wantField[resource]; len(w.MatchConditions) != 1 || !strings.Contains(w.MatchConditions[0].Expression, field) {
			t.Errorf("%s: matchConditions %+v, want one on %s", w.Name, w.MatchConditions, field)
		}
		excluded := false
		if sel := w.NamespaceSelector; sel != nil {
			for _, e := range sel.MatchExpressions {
				excluded = excluded || e.Key == corev1.LabelMetadataName && e.Operator == "NotIn" &&
					slices.Contains(e.Values, "kube-system") && slices.Contains(e.Values, namespace)
			}
		}
		if !excluded {
			t.Errorf("%s: namespaceSelector %+v does not exclude kube-system and %s", w.Name, w.NamespaceSelector, namespace)
		}
	}
}

// checkGuardRole compares the guard's ClusterRole with what the code does.
func checkGuardRole(t *testing.T, role *rbacv1.ClusterRole) {
	t.Helper()
	got := map[string][]string{}
	for _, r := range role.Rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("unexpected rule %+v", r)
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
	want := map[string][]string{
		"services.":            {"get"},
		"deployments.apps":     {"get"},
		"statefulsets.apps":    {"get"},
		"daemonsets.apps":      {"get"},
		"rollouts.argoproj.io": {"get"},
		// list and watch: the find cache's metadata informers (checks/findcache.go).
		"pods.":                           {"get", "list", "watch"},
		"replicasets.apps":                {"list", "watch"},
		"endpointslices.discovery.k8s.io": {"get", "list", "watch"},
		"referencegrants.gateway.networking.k8s.io": {"get", "list"},
		"secrets.":    {"get"},
		"configmaps.": {"get"},
		"events.":     {"create", "patch"},
		"subjectaccessreviews.authorization.k8s.io": {"create"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ClusterRole %s (-want +got):\n%s", role.Name, diff)
	}
}

// checkNoSecretListing fails for a rule that lists or watches Secrets other
// than by name, or grants anything with a wildcard.
func checkNoSecretListing(t *testing.T, o *unstructured.Unstructured) {
	t.Helper()
	var role rbacv1.ClusterRole // Role and ClusterRole share the rules' shape
	if err := runtimeFrom(o, &role); err != nil {
		t.Fatal(err)
	}
	for _, r := range role.Rules {
		if slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") || slices.Contains(r.APIGroups, "*") {
			t.Errorf("%s %s: wildcard rule %+v", o.GetKind(), o.GetName(), r)
		}
		if slices.Contains(r.APIGroups, "") && slices.Contains(r.Resources, "secrets") && len(r.ResourceNames) == 0 &&
			(slices.Contains(r.Verbs, "list") || slices.Contains(r.Verbs, "watch")) {
			t.Errorf("%s %s lists or watches Secrets: %+v", o.GetKind(), o.GetName(), r)
		}
	}
}
