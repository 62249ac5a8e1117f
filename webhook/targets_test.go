package webhook

import (
	"encoding/json"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/checks"
)

func target(ns, name string, port int32) checks.Target {
	return checks.Target{
		Route:     types.NamespacedName{Namespace: "production", Name: "myapp"},
		RouteKind: KindHTTPRoute,
		Service:   types.NamespacedName{Namespace: ns, Name: name},
		Port:      ptr.To(port),
	}
}

// green and blue are the tutorial's targets.
var (
	green = target("production", "app-green", 80)
	blue  = target("production", "app-blue", 80)
)

// httpRoute reduces production/myapp with the HTTPRoute spec in JSON; ""
// is no route (the old route of a create).
func httpRoute(t *testing.T, spec string) *Route {
	t.Helper()
	if spec == "" {
		return nil
	}
	r := &gwv1.HTTPRoute{}
	if err := json.Unmarshal([]byte(`{"metadata":{"namespace":"production","name":"myapp"},"spec":`+spec+`}`), r); err != nil {
		t.Fatalf("spec %s: %v", spec, err)
	}
	return HTTPRouteOf(r)
}

// Route specs the cases share.
const (
	toBlue      = `{"rules":[{"backendRefs":[{"name":"app-blue","port":80}]}]}`
	toGreen     = `{"rules":[{"backendRefs":[{"name":"app-green","port":80}]}]}`
	canary99to1 = `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":99},{"name":"app-green","port":80,"weight":1}]}]}`
	// Two rules: /api to api, everything else to blue.
	apiAndBlue = `{"rules":[{"matches":[{"path":{"value":"/api"}}],"backendRefs":[{"name":"api","port":8080}]},
	                        {"backendRefs":[{"name":"app-blue","port":80}]}]}`
)

func TestTargets(t *testing.T) {
	tests := map[string]struct {
		old, new     string
		want         TargetSet
		wantWarnings []string
	}{
		// Which backend's share grows.
		"the tutorial's patch from app-blue to app-green targets app-green": {
			old: toBlue, new: toGreen,
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"the rollback patch targets app-blue": {
			old: toGreen, new: toBlue,
			want: TargetSet{Checked: []checks.Target{blue}},
		},
		"a weight shift from 100/0 to 0/100 targets the backend that was at zero": {
			old:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":100},{"name":"app-green","port":80,"weight":0}]}]}`,
			new:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":0},{"name":"app-green","port":80,"weight":100}]}]}`,
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"a canary from 99/1 to 0/100 targets green, which was live before": {
			old:  canary99to1,
			new:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":0},{"name":"app-green","port":80,"weight":100}]}]}`,
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"a canary step from 90/10 to 50/50 targets green": {
			old:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":90},{"name":"app-green","port":80,"weight":10}]}]}`,
			new:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":50},{"name":"app-green","port":80,"weight":50}]}]}`,
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"a canary rollback from 1/99 to 100/0 targets blue only": {
			old:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":1},{"name":"app-green","port":80,"weight":99}]}]}`,
			new:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":100},{"name":"app-green","port":80,"weight":0}]}]}`,
			want: TargetSet{Checked: []checks.Target{blue}},
		},
		"a weight raised while the others stay targets it": {
			old:  canary99to1,
			new:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":99},{"name":"app-green","port":80,"weight":5}]}]}`,
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"a weight raised in step with the others keeps every share: the fast path": {
			old: `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":50},{"name":"app-green","port":80,"weight":50}]}]}`,
			new: `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":1},{"name":"app-green","port":80}]}]}`,
		},
		"a share that shrinks is never a target: green from 50/50 to 90/10 targets blue": {
			old:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":50},{"name":"app-green","port":80,"weight":50}]}]}`,
			new:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":90},{"name":"app-green","port":80,"weight":10}]}]}`,
			want: TargetSet{Checked: []checks.Target{blue}},
		},
		"a third backend added at 10 targets it, not the two whose shares shrink": {
			old:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":50},{"name":"app-green","port":80,"weight":50}]}]}`,
			new:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":50},{"name":"app-green","port":80,"weight":50},{"name":"app-red","port":80,"weight":10}]}]}`,
			want: TargetSet{Checked: []checks.Target{target("production", "app-red", 80)}},
		},
		"a backend named twice adds up: 1+1 of 3 is more than 1 of 2": {
			old:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80},{"name":"app-green","port":80}]}]}`,
			new:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80},{"name":"app-green","port":80},{"name":"app-green","port":80}]}]}`,
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"a share of a non-Service backend counts in the sum: removing it grows blue's": {
			old:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80},{"group":"example.com","kind":"Bucket","name":"other"}]}]}`,
			new:  toBlue,
			want: TargetSet{Checked: []checks.Target{blue}},
		},
		"weights of int32's size compare exactly": {
			old:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":2147483647},{"name":"app-green","port":80,"weight":2147483646}]}]}`,
			new:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":2147483646},{"name":"app-green","port":80,"weight":2147483647}]}]}`,
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"adding a second backend with weight targets it": {
			old:  toBlue,
			new:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80},{"name":"app-green","port":80,"weight":1}]}]}`,
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"adding a backend at weight zero is not a target": {
			old: toBlue,
			new: `{"rules":[{"backendRefs":[{"name":"app-blue","port":80},{"name":"app-green","port":80,"weight":0}]}]}`,
		},
		"every weight at zero makes no target": {
			old: `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":0}]}]}`,
			new: `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":0},{"name":"app-green","port":80,"weight":0}]}]}`,
		},
		"removing a backend targets the one left, whose share grows": {
			old:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":50},{"name":"app-green","port":80,"weight":50}]}]}`,
			new:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"weight":50}]}]}`,
			want: TargetSet{Checked: []checks.Target{blue}},
		},
		"removing a rule sends its requests to the broader rule: its backend is a target": {
			old:  apiAndBlue,
			new:  toBlue,
			want: TargetSet{Checked: []checks.Target{blue}},
		},
		"removing a rule whose requests no other match takes is the fast path": {
			old: `{"rules":[{"matches":[{"path":{"value":"/api"}}],"backendRefs":[{"name":"api","port":8080}]},
			             {"matches":[{"path":{"value":"/shop"}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			new: `{"rules":[{"matches":[{"path":{"value":"/shop"}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
		},
		"a new port on a live service is a target": {
			old:  toBlue,
			new:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":8080}]}]}`,
			want: TargetSet{Checked: []checks.Target{target("production", "app-blue", 8080)}},
		},
		"a cross-namespace ref keeps its namespace": {
			old:  toBlue,
			new:  `{"rules":[{"backendRefs":[{"name":"app-green","namespace":"staging","port":80}]}]}`,
			want: TargetSet{Checked: []checks.Target{target("staging", "app-green", 80)}},
		},
		"an explicit core Service group and kind is a Service": {
			old:  toBlue,
			new:  `{"rules":[{"backendRefs":[{"group":"","kind":"Service","name":"app-green","port":80}]}]}`,
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"a non-Service kind is skipped with a warning": {
			old:          toBlue,
			new:          `{"rules":[{"backendRefs":[{"name":"app-blue","port":80},{"group":"example.com","kind":"Bucket","name":"other"}]}]}`,
			want:         TargetSet{Checked: []checks.Target{}},
			wantWarnings: []string{"backendRef example.com/Bucket production/other is not a core Service; cutover-guard does not check it"},
		},
		"an unchanged route is the fast path": {
			old: toBlue, new: toBlue,
		},
		"a route without rules has no targets": {
			old: toBlue, new: `{}`,
		},

		// Rules and matches.
		"reordering rules with distinct matches is the fast path": {
			old: apiAndBlue,
			new: `{"rules":[{"backendRefs":[{"name":"app-blue","port":80}]},
			             {"matches":[{"path":{"value":"/api"}}],"backendRefs":[{"name":"api","port":8080}]}]}`,
		},
		"rules with the same match reordered: the first serves it, so the other's backend is a target": {
			old:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80}]},{"backendRefs":[{"name":"app-green","port":80}]}]}`,
			new:  `{"rules":[{"backendRefs":[{"name":"app-green","port":80}]},{"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"a backend added to a rule another rule shadows gets no traffic": {
			old: `{"rules":[{"backendRefs":[{"name":"app-blue","port":80}]},{"backendRefs":[{"name":"api","port":8080}]}]}`,
			new: `{"rules":[{"backendRefs":[{"name":"app-blue","port":80}]},{"backendRefs":[{"name":"app-green","port":80}]}]}`,
		},
		"a rule that gains a match another rule had targets its backends": {
			old: apiAndBlue,
			new: `{"rules":[{"matches":[{"path":{"value":"/api"}},{"path":{"value":"/v2"}}],"backendRefs":[{"name":"api","port":8080}]},
			             {"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			want: TargetSet{Checked: []checks.Target{target("production", "api", 8080)}},
		},
		"a rule that loses a match is the fast path": {
			old: `{"rules":[{"matches":[{"path":{"value":"/api"}},{"path":{"value":"/v2"}}],"backendRefs":[{"name":"api","port":8080}]}]}`,
			new: `{"rules":[{"matches":[{"path":{"value":"/api"}}],"backendRefs":[{"name":"api","port":8080}]}]}`,
		},
		"a backend moved into another rule's match is a target": {
			old:  apiAndBlue,
			new:  `{"rules":[{"matches":[{"path":{"value":"/api"}}],"backendRefs":[{"name":"app-blue","port":80}]},{"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			want: TargetSet{Checked: []checks.Target{blue}},
		},
		"a new rule whose match an old one covers, to the same backend, is the fast path": {
			old: toBlue,
			new: `{"rules":[{"matches":[{"path":{"value":"/shop"}}],"backendRefs":[{"name":"app-blue","port":80}]},{"backendRefs":[{"name":"app-blue","port":80}]}]}`,
		},
		"a new rule for /shop to green takes requests blue had: green is a target": {
			old:  toBlue,
			new:  `{"rules":[{"matches":[{"path":{"value":"/shop"}}],"backendRefs":[{"name":"app-green","port":80}]},{"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"the path match narrowed from / to /shop is the fast path": {
			old: toBlue,
			new: `{"rules":[{"matches":[{"path":{"value":"/shop"}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
		},
		"the path match widened from /shop to / is a new match: a target": {
			old:  `{"rules":[{"matches":[{"path":{"value":"/shop"}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			new:  toBlue,
			want: TargetSet{Checked: []checks.Target{blue}},
		},
		"a prefix covers whole path elements only: /shop does not cover /shopping": {
			old:  `{"rules":[{"matches":[{"path":{"value":"/shop"}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			new:  `{"rules":[{"matches":[{"path":{"value":"/shopping"}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			want: TargetSet{Checked: []checks.Target{blue}},
		},
		"an exact path under an old prefix is covered": {
			old: `{"rules":[{"matches":[{"path":{"value":"/shop"}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			new: `{"rules":[{"matches":[{"path":{"type":"Exact","value":"/shop/cart"}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
		},
		"a regular expression is covered by nothing but itself": {
			old:  toBlue,
			new:  `{"rules":[{"matches":[{"path":{"type":"RegularExpression","value":"/s.*"}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			want: TargetSet{Checked: []checks.Target{blue}},
		},
		"a header condition added narrows the match: the fast path": {
			old: toGreen,
			new: `{"rules":[{"matches":[{"headers":[{"name":"x-canary","value":"yes"}]}],"backendRefs":[{"name":"app-green","port":80}]}]}`,
		},
		"a header condition dropped widens the match: a target": {
			old:  `{"rules":[{"matches":[{"headers":[{"name":"x-canary","value":"yes"}]}],"backendRefs":[{"name":"app-green","port":80}]}]}`,
			new:  toGreen,
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"a canary header rule to green added in front of blue: green is a target": {
			old:  toBlue,
			new:  `{"rules":[{"matches":[{"headers":[{"name":"x-canary","value":"yes"}]}],"backendRefs":[{"name":"app-green","port":80}]},{"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"the canary header rule removed: its requests fall back to blue, a target": {
			old:  `{"rules":[{"matches":[{"headers":[{"name":"x-canary","value":"yes"}]}],"backendRefs":[{"name":"app-green","port":80}]},{"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			new:  toBlue,
			want: TargetSet{Checked: []checks.Target{blue}},
		},
		"no matches and the defaulted match / are the same match": {
			old: toBlue,
			new: `{"rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/"}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
		},
		"a filter added to a rule is the fast path": {
			old: toBlue,
			new: `{"rules":[{"filters":[{"type":"RequestHeaderModifier","requestHeaderModifier":{"add":[{"name":"x-color","value":"blue"}]}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
		},

		// Attachment: parentRefs and hostnames.
		"moving from the staging gateway to production targets every live backend": {
			old:  `{"parentRefs":[{"name":"staging"}],"rules":[{"backendRefs":[{"name":"app-green","port":80}]},{"backendRefs":[{"name":"app-blue","port":80,"weight":0}]}]}`,
			new:  `{"parentRefs":[{"name":"public"}],"rules":[{"backendRefs":[{"name":"app-green","port":80}]},{"backendRefs":[{"name":"app-blue","port":80,"weight":0}]}]}`,
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"a second parent targets every live backend": {
			old:  `{"parentRefs":[{"name":"staging"}],` + toGreen[1:],
			new:  `{"parentRefs":[{"name":"staging"},{"name":"public","namespace":"infra"}],` + toGreen[1:],
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"another listener section of the same gateway is a new parent": {
			old:  `{"parentRefs":[{"name":"public","sectionName":"internal"}],` + toGreen[1:],
			new:  `{"parentRefs":[{"name":"public","sectionName":"https"}],` + toGreen[1:],
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"a parent spelled with its defaults is the same parent": {
			old: `{"parentRefs":[{"name":"public"}],` + toGreen[1:],
			new: `{"parentRefs":[{"group":"gateway.networking.k8s.io","kind":"Gateway","namespace":"production","name":"public"}],` + toGreen[1:],
		},
		"removing a parent is the fast path": {
			old: `{"parentRefs":[{"name":"staging"},{"name":"public"}],` + toGreen[1:],
			new: `{"parentRefs":[{"name":"public"}],` + toGreen[1:],
		},
		"a new hostname targets every live backend": {
			old:  `{"hostnames":["staging.example.com"],` + toGreen[1:],
			new:  `{"hostnames":["staging.example.com","shop.example.com"],` + toGreen[1:],
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"dropping every hostname takes every hostname: a target": {
			old:  `{"hostnames":["staging.example.com"],` + toGreen[1:],
			new:  toGreen,
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"a hostname under an old wildcard is the fast path": {
			old: `{"hostnames":["*.example.com"],` + toGreen[1:],
			new: `{"hostnames":["shop.example.com","*.eu.example.com"],` + toGreen[1:],
		},
		"a wildcard does not cover its own domain": {
			old:  `{"hostnames":["*.example.com"],` + toGreen[1:],
			new:  `{"hostnames":["example.com"],` + toGreen[1:],
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"narrowing the hostnames is the fast path": {
			old: `{"hostnames":["a.example.com","b.example.com"],` + toGreen[1:],
			new: `{"hostnames":["A.example.com"],` + toGreen[1:],
		},
		"hostnames set where there were none narrow the route": {
			old: toGreen,
			new: `{"hostnames":["shop.example.com"],` + toGreen[1:],
		},
		"re-parenting and a rollback at once: the live backend after it is the target": {
			old:  `{"parentRefs":[{"name":"staging"}],` + toGreen[1:],
			new:  `{"parentRefs":[{"name":"public"}],` + toBlue[1:],
			want: TargetSet{Checked: []checks.Target{blue}},
		},

		// Create.
		"a create targets every backend with a share": {
			new:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80},{"name":"app-green","port":80,"weight":0}]},{"matches":[{"path":{"value":"/api"}}],"backendRefs":[{"name":"api","port":8080}]}]}`,
			want: TargetSet{Checked: []checks.Target{blue, target("production", "api", 8080)}},
		},
		"a create with only zero weights has no target": {
			new: `{"rules":[{"backendRefs":[{"name":"app-green","port":80,"weight":0}]}]}`,
		},

		// Mirrors.
		"a rule's new RequestMirror filter is a mirror target": {
			old:  toBlue,
			new:  `{"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"app-shadow","port":80}}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			want: TargetSet{Mirrors: []checks.Target{target("production", "app-shadow", 80)}},
		},
		"a backendRef's RequestMirror filter is a mirror target": {
			old:  toBlue,
			new:  `{"rules":[{"backendRefs":[{"name":"app-blue","port":80,"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"app-shadow","port":80},"percent":10}}]}]}]}`,
			want: TargetSet{Mirrors: []checks.Target{target("production", "app-shadow", 80)}},
		},
		"a mirror on a backendRef at weight zero mirrors nothing": {
			old: toBlue,
			new: `{"rules":[{"backendRefs":[{"name":"app-blue","port":80},{"name":"app-green","port":80,"weight":0,"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"app-shadow","port":80}}}]}]}]}`,
		},
		"a mirror of 0 percent or a zero fraction mirrors nothing": {
			old: toBlue,
			new: `{"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"app-shadow","port":80},"percent":0}},
			                          {"type":"RequestMirror","requestMirror":{"backendRef":{"name":"app-other","port":80},"fraction":{"numerator":0}}}],
			             "backendRefs":[{"name":"app-blue","port":80}]}]}`,
		},
		"an existing mirror is the fast path, whatever its percent": {
			old: `{"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"app-shadow","port":80},"percent":5}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			new: `{"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"app-shadow","port":80},"percent":50}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
		},
		"a mirror to a Service that is also a checked target is checked as a target": {
			old:  toBlue,
			new:  `{"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"app-green","port":8080}}}],"backendRefs":[{"name":"app-green","port":80}]}]}`,
			want: TargetSet{Checked: []checks.Target{green}},
		},
		"a mirror to a non-Service is skipped with a warning": {
			old:          toBlue,
			new:          `{"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"group":"example.com","kind":"Bucket","name":"sink"}}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			wantWarnings: []string{"RequestMirror backendRef example.com/Bucket production/sink is not a core Service; cutover-guard does not check it"},
		},
		"re-parenting makes every mirror a mirror target": {
			old:  `{"parentRefs":[{"name":"staging"}],"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"app-shadow","port":80}}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			new:  `{"parentRefs":[{"name":"public"}],"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"app-shadow","port":80}}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			want: TargetSet{Checked: []checks.Target{blue}, Mirrors: []checks.Target{target("production", "app-shadow", 80)}},
		},
		"a create makes every mirror a mirror target": {
			new:  `{"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"app-shadow","port":80}}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`,
			want: TargetSet{Checked: []checks.Target{blue}, Mirrors: []checks.Target{target("production", "app-shadow", 80)}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := Targets(httpRoute(t, tc.old), httpRoute(t, tc.new))
			tc.want.Warnings = tc.wantWarnings
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("targets (-want +got):\n%s", diff)
			}
			if got.Empty() != (len(tc.want.Checked)+len(tc.want.Mirrors)+len(tc.want.Warnings) == 0) {
				t.Errorf("Empty() = %v for %+v", got.Empty(), got)
			}
		})
	}
}

// An update a tenant posts straight to the webhook, past the API server's
// limits (16 rules, 128 matches, 16 backendRefs a rule), costs work in
// proportion to its size: one rule of 20,000 matches and 20,000 backends,
// formerly split over 20,000 rules, would take 400 million comparisons
// share by share, and 20,000 new matches as many containment tests. Past
// maxComparisons every backend with a share is taken as a target instead.
func TestTargetsBoundsTheComparisons(t *testing.T) {
	const n = 20000
	old := &Route{Kind: KindHTTPRoute, Namespace: "production", Name: "myapp"}
	wide := Rule{}
	for i := range n {
		m := fmt.Sprintf(`{"path":{"value":"/%d"}}`, i)
		b := Backend{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(fmt.Sprintf("b%d", i))}}}
		old.Rules = append(old.Rules, Rule{Matches: []string{m}, Backends: []Backend{b}})
		wide.Matches, wide.Backends = append(wide.Matches, m), append(wide.Backends, b)
	}
	updated := &Route{Kind: KindHTTPRoute, Namespace: "production", Name: "myapp", Rules: []Rule{wide}}
	done := make(chan TargetSet, 1)
	go func() { done <- Targets(old, updated) }()
	select {
	case got := <-done:
		if len(got.Checked) != n {
			// Each share shrank from 1/1 to 1/n; past the bound each is
			// taken as grown: more checks, never a hidden target.
			t.Errorf("%d targets, want every one of the %d backends", len(got.Checked), n)
		}
	case <-time.After(30 * time.Second): // a hang detector, not a timing assertion
		t.Fatal("Targets did not return within 30s")
	}

	// 20,000 matches, none of them the old route's: each would be compared
	// with the 20,000 old ones for containment.
	renamed := &Route{Kind: KindHTTPRoute, Namespace: "production", Name: "myapp"}
	for i, r := range old.Rules {
		renamed.Rules = append(renamed.Rules, Rule{Matches: []string{fmt.Sprintf(`{"path":{"type":"PathPrefix","value":"/other/%d"}}`, i)}, Backends: r.Backends})
	}
	go func() { done <- Targets(old, renamed) }()
	select {
	case got := <-done:
		if len(got.Checked) != n {
			t.Errorf("%d targets, want every one of the %d backends", len(got.Checked), n)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Targets did not return within 30s")
	}
}

func TestHTTPRouteOfTutorialPatch(t *testing.T) {
	// The tutorial's route before and after its JSON patch
	// [{"op":"replace","path":"/spec/rules/0/backendRefs/0/name","value":"app-green"}].
	const before = `{"parentRefs":[{"name":"public","namespace":"production"}],
	  "rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/"}}],"backendRefs":[{"name":"app-blue","port":80}]}]}`
	const after = `{"parentRefs":[{"name":"public","namespace":"production"}],
	  "rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/"}}],"backendRefs":[{"name":"app-green","port":80}]}]}`
	got := Targets(httpRoute(t, before), httpRoute(t, after))
	if diff := cmp.Diff(TargetSet{Checked: []checks.Target{green}}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestHTTPRouteOf(t *testing.T) {
	r := &gwv1.HTTPRoute{}
	const spec = `{"parentRefs":[{"name":"public"}],"hostnames":["shop.example.com"],"rules":[{
	  "matches":[{"path":{"value":"/api"}},{"headers":[{"name":"x-canary","value":"yes"}]}],
	  "filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"shadow","port":80}}},
	             {"type":"RequestHeaderModifier","requestHeaderModifier":{"add":[{"name":"x","value":"y"}]}}],
	  "backendRefs":[{"name":"app-green","port":80,"weight":3,
	    "filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"audit","port":81},"percent":10}}]}]},
	  {"backendRefs":[{"name":"app-blue","port":80}]}]}`
	if err := json.Unmarshal([]byte(`{"metadata":{"namespace":"production","name":"myapp"},"spec":`+spec+`}`), r); err != nil {
		t.Fatal(err)
	}
	got := HTTPRouteOf(r)
	root := `{"path":{"type":"PathPrefix","value":"/"}}`
	want := &Route{Kind: KindHTTPRoute, Namespace: "production", Name: "myapp",
		Parents: []gwv1.ParentReference{{Name: "public"}}, Hostnames: []gwv1.Hostname{"shop.example.com"},
		Rules: []Rule{{
			Matches: []string{`{"path":{"type":"PathPrefix","value":"/api"}}`, `{"path":{"type":"PathPrefix","value":"/"},"headers":[{"name":"x-canary","value":"yes"}]}`},
			Mirrors: []gwv1.BackendObjectReference{{Name: "shadow", Port: ptr.To[gwv1.PortNumber](80)}},
			Backends: []Backend{{
				BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "app-green", Port: ptr.To[gwv1.PortNumber](80)}, Weight: ptr.To[int32](3)},
				Mirrors:    []gwv1.BackendObjectReference{{Name: "audit", Port: ptr.To[gwv1.PortNumber](81)}},
			}},
		}, {
			Matches:  []string{root},
			Backends: []Backend{{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "app-blue", Port: ptr.To[gwv1.PortNumber](80)}}}},
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestGRPCRouteOf(t *testing.T) {
	r := &gwv1.GRPCRoute{}
	r.Namespace, r.Name = "production", "rpc"
	r.Spec.ParentRefs = []gwv1.ParentReference{{Name: "public"}}
	r.Spec.Hostnames = []gwv1.Hostname{"rpc.example.com"}
	green := gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "grpc-green", Port: ptr.To[gwv1.PortNumber](9090)}}
	shadow := gwv1.BackendObjectReference{Name: "grpc-shadow", Port: ptr.To[gwv1.PortNumber](9090)}
	r.Spec.Rules = []gwv1.GRPCRouteRule{
		{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: green, Filters: []gwv1.GRPCRouteFilter{{
			Type: gwv1.GRPCRouteFilterRequestMirror, RequestMirror: &gwv1.HTTPRequestMirrorFilter{BackendRef: shadow},
		}}}}},
		{Matches: []gwv1.GRPCRouteMatch{{Method: &gwv1.GRPCMethodMatch{Service: ptr.To("shop.Cart")}}},
			Filters: []gwv1.GRPCRouteFilter{{Type: gwv1.GRPCRouteFilterRequestMirror, RequestMirror: &gwv1.HTTPRequestMirrorFilter{BackendRef: shadow}}}},
	}
	got := GRPCRouteOf(r)
	want := &Route{Kind: KindGRPCRoute, Namespace: "production", Name: "rpc",
		Parents: []gwv1.ParentReference{{Name: "public"}}, Hostnames: []gwv1.Hostname{"rpc.example.com"},
		Rules: []Rule{
			{Matches: []string{`{}`}, Backends: []Backend{{BackendRef: green, Mirrors: []gwv1.BackendObjectReference{shadow}}}},
			{Matches: []string{`{"method":{"service":"shop.Cart"}}`}, Mirrors: []gwv1.BackendObjectReference{shadow}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if GRPCRouteOf(nil) != nil || HTTPRouteOf(nil) != nil {
		t.Error("nil route must reduce to nil")
	}
}

// FuzzTargets feeds arbitrary route JSON through decoding and Targets. It
// must never panic, and it must agree with shares worked out here the
// plain way (big.Rat, one match at a time):
//
//   - every checked target has a share of traffic after the update;
//   - when both routes have the same matches: every core Service backend
//     whose share of some match grew is a checked target (none is missed),
//     and, with the attachment (parents, hostnames) unchanged too, a
//     backend whose share shrinks or stays in every match never is;
//   - on create, every core Service backend with a share is a target;
//   - no target twice, no mirror target that is also a checked Service.
func FuzzTargets(f *testing.F) {
	f.Add(`{"spec":{"rules":[{"backendRefs":[{"name":"app-blue","port":80}]}]}}`, `{"spec":{"rules":[{"backendRefs":[{"name":"app-green","port":80}]}]}}`)
	f.Add(`{"spec":{"rules":[{"backendRefs":[{"name":"a","port":80,"weight":100},{"name":"b","port":80,"weight":0}]}]}}`,
		`{"spec":{"rules":[{"backendRefs":[{"name":"a","port":80,"weight":0},{"name":"b","port":80,"weight":100}]}]}}`)
	f.Add(`{"spec":{"rules":[{"backendRefs":[{"name":"a","port":80,"weight":99},{"name":"b","port":80,"weight":1}]}]}}`,
		`{"spec":{"rules":[{"backendRefs":[{"name":"a","port":80,"weight":1},{"name":"b","port":80,"weight":1}]}]}}`)
	f.Add(`{"spec":{"rules":[{"matches":[{"path":{"value":"/a"}}],"backendRefs":[{"name":"a"}]},{"backendRefs":[{"name":"b"}]}]}}`,
		`{"spec":{"rules":[{"backendRefs":[{"name":"b"}]},{"matches":[{"path":{"value":"/a"}},{"path":{"value":"/b"}}],"backendRefs":[{"name":"a"}]}]}}`)
	f.Add(`{"spec":{"parentRefs":[{"name":"staging"}],"hostnames":["*.example.com"],"rules":[{"backendRefs":[{"name":"a"}]}]}}`,
		`{"spec":{"parentRefs":[{"name":"public"}],"hostnames":["a.example.com"],"rules":[{"backendRefs":[{"name":"a"}]}]}}`)
	f.Add(`null`, `{"spec":{"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"m"}}}],"backendRefs":[{"name":"a","weight":2147483647}]}]}}`)
	f.Add(`{}`, `{"spec":{"rules":[{"backendRefs":[{"group":"x","kind":"Y","name":"z"}]},{}]}}`)
	f.Add(`{"spec":{"rules":[]}}`, `{"spec":{"rules":[{"backendRefs":[{"name":"c","namespace":"other","weight":-3}]}]}}`)
	f.Fuzz(func(t *testing.T, oldJSON, newJSON string) {
		var o, n gwv1.HTTPRoute
		if json.Unmarshal([]byte(oldJSON), &o) != nil || json.Unmarshal([]byte(newJSON), &n) != nil {
			return
		}
		updated := HTTPRouteOf(&n)
		old := HTTPRouteOf(&o)
		created := oldJSON == "null"
		if created {
			old = nil
		}
		got := Targets(old, updated)

		after := plainShares(updated)
		var before map[string]map[backendKey]*big.Rat
		sameAttachment := true
		if !created {
			before = plainShares(old)
			sameAttachment = reflect.DeepEqual(o.Spec.ParentRefs, n.Spec.ParentRefs) && slices.Equal(o.Spec.Hostnames, n.Spec.Hostnames)
		}
		// With the same set of matches before and after, no match covers a
		// new or lost one (matchcover.go), and the plain per-match shares
		// decide alone.
		sameMatches := created || slices.Equal(sortedKeys(after), sortedKeys(before))
		grew := func(k backendKey) bool {
			for m, shares := range after {
				if s := shares[k]; s != nil && s.Sign() > 0 && (before[m][k] == nil || s.Cmp(before[m][k]) > 0) {
					return true
				}
			}
			return false
		}
		hasShare := func(k backendKey) bool {
			for _, shares := range after {
				if s := shares[k]; s != nil && s.Sign() > 0 {
					return true
				}
			}
			return false
		}

		checked := map[backendKey]bool{}
		services := map[types.NamespacedName]bool{}
		for _, tg := range got.Checked {
			k := keyOfTarget(tg)
			if checked[k] {
				t.Fatalf("duplicate target %v", tg)
			}
			checked[k], services[tg.Service] = true, true
			if !hasShare(k) {
				t.Fatalf("target %v has no share of traffic after the update", tg)
			}
			// Past maxComparisons every backend counts as grown; an input
			// under 4 KiB stays far below it (about 100 matches x 170 refs).
			if sameAttachment && sameMatches && !grew(k) && len(oldJSON)+len(newJSON) < 4096 {
				t.Fatalf("target %v: its share shrank or stayed in every match, and the attachment is unchanged", tg)
			}
		}
		for _, shares := range after {
			for k := range shares {
				if k.isService() && sameMatches && grew(k) && !checked[k] {
					t.Fatalf("backend %v's share grew, yet it is not a target (created %v)", k, created)
				}
				if created && k.isService() && hasShare(k) && !checked[k] {
					t.Fatalf("create: backend %v has a share, yet it is not a target", k)
				}
			}
		}
		mirrors := map[backendKey]bool{}
		for _, tg := range got.Mirrors {
			k := keyOfTarget(tg)
			if mirrors[k] || services[tg.Service] {
				t.Fatalf("mirror target %v twice, or also a checked Service", tg)
			}
			mirrors[k] = true
		}
	})
}

// plainShares is each match's share of requests per backend, worked out
// one match at a time with exact rationals: the first rule that has the
// match serves it.
func plainShares(r *Route) map[string]map[backendKey]*big.Rat {
	out := map[string]map[backendKey]*big.Rat{}
	for _, rule := range r.Rules {
		for _, m := range rule.Matches {
			if _, ok := out[m]; ok {
				continue
			}
			total := new(big.Rat)
			for _, b := range rule.Backends {
				if w := weight(b.BackendRef); w > 0 {
					total.Add(total, big.NewRat(int64(w), 1))
				}
			}
			shares := map[backendKey]*big.Rat{}
			for _, b := range rule.Backends {
				w := weight(b.BackendRef)
				if w <= 0 {
					continue
				}
				k := keyOf(r.Namespace, b.BackendObjectReference)
				if shares[k] == nil {
					shares[k] = new(big.Rat)
				}
				shares[k].Add(shares[k], new(big.Rat).Quo(big.NewRat(int64(w), 1), total))
			}
			out[m] = shares
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func keyOfTarget(tg checks.Target) backendKey {
	k := backendKey{kind: "Service", service: tg.Service}
	if tg.Port != nil {
		k.port, k.hasPort = *tg.Port, true
	}
	return k
}
