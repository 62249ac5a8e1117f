package cutoverctl

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"k8s.io/apimachinery/pkg/util/validation"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Annotations the plugin records on a route it switches. They are the
// plugin's notes, written by whoever can write the route: history shows them
// beside the guard's Events, which only the guard writes.
const (
	// AnnotationPreviousBackends holds, as JSON, the backendRefs (names and
	// weights) of each rule the last switch changed, as they were before it:
	// where rollback goes.
	AnnotationPreviousBackends = "cutover-guard.dev/previous-backends"
	// AnnotationSwitchHistory holds, as JSON, the last MaxHistory switches
	// the plugin made on the route, oldest first.
	AnnotationSwitchHistory = "cutover-guard.dev/switch-history"
)

// MaxHistory bounds the switches kept in AnnotationSwitchHistory.
const MaxHistory = 10

// maxReason bounds a switch reason as recorded, in bytes.
const maxReason = 256

// Backend is one backendRef of a rule.
type Backend struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	Kind      string `json:"kind,omitempty"`
	Port      *int32 `json:"port,omitempty"`
	Weight    *int32 `json:"weight,omitempty"`
}

// weight is the effective weight: unset means 1.
func (b Backend) weight() int32 {
	if b.Weight == nil {
		return 1
	}
	return *b.Weight
}

// isService reports whether the backendRef names a core Service.
func (b Backend) isService() bool { return b.Kind == "" || b.Kind == "Service" }

// RuleBackends are the backendRefs of one rule of a route.
type RuleBackends struct {
	Rule     int       `json:"rule"`
	Backends []Backend `json:"backends"`
}

// Switch is one switch the plugin made, as recorded on the route.
type Switch struct {
	At     time.Time `json:"at"`
	By     string    `json:"by,omitempty"`
	Action string    `json:"action"`
	From   []string  `json:"from"`
	To     []string  `json:"to"`
	Reason string    `json:"reason,omitempty"`
}

// Switch actions.
const (
	ActionSwitch            = "switch"
	ActionRollback          = "rollback"
	ActionRollbackOnFailure = "rollback-on-failure"
)

// rulesOf returns the backendRefs of every rule of route.
func rulesOf(route *gwv1.HTTPRoute) []RuleBackends {
	out := make([]RuleBackends, 0, len(route.Spec.Rules))
	for i, r := range route.Spec.Rules {
		rb := RuleBackends{Rule: i, Backends: []Backend{}}
		for _, ref := range r.BackendRefs {
			b := Backend{Name: string(ref.Name), Port: (*int32)(ref.Port), Weight: ref.Weight}
			if ref.Namespace != nil && string(*ref.Namespace) != route.Namespace {
				b.Namespace = string(*ref.Namespace)
			}
			if ref.Kind != nil {
				b.Kind = string(*ref.Kind)
			}
			rb.Backends = append(rb.Backends, b)
		}
		out = append(out, rb)
	}
	return out
}

// live returns the names of the backends that get traffic in rules
// (effective weight > 0), in order of first appearance.
func live(rules []RuleBackends) []string {
	var out []string
	for _, r := range rules {
		for _, b := range r.Backends {
			if b.weight() > 0 && !slices.Contains(out, b.label()) {
				out = append(out, b.label())
			}
		}
	}
	return out
}

// label names a backend as the route does: name, or namespace/name for a
// backend in another namespace, kind/name for a kind other than Service.
func (b Backend) label() string {
	s := b.Name
	if b.Namespace != "" {
		s = b.Namespace + "/" + s
	}
	if !b.isService() {
		s = strings.ToLower(b.Kind) + "/" + s
	}
	return s
}

// share is the percentage of rule r's traffic backend i gets.
func share(r RuleBackends, i int) int {
	var total int32
	for _, b := range r.Backends {
		total += b.weight()
	}
	if total == 0 {
		return 0
	}
	return int(int64(r.Backends[i].weight()) * 100 / int64(total))
}

// Plan is what a switch changes: each changed rule as it is and as it will be.
type Plan struct {
	Before []RuleBackends
	After  []RuleBackends
}

// changed reports whether the plan changes anything.
func (p Plan) changed() bool { return len(p.After) > 0 }

// planSwitch plans moving every rule's traffic to the Service named to: a
// rule with one backendRef gets its name replaced (the tutorial's patch); a
// rule that splits traffic among several keeps them all, to gets weight 100
// and the others 0. rule >= 0 limits the switch to that rule.
func planSwitch(route *gwv1.HTTPRoute, to string, rule int) (Plan, error) {
	var p Plan
	rules := rulesOf(route)
	if rule >= len(rules) {
		return p, fmt.Errorf("httproute %s/%s has %d rule(s); --rule %d does not exist", route.Namespace, route.Name, len(rules), rule)
	}
	for _, r := range rules {
		if (rule >= 0 && r.Rule != rule) || len(r.Backends) == 0 {
			continue
		}
		want := RuleBackends{Rule: r.Rule, Backends: slices.Clone(r.Backends)}
		if len(r.Backends) == 1 {
			b := r.Backends[0]
			if !b.isService() {
				return p, fmt.Errorf("rule %d of httproute %s/%s sends traffic to %s, not to a Service; switch it by hand", r.Rule, route.Namespace, route.Name, b.label())
			}
			if b.Name == to {
				continue
			}
			want.Backends[0].Name = to
		} else {
			j := slices.IndexFunc(r.Backends, func(b Backend) bool { return b.isService() && b.Name == to && b.Namespace == "" })
			if j < 0 {
				return p, fmt.Errorf("rule %d of httproute %s/%s splits traffic among %s; %s is not one of them: add it to the rule first (weight 0), then switch",
					r.Rule, route.Namespace, route.Name, strings.Join(backendLabels(r.Backends), ", "), to)
			}
			for i := range want.Backends {
				w := int32(0)
				if i == j {
					w = 100
				}
				want.Backends[i].Weight = &w
			}
			if sameBackends(r.Backends, want.Backends) {
				continue
			}
		}
		p.Before = append(p.Before, r)
		p.After = append(p.After, want)
	}
	return p, nil
}

// planRollback plans restoring the rules recorded in
// AnnotationPreviousBackends.
func planRollback(route *gwv1.HTTPRoute) (Plan, error) {
	var p Plan
	raw, ok := route.Annotations[AnnotationPreviousBackends]
	if !ok {
		return p, fmt.Errorf("httproute %s/%s has no switch recorded (annotation %s): rollback knows where to go only after `kubectl cutover switch`; "+
			"switch by name instead: kubectl cutover switch %s -n %s --to SERVICE", route.Namespace, route.Name, AnnotationPreviousBackends, route.Name, route.Namespace)
	}
	var prev []RuleBackends
	if err := json.Unmarshal([]byte(raw), &prev); err != nil {
		return p, fmt.Errorf("httproute %s/%s: annotation %s is not what the plugin writes (%v); switch by name instead: kubectl cutover switch %s -n %s --to SERVICE",
			route.Namespace, route.Name, AnnotationPreviousBackends, err, route.Name, route.Namespace)
	}
	rules := rulesOf(route)
	for _, want := range prev {
		if want.Rule < 0 || want.Rule >= len(rules) || len(rules[want.Rule].Backends) != len(want.Backends) {
			return p, fmt.Errorf("httproute %s/%s changed since the last switch: its rule %d no longer has the %d backendRef(s) recorded; switch by name instead: kubectl cutover switch %s -n %s --to SERVICE",
				route.Namespace, route.Name, want.Rule, len(want.Backends), route.Name, route.Namespace)
		}
		have := rules[want.Rule]
		for _, b := range want.Backends {
			if errs := validation.IsDNS1123Subdomain(b.Name); len(errs) > 0 {
				return p, fmt.Errorf("httproute %s/%s: annotation %s names backend %q, which is no Service name (%s); switch by name instead: kubectl cutover switch %s -n %s --to SERVICE",
					route.Namespace, route.Name, AnnotationPreviousBackends, oneLine(b.Name, 64), errs[0], route.Name, route.Namespace)
			}
		}
		for i := range want.Backends {
			// Only names and weights are restored; the rest stays as it is.
			b := have.Backends[i]
			b.Name, b.Weight = want.Backends[i].Name, want.Backends[i].Weight
			want.Backends[i] = b
		}
		if sameBackends(have.Backends, want.Backends) {
			continue
		}
		p.Before = append(p.Before, have)
		p.After = append(p.After, want)
	}
	return p, nil
}

func backendLabels(bs []Backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.label()
	}
	return out
}

func sameBackends(a, b []Backend) bool {
	return slices.EqualFunc(a, b, func(x, y Backend) bool {
		return x.Name == y.Name && x.Namespace == y.Namespace && x.weight() == y.weight() && (x.Weight == nil) == (y.Weight == nil)
	})
}

// jsonPatchOp is one operation of an RFC 6902 JSON patch.
type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// buildPatch is the JSON patch that carries out plan p on route, recording
// rec: first a test that the route is the version the plan was made from
// (what was dry-run and confirmed is what is applied), then for each change
// a test of the old name and the replacement (for a single backendRef, the
// tutorial's own operation), then the annotations.
func buildPatch(route *gwv1.HTTPRoute, p Plan, rec Switch) ([]byte, error) {
	ops := []jsonPatchOp{{Op: "test", Path: "/metadata/resourceVersion", Value: route.ResourceVersion}}
	for k, before := range p.Before {
		after := p.After[k]
		for i := range before.Backends {
			base := fmt.Sprintf("/spec/rules/%d/backendRefs/%d/", before.Rule, i)
			o, n := before.Backends[i], after.Backends[i]
			if o.Name != n.Name {
				ops = append(ops, jsonPatchOp{Op: "test", Path: base + "name", Value: o.Name}, jsonPatchOp{Op: "replace", Path: base + "name", Value: n.Name})
			}
			switch {
			case o.Weight == nil && n.Weight != nil:
				ops = append(ops, jsonPatchOp{Op: "add", Path: base + "weight", Value: *n.Weight})
			case o.Weight != nil && n.Weight == nil:
				ops = append(ops, jsonPatchOp{Op: "remove", Path: base + "weight"})
			case o.Weight != nil && *o.Weight != *n.Weight:
				ops = append(ops, jsonPatchOp{Op: "replace", Path: base + "weight", Value: *n.Weight})
			}
		}
	}
	prev, err := json.Marshal(p.Before)
	if err != nil {
		return nil, err
	}
	history := append(recordedHistory(route), rec)
	if len(history) > MaxHistory {
		history = history[len(history)-MaxHistory:]
	}
	hist, err := json.Marshal(history)
	if err != nil {
		return nil, err
	}
	if route.Annotations == nil {
		// Safe: the resourceVersion test fails if annotations appeared since.
		ops = append(ops, jsonPatchOp{Op: "add", Path: "/metadata/annotations", Value: map[string]string{}})
	}
	ops = append(ops,
		jsonPatchOp{Op: "add", Path: "/metadata/annotations/" + escapePointer(AnnotationPreviousBackends), Value: string(prev)},
		jsonPatchOp{Op: "add", Path: "/metadata/annotations/" + escapePointer(AnnotationSwitchHistory), Value: string(hist)},
	)
	return json.Marshal(ops)
}

// escapePointer escapes a JSON pointer token (RFC 6901).
func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// recordedHistory is the switch history recorded on route; an annotation
// the plugin cannot read counts as empty (the next switch replaces it).
// Whoever can write the route can write the annotation: only the newest
// MaxHistory entries are kept, and every text in them is made one line of
// printable characters, so that showing it cannot drive the terminal.
func recordedHistory(route *gwv1.HTTPRoute) []Switch {
	var h []Switch
	if raw, ok := route.Annotations[AnnotationSwitchHistory]; ok {
		if err := json.Unmarshal([]byte(raw), &h); err != nil {
			return nil
		}
	}
	if len(h) > MaxHistory {
		h = h[len(h)-MaxHistory:]
	}
	for i := range h {
		s := &h[i]
		s.By, s.Action, s.Reason = oneLine(s.By, maxReason), oneLine(s.Action, 32), oneLine(s.Reason, maxReason)
		s.From, s.To = cleanNames(s.From), cleanNames(s.To)
	}
	return h
}

// cleanNames bounds a recorded list of backend names for display.
func cleanNames(names []string) []string {
	if len(names) > maxColors {
		names = names[:maxColors]
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = oneLine(n, 253)
	}
	return out
}

// newSwitch is the record of plan p made by user for reason.
func newSwitch(p Plan, action, user, reason string, at time.Time) Switch {
	return Switch{At: at.UTC(), By: user, Action: action, From: live(p.Before), To: live(p.After), Reason: oneLine(reason, maxReason)}
}

// oneLine makes user text one line of printable characters of at most n
// bytes, for annotations and terminal output.
func oneLine(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	space := false
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			space = b.Len() > 0
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		if b.Len()+len(string(r)) > n {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// describe renders backends with their weights, e.g. "app-blue" or
// "app-blue=0, app-green=100".
func describe(r RuleBackends) string {
	if len(r.Backends) == 1 && r.Backends[0].Weight == nil {
		return r.Backends[0].label()
	}
	parts := make([]string, len(r.Backends))
	for i, b := range r.Backends {
		parts[i] = b.label() + "=" + strconv.Itoa(int(b.weight()))
	}
	return strings.Join(parts, ", ")
}
