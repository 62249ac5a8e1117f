package webhook

import (
	"encoding/json"
	"strings"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// A match the old route did not have may still select only requests that
// an old match selected: a path edit from / to /shop, a header condition
// added. Those requests went to the old match's rule before, so a
// backend's share of them is compared with its share in that rule, not
// with nothing. Only containment that holds whatever the request is counts
// (a path prefix inside an old prefix, every condition of the old match
// kept); anything else (regular expressions, a condition dropped) is new
// traffic.

// matchShape is a match (from its key) reduced to what containment needs.
type matchShape struct {
	// pathType and path: HTTPRoute only; for a GRPCRoute, the method
	// match's type, service and method.
	pathType, path  string
	service, method string
	// conds are the match's other conditions (headers, query parameters,
	// HTTP method), each rendered canonically.
	conds map[string]bool
	ok    bool
}

// shapeOf parses a match key of a route of kind; ok is false when it does
// not parse, which makes it cover nothing and be covered by nothing.
func shapeOf(kind, key string) matchShape {
	s := matchShape{conds: map[string]bool{}}
	switch kind {
	case KindHTTPRoute:
		var m gwv1.HTTPRouteMatch
		if json.Unmarshal([]byte(key), &m) != nil || m.Path == nil || m.Path.Type == nil || m.Path.Value == nil {
			return s
		}
		s.pathType, s.path = string(*m.Path.Type), *m.Path.Value
		for _, h := range m.Headers {
			s.conds["header "+matchKey(h)] = true
		}
		for _, q := range m.QueryParams {
			s.conds["query "+matchKey(q)] = true
		}
		if m.Method != nil {
			s.conds["method "+string(*m.Method)] = true
		}
	case KindGRPCRoute:
		var m gwv1.GRPCRouteMatch
		if json.Unmarshal([]byte(key), &m) != nil {
			return s
		}
		if m.Method != nil {
			s.pathType = string(gwv1.GRPCMethodMatchExact)
			if m.Method.Type != nil {
				s.pathType = string(*m.Method.Type)
			}
			if m.Method.Service != nil {
				s.service = *m.Method.Service
			}
			if m.Method.Method != nil {
				s.method = *m.Method.Method
			}
		}
		for _, h := range m.Headers {
			s.conds["header "+matchKey(h)] = true
		}
	default:
		return s
	}
	s.ok = true
	return s
}

// covers reports whether every request that n selects is also selected by
// o, for routes of kind.
func (o matchShape) covers(kind string, n matchShape) bool {
	if !o.ok || !n.ok {
		return false
	}
	for c := range o.conds {
		if !n.conds[c] {
			return false
		}
	}
	if kind == KindGRPCRoute {
		switch o.pathType {
		case "": // no method match: every method
			return true
		case string(gwv1.GRPCMethodMatchExact):
			return n.pathType == o.pathType && (o.service == "" || o.service == n.service) && (o.method == "" || o.method == n.method)
		default:
			return n.pathType == o.pathType && n.service == o.service && n.method == o.method
		}
	}
	switch o.pathType {
	case string(gwv1.PathMatchPathPrefix):
		return (n.pathType == string(gwv1.PathMatchPathPrefix) || n.pathType == string(gwv1.PathMatchExact)) && prefixCovers(o.path, n.path)
	default: // Exact, RegularExpression: the same path only
		return n.pathType == o.pathType && n.path == o.path
	}
}

// prefixCovers reports whether path prefix p matches every path that
// starts with v, or equals it: the Gateway API matches a prefix by whole
// path elements, so /shop covers /shop and /shop/cart, not /shopping.
func prefixCovers(p, v string) bool {
	p = strings.TrimSuffix(p, "/")
	return p == "" || v == p || strings.HasPrefix(v, p+"/")
}
