package plugin_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
	"github.com/cutover-guard/cutover-guard/internal/cutoverctl"
)

// controllerName is the Gateway controller the test plays.
const controllerName = "example.com/gateway-controller"

// reportConditions writes, as a Gateway controller would, Accepted and
// ResolvedRefs true for the route's generation gen on its Gateway.
func reportConditions(ctx context.Context, c client.Client, gen int64) error {
	var r gwv1.HTTPRoute
	if err := c.Get(ctx, client.ObjectKey{Namespace: tutorial.Namespace, Name: tutorial.Route}, &r); err != nil {
		return err
	}
	now := metav1.Now()
	cond := func(t, reason string) metav1.Condition {
		return metav1.Condition{Type: t, Status: metav1.ConditionTrue, Reason: reason, Message: "ok", ObservedGeneration: gen, LastTransitionTime: now}
	}
	r.Status.Parents = []gwv1.RouteParentStatus{{
		ParentRef:      gwv1.ParentReference{Name: tutorial.Gateway},
		ControllerName: controllerName,
		Conditions:     []metav1.Condition{cond("Accepted", "Accepted"), cond("ResolvedRefs", "ResolvedRefs")},
	}}
	return c.Status().Update(ctx, &r)
}

// When a Gateway controller reports on the route, switch waits until its
// conditions are true for the new generation (the test plays the
// controller, answering once it sees the switched route), and status shows
// them per Gateway. When the controller does not answer, the wait is
// bounded and says what it saw.
func TestSwitchWaitsForRouteConditions(t *testing.T) {
	e := setup(t)
	e.reset(t, true)
	ctx := t.Context()
	gen := e.route(t).Generation
	if err := reportConditions(ctx, e.kube, gen); err != nil {
		t.Fatal(err)
	}
	r := e.cutover(t, "status", tutorial.Route, "-n", tutorial.Namespace)
	mustContain(t, r, "production/public: Accepted=True, ResolvedRefs=True")

	controller := make(chan error, 1)
	go func() {
		controller <- wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, tutorial.WaitTimeout, true, func(ctx context.Context) (bool, error) {
			var rt gwv1.HTTPRoute
			if err := e.kube.Get(ctx, client.ObjectKey{Namespace: tutorial.Namespace, Name: tutorial.Route}, &rt); err != nil || rt.Generation == gen {
				return false, nil
			}
			return true, reportConditions(ctx, e.kube, rt.Generation)
		})
	}()
	var res cutoverctl.SwitchResult
	r = e.cutoverJSON(t, &res, "switch", tutorial.Route, "-n", tutorial.Namespace, "--to", tutorial.Green, "--yes")
	mustExit(t, r, 0)
	if err := <-controller; err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.Conditions, "conditions true for generation ") || !strings.Contains(res.Conditions, "production/public Accepted=True, ResolvedRefs=True") {
		t.Errorf("switch -o json: conditions = %q, want true for the new generation", res.Conditions)
	}

	// Nobody answers the rollback: the plugin gives up after --wait-timeout.
	r = e.cutover(t, "rollback", tutorial.Route, "-n", tutorial.Namespace, "--yes", "--wait-timeout", "1s")
	mustExit(t, r, 2)
	mustContain(t, r, "switched: httproute production/myapp now sends its traffic to app-blue", "error: switched, but the route's conditions are not true for generation", "Accepted not yet observed")
}

// status -w redraws until interrupted, and Ctrl-C (SIGINT) ends it with
// exit 0.
func TestStatusWatchRedrawsUntilInterrupted(t *testing.T) {
	e := setup(t)
	e.reset(t, false)
	cmd := exec.CommandContext(t.Context(), e.kubectl.Binary, "cutover", "status", tutorial.Route, "-n", tutorial.Namespace, "-w", "--interval", "100ms")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubectl.Kubeconfig, "KUBECACHEDIR="+filepath.Join(e.kubectl.Home, "cache"))
	cmd.Env = append(cmd.Env, e.kubectl.Env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	frames := 0
	sc := bufio.NewScanner(out)
	for frames < 2 && sc.Scan() {
		if sc.Text() == "---" {
			frames++
		}
	}
	if frames < 2 {
		_ = cmd.Process.Kill()
		t.Fatalf("status -w: %d frame(s) before its output ended: %v\n%s", frames, sc.Err(), stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	go func() {
		for sc.Scan() {
		}
	}()
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) || err != nil {
		t.Fatalf("status -w after SIGINT: %v, want exit 0\n%s", err, stderr.String())
	}
}
