package e2e_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// The guard's answer to a cutover while green's pods are held Pending.
var greenNotReady = []string{
	"service production/app-green: deployment app-green is not ready (0/2 ready, 2 pending); wait for: kubectl rollout status deployment/app-green -n production",
	"service production/app-green: service app-green has no endpoints on port 80",
}

// Every way the tutorial's readers (and their GitOps tools) write the route
// is denied while green is not Ready, and the route keeps pointing at blue.
func TestCutoverToUnreadyGreenIsDenied(t *testing.T) {
	e := setup(t)
	dir := t.TempDir()
	// The tutorial's httproute.yaml with the backend switched to green.
	edited := filepath.Join(dir, "edited-httproute.yaml")
	original, err := os.ReadFile(filepath.Join(e.kubectl().Dir, tutorial.RouteFile))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(original), "- name: app-blue"); n != 1 {
		t.Fatalf("httproute.yaml holds %d backendRefs to app-blue, want 1", n)
	}
	if err := os.WriteFile(edited, []byte(strings.Replace(string(original), "- name: app-blue", "- name: app-green", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	// An editor that makes the same change, for kubectl edit.
	editor := filepath.Join(dir, "switch-to-green.sh")
	if err := os.WriteFile(editor, []byte("#!/bin/sh\nsed -i 's/name: app-blue$/name: app-green/' \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	tests := map[string]struct {
		// before runs first and must succeed (e.g. the apply that created the route).
		before string
		line   string
		env    []string
	}{
		"kubectl patch, as the tutorial prints it": {
			line: tutorial.CutoverCommand,
		},
		"kubectl apply -f of the edited httproute.yaml": {
			before: "kubectl apply -f httproute.yaml",
			line:   "kubectl apply -f " + edited,
		},
		"kubectl apply --server-side by a GitOps field manager": {
			line: "kubectl apply --server-side --field-manager=argocd-controller --force-conflicts -f " + edited,
		},
		"kubectl edit": {
			line: "kubectl edit httproute myapp -n production",
			env:  []string{"KUBE_EDITOR=" + editor},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e.reset(t, world{})
			if tc.before != "" {
				if r := e.sh(t, tc.before); !r.OK() {
					t.Fatalf("before: %s", r)
				}
			}
			r := e.sh(t, tc.line, tc.env...)
			requireDenied(t, r, tutorial.HTTPRouteWebhook, greenNotReady...)
			e.checkBackend(t, tutorial.Blue)
		})
	}
}

// A server-side dry run gets the same answer, and no Event is recorded for
// it (the webhook is registered with sideEffects NoneOnDryRun).
func TestDryRunCutoverIsDeniedWithoutEvent(t *testing.T) {
	e := setup(t)
	e.reset(t, world{})
	dryRunRoute := e.route(t)

	r := e.sh(t, tutorial.CutoverCommand+" --dry-run=server")
	requireDenied(t, r, tutorial.HTTPRouteWebhook, greenNotReady...)
	e.checkBackend(t, tutorial.Blue)

	// An Event names the route's resourceVersion. Move the route to a new
	// one (an unrelated edit), deny a real cutover there, and wait for its
	// Event: one for the dry run, recorded before it, would be there by then.
	if r := e.sh(t, "kubectl label httproute myapp -n production cutover-guard.dev/e2e=dry-run"); !r.OK() {
		t.Fatal(r)
	}
	route := e.route(t)
	if route.ResourceVersion == dryRunRoute.ResourceVersion {
		t.Fatal("the label did not change the route's resourceVersion")
	}
	requireDenied(t, e.sh(t, tutorial.CutoverCommand), tutorial.HTTPRouteWebhook, greenNotReady...)
	e.waitDeniedEvent(t, "HTTPRoute", tutorial.Route, string(route.UID), route.ResourceVersion)
	for _, ev := range e.deniedEvents(t, "HTTPRoute", tutorial.Route) {
		if ev.InvolvedObject.UID == string(dryRunRoute.UID) && ev.InvolvedObject.ResourceVersion == dryRunRoute.ResourceVersion {
			t.Errorf("the dry run recorded an Event: %+v", ev)
		}
	}
	e.checkBackend(t, tutorial.Blue)
}

// Once green is Ready, has endpoints and reaches its database, the
// tutorial's cutover goes through and prints what the tutorial says.
func TestCutoverToReadyGreenIsAllowed(t *testing.T) {
	e := setup(t)
	tests := map[string]struct{ dsn string }{
		"with PostgreSQL":      {dsn: postgresDSN},
		"with MySQL (MariaDB)": {dsn: mysqlDSN},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e.reset(t, world{greenReady: true, dsn: tc.dsn})
			e.checkBackend(t, tutorial.Blue)
			requireOutput(t, e.sh(t, tutorial.CutoverCommand), tutorial.PatchedOutput)
			e.checkBackend(t, tutorial.Green)
		})
	}
}
