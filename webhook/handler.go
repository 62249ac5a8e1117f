package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	kjson "sigs.k8s.io/json"
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
		OverrideGroups: o.OverrideGroups,
	}
	grpcRoutes := &Validator[*gwv1.GRPCRoute]{
		Kind: KindGRPCRoute, Reduce: GRPCRouteOf, Guard: o.Guard, CheckCreate: o.CheckCreate, Recorder: o.Recorder, Metrics: o.Metrics,
		OverrideGroups: o.OverrideGroups,
	}
	hs := map[string]http.Handler{
		PathHTTPRoute: withDeadline(refuseUnreadable(wrap(KindHTTPRoute, admission.WithValidator(scheme, httpRoutes).Handler, o.Logger)), o.RequestTimeout),
		PathGRPCRoute: withDeadline(refuseUnreadable(wrap(KindGRPCRoute, admission.WithValidator(scheme, grpcRoutes).Handler, o.Logger)), o.RequestTimeout),
	}
	if fast {
		hs[PathHTTPRoute] = &fastPath[*gwv1.HTTPRoute]{v: httpRoutes, log: admissionLogger(o.Logger), next: hs[PathHTTPRoute]}
		hs[PathGRPCRoute] = &fastPath[*gwv1.GRPCRoute]{v: grpcRoutes, log: admissionLogger(o.Logger), next: hs[PathGRPCRoute]}
	}
	return hs
}

// wrap puts the route handler behind kind and subresource checks and collects
// the audit annotations the validator sets, in a webhook that recovers panics.
func wrap(kind string, inner admission.Handler, logger *logr.Logger) *admission.Webhook {
	wh := &admission.Webhook{Handler: routeHandler{kind: kind, inner: inner}}
	if logger != nil {
		wh.LogConstructor = func(_ logr.Logger, req *admission.Request) logr.Logger {
			return admission.DefaultLogConstructor(*logger, req)
		}
	}
	return wh.WithRecoverPanic(true)
}

type routeHandler struct {
	kind  string
	inner admission.Handler
}

func (h routeHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Kind.Group != gwv1.GroupName || req.Kind.Kind != h.kind {
		return undecodable(http.StatusBadRequest, fmt.Errorf(
			"this endpoint validates %s.%s, got kind %q in group %q: check the rules of the webhook configuration",
			h.kind, gwv1.GroupName, req.Kind.Kind, req.Kind.Group))
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

// routesSent reports a request whose routes controller-runtime's decoder
// would refuse with a bare "there is no content to decode" or a parse error
// about its own types: a route missing from an operation that carries it,
// or one that is not a JSON object.
func routesSent(kind string, req admission.Request) error {
	var need map[string]runtime.RawExtension
	switch req.Operation {
	case admissionv1.Create:
		need = map[string]runtime.RawExtension{"object": req.Object}
	case admissionv1.Update:
		need = map[string]runtime.RawExtension{"object": req.Object, "oldObject": req.OldObject}
	case admissionv1.Delete:
		need = map[string]runtime.RawExtension{"oldObject": req.OldObject}
	}
	op := strings.ToLower(string(req.Operation))
	for _, field := range []string{"object", "oldObject"} {
		raw, ok := need[field]
		if !ok {
			continue
		}
		if len(raw.Raw) == 0 {
			return fmt.Errorf("the %s of %s %s/%s carries no request.%s: send the route as the API server does, in request.object and (on UPDATE and DELETE) request.oldObject",
				op, kind, req.Namespace, req.Name, field)
		}
		if what := jsonKind(raw.Raw); what != "object" {
			return fmt.Errorf("request.%s in the %s of %s %s/%s is a JSON %s, not an object: send the route as a JSON object, as the API server does",
				field, op, kind, req.Namespace, req.Name, what)
		}
	}
	return nil
}

// jsonKind names the kind of JSON value raw holds, from its first byte.
func jsonKind(raw []byte) string {
	b := bytes.TrimLeft(raw, " \t\r\n")
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// refuseUnreadable answers, in front of controller-runtime's decoder, the
// bodies it would refuse without saying what to send instead (empty, or at
// its size limit), and the ones it would wrongly accept: an apiVersion or kind
// other than an admission.k8s.io/v1 or v1beta1 AdmissionReview, which it
// decodes anyway and answers in a version no API server reads.
func refuseUnreadable(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			writeRefusal(w, "", http.StatusBadRequest, errEmptyBody)
			return
		}
		body, err := readBody(r)
		if err != nil {
			writeRefusal(w, "", http.StatusBadRequest, fmt.Errorf("reading the request body: %w: retry the request", err))
			return
		}
		if uid, code, err := reviewEnvelope(body); err != nil {
			writeRefusal(w, uid, code, err)
			return
		}
		r.Body = replayedBody{Reader: bytes.NewReader(body), Closer: r.Body}
		next.ServeHTTP(w, r)
	})
}

var errEmptyBody = errors.New("request body is empty: send an admission.k8s.io/v1 AdmissionReview as JSON, as the API server does")

// reviewEnvelope checks the size, apiVersion and kind of an AdmissionReview
// body, returning the request's UID (if it can be read), an HTTP status and
// an error for a body the guard cannot answer. A body that is not JSON at
// all is left to controller-runtime's decoder, which names the parse error.
func reviewEnvelope(body []byte) (types.UID, int32, error) {
	if len(body) == 0 {
		return "", http.StatusBadRequest, errEmptyBody
	}
	if len(body) >= maxReviewSize {
		return "", http.StatusRequestEntityTooLarge, fmt.Errorf(
			"request body is %d bytes or more, over the limit of an AdmissionReview (less than %d bytes): the API server never sends one this large (objects are limited to 1.5 MiB); check what sends it",
			maxReviewSize, maxReviewSize)
	}
	v1, v1beta1 := admissionv1.SchemeGroupVersion.String(), "admission.k8s.io/v1beta1"
	apiVersion, kind, ok := leadingType(body)
	if ok && kind == "AdmissionReview" && (apiVersion == v1 || apiVersion == v1beta1) {
		return "", 0, nil
	}
	var env struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Request    *struct {
			UID types.UID `json:"uid"`
		} `json:"request"`
	}
	if kjson.UnmarshalCaseSensitivePreserveInts(body, &env) != nil {
		return "", 0, nil
	}
	if env.Kind == "AdmissionReview" && (env.APIVersion == v1 || env.APIVersion == v1beta1) {
		return "", 0, nil
	}
	var uid types.UID
	if env.Request != nil {
		uid = env.Request.UID
	}
	return uid, http.StatusBadRequest, fmt.Errorf(
		"request body is apiVersion %q kind %q, not an AdmissionReview of %s or %s: list v1 in admissionReviewVersions of the webhook configuration",
		env.APIVersion, env.Kind, v1, v1beta1)
}

// leadingType reads apiVersion and kind when they are the first keys of the
// body's object, as the API server writes them, without scanning the rest;
// ok is false when they are not.
func leadingType(body []byte) (apiVersion, kind string, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", "", false
	}
	var seen int
	for ; seen < 2 && dec.More(); seen++ {
		key, err := dec.Token()
		if err != nil {
			return "", "", false
		}
		var into *string
		switch key {
		case "apiVersion":
			into = &apiVersion
		case "kind":
			into = &kind
		default:
			return "", "", false
		}
		if err := dec.Decode(into); err != nil {
			return "", "", false
		}
	}
	return apiVersion, kind, seen == 2
}

// undecodable is the answer to a request the guard could not read: an error,
// never a verdict, so its message begins "internal error:" (the API server
// shows it as "admission webhook ... denied the request: internal error: ...",
// and nobody must take it for a finding about their route).
func undecodable(code int32, err error) admission.Response {
	return admission.Errored(code, fmt.Errorf("internal error: %w", err))
}

// writeRefusal writes an error response as controller-runtime's admission
// webhook writes one for a request it could not decode.
func writeRefusal(w http.ResponseWriter, uid types.UID, code int32, err error) {
	resp := undecodable(code, err)
	resp.UID = uid
	_ = json.NewEncoder(w).Encode(admissionv1.AdmissionReview{Response: &resp.AdmissionResponse})
}

// withDeadline gives each request a deadline before the API server's own:
// the timeout query parameter it sends, less a margin, or fallback.
func withDeadline(next http.Handler, fallback time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), Budget(r.URL.Query().Get("timeout"), fallback))
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// Budget is the time a decision may take, given the API server's timeout
// query parameter (e.g. "10s"): the timeout less a margin of a tenth (at
// least 250ms, at most 1s), or fallback when the parameter is missing or
// malformed.
func Budget(timeout string, fallback time.Duration) time.Duration {
	t, err := time.ParseDuration(timeout)
	if err != nil || t <= 0 {
		return fallback
	}
	margin := min(max(t/10, 250*time.Millisecond), time.Second)
	if t-margin < t/2 {
		return t / 2
	}
	return t - margin
}

// audit collects the auditAnnotations of one request.
type audit struct {
	mu sync.Mutex
	m  map[string]string
}

type auditKey struct{}

func withAudit(ctx context.Context, a *audit) context.Context {
	return context.WithValue(ctx, auditKey{}, a)
}

// auditFromContext returns the request's audit record; a nil record ignores sets.
func auditFromContext(ctx context.Context) *audit {
	a, _ := ctx.Value(auditKey{}).(*audit)
	return a
}

func (a *audit) set(k, v string) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[string]string{}
	}
	a.m[k] = v
}

func (a *audit) annotations() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.m
}
