package plugin_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
	"github.com/cutover-guard/cutover-guard/internal/cutoverctl"
)

// gatewayStandIn serves on loopback in place of the Gateway's address: it
// answers as the backend the route names at the moment of the request
// would, 200 from blue and 503 from a broken green.
func gatewayStandIn(t *testing.T, kube client.Client) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var route gwv1.HTTPRoute
		if err := kube.Get(r.Context(), client.ObjectKey{Namespace: tutorial.Namespace, Name: tutorial.Route}, &route); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if backend := string(route.Spec.Rules[0].BackendRefs[0].Name); backend == tutorial.Green {
			http.Error(w, "green: database errors", http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintln(w, "blue: ok")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String() + "/"
}

// --verify after the switch: green answers 503, the plugin says which
// request failed and, with --rollback-on-failure, switches back at once.
// The rollback is a write the guard reviews: with blue at zero the guard
// denies it (and records the denial as an Event), with blue serving it goes
// through.
func TestVerifyFailureRollsBackThroughTheGuard(t *testing.T) {
	e := setup(t)
	url := gatewayStandIn(t, e.kube)
	verify := []string{"switch", tutorial.Route, "-n", tutorial.Namespace, "--to", tutorial.Green, "--yes",
		"--verify", url, "--verify-count", "3", "--verify-interval", "100ms", "--rollback-on-failure"}

	t.Run("blue serving: the rollback goes through", func(t *testing.T) {
		e.reset(t, true)
		var res cutoverctl.SwitchResult
		r := e.cutoverJSON(t, &res, verify...)
		mustExit(t, r, 1)
		if !res.Applied || res.Verify == nil || res.Verify.OK || len(res.Verify.Requests) != 1 || res.Verify.Requests[0].Status != http.StatusServiceUnavailable {
			t.Errorf("switch -o json: applied %v, verify %+v; want applied and request 1 failed with 503", res.Applied, res.Verify)
		}
		if res.Rollback == nil || !res.Rollback.Applied || strings.Join(res.Rollback.To, ",") != tutorial.Blue {
			t.Fatalf("switch -o json: rollback %+v, want applied, to app-blue", res.Rollback)
		}
		if got := e.backend(t); got != tutorial.Blue {
			t.Fatalf("after the rollback on failure the route sends traffic to %s", got)
		}
		var h []cutoverctl.HistoryEntry
		e.cutoverJSON(t, &h, "history", tutorial.Route, "-n", tutorial.Namespace)
		if len(h) < 2 || h[0].What != cutoverctl.ActionRollbackOnFailure || !strings.Contains(h[0].Reason, "verify failed: request 1 of 3") {
			t.Errorf("history: newest = %+v, want the rollback on failure with its reason", h)
		}

		// The same in text.
		e.reset(t, true)
		r = e.cutover(t, verify...)
		mustExit(t, r, 1)
		mustContain(t, r, "verify: 3 request(s) to "+url, "1/3: HTTP 503", "verify: FAILED: request 1 of 3 to "+url+": HTTP 503",
			"rolling back at once", "rolled back: httproute production/myapp now sends its traffic to app-blue")
	})

	t.Run("blue at zero: the guard denies the rollback", func(t *testing.T) {
		e.reset(t, true)
		e.scaleBlueToZero(t)
		t.Cleanup(func() {
			_ = tutorial.Serve(context.Background(), e.kube, e.manifests.Deployment(tutorial.Blue, tutorial.Replicas, false))
		})
		since := time.Now().Add(-time.Second)
		r := e.cutover(t, verify...)
		mustExit(t, r, 1)
		mustContain(t, r, "verify: FAILED: request 1 of 3", "rollback to app-blue DENIED", "guard: DENIED by httproute.cutover-guard.dev",
			"deployment app-blue is scaled to zero")
		if got := e.backend(t); got != tutorial.Green {
			t.Fatalf("after the denied rollback the route sends traffic to %s", got)
		}
		waitDenialEvent(t, e.kube, tutorial.Blue, since)
	})
}

// waitDenialEvent waits for a CutoverDenied Event on the route, newer than
// since, whose message names service.
func waitDenialEvent(t *testing.T, c client.Client, service string, since time.Time) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var events corev1.EventList
		if err := c.List(ctx, &events, client.InNamespace(tutorial.Namespace)); err != nil {
			return false, nil
		}
		for _, ev := range events.Items {
			if ev.Reason == cutoverctl.ReasonCutoverDenied && ev.InvolvedObject.Name == tutorial.Route &&
				strings.Contains(ev.Message, "service production/"+service+":") && !ev.LastTimestamp.Time.Before(since.Truncate(time.Second)) {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no CutoverDenied Event for %s since %s: %v", service, since, err)
	}
}
