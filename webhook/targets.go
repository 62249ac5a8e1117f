package webhook

import (
	"fmt"

	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/checks"
)

// Route kinds the guard validates.
const (
	KindHTTPRoute = "HTTPRoute"
	KindGRPCRoute = "GRPCRoute"
)

// Route is a route reduced to what decides a cutover: its identity and the
// backendRefs of every rule.
type Route struct {
	Kind      string
	Namespace string
	Name      string
	// Rules holds each rule's backendRefs, in order.
	Rules [][]gwv1.BackendRef
}

// HTTPRouteOf reduces an HTTPRoute to a Route; nil gives nil.
func HTTPRouteOf(r *gwv1.HTTPRoute) *Route {
	if r == nil {
		return nil
	}
	out := &Route{Kind: KindHTTPRoute, Namespace: r.Namespace, Name: r.Name, Rules: make([][]gwv1.BackendRef, len(r.Spec.Rules))}
	for i, rule := range r.Spec.Rules {
		for _, b := range rule.BackendRefs {
			out.Rules[i] = append(out.Rules[i], b.BackendRef)
		}
	}
	return out
}

// GRPCRouteOf reduces a GRPCRoute to a Route; nil gives nil.
func GRPCRouteOf(r *gwv1.GRPCRoute) *Route {
	if r == nil {
		return nil
	}
	out := &Route{Kind: KindGRPCRoute, Namespace: r.Namespace, Name: r.Name, Rules: make([][]gwv1.BackendRef, len(r.Spec.Rules))}
	for i, rule := range r.Spec.Rules {
		for _, b := range rule.BackendRefs {
			out.Rules[i] = append(out.Rules[i], b.BackendRef)
		}
	}
	return out
}

// backendKey identifies a backend: a Service and a port.
type backendKey struct {
	service types.NamespacedName
	port    int32
	hasPort bool
}

// Targets returns the Service backends that receive traffic after the update
// and did not before: a backendRef with an effective weight above zero (unset
// means 1) whose (namespace, name, port) carried no traffic anywhere in the
// old route. Weight shifts among live backends, reordering rules, duplicate
// refs and removals yield no target. old is nil for a create.
//
// Backends of other kinds than core Service cannot be checked; each yields a
// warning instead. Targets are returned in the order they first appear.
func Targets(old, updated *Route) ([]checks.Target, []string) {
	if updated == nil {
		return nil, nil
	}
	live := map[backendKey]bool{}
	if old != nil {
		for _, rule := range old.Rules {
			for _, b := range rule {
				if k, ok := serviceKey(old.Namespace, b); ok && weight(b) > 0 {
					live[k] = true
				}
			}
		}
	}

	var targets []checks.Target
	var warnings []string
	seen := map[backendKey]bool{}
	warned := map[string]bool{}
	for _, rule := range updated.Rules {
		for _, b := range rule {
			if weight(b) <= 0 {
				continue
			}
			k, ok := serviceKey(updated.Namespace, b)
			if !ok {
				w := fmt.Sprintf("backendRef %s is not a core Service; cutover-guard does not check it", describeRef(updated.Namespace, b))
				if !warned[w] {
					warned[w] = true
					warnings = append(warnings, w)
				}
				continue
			}
			if live[k] || seen[k] {
				continue
			}
			seen[k] = true
			t := checks.Target{
				Route:     types.NamespacedName{Namespace: updated.Namespace, Name: updated.Name},
				RouteKind: updated.Kind,
				Service:   k.service,
			}
			if k.hasPort {
				p := k.port
				t.Port = &p
			}
			targets = append(targets, t)
		}
	}
	return targets, warnings
}

// weight is the effective weight of a backendRef: unset means 1.
func weight(b gwv1.BackendRef) int32 {
	if b.Weight == nil {
		return 1
	}
	return *b.Weight
}

// serviceKey returns the key of a core Service backendRef, with the namespace
// defaulted to the route's; ok is false for any other kind.
func serviceKey(routeNamespace string, b gwv1.BackendRef) (backendKey, bool) {
	if b.Group != nil && *b.Group != "" {
		return backendKey{}, false
	}
	if b.Kind != nil && *b.Kind != "Service" {
		return backendKey{}, false
	}
	ns := routeNamespace
	if b.Namespace != nil && *b.Namespace != "" {
		ns = string(*b.Namespace)
	}
	k := backendKey{service: types.NamespacedName{Namespace: ns, Name: string(b.Name)}}
	if b.Port != nil {
		k.port, k.hasPort = *b.Port, true
	}
	return k, true
}

func describeRef(routeNamespace string, b gwv1.BackendRef) string {
	group, kind, ns := "core", "Service", routeNamespace
	if b.Group != nil && *b.Group != "" {
		group = string(*b.Group)
	}
	if b.Kind != nil {
		kind = string(*b.Kind)
	}
	if b.Namespace != nil && *b.Namespace != "" {
		ns = string(*b.Namespace)
	}
	return fmt.Sprintf("%s/%s %s/%s", group, kind, ns, b.Name)
}
