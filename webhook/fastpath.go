package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	kjson "sigs.k8s.io/json"
)

// maxReviewSize is controller-runtime's limit on an AdmissionReview body;
// a larger one goes the full way, which rejects it.
const maxReviewSize = 7 << 20

// fastPath answers the updates that switch no traffic (labels, annotations,
// filters, removals, weight shifts away from a backend: nearly every write
// the guard sees) from one decoding pass over the body. controller-runtime's path
// decodes the AdmissionReview and then each embedded route again, reading
// every byte about six times; that was most of the fast path's cost.
//
// It only answers an UPDATE of its kind, with no subresource, whose routes
// decode and yield neither targets nor warnings, and it answers it exactly as
// the full path would (same response bytes, metrics and V(1) log line).
// Everything else, or anything it is unsure of, goes to next with the body
// intact, so every decision with a target is still made in one place.
type fastPath[T client.Object] struct {
	v    *Validator[T]
	log  logr.Logger // the admission webhook's base logger
	next http.Handler
}

// reviewOf mirrors admissionv1.AdmissionReview with the routes decoded in
// place as T, by the same decoder the full path uses for each of them
// (case-sensitive, unknown fields ignored), so a field of the wrong type
// fails here as it fails there.
type reviewOf[T any] struct {
	APIVersion string                         `json:"apiVersion"`
	Kind       string                         `json:"kind"`
	Request    *requestOf[T]                  `json:"request"`
	Response   *admissionv1.AdmissionResponse `json:"response"`
}

type requestOf[T any] struct {
	UID                types.UID                    `json:"uid"`
	Kind               metav1.GroupVersionKind      `json:"kind"`
	Resource           metav1.GroupVersionResource  `json:"resource"`
	SubResource        string                       `json:"subResource"`
	RequestKind        *metav1.GroupVersionKind     `json:"requestKind"`
	RequestResource    *metav1.GroupVersionResource `json:"requestResource"`
	RequestSubResource string                       `json:"requestSubResource"`
	Name               string                       `json:"name"`
	Namespace          string                       `json:"namespace"`
	Operation          admissionv1.Operation        `json:"operation"`
	UserInfo           authenticationv1.UserInfo    `json:"userInfo"`
	Object             T                            `json:"object"`
	OldObject          T                            `json:"oldObject"`
	DryRun             *bool                        `json:"dryRun"`
	Options            runtime.RawExtension         `json:"options"`
}

func (f *fastPath[T]) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody || r.Header.Get("Content-Type") != "application/json" {
		f.next.ServeHTTP(w, r)
		return
	}
	body, err := readBody(r)
	if err == nil && len(body) < maxReviewSize {
		if review, ok := f.allow(r.Context(), body); ok {
			// As controller-runtime writes it.
			_ = json.NewEncoder(w).Encode(review)
			return
		}
	}
	r.Body = replayedBody{Reader: io.MultiReader(bytes.NewReader(body), r.Body), Closer: r.Body}
	f.next.ServeHTTP(w, r)
}

// readBody reads at most maxReviewSize bytes of the body into a buffer sized
// by Content-Length, as io.ReadAll would without growing it step by step.
func readBody(r *http.Request) ([]byte, error) {
	size := int64(512)
	if r.ContentLength > 0 && r.ContentLength < maxReviewSize {
		size = r.ContentLength + 1 // room to read EOF without growing
	}
	in := io.LimitReader(r.Body, maxReviewSize)
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := in.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

type replayedBody struct {
	io.Reader
	io.Closer
}

// allow returns the response to an update that switches no traffic; ok is
// false for anything else.
func (f *fastPath[T]) allow(ctx context.Context, body []byte) (_ *admissionv1.AdmissionReview, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false // the full path recovers and reports it
		}
	}()
	var in reviewOf[T]
	if err := kjson.UnmarshalCaseSensitivePreserveInts(body, &in); err != nil {
		return nil, false
	}
	req := in.Request
	if in.Kind != "AdmissionReview" || (in.APIVersion != admissionv1.SchemeGroupVersion.String() && in.APIVersion != "admission.k8s.io/v1beta1") ||
		req == nil || req.Operation != admissionv1.Update || req.SubResource != "" ||
		req.Kind.Group != gwv1.GroupName || req.Kind.Kind != f.v.Kind ||
		!f.isRoute(req.Object) || !f.isRoute(req.OldObject) {
		return nil, false
	}
	start := time.Now()
	if !Targets(f.v.Reduce(req.OldObject), f.v.Reduce(req.Object)).Empty() {
		return nil, false
	}

	areq := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: req.UID, Kind: req.Kind, Resource: req.Resource, Name: req.Name, Namespace: req.Namespace, UserInfo: req.UserInfo,
	}}
	log := f.log
	if log.V(1).Enabled() {
		log = admission.DefaultLogConstructor(f.log, &areq)
	}
	d := allowedFast(f.v.Kind, req.Object, nil)
	d.Took = time.Since(start)
	f.v.publisher().publish(logf.IntoContext(ctx, log), d)

	resp := admission.Allowed("")
	if err := resp.Complete(areq); err != nil {
		return nil, false
	}
	return &admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: in.APIVersion, Kind: in.Kind},
		Response: &resp.AdmissionResponse,
	}, true
}

// isRoute reports whether o was sent, as the full path's decoder expects it:
// the v1 route of this validator's kind.
func (f *fastPath[T]) isRoute(o T) bool {
	var none T
	if any(o) == any(none) {
		return false
	}
	return o.GetObjectKind().GroupVersionKind() == schema.GroupVersionKind{Group: gwv1.GroupName, Version: gwv1.GroupVersion.Version, Kind: f.v.Kind}
}

// admissionLogger is the base logger controller-runtime's admission webhook
// gives each request (before adding the request's fields).
func admissionLogger(custom *logr.Logger) logr.Logger {
	if custom != nil {
		return *custom
	}
	return logf.Log.WithName("admission")
}
