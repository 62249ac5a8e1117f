package e2e_test

import (
	"testing"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// Edits that move no traffic pass at once, even while green cannot serve.
func TestUnrelatedRouteEditsPassWhileGreenUnready(t *testing.T) {
	e := setup(t)
	tests := map[string]struct {
		line, output string
		// jsonpath and want check that the edit took effect.
		jsonpath, want string
	}{
		"a label": {
			line:     "kubectl label httproute myapp -n production team=checkout",
			output:   "httproute.gateway.networking.k8s.io/myapp labeled",
			jsonpath: "{.metadata.labels.team}",
			want:     "checkout",
		},
		"an annotation": {
			line:     "kubectl annotate httproute myapp -n production example.com/owner=web-team",
			output:   "httproute.gateway.networking.k8s.io/myapp annotated",
			jsonpath: "{.metadata.annotations.example\\.com/owner}",
			want:     "web-team",
		},
		"the path match": {
			line:     `kubectl patch httproute myapp -n production --type=json -p='[{"op":"replace","path":"/spec/rules/0/matches/0/path/value","value":"/shop"}]'`,
			output:   tutorial.PatchedOutput,
			jsonpath: "{.spec.rules[0].matches[0].path.value}",
			want:     "/shop",
		},
		"a header match added": {
			line:     `kubectl patch httproute myapp -n production --type=json -p='[{"op":"add","path":"/spec/rules/0/matches/0/headers","value":[{"name":"x-canary","value":"no"}]}]'`,
			output:   tutorial.PatchedOutput,
			jsonpath: "{.spec.rules[0].matches[0].headers[0].name}",
			want:     "x-canary",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e.reset(t, world{})
			requireOutput(t, e.sh(t, tc.line), tc.output)
			r := e.kubectl().Run(t.Context(), "get", "httproute", tutorial.Route, "-n", tutorial.Namespace, "-o", "jsonpath="+tc.jsonpath)
			if !r.OK() || r.Stdout != tc.want {
				t.Fatalf("after the edit, %s is %q, want %q:\n%s", tc.jsonpath, r.Stdout, tc.want, r)
			}
			e.checkBackend(t, tutorial.Blue)
		})
	}
}
