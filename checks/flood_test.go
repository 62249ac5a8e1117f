package checks

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"go.uber.org/goleak"

	"github.com/cutover-guard/cutover-guard/checks/probe"
	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"
)

// manyDSNs is the env of a container with n connection strings DB0..DBn-1
// to port, and the annotation that names them all.
func manyDSNs(n int, host string, port int, tag string) ([]corev1.EnvVar, map[string]string) {
	var env []corev1.EnvVar
	var names []string
	for i := range n {
		name := fmt.Sprintf("DB%d", i)
		env = append(env, literal(name, fmt.Sprintf("postgres://app:pw@%s:%d/%s_%d?sslmode=disable", host, port, tag, i)))
		names = append(names, name)
	}
	return env, map[string]string{AnnotationDatabaseURLEnv: strings.Join(names, ",")}
}

// A target naming more connection strings than the guard checks is denied
// with the caps it passed; the strings within them are still probed.
func TestDatabaseReachableCapsConnectionStrings(t *testing.T) {
	p := probe.NewProber(probe.ProberOptions{Resolver: probetest.FixedResolver("10.0.0.5"), Dial: probetest.RefuseDial})
	env, annotations := manyDSNs(300, "db.internal", 5432, "app")
	deps := []appsv1.Deployment{deployment("app-green", annotations, container("app", env))}
	tests := map[string]struct {
		in       Input
		probed   int
		findings []Finding
	}{
		"per target": {
			in:     Input{MaxDatabaseURLs: 0},
			probed: DefaultMaxDatabaseURLsPerTarget,
			findings: []Finding{
				{Check: CheckDatabase, Severity: Deny, Service: production, Object: "deployment app-green", Reason: ReasonDatabaseTooManyURLs,
					Message: "annotation cutover-guard.dev/database-url-env of deployment app-green names more than 16 env vars; the guard reads at most 16",
					Fix:     "name only the env vars that hold connection strings, at most 16, in annotation cutover-guard.dev/database-url-env"},
				{Check: CheckDatabase, Severity: Deny, Service: production, Object: "deployment app-green", Reason: ReasonDatabaseTooManyURLs,
					Message: "deployment app-green names 16 connection strings; the guard checks at most 8",
					Fix:     "point the env vars of annotation cutover-guard.dev/database-url-env (or --database-url-env) at no more than 8 distinct connection strings"},
			},
		},
		"per update, what the targets before left": {
			in:     Input{MaxDatabaseURLs: 8, requestURLs: newURLBudget(3)},
			probed: 3,
			findings: []Finding{
				{Check: CheckDatabase, Severity: Deny, Service: production, Object: "deployment app-green", Reason: ReasonDatabaseTooManyURLs,
					Message: "annotation cutover-guard.dev/database-url-env of deployment app-green names more than 16 env vars; the guard reads at most 16",
					Fix:     "name only the env vars that hold connection strings, at most 16, in annotation cutover-guard.dev/database-url-env"},
				{Check: CheckDatabase, Severity: Deny, Service: production, Object: "deployment app-green", Reason: ReasonDatabaseTooManyURLs,
					Message: "deployment app-green names 16 connection strings; the guard checks at most 8",
					Fix:     "point the env vars of annotation cutover-guard.dev/database-url-env (or --database-url-env) at no more than 8 distinct connection strings"},
				{Check: CheckDatabase, Severity: Deny, Service: production, Object: "deployment app-green", Reason: ReasonDatabaseTooManyURLs,
					Message: "the targets of this update name more than 3 connection strings; the guard checks at most 3 per update, so 5 connection strings of service production/app-green were not checked",
					Fix:     "switch fewer backends in one update, or point them at fewer distinct connection strings"},
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := tc.in
			in.Reader, in.Prober, in.Target, in.Deployments = fake.NewClientBuilder().Build(), p, Target{Service: production}, deps
			got, err := DatabaseReachable(t.Context(), &in)
			if err != nil {
				t.Fatal(err)
			}
			var caps []Finding
			probed := 0
			for _, f := range got {
				switch f.Reason {
				case ReasonDatabaseTooManyURLs:
					caps = append(caps, f)
				case ReasonDatabaseConnectRefused:
					probed++
				}
			}
			if diff := cmp.Diff(tc.findings, caps); diff != "" {
				t.Errorf("cap findings (-want +got):\n%s", diff)
			}
			if probed != tc.probed {
				t.Errorf("%d strings probed, want %d", probed, tc.probed)
			}
		})
	}
}

// An update whose targets each name 300 connection strings to a port that
// accepts and never answers opens at most the per-update cap of connections
// at once, is answered inside its deadline, and leaves nothing running
// after the answer beyond a small margin.
func TestGuardEvaluateProbeFloodIsBounded(t *testing.T) {
	silent := probetest.NewSilent(t)
	before := goleak.IgnoreCurrent()
	var objs []client.Object
	var targets []Target
	for k := range 4 {
		name := fmt.Sprintf("app-green%d", k)
		dep := readyDeployment(name, 2)
		dep.Spec.Template.Spec.Containers[0].Env, dep.Annotations = manyDSNs(300, "127.0.0.1", silent.Port(), name)
		objs = append(objs, service(name, dep.Spec.Template.Labels, 80), dep, replicaSetOf(dep, "6a1e", 2), slice(name, ptr.To(true)))
		tg := greenTarget()
		tg.Service = types.NamespacedName{Namespace: "production", Name: name}
		targets = append(targets, tg)
	}
	p := probe.NewProber(probe.ProberOptions{PrivateCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Ports: probetest.AnyPort(), Timeout: time.Minute})
	g := &Guard{Reader: fakeReader(objs...), Prober: p}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	deadline, _ := ctx.Deadline()
	res, err := g.Evaluate(ctx, targets)
	answered := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if late := answered.Sub(deadline); late > 200*time.Millisecond {
		t.Errorf("answered %v after the deadline", late)
	}
	denied := map[types.NamespacedName]bool{}
	for _, f := range res.Findings {
		if f.Severity == Deny && f.Check == CheckDatabase {
			denied[f.Service] = true
		}
	}
	if len(denied) != len(targets) {
		t.Errorf("%d of %d targets denied by the database check: %v", len(denied), len(targets), res.Findings)
	}
	peak := silent.Peak()
	t.Logf("peak %d connections at once, %d accepted in all", peak, silent.Accepted())
	if peak > DefaultMaxDatabaseURLsPerRequest || peak == 0 {
		t.Errorf("%d connections open at once, want 1 to %d", peak, DefaultMaxDatabaseURLsPerRequest)
	}
	if err := goleak.Find(before); err != nil {
		t.Fatal(err)
	}
	if outlived := time.Since(answered); outlived > time.Second {
		t.Errorf("the checks' goroutines outlived the answer by %v", outlived)
	}
	if n := silent.Open(); n != 0 {
		t.Errorf("%d connections still open after the answer", n)
	}
}
