package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"
)

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
