package tutorial

import (
	"context"
	"fmt"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/manifests"
)

// Names of the webhook registration, as the install has them.
const (
	WebhookConfiguration = "cutover-guard"
	HTTPRouteWebhook     = "httproute.cutover-guard.dev"
	GRPCRouteWebhook     = "grpcroute.cutover-guard.dev"
	ServiceWebhook       = "service.cutover-guard.dev"
	// ProbeNamespace holds the routes used to tell that the webhook is in effect.
	ProbeNamespace = "cutover-guard-probe"
)

// WebhookConfiguration returns the ValidatingWebhookConfiguration users
// install (manifests.WebhookConfiguration: its rules, matchConditions,
// namespaceSelector, failurePolicy and timeoutSeconds) with only the client
// config changed: each webhook calls the guard at
// https://127.0.0.1:<port><its path> and trusts g.CABundle.
func (g *Guard) WebhookConfiguration() (*admissionregistrationv1.ValidatingWebhookConfiguration, error) {
	vwc, err := manifests.WebhookConfiguration()
	if err != nil {
		return nil, err
	}
	for i, w := range vwc.Webhooks {
		if w.ClientConfig.Service == nil || w.ClientConfig.Service.Path == nil {
			return nil, fmt.Errorf("webhook %s of the install calls no Service path", w.Name)
		}
		vwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{
			URL:      ptr.To(fmt.Sprintf("https://127.0.0.1:%d%s", g.Port, *w.ClientConfig.Service.Path)),
			CABundle: g.CABundle,
		}
	}
	return vwc, nil
}

// Register creates (or replaces) the guard's webhook configuration and
// returns once the API server enforces it: a probe update of an HTTPRoute
// and of a GRPCRoute, each switching traffic to a Service that does not
// exist, is denied by the guard.
func Register(ctx context.Context, c client.Client, g *Guard, timeout time.Duration) error {
	want, err := g.WebhookConfiguration()
	if err != nil {
		return err
	}
	var have admissionregistrationv1.ValidatingWebhookConfiguration
	err = c.Get(ctx, client.ObjectKey{Name: want.Name}, &have)
	switch {
	case apierrors.IsNotFound(err):
		err = c.Create(ctx, want)
	case err == nil:
		have.Webhooks = want.Webhooks
		err = c.Update(ctx, &have)
	}
	if err != nil {
		return fmt.Errorf("webhook configuration: %w", err)
	}
	return WaitEffective(ctx, c, timeout)
}

// WaitEffective polls until dry-run probe updates of an HTTPRoute and a
// GRPCRoute in ProbeNamespace are denied by the guard's webhooks.
func WaitEffective(ctx context.Context, c client.Client, timeout time.Duration) error {
	if err := createProbes(ctx, c); err != nil {
		return err
	}
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		for _, probe := range []struct {
			obj     client.Object
			webhook string
		}{
			{&gwv1.HTTPRoute{}, HTTPRouteWebhook},
			{&gwv1.GRPCRoute{}, GRPCRouteWebhook},
		} {
			if err := c.Get(ctx, client.ObjectKey{Namespace: ProbeNamespace, Name: "probe"}, probe.obj); err != nil {
				last = err
				return false, nil
			}
			// The probe's backendRef, at weight 0, switched to a Service
			// that does not exist, at the default weight 1.
			switch r := probe.obj.(type) {
			case *gwv1.HTTPRoute:
				r.Spec.Rules[0].BackendRefs[0].Name, r.Spec.Rules[0].BackendRefs[0].Weight = "probe-switched", nil
			case *gwv1.GRPCRoute:
				r.Spec.Rules[0].BackendRefs[0].Name, r.Spec.Rules[0].BackendRefs[0].Weight = "probe-switched", nil
			}
			err := c.Update(ctx, probe.obj, client.DryRunAll)
			if err == nil {
				last = fmt.Errorf("probe update of %T allowed: webhook not in effect yet", probe.obj)
				return false, nil
			}
			msg := err.Error()
			if !apierrors.IsForbidden(err) || !strings.Contains(msg, `admission webhook "`+probe.webhook+`" denied the request`) || !strings.Contains(msg, "probe-switched") {
				last = err
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("webhook not in effect: %w (last: %v)", err, last)
	}
	return nil
}

// createProbes creates the probe routes unless they exist, each with one
// backendRef at weight 0: no backend has a share of traffic, so the guard,
// which checks creates, allows them whether or not it is in effect yet.
func createProbes(ctx context.Context, c client.Client) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ProbeNamespace}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	ref := gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "probe", Port: ptr.To[gwv1.PortNumber](80)}, Weight: ptr.To[int32](0)}
	parent := []gwv1.ParentReference{{Name: "probe"}}
	objs := []client.Object{
		&gwv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: ProbeNamespace, Name: "probe"},
			Spec: gwv1.HTTPRouteSpec{
				CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parent},
				Rules:           []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: ref}}}},
			},
		},
		&gwv1.GRPCRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: ProbeNamespace, Name: "probe"},
			Spec: gwv1.GRPCRouteSpec{
				CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: parent},
				Rules:           []gwv1.GRPCRouteRule{{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: ref}}}},
			},
		},
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("probe %T: %w", o, err)
		}
	}
	return nil
}
