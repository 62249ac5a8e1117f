package e2e_test

import (
	"testing"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// The tutorial's "scale down blue to save resources" then "roll back": the
// rollback to a blue with no replicas is denied with the way out, and goes
// through once blue is scaled up and rolled out, as the tutorial says.
func TestRollbackToScaledDownBlue(t *testing.T) {
	e := setup(t)
	e.reset(t, world{greenReady: true})
	requireOutput(t, e.sh(t, tutorial.CutoverCommand), tutorial.PatchedOutput)
	e.checkBackend(t, tutorial.Green)

	requireOutput(t, e.sh(t, tutorial.ScaleBlueDownCommand), "deployment.apps/app-blue scaled")
	if got := *e.deployment(t, tutorial.Blue).Spec.Replicas; got != 0 {
		t.Fatalf("app-blue has %d replicas after scaling to zero", got)
	}
	e.checkBackend(t, tutorial.Green)

	requireDenied(t, e.sh(t, tutorial.RollbackCommand), tutorial.HTTPRouteWebhook,
		"service production/app-blue: deployment app-blue is scaled to zero; "+
			"scale it up before switching: kubectl scale deployment/app-blue -n production --replicas=<n> && kubectl rollout status deployment/app-blue -n production")
	e.checkBackend(t, tutorial.Green)

	requireOutput(t, e.sh(t, tutorial.ScaleBlueUpCommand), "deployment.apps/app-blue scaled")
	if r := e.sh(t, "kubectl rollout status deployment/app-blue -n production --timeout=90s"); !r.OK() {
		t.Fatal(r)
	}
	// rollout status reads the Deployment; the EndpointSlice controller may
	// be a moment behind, and the guard rightly checks both.
	if err := tutorial.WaitServing(t.Context(), e.kube, tutorial.Namespace, tutorial.Blue); err != nil {
		t.Fatal(err)
	}
	requireOutput(t, e.sh(t, tutorial.RollbackCommand), tutorial.PatchedOutput)
	e.checkBackend(t, tutorial.Blue)
}
