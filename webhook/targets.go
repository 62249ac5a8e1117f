package webhook

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/checks"
)

// Route kinds the guard validates.
const (
	KindHTTPRoute = "HTTPRoute"
	KindGRPCRoute = "GRPCRoute"
)

// Route is a route reduced to what decides where its traffic goes: its
// identity, the Gateways (parentRefs) and hostnames it receives traffic
// from, and per rule the requests it matches, its backendRefs and the
// backends it mirrors requests to.
type Route struct {
	Kind      string
	Namespace string
	Name      string
	// Parents are the parentRefs, as written.
	Parents []gwv1.ParentReference
	// Hostnames are the route's hostnames; none means every hostname of
	// the listeners it attaches to.
	Hostnames []gwv1.Hostname
	// Rules are the route's rules, in order.
	Rules []Rule
}

// Rule is one rule of a Route.
type Rule struct {
	// Matches are the rule's matches, each rendered canonically (see
	// matchKey); two matches select the same requests when their keys are
	// equal. A rule without matches has the one key of the match-all.
	Matches []string
	// Backends are the rule's backendRefs, in order.
	Backends []Backend
	// Mirrors are the destinations of the rule's RequestMirror filters
	// that mirror any share of requests (percent or fraction above zero).
	Mirrors []gwv1.BackendObjectReference
}

// Backend is one backendRef of a rule, with the destinations of its own
// RequestMirror filters (which mirror the requests sent to it).
type Backend struct {
	gwv1.BackendRef
	Mirrors []gwv1.BackendObjectReference
}

// HTTPRouteOf reduces an HTTPRoute to a Route; nil gives nil.
func HTTPRouteOf(r *gwv1.HTTPRoute) *Route {
	if r == nil {
		return nil
	}
	out := &Route{Kind: KindHTTPRoute, Namespace: r.Namespace, Name: r.Name, Parents: r.Spec.ParentRefs, Hostnames: r.Spec.Hostnames,
		Rules: make([]Rule, len(r.Spec.Rules))}
	for i, rule := range r.Spec.Rules {
		// The API server defaults an HTTPRoute rule without matches to
		// path prefix "/"; a request that was not defaulted means the same.
		if len(rule.Matches) == 0 {
			out.Rules[i].Matches = []string{matchKey(defaultHTTPMatch())}
		}
		for _, m := range rule.Matches {
			out.Rules[i].Matches = append(out.Rules[i].Matches, matchKey(httpMatch(m)))
		}
		for _, f := range rule.Filters {
			out.Rules[i].Mirrors = appendMirror(out.Rules[i].Mirrors, string(f.Type), f.RequestMirror)
		}
		for _, b := range rule.BackendRefs {
			be := Backend{BackendRef: b.BackendRef}
			for _, f := range b.Filters {
				be.Mirrors = appendMirror(be.Mirrors, string(f.Type), f.RequestMirror)
			}
			out.Rules[i].Backends = append(out.Rules[i].Backends, be)
		}
	}
	return out
}

// GRPCRouteOf reduces a GRPCRoute to a Route; nil gives nil.
func GRPCRouteOf(r *gwv1.GRPCRoute) *Route {
	if r == nil {
		return nil
	}
	out := &Route{Kind: KindGRPCRoute, Namespace: r.Namespace, Name: r.Name, Parents: r.Spec.ParentRefs, Hostnames: r.Spec.Hostnames,
		Rules: make([]Rule, len(r.Spec.Rules))}
	for i, rule := range r.Spec.Rules {
		// A GRPCRoute rule without matches matches every request, as a
		// match that names no method and no header does.
		if len(rule.Matches) == 0 {
			out.Rules[i].Matches = []string{matchKey(gwv1.GRPCRouteMatch{})}
		}
		for _, m := range rule.Matches {
			out.Rules[i].Matches = append(out.Rules[i].Matches, matchKey(m))
		}
		for _, f := range rule.Filters {
			out.Rules[i].Mirrors = appendMirror(out.Rules[i].Mirrors, string(f.Type), f.RequestMirror)
		}
		for _, b := range rule.BackendRefs {
			be := Backend{BackendRef: b.BackendRef}
			for _, f := range b.Filters {
				be.Mirrors = appendMirror(be.Mirrors, string(f.Type), f.RequestMirror)
			}
			out.Rules[i].Backends = append(out.Rules[i].Backends, be)
		}
	}
	return out
}

// defaultHTTPMatch is the match the API server gives an HTTPRoute rule
// that has none.
func defaultHTTPMatch() gwv1.HTTPRouteMatch {
	t, v := gwv1.PathMatchPathPrefix, "/"
	return gwv1.HTTPRouteMatch{Path: &gwv1.HTTPPathMatch{Type: &t, Value: &v}}
}

// httpMatch fills in the path the API server defaults (prefix "/"), so that
// a match as written and as defaulted have the same key.
func httpMatch(m gwv1.HTTPRouteMatch) gwv1.HTTPRouteMatch {
	p := gwv1.HTTPPathMatch{}
	if m.Path != nil {
		p = *m.Path
	}
	if p.Type == nil {
		t := gwv1.PathMatchPathPrefix
		p.Type = &t
	}
	if p.Value == nil {
		v := "/"
		p.Value = &v
	}
	m.Path = &p
	return m
}

// matchKey renders a match canonically: encoding/json writes struct fields
// in declaration order, so equal matches give equal keys.
func matchKey(m any) string {
	b, err := json.Marshal(m)
	if err != nil {
		// Not reachable for the Gateway API's match types; a distinct key
		// per failure would only make a backend a target, never hide one.
		return fmt.Sprintf("unrenderable %T", m)
	}
	return string(b)
}

// appendMirror appends the destination of a RequestMirror filter that
// mirrors some requests; other filters and a mirror of 0% add nothing.
func appendMirror(to []gwv1.BackendObjectReference, filterType string, m *gwv1.HTTPRequestMirrorFilter) []gwv1.BackendObjectReference {
	if filterType != string(gwv1.HTTPRouteFilterRequestMirror) || m == nil {
		return to
	}
	if m.Percent != nil && *m.Percent <= 0 {
		return to
	}
	if m.Fraction != nil && m.Fraction.Numerator <= 0 {
		return to
	}
	return append(to, m.BackendRef)
}

// TargetSet is what an update switches traffic to.
type TargetSet struct {
	// Checked are the backends whose share of traffic grows: each is
	// checked, and a Deny finding denies the update.
	Checked []checks.Target
	// Mirrors are the backends that newly receive mirrored requests and
	// are not in Checked (by Service): each is checked the same way, but
	// every finding about it is a warning, since a mirrored request's
	// response is dropped and cannot fail a client.
	Mirrors []checks.Target
	// Warnings are about backends that gain traffic but are not core
	// Services, which the guard cannot check.
	Warnings []string
}

// Empty reports whether the update switches no traffic that the guard
// checks or warns about.
func (s TargetSet) Empty() bool {
	return len(s.Checked) == 0 && len(s.Mirrors) == 0 && len(s.Warnings) == 0
}

// Targets returns what an update of a route switches traffic to; old is nil
// for a create. A backend is a (namespace, name, port) reference.
//
// Share of traffic. The requests a route receives are split by its
// matches: a match (its key, see Rule.Matches) is served by the first rule
// that has it, and that rule sends each backend the fraction
//
//	weight(backend) / sum of the weights of the rule's backendRefs
//
// of the match's requests (weight unset means 1; refs with weight 0 or
// less count for nothing; refs of other kinds than Service count in the
// sum, since they take their part of the requests; the same backend named
// twice in a rule adds up). Each match of the updated route is compared
// with where its requests went before: the old rule with the same match;
// else the old rules whose matches cover it (every request it selects, an
// old match selected too: a path prefix inside an old prefix, the old
// match's header, query and method conditions all kept, see matchcover.go);
// else nowhere, a share of 0. A match the update removes sends its
// requests to the new matches that cover it, compared the same way. A
// backend's share grows when, in one of these comparisons, its fraction
// after is larger than before (exactly, as integers). So:
//
//   - a new backendRef, or a weight from 0 to more, is a target;
//   - a canary from blue 99 / green 1 to 0 / 100 makes green a target
//     (1/100 < 100/100), although green carried traffic before;
//   - weights scaled together (50/50 -> 1/1) keep every fraction: no target;
//   - a backend whose fraction shrinks or stays is never a target, so a
//     rollback away from a backend that cannot serve is never blocked by it;
//   - a backend in a rule that gains a match no old match covers, or in a
//     new such rule, is a target; a path narrowed (/ to /shop) or a header
//     condition added is not, a rule for /shop to green in front of blue's
//     / makes green one, and removing it makes blue one;
//   - rules reordered without a change of which rule first has each match
//     keep every fraction: no target.
//
// Which of two different matches takes a request (path length, header
// count and method precedence across rules and routes) is not worked out:
// every covering match counts, which errs on the side of checking.
//
// Attachment. When the update attaches the route to a parentRef (Gateway,
// listener section or port) it did not have, or widens its hostnames (a
// hostname the old ones do not cover, or none where there were some, which
// means all), the route receives requests it did not before: every backend
// with a share above zero after the update is a target. Removing parents
// or hostnames only narrows what the route receives and makes no target.
//
// Create. With no old route every share grew from nothing: every backend
// with a share above zero is a target.
//
// Mirrors. A RequestMirror filter (on a rule, or on a backendRef with a
// share above zero) mirrors a match's requests to its backend. A mirror
// backend that a match mirrors to after the update and did not before, or
// any mirror backend of a route whose attachment widens, is a mirror
// target (the fraction mirrored does not matter). A Service that is also
// a checked target is checked as one, not again as a mirror.
//
// Backends of other kinds than core Service cannot be checked; each that
// would be a target yields a warning instead. Targets are returned in the
// order they first appear in the updated route.
func Targets(old, updated *Route) TargetSet {
	var out TargetSet
	if updated == nil {
		return out
	}
	after := trafficOf(updated)
	var before *traffic
	widened := old == nil
	if old != nil {
		before = trafficOf(old)
		widened = attachmentWidens(old, updated)
	}
	grown, mirrored := gained(after, before, widened)

	warned := map[string]bool{}
	warn := func(w string) {
		if !warned[w] {
			warned[w] = true
			out.Warnings = append(out.Warnings, w)
		}
	}
	seen := map[backendKey]bool{}
	checked := map[types.NamespacedName]bool{}
	for _, rule := range updated.Rules {
		for _, b := range rule.Backends {
			k := keyOf(updated.Namespace, b.BackendObjectReference)
			if seen[k] || !grown[k] {
				continue
			}
			seen[k] = true
			if !k.isService() {
				warn(fmt.Sprintf("backendRef %s is not a core Service; cutover-guard does not check it", describeRef(updated.Namespace, b.BackendObjectReference)))
				continue
			}
			out.Checked = append(out.Checked, k.target(updated))
			checked[k.service] = true
		}
	}

	seenMirror := map[backendKey]bool{}
	for _, ref := range mirrorRefs(updated) {
		k := keyOf(updated.Namespace, ref)
		if seenMirror[k] || !mirrored[k] {
			continue
		}
		seenMirror[k] = true
		if !k.isService() {
			warn(fmt.Sprintf("RequestMirror backendRef %s is not a core Service; cutover-guard does not check it", describeRef(updated.Namespace, ref)))
			continue
		}
		if checked[k.service] {
			continue
		}
		out.Mirrors = append(out.Mirrors, k.target(updated))
	}
	return out
}

// maxComparisons bounds the work of comparing two routes' shares: the
// backends of each distinct pair (rule after, rule before) that some match
// joins. A route the API server accepts (at most 16 rules, 128 matches in
// all and 16 backendRefs per rule) needs at most 128 * 16 = 2,048. Past the
// bound (a request that did not come through the API server's validation)
// every backend with a share after the update is taken as grown: more
// checks, never a hidden target.
const maxComparisons = 1 << 16

// gained returns the backends whose share of some match is larger after
// the update than before (before nil: the route is new), and the mirror
// destinations that some match mirrors to after the update and did not
// before. When the attachment widens, every backend with a share and every
// mirror destination after the update is in them.
func gained(after, before *traffic, widened bool) (grown, mirrored map[backendKey]bool) {
	grown, mirrored = map[backendKey]bool{}, map[backendKey]bool{}
	// Which rule has each match after and had its requests before: the
	// rule that had the same match, else those of the old matches that
	// cover it (see matchcover.go); -1: none, the requests are new.
	pairs := map[[2]int]bool{}
	work := 0
	var oldShapes map[string]matchShape
	for match, i := range after.owner {
		if before == nil {
			pairs[[2]int{i, -1}] = true
			continue
		}
		if j, ok := before.owner[match]; ok {
			pairs[[2]int{i, j}] = true
			continue
		}
		if oldShapes == nil {
			oldShapes = make(map[string]matchShape, len(before.owner))
			for m := range before.owner {
				oldShapes[m] = shapeOf(before.kind, m)
			}
		}
		if work += len(oldShapes); work > maxComparisons {
			widened = true
			break
		}
		covered := false
		shape := shapeOf(after.kind, match)
		for m, o := range oldShapes {
			if o.covers(before.kind, shape) {
				pairs[[2]int{i, before.owner[m]}], covered = true, true
			}
		}
		if !covered {
			pairs[[2]int{i, -1}] = true
		}
	}
	// An old match the new route lost sends its requests to the new
	// matches that cover it (a rule removed: its requests fall to a
	// broader one).
	var newShapes map[string]matchShape
	for match, j := range ownersOf(before) {
		if widened {
			break
		}
		if _, ok := after.owner[match]; ok {
			continue
		}
		if newShapes == nil {
			newShapes = make(map[string]matchShape, len(after.owner))
			for m := range after.owner {
				newShapes[m] = shapeOf(after.kind, m)
			}
		}
		if work += len(newShapes); work > maxComparisons {
			widened = true
			break
		}
		shape := shapeOf(before.kind, match)
		for m, n := range newShapes {
			if n.covers(after.kind, shape) {
				pairs[[2]int{after.owner[m], j}] = true
			}
		}
	}
	for p := range pairs {
		if widened {
			break
		}
		if work += len(after.shares[p[0]]) + len(after.mirrors[p[0]]); work > maxComparisons {
			widened = true
			break
		}
	}
	if widened {
		for i := range after.shares {
			for k := range after.shares[i] {
				grown[k] = true
			}
			for k := range after.mirrors[i] {
				mirrored[k] = true
			}
		}
		return grown, mirrored
	}
	for p := range pairs {
		i, j := p[0], p[1]
		for k, f := range after.shares[i] {
			if j < 0 || f.greater(before.shares[j][k]) {
				grown[k] = true
			}
		}
		for k := range after.mirrors[i] {
			if j < 0 || !before.mirrors[j][k] {
				mirrored[k] = true
			}
		}
	}
	return grown, mirrored
}

// ownersOf is t's owner map; none for no route.
func ownersOf(t *traffic) map[string]int {
	if t == nil {
		return nil
	}
	return t.owner
}

// fraction is num/den; den is 0 only for the zero share (num 0).
type fraction struct {
	num, den uint64
}

// greater reports whether f > g, exactly: num and den are sums of int32
// weights, so their products need 128 bits.
func (f fraction) greater(g fraction) bool {
	if f.num == 0 {
		return false
	}
	if g.num == 0 {
		return true
	}
	// f.num/f.den > g.num/g.den  <=>  f.num*g.den > g.num*f.den
	hi1, lo1 := bits.Mul64(f.num, g.den)
	hi2, lo2 := bits.Mul64(g.num, f.den)
	return hi1 > hi2 || (hi1 == hi2 && lo1 > lo2)
}

// traffic is where a route sends the requests of each of its matches.
type traffic struct {
	// kind is the route's kind, which says how to read its match keys.
	kind string
	// owner is the index of the first rule that has each match: the rule
	// that serves its requests.
	owner map[string]int
	// shares is, per rule, the fraction of its requests each backend with
	// a weight above zero gets.
	shares []map[backendKey]fraction
	// mirrors is, per rule, the backends its requests are mirrored to: the
	// rule's own mirrors and those of its backendRefs with a weight above
	// zero.
	mirrors []map[backendKey]bool
}

func trafficOf(r *Route) *traffic {
	t := &traffic{kind: r.Kind, owner: map[string]int{}, shares: make([]map[backendKey]fraction, len(r.Rules)), mirrors: make([]map[backendKey]bool, len(r.Rules))}
	for i, rule := range r.Rules {
		owns := false
		for _, m := range rule.Matches {
			if _, claimed := t.owner[m]; !claimed {
				t.owner[m], owns = i, true
			}
		}
		if !owns {
			continue // every match is served by an earlier rule
		}
		var total uint64
		for _, b := range rule.Backends {
			if w := weight(b.BackendRef); w > 0 {
				total += uint64(w)
			}
		}
		shares, mirrors := map[backendKey]fraction{}, map[backendKey]bool{}
		for _, ref := range rule.Mirrors {
			mirrors[keyOf(r.Namespace, ref)] = true
		}
		for _, b := range rule.Backends {
			w := weight(b.BackendRef)
			if w <= 0 {
				continue
			}
			k := keyOf(r.Namespace, b.BackendObjectReference)
			f := shares[k]
			f.num, f.den = f.num+uint64(w), total
			shares[k] = f
			for _, ref := range b.Mirrors {
				mirrors[keyOf(r.Namespace, ref)] = true
			}
		}
		t.shares[i], t.mirrors[i] = shares, mirrors
	}
	return t
}

// mirrorRefs lists every mirror destination of r, in order of appearance.
func mirrorRefs(r *Route) []gwv1.BackendObjectReference {
	var out []gwv1.BackendObjectReference
	for _, rule := range r.Rules {
		out = append(out, rule.Mirrors...)
		for _, b := range rule.Backends {
			out = append(out, b.Mirrors...)
		}
	}
	return out
}

// attachmentWidens reports whether the updated route receives requests the
// old one could not: a parentRef it did not have, or a hostname its old
// hostnames do not cover.
func attachmentWidens(old, updated *Route) bool {
	parents := map[parentKey]bool{}
	for _, p := range old.Parents {
		parents[parentKeyOf(old.Namespace, p)] = true
	}
	for _, p := range updated.Parents {
		if !parents[parentKeyOf(updated.Namespace, p)] {
			return true
		}
	}
	if len(old.Hostnames) == 0 {
		return false // the old route took every hostname already
	}
	if len(updated.Hostnames) == 0 {
		return true // none means every hostname of the listener
	}
	for _, h := range updated.Hostnames {
		covered := false
		for _, o := range old.Hostnames {
			if hostnameCovers(string(o), string(h)) {
				covered = true
				break
			}
		}
		if !covered {
			return true
		}
	}
	return false
}

// hostnameCovers reports whether every request for hostname h (itself
// possibly a wildcard) also matches hostname o: equal, or o is a wildcard
// "*.example.com" and h has one or more labels before ".example.com".
// Hostnames are compared case-insensitively, as DNS names are.
func hostnameCovers(o, h string) bool {
	o, h = strings.ToLower(o), strings.ToLower(h)
	if o == h {
		return true
	}
	suffix, ok := strings.CutPrefix(o, "*")
	return ok && strings.HasPrefix(suffix, ".") && strings.HasSuffix(h, suffix) && len(h) > len(suffix)
}

// parentKey identifies a parentRef with its defaults filled in.
type parentKey struct {
	group, kind, namespace, name, section string
	port                                  int32
}

func parentKeyOf(routeNamespace string, p gwv1.ParentReference) parentKey {
	k := parentKey{group: gwv1.GroupName, kind: "Gateway", namespace: routeNamespace, name: string(p.Name)}
	if p.Group != nil {
		k.group = string(*p.Group)
	}
	if p.Kind != nil {
		k.kind = string(*p.Kind)
	}
	if p.Namespace != nil && *p.Namespace != "" {
		k.namespace = string(*p.Namespace)
	}
	if p.SectionName != nil {
		k.section = string(*p.SectionName)
	}
	if p.Port != nil {
		k.port = *p.Port
	}
	return k
}

// backendKey identifies a backend: group and kind ("" and "Service" for a
// core Service), namespace and name, and port.
type backendKey struct {
	group, kind string
	service     types.NamespacedName
	port        int32
	hasPort     bool
}

func (k backendKey) isService() bool { return k.group == "" && k.kind == "Service" }

func (k backendKey) target(r *Route) checks.Target {
	t := checks.Target{
		Route:     types.NamespacedName{Namespace: r.Namespace, Name: r.Name},
		RouteKind: r.Kind,
		Service:   k.service,
	}
	if k.hasPort {
		p := k.port
		t.Port = &p
	}
	return t
}

// weight is the effective weight of a backendRef: unset means 1.
func weight(b gwv1.BackendRef) int32 {
	if b.Weight == nil {
		return 1
	}
	return *b.Weight
}

// keyOf returns the key of a backend reference, with the group, kind and
// namespace defaulted as the Gateway API does.
func keyOf(routeNamespace string, b gwv1.BackendObjectReference) backendKey {
	k := backendKey{kind: "Service", service: types.NamespacedName{Namespace: routeNamespace, Name: string(b.Name)}}
	if b.Group != nil {
		k.group = string(*b.Group)
	}
	if b.Kind != nil {
		k.kind = string(*b.Kind)
	}
	if b.Namespace != nil && *b.Namespace != "" {
		k.service.Namespace = string(*b.Namespace)
	}
	if b.Port != nil {
		k.port, k.hasPort = *b.Port, true
	}
	return k
}

func describeRef(routeNamespace string, b gwv1.BackendObjectReference) string {
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
