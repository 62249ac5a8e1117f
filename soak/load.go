package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// The kinds of request the clients send.
const (
	kindSwitchGreen = "switch to green"
	kindSwitchBlue  = "switch to blue"
	kindLabel       = "label edit"
	kindAnnotation  = "annotation edit"
	// A weight shift toward blue (its share grows) and toward green.
	kindWeightBlue  = "weight shift to blue"
	kindWeightGreen = "weight shift to green"
	// kindRead is the read of the route before a switch.
	kindRead = "route read"
)

// kinds in the order the report lists them.
var kinds = []string{kindSwitchGreen, kindSwitchBlue, kindLabel, kindAnnotation, kindWeightBlue, kindWeightGreen, kindRead, kindHostileFlood, kindHostileBomb, kindHostileBusy}

// What a client saw.
type outcome string

const (
	// allowed: the API server applied the update.
	allowed outcome = "allowed"
	// denied: the guard's webhook denied it (a verdict).
	denied outcome = "denied"
	// stale: the switch's JSON patch test found the route already moved by
	// another client; the API server refused it before admission.
	stale outcome = "stale"
	// failed: any other error, e.g. the webhook could not be called.
	failed outcome = "failed"
)

// sample is one request.
type sample struct {
	kind       string
	outcome    outcome
	start, end time.Time
	// msg is the error text for denied and failed requests.
	msg string
}

// requestTimeout bounds each request; the API server gives the webhook 10 s.
const requestTimeout = 30 * time.Second

// switchPause is each switcher's pause between requests, so that 2 shared
// cores are loaded but not saturated by the clients alone.
const switchPause = 20 * time.Millisecond

// runLoad runs the clients until stop is closed and returns every request.
// Requests use ctx (cancelled only on interrupt), so that the end of the
// load does not turn requests in flight into errors.
func (e *env) runLoad(ctx context.Context, stop <-chan struct{}) []sample {
	var (
		mu  sync.Mutex
		all []sample
		wg  sync.WaitGroup
	)
	spawn := func(n int, every time.Duration, work func(context.Context, int) sample) {
		for w := range n {
			wg.Go(func() {
				var mine []sample
				for i := 0; ; i++ {
					select {
					case <-stop:
						mu.Lock()
						all = append(all, mine...)
						mu.Unlock()
						return
					default:
					}
					if ctx.Err() != nil {
						<-stop // interrupted: the caller closes stop too
						continue
					}
					mine = append(mine, work(ctx, w*1_000_000+i))
					e.sent.Add(1)
					pause(ctx, every)
				}
			})
		}
	}
	spawn(e.s.switchers, switchPause, e.switchRoute)
	spawn(e.s.editors, e.s.editPause, e.editRoute)
	spawn(e.s.shifters, e.s.editPause, e.shiftWeights)
	wg.Wait()
	return all
}

// switchRoute reads where the route sends traffic and switches it to the
// other colour, with a JSON patch test so that it switches only from the
// colour it read. A switch to green newly sends it traffic: the guard
// checks it.
func (e *env) switchRoute(ctx context.Context, _ int) sample {
	var r gwv1.HTTPRoute
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if err := e.kube.Get(rctx, client.ObjectKey{Namespace: tutorial.Namespace, Name: tutorial.Route}, &r); err != nil {
		now := time.Now()
		return sample{kind: kindRead, outcome: failed, start: now, end: now, msg: err.Error()}
	}
	from := string(r.Spec.Rules[0].BackendRefs[0].Name)
	to, kind := tutorial.Green, kindSwitchGreen
	if from == tutorial.Green {
		to, kind = tutorial.Blue, kindSwitchBlue
	}
	const path = "/spec/rules/0/backendRefs/0/name"
	patch := fmt.Sprintf(`[{"op":"test","path":%q,"value":%q},{"op":"replace","path":%q,"value":%q}]`, path, from, path, to)
	return e.send(rctx, kind, &r, client.RawPatch(types.JSONPatchType, []byte(patch)))
}

// editRoute sets a label or an annotation on the route: no backend's share
// grows, and the installed matchConditions (spec unchanged) keep it from
// the guard, so it must always be allowed.
func (e *env) editRoute(ctx context.Context, n int) sample {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	r := &gwv1.HTTPRoute{}
	r.Namespace, r.Name = tutorial.Namespace, tutorial.Route
	field, kind := "labels", kindLabel
	if n%2 == 1 {
		field, kind = "annotations", kindAnnotation
	}
	patch := fmt.Sprintf(`{"metadata":{%q:{"soak.cutover-guard.dev/edit":"%d"}}}`, field, n)
	return e.send(rctx, kind, r, client.RawPatch(types.MergePatchType, []byte(patch)))
}

// shiftWeights moves the weights of the second route between blue and
// green, never to zero. The backend whose share grows is the guard's
// target: a shift toward blue (always serving) must be allowed, one toward
// green is judged like a switch to green. The new weights always differ
// from those read (a JSON patch test guards them), so that every shift
// changes the spec and reaches the guard.
func (e *env) shiftWeights(ctx context.Context, _ int) sample {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	r := &gwv1.HTTPRoute{}
	if err := e.kube.Get(rctx, client.ObjectKey{Namespace: tutorial.Namespace, Name: weightsRoute}, r); err != nil {
		now := time.Now()
		return sample{kind: kindRead, outcome: failed, start: now, end: now, msg: err.Error()}
	}
	cur := int32(1)
	if w := r.Spec.Rules[0].BackendRefs[0].Weight; w != nil {
		cur = *w
	}
	w := 1 + rand.Int32N(98) // 1..99 without cur
	if w >= cur {
		w++
	}
	patch := fmt.Sprintf(`[{"op":"test","path":"/spec/rules/0/backendRefs/0/weight","value":%d},{"op":"replace","path":"/spec/rules/0/backendRefs/0/weight","value":%d},{"op":"replace","path":"/spec/rules/0/backendRefs/1/weight","value":%d}]`, cur, w, 100-w)
	kind := kindWeightBlue // backendRefs[0] is blue
	if w < cur {
		kind = kindWeightGreen
	}
	return e.send(rctx, kind, r, client.RawPatch(types.JSONPatchType, []byte(patch)))
}

func (e *env) send(ctx context.Context, kind string, obj client.Object, p client.Patch) sample {
	s := sample{kind: kind, start: time.Now()}
	err := e.kube.Patch(ctx, obj, p)
	s.end = time.Now()
	s.outcome, s.msg = classify(err)
	return s
}

// classify tells a verdict of the guard from every other error.
func classify(err error) (outcome, string) {
	if err == nil {
		return allowed, ""
	}
	msg := err.Error()
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return failed, msg
	}
	st := status.Status()
	switch {
	case st.Code == http.StatusForbidden && strings.Contains(msg, `admission webhook "`+tutorial.HTTPRouteWebhook+`" denied the request`):
		return denied, msg
	case st.Code == http.StatusUnprocessableEntity && patchTestFailed(st):
		return stale, ""
	}
	return failed, msg
}

// patchTestFailed reports whether the API server refused a JSON patch
// because an operation did not apply: for the switch's patch, whose paths
// exist, that is its test. The server answers 422 with a generic message and
// no causes (k8s.io/apiserver handlers/patch.go applyJSPatch), unlike a
// validation error, which names the invalid fields as causes.
func patchTestFailed(st metav1.Status) bool {
	return st.Reason == metav1.StatusReasonInvalid && (st.Details == nil || len(st.Details.Causes) == 0)
}
