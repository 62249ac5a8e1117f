package webhook

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// Paths the guard serves.
const (
	PathHTTPRoute = "/validate-httproute"
	PathGRPCRoute = "/validate-grpcroute"
)

// Options configure the admission handlers.
type Options struct {
	Guard       Evaluator
	Recorder    events.EventRecorder
	Metrics     *Metrics
	CheckCreate bool
	// OverrideGroups are the users and groups who may override a denial
	// with AnnotationOverride; empty means nobody.
	OverrideGroups []string
	// RequestTimeout bounds a decision when the API server sends no timeout.
	RequestTimeout time.Duration
	// Access, if set, is asked whether the requester may read the Secrets
	// and ConfigMaps a finding reveals before it is shown in full.
	Access AccessReviewer
	// Logger, if set, replaces controller-runtime's global logger for
	// decisions (the request's object, namespace, user and UID are added).
	Logger *logr.Logger
}

// Scheme holds the types the guard decodes and reads.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(gwv1.Install(s))
	utilruntime.Must(gwv1beta1.Install(s))
	return s
}

// Handlers returns the HTTP handlers to serve, keyed by path.
func Handlers(scheme *runtime.Scheme, o Options) map[string]http.Handler {
	return handlers(scheme, o, true)
}

// handlers builds the handlers, with or without the fast path in front
// (without, every request goes through controller-runtime's decoder).
func handlers(scheme *runtime.Scheme, o Options, fast bool) map[string]http.Handler {
	httpRoutes := &Validator[*gwv1.HTTPRoute]{
		Kind: KindHTTPRoute, Reduce: HTTPRouteOf, Guard: o.Guard, CheckCreate: o.CheckCreate, Recorder: o.Recorder, Metrics: o.Metrics,
		OverrideGroups: o.OverrideGroups, Access: o.Access,
	}
	grpcRoutes := &Validator[*gwv1.GRPCRoute]{
		Kind: KindGRPCRoute, Reduce: GRPCRouteOf, Guard: o.Guard, CheckCreate: o.CheckCreate, Recorder: o.Recorder, Metrics: o.Metrics,
		OverrideGroups: o.OverrideGroups, Access: o.Access,
	}
	// A Service update is checked only when it switches the selector; no
	// fast path in front (that one reads routes), a plain decode.
	services := &Validator[*corev1.Service]{
		Kind: KindService, TargetsOf: ServiceTargets, Guard: o.Guard, Recorder: o.Recorder, Metrics: o.Metrics,
		OverrideGroups: o.OverrideGroups,
	}
	hs := map[string]http.Handler{
		PathHTTPRoute: withDeadline(refuseUnreadable(wrap(gwv1.GroupName, KindHTTPRoute, admission.WithValidator(scheme, httpRoutes).Handler, o.Logger)), o.RequestTimeout),
		PathGRPCRoute: withDeadline(refuseUnreadable(wrap(gwv1.GroupName, KindGRPCRoute, admission.WithValidator(scheme, grpcRoutes).Handler, o.Logger)), o.RequestTimeout),
		PathService:   withDeadline(refuseUnreadable(wrap(corev1.GroupName, KindService, admission.WithValidator(scheme, services).Handler, o.Logger)), o.RequestTimeout),
	}
	if fast {
		hs[PathHTTPRoute] = &fastPath[*gwv1.HTTPRoute]{v: httpRoutes, log: admissionLogger(o.Logger), next: hs[PathHTTPRoute]}
		hs[PathGRPCRoute] = &fastPath[*gwv1.GRPCRoute]{v: grpcRoutes, log: admissionLogger(o.Logger), next: hs[PathGRPCRoute]}
	}
	return hs
}

// wrap puts the handler of group/kind behind kind and subresource checks and
// collects the audit annotations the validator sets, in a webhook that
// recovers panics.
func wrap(group, kind string, inner admission.Handler, logger *logr.Logger) *admission.Webhook {
	wh := &admission.Webhook{Handler: routeHandler{group: group, kind: kind, inner: inner}}
	if logger != nil {
		wh.LogConstructor = func(_ logr.Logger, req *admission.Request) logr.Logger {
			return admission.DefaultLogConstructor(*logger, req)
		}
	}
	return wh.WithRecoverPanic(true)
}

type routeHandler struct {
	group, kind string
	inner       admission.Handler
}

func (h routeHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Kind.Group != h.group || req.Kind.Kind != h.kind {
		what := h.kind + "." + h.group
		if h.group == "" {
			what = h.kind + " (core/v1)"
		}
		return undecodable(http.StatusBadRequest, fmt.Errorf(
			"this endpoint validates %s, got kind %q in group %q: check the rules of the webhook configuration",
			what, req.Kind.Kind, req.Kind.Group))
	}
	if req.SubResource != "" {
		return admission.Allowed("subresource " + req.SubResource + " is not checked")
	}
	if err := routesSent(h.kind, req); err != nil {
		return undecodable(http.StatusBadRequest, err)
	}
	a := &audit{}
	resp := h.inner.Handle(withAudit(ctx, a), req)
	resp.AuditAnnotations = a.annotations()
	return resp
}
