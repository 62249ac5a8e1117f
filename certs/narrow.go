package certs

import (
	"net/http"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/transport"
)

// selectByName returns a transport wrapper that adds a metadata.name field
// selector to every GET of the given collection paths (lists and watches),
// so that the API server authorizes them against that one name
// (RBAC resourceNames) and returns nothing else. Other requests pass as they
// are. The rotator builds its cache without a field selector; this is the
// one place where that is corrected.
func selectByName(byPath map[string]string) transport.WrapperFunc {
	return func(rt http.RoundTripper) http.RoundTripper {
		return nameSelector{next: rt, byPath: byPath}
	}
}

type nameSelector struct {
	next   http.RoundTripper
	byPath map[string]string
}

func (s nameSelector) RoundTrip(req *http.Request) (*http.Response, error) {
	name, ok := s.byPath[req.URL.Path]
	if !ok || req.Method != http.MethodGet {
		return s.next.RoundTrip(req)
	}
	q := req.URL.Query()
	sel := fields.OneTermEqualSelector("metadata.name", name)
	if have := q.Get("fieldSelector"); have != "" {
		parsed, err := fields.ParseSelector(have)
		if err != nil {
			return s.next.RoundTrip(req)
		}
		sel = fields.AndSelectors(parsed, sel)
	}
	q.Set("fieldSelector", sel.String())
	// RoundTrippers must not modify the request they are given.
	out := req.Clone(req.Context())
	out.URL.RawQuery = q.Encode()
	return s.next.RoundTrip(out)
}
