package manifests_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
)

// certManagerModule pins the cert-manager release whose CRDs the
// cert-manager overlay is validated against (its deploy/crds folder).
const certManagerModule = "github.com/cert-manager/cert-manager@v1.21.2"

// TestApplyDryRun applies every object of each overlay with
// `kubectl apply --server-side --dry-run=server`: the API server validates
// them (schemas, CRDs, admission) without keeping anything.
func TestApplyDryRun(t *testing.T) {
	c := sharedCluster(t)
	// Namespaced objects can only be dry-run into a namespace that exists.
	applyForReal(t, c, ofKinds(build(t, "default"), "Namespace"))
	installCertManagerCRDs(t, c)

	for _, overlay := range []string{"default", "cert-manager", "namespaced-secrets", "client-auth"} {
		for mode, args := range map[string][]string{
			"server-side": {"apply", "--server-side", "--field-manager=cutover-guard-install"},
			"client-side": {"apply"}, // kubectl apply -k, as many people type it
		} {
			t.Run(overlay+"/"+mode, func(t *testing.T) {
				objs := build(t, overlay)
				out, err := kubectl(t, c, nil, append(args, "--dry-run=server", "-k", overlayDir(t, overlay))...)
				if err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
				lines := strings.Split(strings.TrimSpace(out), "\n")
				if len(lines) != len(objs) {
					t.Errorf("%d objects built, %d applied:\n%s", len(objs), len(lines), out)
				}
				for _, l := range lines {
					if !strings.HasSuffix(l, " (server dry run)") {
						t.Errorf("unexpected: %s", l)
					}
				}
			})
		}
	}
}

// installCertManagerCRDs installs the pinned cert-manager release's CRDs,
// from the Go module proxy.
func installCertManagerCRDs(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "go", "mod", "download", "-json", certManagerModule)
	cmd.Dir = t.TempDir() // outside the module: go.mod stays as it is
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v\n%s", certManagerModule, err, stderrOf(err))
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download %s: no folder in %s", certManagerModule, out)
	}
	paths, err := filepath.Glob(filepath.Join(mod.Dir, "deploy", "crds", "cert-manager.io_*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no cert-manager CRDs in %s", mod.Dir)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	dl, _ := ctx.Deadline()
	if _, err := envtest.InstallCRDs(c.Config, envtest.CRDInstallOptions{
		Paths: paths, ErrorIfPathMissing: true, MaxTime: time.Until(dl), PollInterval: 50 * time.Millisecond,
	}); err != nil {
		t.Fatalf("install cert-manager CRDs: %v", err)
	}
}

// TestRBAC installs the default overlay's RBAC and asks the API server, with
// `kubectl auth can-i --as=<the guard's ServiceAccount>`, for each verb the
// guard uses and for what it must not do.
func TestRBAC(t *testing.T) {
	c := sharedCluster(t)
	applyForReal(t, c, ofKinds(build(t, "default"),
		"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"))

	ns := "-n=production"
	own := "-n=" + namespace
	for _, tc := range []struct {
		why  string
		args []string
		want bool
	}{
		// package checks: live reads
		{"reference check reads the Service", []string{"get", "services", ns}, true},
		{"deployment check reads Deployments by name", []string{"get", "deployments.apps", ns}, true},
		{"deployment check lists the ReplicaSets a selector matches", []string{"list", "replicasets.apps", ns}, true},
		{"workload check lists the pods a selector matches", []string{"list", "pods", ns}, true},
		{"workload check reads a pod without a controller by name", []string{"get", "pods", ns}, true},
		{"workload check reads StatefulSets by name", []string{"get", "statefulsets.apps", ns}, true},
		{"workload check reads DaemonSets by name", []string{"get", "daemonsets.apps", ns}, true},
		{"endpoints check lists EndpointSlices", []string{"list", "endpointslices.discovery.k8s.io", ns}, true},
		{"reference check lists ReferenceGrants", []string{"list", "referencegrants.gateway.networking.k8s.io", ns}, true},
		{"find cache watches ReplicaSets' metadata", []string{"watch", "replicasets.apps", "--all-namespaces"}, true},
		{"find cache watches pods' metadata", []string{"watch", "pods", "--all-namespaces"}, true},
		{"find cache watches EndpointSlices' metadata", []string{"watch", "endpointslices.discovery.k8s.io", "--all-namespaces"}, true},
		{"endpoints check reads each EndpointSlice by name (found in the watch cache, judged by GET)", []string{"get", "endpointslices.discovery.k8s.io", ns}, true},
		{"reference check reads a matching ReferenceGrant by name", []string{"get", "referencegrants.gateway.networking.k8s.io", ns}, true},
		{"database check reads a Secret by name", []string{"get", "secrets/app-db", ns}, true},
		{"database check reads a ConfigMap by name", []string{"get", "configmaps/app-config", ns}, true},
		{"smoke gate reads an endpoint's Pod by name", []string{"get", "pods/app-green-1", ns}, true},
		// package webhook: the CutoverDenied Event
		{"denials create an Event", []string{"create", "events", ns}, true},
		{"repeated denials patch the Event", []string{"patch", "events", ns}, true},
		// package webhook: may the requester read what a finding reveals?
		{"asks whether the requester may get a Secret", []string{"create", "subjectaccessreviews.authorization.k8s.io"}, true},
		// package certs: its own Secret and webhook configuration
		{"rotator reads its Secret", []string{"get", "secrets/" + "cutover-guard-cert", own}, true},
		{"rotator lists its Secret by name", []string{"list", "secrets/" + "cutover-guard-cert", own}, true},
		{"rotator watches its Secret by name", []string{"watch", "secrets/" + "cutover-guard-cert", own}, true},
		{"rotator writes its Secret", []string{"update", "secrets/" + "cutover-guard-cert", own}, true},
		{"rotator watches its webhook configuration by name", []string{"watch", "validatingwebhookconfigurations.admissionregistration.k8s.io/cutover-guard"}, true},
		{"rotator injects the CA", []string{"update", "validatingwebhookconfigurations.admissionregistration.k8s.io/cutover-guard"}, true},

		// never
		{"no listing Services (the reference check reads its Service by name)", []string{"list", "services", ns}, false},
		{"no listing Secrets", []string{"list", "secrets", ns}, false},
		{"no watching Secrets", []string{"watch", "secrets", ns}, false},
		{"no listing Secrets anywhere", []string{"list", "secrets", "--all-namespaces"}, false},
		{"no watching Secrets anywhere", []string{"watch", "secrets", "--all-namespaces"}, false},
		{"no listing Secrets in its own namespace", []string{"list", "secrets", own}, false},
		{"no watching Secrets in its own namespace", []string{"watch", "secrets", own}, false},
		{"no writing other Secrets in its own namespace", []string{"update", "secrets/other", own}, false},
		{"no writing Secrets elsewhere", []string{"update", "secrets/cutover-guard-cert", ns}, false},
		{"no creating Secrets", []string{"create", "secrets", own}, false},
		{"no deleting its Secret", []string{"delete", "secrets/cutover-guard-cert", own}, false},
		{"no listing ConfigMaps", []string{"list", "configmaps", ns}, false},
		{"no watching ConfigMaps", []string{"watch", "configmaps", ns}, false},
		{"no watching Deployments", []string{"watch", "deployments.apps", ns}, false},
		{"no listing Deployments: cost would grow with the namespace", []string{"list", "deployments.apps", ns}, false},
		{"no changing ReplicaSets", []string{"update", "replicasets.apps", ns}, false},
		{"no changing Deployments", []string{"update", "deployments.apps", ns}, false},
		{"no changing Services", []string{"patch", "services", ns}, false},
		{"no changing routes", []string{"update", "httproutes.gateway.networking.k8s.io", ns}, false},
		{"no pod logs", []string{"get", "pods", "--subresource=log", ns}, false},
		{"no exec into pods", []string{"create", "pods", "--subresource=exec", ns}, false},
		{"no changing Pods", []string{"delete", "pods", ns}, false},
		{"no listing StatefulSets: cost would grow with the namespace", []string{"list", "statefulsets.apps", ns}, false},
		{"no listing DaemonSets", []string{"list", "daemonsets.apps", ns}, false},
		{"no proxying to Pods", []string{"get", "pods", "--subresource=proxy", ns}, false},
		{"no events.k8s.io Events", []string{"create", "events.events.k8s.io", ns}, false},
		{"no deleting Events", []string{"delete", "events", ns}, false},
		{"no other webhook configuration", []string{"update", "validatingwebhookconfigurations.admissionregistration.k8s.io/other"}, false},
		{"no listing webhook configurations", []string{"list", "validatingwebhookconfigurations.admissionregistration.k8s.io"}, false},
		{"no deleting its webhook configuration", []string{"delete", "validatingwebhookconfigurations.admissionregistration.k8s.io/cutover-guard"}, false},
		{"no mutating webhooks", []string{"update", "mutatingwebhookconfigurations.admissionregistration.k8s.io/cutover-guard"}, false},
		{"no escalation", []string{"bind", "clusterroles.rbac.authorization.k8s.io"}, false},
		{"no impersonation", []string{"impersonate", "users"}, false},
	} {
		args := append([]string{"auth", "can-i", "--as=" + serviceAccount}, tc.args...)
		out, err := kubectl(t, c, nil, args...)
		got := strings.TrimSpace(out) == "yes"
		if err != nil && !got && strings.TrimSpace(out) != "no" {
			t.Errorf("%s: %v", tc.why, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s: kubectl %s: %s, want %v", tc.why, strings.Join(args, " "), strings.TrimSpace(out), tc.want)
		}
	}

	// Argo Rollouts are not installed here, and kubectl auth can-i cannot
	// name the resource of an API the server does not serve: ask with a
	// SubjectAccessReview, which needs no such API.
	cl := routeClient(t, c)
	for _, tc := range []struct {
		verb string
		want bool
	}{{"get", true}, {"list", false}, {"watch", false}, {"patch", false}} {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   serviceAccount,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: "production", Verb: tc.verb, Group: "argoproj.io", Resource: "rollouts",
			},
		}}
		if err := cl.Create(t.Context(), sar); err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != tc.want {
			t.Errorf("%s rollouts.argoproj.io: allowed %v, want %v (the workload check reads Rollouts by name only)", tc.verb, sar.Status.Allowed, tc.want)
		}
	}
}
