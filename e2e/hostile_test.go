package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// hostileNamespace holds the wide-route scenario; it is deleted afterwards.
const hostileNamespace = "hostile-wide"

// wideRules x widePerRule is the most backendRefs an HTTPRoute may hold
// (the CRD allows 16 rules of 16).
const wideRules, widePerRule = 16, 16

// A route switched to 16 rules x 16 backendRefs, 256 new Services with no
// pods, through the real API server and kubectl: denied with one line per
// Service, none of them a timeout, the first of them whole within 4 KiB and
// the rest counted; and 256 refs to the one Ready green with
// different weights are a single target, allowed.
func TestHostileWideRoute(t *testing.T) {
	e := setup(t)
	kube := e.wideClient(t)
	e.createWideNamespace(t, kube)

	t.Run("256 new Services without pods: the first denials whole within 4 KiB, the rest counted", func(t *testing.T) {
		ctx := t.Context()
		for i := range wideRules * widePerRule {
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: hostileNamespace, Name: wideService(i)},
				// Headless: 256 cluster IPs would fill the local control
				// plane's service range.
				Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": wideService(i)},
					Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
			}
			if err := kube.Create(ctx, svc); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		}
		r := e.patchWide(t, func(k int) (string, int32) { return wideService(k), 1 })
		if !r.Denied() {
			t.Fatalf("want a denial, got:\n%s", r)
		}
		t.Logf("the guard's decision on %d targets took %s", wideRules*widePerRule, e.lastDecisionTook(hostileNamespace))
		// 256 denials of ~150 bytes: the message holds the first ones,
		// whole and in the route's order, within 4 KiB, and counts the
		// rest exactly.
		lines := deniedLines(r.Output)
		msg := strings.Join(lines, "\n")
		t.Logf("the denial is %d bytes, %d lines", len(msg), len(lines))
		if len(msg) > 4<<10 {
			t.Errorf("the denial is %d bytes, want at most 4 KiB", len(msg))
		}
		if len(lines) < 2 {
			t.Fatalf("denial lines: %q; want findings and a count of the rest", lines)
		}
		kept, last := lines[:len(lines)-1], lines[len(lines)-1]
		for i, line := range kept {
			if strings.Contains(line, "did not finish before the admission deadline") {
				t.Errorf("a check timed out: %q", line)
			}
			if m := wideLine.FindStringSubmatch(line); m == nil || m[1] != wideService(i) {
				t.Errorf("denial line %d names no wide Service, or not %s: %q", i, wideService(i), line)
			}
		}
		var more int
		if _, err := fmt.Sscanf(last, "... and %d more findings", &more); err != nil {
			t.Errorf("the last line does not count the findings left out: %q", last)
		}
		if got := len(kept) + more; got != wideRules*widePerRule {
			t.Errorf("%d findings shown and %d counted, want %d in all", len(kept), more, wideRules*widePerRule)
		}
		if got := e.wideBackends(t); got != 1 {
			t.Errorf("the route holds %d backendRefs after the denial, want the 1 it had", got)
		}
	})

	t.Run("256 refs to the one Ready green with different weights are one target and allowed", func(t *testing.T) {
		r := e.patchWide(t, func(k int) (string, int32) { return tutorial.Green, int32(k + 1) })
		requireOutput(t, r, tutorial.PatchedOutput)
		if got := e.wideBackends(t); got != wideRules*widePerRule {
			t.Errorf("the route holds %d backendRefs, want %d", got, wideRules*widePerRule)
		}
	})
}

func wideService(i int) string { return fmt.Sprintf("wide-%03d", i) }

var wideLine = regexp.MustCompile(`^service ` + hostileNamespace + `/(wide-\d{3}): `)

// deniedLines returns the lines of a webhook's denial in kubectl's output,
// without kubectl's prefix on the first.
func deniedLines(output string) []string {
	_, msg, ok := strings.Cut(output, "denied the request: ")
	if !ok {
		return nil
	}
	return slices.DeleteFunc(strings.Split(strings.TrimSpace(msg), "\n"), func(s string) bool { return strings.TrimSpace(s) == "" })
}

// wideClient is a client of the cluster without client-side rate limit, so
// creating hundreds of objects takes a moment rather than a minute.
func (e *env) wideClient(t *testing.T) client.Client {
	t.Helper()
	cfg := rest.CopyConfig(e.cluster.Config)
	cfg.QPS, cfg.Burst = -1, 0
	c, err := client.New(cfg, client.Options{Scheme: tutorial.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// createWideNamespace creates hostileNamespace as createTenant does.
func (e *env) createWideNamespace(t *testing.T, kube client.Client) {
	t.Helper()
	e.createTenant(t, kube, hostileNamespace)
}

// createTenant creates namespace with the tutorial's Secret, blue
// and green rolled out, their Services and the route to blue, and deletes
// it (waiting until it is gone) when t ends.
func (e *env) createTenant(t *testing.T, kube client.Client, namespace string) {
	t.Helper()
	ctx := t.Context()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := kube.Delete(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", namespace, err)
			return
		}
		err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
			err := kube.Get(ctx, client.ObjectKeyFromObject(ns), &corev1.Namespace{})
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
		if err != nil {
			t.Errorf("namespace %s still there: %v", namespace, err)
		}
	})
	if err := tutorial.EnsureNamespace(ctx, kube, namespace); err != nil {
		t.Fatal(err)
	}
	if err := tutorial.SetSecret(ctx, kube, namespace, postgresDSN); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*corev1.Service{e.manifests.BlueService, e.manifests.GreenService} {
		s = s.DeepCopy()
		s.Namespace = namespace
		if err := tutorial.CreateOrReplace(ctx, kube, s); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, 2)
	for _, name := range []string{tutorial.Blue, tutorial.Green} {
		d := e.manifests.Deployment(name, tutorial.Replicas, false)
		d.Namespace = namespace
		go func() { errs <- tutorial.Serve(ctx, kube, d) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	route := e.manifests.Route.DeepCopy()
	route.Namespace = namespace
	if err := tutorial.Recreate(ctx, kube, route); err != nil {
		t.Fatal(err)
	}
}

// patchWide replaces the route's rules, with the real kubectl, by
// wideRules x widePerRule backendRefs: the k-th names backend(k) with its
// weight. Rule i matches path prefix /r<i>: each rule serves requests of
// its own (of rules with the same match, only the first would).
func (e *env) patchWide(t *testing.T, backend func(k int) (string, int32)) *tutorial.Result {
	t.Helper()
	rules := make([]gwv1.HTTPRouteRule, wideRules)
	for i := range rules {
		prefix, value := gwv1.PathMatchPathPrefix, fmt.Sprintf("/r%d", i)
		rules[i].Matches = []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: &prefix, Value: &value}}}
		for j := range widePerRule {
			name, weight := backend(i*widePerRule + j)
			port, w := gwv1.PortNumber(80), weight
			rules[i].BackendRefs = append(rules[i].BackendRefs, gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{
				BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Port: &port}, Weight: &w}})
		}
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"rules": rules}})
	if err != nil {
		t.Fatal(err)
	}
	r := e.kubectl().Run(t.Context(), "patch", "httproute", tutorial.Route, "-n", hostileNamespace, "--type=merge", "-p", string(patch))
	t.Logf("$ kubectl patch httproute %s -n %s --type=merge -p <%d rules x %d backendRefs>: exit %d after %s",
		tutorial.Route, hostileNamespace, wideRules, widePerRule, r.ExitCode, r.Took.Round(time.Millisecond))
	return r
}

// decisionTook matches a decision's namespace and its time in the guard's log.
var decisionTook = regexp.MustCompile(`"msg":"cutover [a-z_]+".*"namespace":"([^"]+)".*"took":"([^"]+)"`)

// lastDecisionTook returns how long the guard's last decision on a route in
// namespace took, as it logged it ("?" if it logged none).
func (e *env) lastDecisionTook(namespace string) string {
	took := "?"
	for _, line := range strings.Split(e.guard.Log(), "\n") {
		if m := decisionTook.FindStringSubmatch(line); m != nil && m[1] == namespace {
			took = m[2]
		}
	}
	return took
}

// wideBackends counts the backendRefs of the route in hostileNamespace.
func (e *env) wideBackends(t *testing.T) int {
	t.Helper()
	var r gwv1.HTTPRoute
	if err := e.kube.Get(t.Context(), client.ObjectKey{Namespace: hostileNamespace, Name: tutorial.Route}, &r); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, rule := range r.Spec.Rules {
		n += len(rule.BackendRefs)
	}
	return n
}
