package webhook

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/checks"
)

// ref builds a backendRef; weight < 0 leaves it unset.
func ref(name string, port int32, weight int32) gwv1.BackendRef {
	b := gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Port: ptr.To(gwv1.PortNumber(port))}}
	if weight >= 0 {
		b.Weight = ptr.To(weight)
	}
	return b
}

func route(rules ...[]gwv1.BackendRef) *Route {
	return &Route{Kind: KindHTTPRoute, Namespace: "production", Name: "myapp", Rules: rules}
}

func target(ns, name string, port int32) checks.Target {
	return checks.Target{
		Route:     types.NamespacedName{Namespace: "production", Name: "myapp"},
		RouteKind: KindHTTPRoute,
		Service:   types.NamespacedName{Namespace: ns, Name: name},
		Port:      ptr.To(port),
	}
}

func rules(refs ...gwv1.BackendRef) []gwv1.BackendRef { return refs }

func TestTargets(t *testing.T) {
	crossNS := ref("app-green", 80, -1)
	crossNS.Namespace = ptr.To(gwv1.Namespace("staging"))
	gw := ref("other", 80, -1)
	gw.Group, gw.Kind = ptr.To(gwv1.Group("example.com")), ptr.To(gwv1.Kind("Bucket"))
	explicitService := ref("app-green", 80, -1)
	explicitService.Group, explicitService.Kind = ptr.To(gwv1.Group("")), ptr.To(gwv1.Kind("Service"))

	tests := map[string]struct {
		old, new     *Route
		want         []checks.Target
		wantWarnings []string
	}{
		"the tutorial's patch from app-blue to app-green targets app-green": {
			old:  route(rules(ref("app-blue", 80, -1))),
			new:  route(rules(ref("app-green", 80, -1))),
			want: []checks.Target{target("production", "app-green", 80)},
		},
		"the rollback patch targets app-blue": {
			old:  route(rules(ref("app-green", 80, -1))),
			new:  route(rules(ref("app-blue", 80, -1))),
			want: []checks.Target{target("production", "app-blue", 80)},
		},
		"a weight shift from 100/0 to 0/100 targets the backend that was at zero": {
			old:  route(rules(ref("app-blue", 80, 100), ref("app-green", 80, 0))),
			new:  route(rules(ref("app-blue", 80, 0), ref("app-green", 80, 100))),
			want: []checks.Target{target("production", "app-green", 80)},
		},
		"a weight shift among live backends is the fast path": {
			old: route(rules(ref("app-blue", 80, 90), ref("app-green", 80, 10))),
			new: route(rules(ref("app-blue", 80, 10), ref("app-green", 80, 90))),
		},
		"adding a second backend with weight targets it": {
			old:  route(rules(ref("app-blue", 80, -1))),
			new:  route(rules(ref("app-blue", 80, -1), ref("app-green", 80, 1))),
			want: []checks.Target{target("production", "app-green", 80)},
		},
		"adding a backend at weight zero is not a target": {
			old: route(rules(ref("app-blue", 80, -1))),
			new: route(rules(ref("app-blue", 80, -1), ref("app-green", 80, 0))),
		},
		"removing a backend is the fast path": {
			old: route(rules(ref("app-blue", 80, 50), ref("app-green", 80, 50))),
			new: route(rules(ref("app-blue", 80, 50))),
		},
		"reordering rules is the fast path": {
			old: route(rules(ref("app-blue", 80, -1)), rules(ref("api", 8080, -1))),
			new: route(rules(ref("api", 8080, -1)), rules(ref("app-blue", 80, -1))),
		},
		"a backend live in another rule before is not a target": {
			old: route(rules(ref("app-blue", 80, -1)), rules(ref("api", 8080, -1))),
			new: route(rules(ref("app-blue", 80, -1)), rules(ref("app-blue", 80, -1))),
		},
		"duplicate refs yield one target": {
			old:  route(rules(ref("app-blue", 80, -1))),
			new:  route(rules(ref("app-green", 80, -1)), rules(ref("app-green", 80, 5), ref("app-green", 80, -1))),
			want: []checks.Target{target("production", "app-green", 80)},
		},
		"a new port on a live service is a target": {
			old:  route(rules(ref("app-blue", 80, -1))),
			new:  route(rules(ref("app-blue", 8080, -1))),
			want: []checks.Target{target("production", "app-blue", 8080)},
		},
		"a cross-namespace ref keeps its namespace": {
			old:  route(rules(ref("app-blue", 80, -1))),
			new:  route(rules(crossNS)),
			want: []checks.Target{target("staging", "app-green", 80)},
		},
		"an explicit core Service group and kind is a Service": {
			old:  route(rules(ref("app-blue", 80, -1))),
			new:  route(rules(explicitService)),
			want: []checks.Target{target("production", "app-green", 80)},
		},
		"a non-Service kind is skipped with a warning": {
			old:          route(rules(ref("app-blue", 80, -1))),
			new:          route(rules(ref("app-blue", 80, -1), gw)),
			wantWarnings: []string{"backendRef example.com/Bucket production/other is not a core Service; cutover-guard does not check it"},
		},
		"a create (no old route) targets every live backend": {
			new:  route(rules(ref("app-blue", 80, -1), ref("app-green", 80, 0))),
			want: []checks.Target{target("production", "app-blue", 80)},
		},
		"a route without rules has no targets": {
			old: route(rules(ref("app-blue", 80, -1))),
			new: route(),
		},
		"an unchanged route is the fast path": {
			old: route(rules(ref("app-blue", 80, -1))),
			new: route(rules(ref("app-blue", 80, -1))),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, warnings := Targets(tc.old, tc.new)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("targets (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantWarnings, warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHTTPRouteOfTutorialPatch(t *testing.T) {
	// The tutorial's route before and after its JSON patch
	// [{"op":"replace","path":"/spec/rules/0/backendRefs/0/name","value":"app-green"}].
	const before = `{"metadata":{"name":"myapp","namespace":"production"},"spec":{"parentRefs":[{"name":"public","namespace":"production"}],
	  "rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/"}}],"backendRefs":[{"name":"app-blue","port":80}]}]}}`
	const after = `{"metadata":{"name":"myapp","namespace":"production"},"spec":{"parentRefs":[{"name":"public","namespace":"production"}],
	  "rules":[{"matches":[{"path":{"type":"PathPrefix","value":"/"}}],"backendRefs":[{"name":"app-green","port":80}]}]}}`
	var o, n gwv1.HTTPRoute
	if err := json.Unmarshal([]byte(before), &o); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(after), &n); err != nil {
		t.Fatal(err)
	}
	got, _ := Targets(HTTPRouteOf(&o), HTTPRouteOf(&n))
	if diff := cmp.Diff([]checks.Target{target("production", "app-green", 80)}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestGRPCRouteOf(t *testing.T) {
	r := &gwv1.GRPCRoute{}
	r.Namespace, r.Name = "production", "rpc"
	r.Spec.Rules = []gwv1.GRPCRouteRule{{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: ref("grpc-green", 9090, -1)}}}}
	got := GRPCRouteOf(r)
	want := &Route{Kind: KindGRPCRoute, Namespace: "production", Name: "rpc", Rules: [][]gwv1.BackendRef{{ref("grpc-green", 9090, -1)}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if GRPCRouteOf(nil) != nil || HTTPRouteOf(nil) != nil {
		t.Error("nil route must reduce to nil")
	}
}

// FuzzTargets feeds arbitrary route JSON through decoding and Targets: it
// must never panic, and every target must be a live Service ref of the new route.
func FuzzTargets(f *testing.F) {
	f.Add(`{"spec":{"rules":[{"backendRefs":[{"name":"app-blue","port":80}]}]}}`, `{"spec":{"rules":[{"backendRefs":[{"name":"app-green","port":80}]}]}}`)
	f.Add(`{"spec":{"rules":[{"backendRefs":[{"name":"a","port":80,"weight":100},{"name":"b","port":80,"weight":0}]}]}}`,
		`{"spec":{"rules":[{"backendRefs":[{"name":"a","port":80,"weight":0},{"name":"b","port":80,"weight":100}]}]}}`)
	f.Add(`{}`, `{"spec":{"rules":[{"backendRefs":[{"group":"x","kind":"Y","name":"z"}]},{}]}}`)
	f.Add(`{"spec":{"rules":[]}}`, `{"spec":{"rules":[{"backendRefs":[{"name":"c","namespace":"other","weight":-3}]}]}}`)
	f.Fuzz(func(t *testing.T, oldJSON, newJSON string) {
		var o, n gwv1.HTTPRoute
		if json.Unmarshal([]byte(oldJSON), &o) != nil || json.Unmarshal([]byte(newJSON), &n) != nil {
			return
		}
		old, updated := HTTPRouteOf(&o), HTTPRouteOf(&n)
		targets, _ := Targets(old, updated)
		liveIn := func(r *Route, tg checks.Target) bool {
			for _, rule := range r.Rules {
				for _, b := range rule {
					k, ok := serviceKey(r.Namespace, b)
					if ok && weight(b) > 0 && k.service == tg.Service && k.hasPort == (tg.Port != nil) && (tg.Port == nil || k.port == *tg.Port) {
						return true
					}
				}
			}
			return false
		}
		seen := map[string]bool{}
		for _, tg := range targets {
			if seen[tg.String()] {
				t.Fatalf("duplicate target %v", tg)
			}
			seen[tg.String()] = true
			if !liveIn(updated, tg) {
				t.Fatalf("target %v is not a live Service ref of the new route", tg)
			}
			if liveIn(old, tg) {
				t.Fatalf("target %v was already live in the old route", tg)
			}
		}
	})
}
