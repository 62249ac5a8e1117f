package cutoverctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Verdict is what the API server answered to a dry run of a switch.
type Verdict struct {
	// Allowed: the API server would apply the patch.
	Allowed bool `json:"allowed"`
	// Reviewed: the guard answered. A denial names its webhook; an allowed
	// dry run is shown to be reviewed by a probe the guard must deny.
	Reviewed bool `json:"reviewed"`
	// Webhook is the webhook that denied the dry run.
	Webhook string `json:"webhook,omitempty"`
	// Findings are the denial's lines, one per finding.
	Findings []string `json:"findings,omitempty"`
	// Warnings are the admission warnings of the answer.
	Warnings []string `json:"warnings,omitempty"`
	// Undecided says why the guard's verdict is unknown, when it is.
	Undecided string `json:"undecided,omitempty"`
}

// GuardState is whether the guard's webhook is installed for HTTPRoutes.
type GuardState string

// Guard states.
const (
	GuardInstalled GuardState = "installed"
	GuardMissing   GuardState = "missing"
	GuardUnknown   GuardState = "unknown"
)

// GuardInstall is what the plugin found of the guard's webhook.
type GuardInstall struct {
	State GuardState `json:"state"`
	// Webhooks are the configuration/webhook names found.
	Webhooks []string `json:"webhooks,omitempty"`
	Detail   string   `json:"detail,omitempty"`
}

// errNoGuard is returned when no guard is installed: nothing would review
// the dry run, so the plugin cannot tell a safe switch from an unsafe one.
var errNoGuard = errors.New("no guard installed: no ValidatingWebhookConfiguration has a cutover-guard webhook for httproutes, " +
	"so nothing reviews the dry run and the plugin cannot decide; install cutover-guard (see its README) and try again")

// findGuard looks for a cutover-guard webhook that reviews HTTPRoute
// updates. A user who may not list webhook configurations gets
// GuardUnknown; the dry run's review probe then tells.
func findGuard(ctx context.Context, c client.Reader) GuardInstall {
	var list admissionregistrationv1.ValidatingWebhookConfigurationList
	if err := c.List(ctx, &list); err != nil {
		return GuardInstall{State: GuardUnknown, Detail: "cannot list validatingwebhookconfigurations: " + apiReason(err)}
	}
	var found []string
	for _, cfg := range list.Items {
		for _, w := range cfg.Webhooks {
			if !strings.Contains(cfg.Name, "cutover-guard") && !strings.Contains(w.Name, "cutover-guard") {
				continue
			}
			if reviewsRouteUpdates(w.Rules) {
				found = append(found, cfg.Name+"/"+w.Name)
			}
		}
	}
	if len(found) == 0 {
		return GuardInstall{State: GuardMissing, Detail: "no ValidatingWebhookConfiguration has a cutover-guard webhook for httproutes, so nothing reviews a switch; install cutover-guard"}
	}
	return GuardInstall{State: GuardInstalled, Webhooks: found}
}

func reviewsRouteUpdates(rules []admissionregistrationv1.RuleWithOperations) bool {
	for _, r := range rules {
		resource := slices.Contains(r.Resources, "httproutes") || slices.Contains(r.Resources, "*")
		update := slices.Contains(r.Operations, admissionregistrationv1.Update) || slices.Contains(r.Operations, admissionregistrationv1.OperationAll)
		if resource && update {
			return true
		}
	}
	return false
}

// denialRE matches the API server's message for a webhook's denial.
var denialRE = regexp.MustCompile(`(?s)^admission webhook "([^"]+)" denied the request: (.*)$`)

// isGuardWebhook tells the guard's webhooks (httproute.cutover-guard.dev in
// the install) from others.
func isGuardWebhook(name string) bool { return strings.Contains(name, "cutover-guard") }

// errStale is returned when the route changed between reading it and
// patching it: the patch's resourceVersion test failed.
var errStale = errors.New("the route changed since the plugin read it (someone else wrote it); run the command again to see the new state")

// patchRoute sends patch for route, as a server-side dry run when dryRun is
// set, and returns the route as the API server answered (for a dry run: as
// it would be). A webhook's denial is a Verdict, not an error.
func (e *env) patchRoute(ctx context.Context, route *gwv1.HTTPRoute, patch []byte, dryRun bool) (*gwv1.HTTPRoute, Verdict, error) {
	obj := route.DeepCopy()
	opts := []client.PatchOption{}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	e.warnings.reset()
	err := e.c.Patch(ctx, obj, client.RawPatch(types.JSONPatchType, patch), opts...)
	v := Verdict{}
	for _, w := range e.warnings.take() {
		v.Warnings = append(v.Warnings, oneLine(w, maxFinding))
	}
	if err == nil {
		v.Allowed = true
		return obj, v, nil
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		msg := status.Status().Message
		if m := denialRE.FindStringSubmatch(msg); m != nil {
			v.Webhook = m[1]
			v.Reviewed = isGuardWebhook(m[1])
			for _, line := range strings.Split(m[2], "\n") {
				if line = oneLine(line, maxFinding); line != "" {
					v.Findings = append(v.Findings, line)
				}
			}
			return nil, v, nil
		}
		if testFailed(status.Status()) {
			return nil, v, errStale
		}
		if apierrors.IsNotFound(err) {
			return nil, v, errRouteNotFound(route.Namespace, route.Name)
		}
	}
	return nil, v, fmt.Errorf("patch httproute %s/%s: %w", route.Namespace, route.Name, err)
}

// testFailed reports whether the API server refused a JSON patch because
// one of its operations did not apply: a test failed (the route changed) or
// a path is gone (a rule was removed). The server answers 422 with its
// generic message and drops the library's words; a validation error, also
// 422, says what is invalid and lists causes.
func testFailed(st metav1.Status) bool {
	return st.Code == http.StatusUnprocessableEntity && (st.Details == nil || len(st.Details.Causes) == 0) &&
		strings.HasPrefix(st.Message, "the server rejected our request due to an error in our request")
}

// probeBackend is the Service name of the review probe; the guard's
// reference check denies a switch to a Service that does not exist.
const probeBackend = "cutover-guard-review-probe-absent"

// reviewed tells whether the guard reviews a dry run of route: it dry-runs
// a switch of the route's first backendRef to a Service that does not exist,
// which the guard always denies and the API server alone always allows.
func (e *env) reviewed(ctx context.Context, route *gwv1.HTTPRoute) (bool, error) {
	for i, r := range route.Spec.Rules {
		if len(r.BackendRefs) == 0 {
			continue
		}
		base := fmt.Sprintf("/spec/rules/%d/backendRefs/0/", i)
		ops := []jsonPatchOp{
			{Op: "test", Path: "/metadata/resourceVersion", Value: route.ResourceVersion},
			{Op: "replace", Path: base + "name", Value: probeBackend},
			{Op: "add", Path: base + "weight", Value: 1},
		}
		patch, err := json.Marshal(ops)
		if err != nil {
			return false, err
		}
		_, v, err := e.patchRoute(ctx, route, patch, true)
		if err != nil {
			return false, err
		}
		return !v.Allowed && v.Reviewed, nil
	}
	return false, nil
}

// notReviewed is Verdict.Undecided for a dry run the guard did not see.
func notReviewed(ns string) string {
	return fmt.Sprintf("the guard did not review the dry run (its webhook does not apply to namespace %s, or it is not in effect), "+
		"so the API server alone allowed it and the plugin cannot decide", ns)
}

// decide dry-runs patch and establishes whether the guard reviewed it.
func (e *env) decide(ctx context.Context, route *gwv1.HTTPRoute, patch []byte) (*gwv1.HTTPRoute, Verdict, error) {
	after, v, err := e.patchRoute(ctx, route, patch, true)
	if err != nil || !v.Allowed {
		if err == nil && !v.Reviewed {
			v.Undecided = fmt.Sprintf("denied by webhook %s, which is not cutover-guard's", v.Webhook)
		}
		return after, v, err
	}
	ok, err := e.reviewed(ctx, route)
	if err != nil {
		return after, v, err
	}
	v.Reviewed = ok
	if !ok {
		v.Undecided = notReviewed(route.Namespace)
	}
	return after, v, nil
}

// apiReason is a short reason for an API error.
func apiReason(err error) string {
	switch {
	case apierrors.IsForbidden(err):
		return "forbidden"
	case apierrors.IsNotFound(err):
		return "not found"
	}
	return err.Error()
}
