package checks

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/cutover-guard/cutover-guard/checks/probe"
)

// literalDSN is the Deployment app-green whose DATABASE_URL is dsn, as a literal.
func literalDSN(dsn string) []appsv1.Deployment {
	return []appsv1.Deployment{deployment("app-green", nil, container("app", []corev1.EnvVar{literal("DATABASE_URL", dsn)}))}
}

// probeFinding runs DatabaseReachable for one literal connection string.
func probeFinding(t *testing.T, p *probe.Prober, dsn string) []Finding {
	t.Helper()
	in := &Input{Reader: fake.NewClientBuilder().Build(), Prober: p, Target: Target{Service: production}, Deployments: literalDSN(dsn)}
	f, err := DatabaseReachable(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// The probe's words reach the finding with the place the string came from.
func TestProbeStagesWithoutNetwork(t *testing.T) {
	const src = "env DATABASE_URL of container app in deployment production/app-green"
	noResolve := func(t *testing.T) func(context.Context, string) ([]netip.Addr, error) {
		return func(context.Context, string) ([]netip.Addr, error) {
			t.Error("the resolver was called")
			return nil, errors.New("no")
		}
	}
	tests := map[string]struct {
		dsn      string
		resolver func(t *testing.T) func(context.Context, string) ([]netip.Addr, error)
		want     Finding
	}{
		"the DigitalOcean public hostname is denied without resolving it": {
			dsn:      "postgresql://doadmin:Tr0ub4dor-pw@db-postgresql-nyc1-12345.db.ondigitalocean.com:25060/defaultdb?sslmode=require",
			resolver: noResolve,
			want: Finding{Reason: ReasonDatabaseHostPublic,
				Message: "database host db-postgresql-nyc1-12345.db.ondigitalocean.com is the public hostname",
				Fix:     "use the private hostname private-db-postgresql-nyc1-12345.db.ondigitalocean.com from the Private network tab in " + src},
		},
		"a host that resolves to a public address": {
			dsn: "postgres://app:Tr0ub4dor-pw@db.example.test:5432/app",
			resolver: func(*testing.T) func(context.Context, string) ([]netip.Addr, error) {
				return probetest.FixedResolver("10.0.0.5", "192.0.2.7")
			},
			want: Finding{Reason: ReasonDatabaseHostPublic,
				Message: "database host db.example.test resolves to 192.0.2.7, which is not a private address",
				Fix:     "use the database's private network hostname in " + src + ", or add its range to --private-cidrs"},
		},
		"a closed port": {
			dsn: "postgres://app:Tr0ub4dor-pw@db.example.test:5432/app",
			resolver: func(*testing.T) func(context.Context, string) ([]netip.Addr, error) {
				return probetest.FixedResolver("10.0.0.5")
			},
			want: Finding{Reason: ReasonDatabaseConnectRefused,
				Message: "database at db.example.test:5432 is not reachable",
				Fix:     "check that the cluster is in the database's Trusted sources, and that " + src + " names the database's private hostname and port"},
		},
		"a port outside --database-ports": {
			dsn: "postgres://app:Tr0ub4dor-pw@db.example.test:8080/app",
			resolver: func(*testing.T) func(context.Context, string) ([]netip.Addr, error) {
				return probetest.FixedResolver("10.0.0.5")
			},
			want: Finding{Reason: ReasonDatabasePortNotAllowed,
				Message: "database port 8080 is not one the guard probes (3306,5432,6432,25060-25061,26257)",
				Fix:     "use the database's port in " + src + ", or ask the platform team to add it to --database-ports"},
		},
		"an un-encoded password names the place in the message": {
			dsn:      "postgresql://app:Tr0ub@dor/pw@db:5432/app",
			resolver: noResolve,
			want: Finding{Reason: ReasonDatabasePasswordNotEncoded,
				Message: "the database url in " + src + " has a password with special characters that are not url-encoded",
				Fix:     "url-encode the password: @ -> %40, : -> %3A, / -> %2F, ? -> %3F, # -> %23, % -> %25 (e.g. p@ss:word/123 -> p%40ss%3Aword%2F123)"},
		},
		"an unsupported scheme": {
			dsn:      "redis://:Tr0ub4dor-pw@cache:6379",
			resolver: noResolve,
			want: Finding{Reason: ReasonDatabaseSchemeUnsupported,
				Message: `the database url in ` + src + ` has unsupported scheme "redis"`,
				Fix:     "use postgres://, postgresql:// or mysql://"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := probe.NewProber(probe.ProberOptions{Resolver: tc.resolver(t), Dial: probetest.RefuseDial})
			got := probeFinding(t, p, tc.dsn)
			want := tc.want
			want.Check, want.Severity, want.Service, want.Object = CheckDatabase, Deny, production, "deployment app-green"
			if diff := cmp.Diff([]Finding{want}, got); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
			assertNoSecret(t, got, "Tr0ub4dor-pw", "Tr0ub@dor/pw")
		})
	}
}

// assertNoSecret fails if any field of any finding contains one of secrets.
func assertNoSecret(t *testing.T, findings []Finding, secrets ...string) {
	t.Helper()
	for _, f := range findings {
		for _, field := range []string{string(f.Check), f.Service.String(), f.Object, string(f.Reason), f.Message, f.Fix, f.String()} {
			for _, s := range secrets {
				if strings.Contains(field, s) {
					t.Errorf("finding shows the password %q: %q", s, field)
				}
			}
		}
	}
}

func TestProbeWithoutUserChecksReachabilityOnly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	p := probe.NewProber(probe.ProberOptions{PrivateCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Ports: probetest.AnyPort()})
	got := probeFinding(t, p, "postgres://"+ln.Addr().String()+"/app")
	want := []Finding{{Check: CheckDatabase, Severity: Warn, Service: production, Object: "deployment app-green",
		Reason:  ReasonDatabaseNoUser,
		Message: "database url names no user; only checked that " + ln.Addr().String() + " accepts connections",
		Fix:     "add the user to env DATABASE_URL of container app in deployment production/app-green to have the login checked"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// A probe that passed without verifying the certificate chain (the CA file
// is in the application's pod) is allowed with a warning short enough for
// kubectl to print whole.
func TestDatabaseChainNotVerifiedWarns(t *testing.T) {
	src := dsnSource{kind: "secret", namespace: "production", name: "db-credentials", key: "url"}
	f, ok := databaseFinding(production, src, probe.Result{Reason: probe.ReasonReachable, ChainNotVerified: true})
	want := Finding{Check: CheckDatabase, Severity: Warn, Service: production, Object: "secret db-credentials",
		Reason: ReasonDatabaseChainNotVerified, Message: "database TLS checked, not its certificate chain (the CA file is in the pod)"}
	if diff := cmp.Diff(want, f); !ok || diff != "" {
		t.Errorf("finding (-want +got):\n%s", diff)
	}
	if n := len(f.String()); n > 120 {
		t.Errorf("the warning is %d characters, want at most 120: %s", n, f)
	}
	if _, ok := databaseFinding(production, src, probe.Result{Reason: probe.ReasonReachable}); ok {
		t.Error("a probe that passed and verified what it could has a finding")
	}
}

func TestDatabaseReachableWithoutDeployments(t *testing.T) {
	p := probe.NewProber(probe.ProberOptions{})
	r := fake.NewClientBuilder().Build()
	for name, in := range map[string]*Input{
		"no deployments": {Reader: r, Prober: p, Target: Target{Service: production}},
		"no prober":      {Reader: r, Target: Target{Service: production}, Deployments: []appsv1.Deployment{deployment("x", nil)}},
	} {
		if got, err := DatabaseReachable(t.Context(), in); got != nil || err != nil {
			t.Errorf("%s: got %v, %v; want nothing", name, got, err)
		}
	}
}

// heldProber is a Prober whose connections wait until the test ends, so
// that a probe outlives any deadline the test sets. onDial, if set, is
// called when a probe starts to connect.
func heldProber(t *testing.T, onDial func()) *probe.Prober {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	return probe.NewProber(probe.ProberOptions{Resolver: probetest.FixedResolver("10.0.0.5"), Timeout: time.Minute,
		Dial: func(ctx context.Context, n, a string) (net.Conn, error) {
			if onDial != nil {
				onDial()
			}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return probetest.RefuseDial(ctx, n, a)
		}})
}

// A database check whose probe is still running when ctx ends is an error,
// the context's, never a finding of its own.
func TestDatabaseReachableAtTheDeadlineIsAnError(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	in := &Input{Reader: fake.NewClientBuilder().Build(), Prober: heldProber(t, nil), Target: Target{Service: production},
		Deployments: literalDSN("postgres://app:pw@db.internal:5432/app")}
	got, err := DatabaseReachable(ctx, in)
	if !errors.Is(err, context.Canceled) || got != nil {
		t.Errorf("got %v, %v; want no finding and the context's error", got, err)
	}
}

// A timed-out database check has one reason, the Guard's Timeout naming the
// check, whichever of the deadline and the check's return the Guard sees
// first. The deadline strikes while the probe is connecting.
func TestGuardEvaluateDatabaseTimeoutHasOneReason(t *testing.T) {
	dep := readyDeployment("app-green", 2)
	dep.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{literal("DATABASE_URL", "postgres://app:pw@db.internal:5432/app")}
	objs := []client.Object{greenService(), dep, replicaSetOf(dep, "6a1e", 2), slice("app-green", ptr.To(true))}
	for i := range 20 {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		g := &Guard{Reader: fakeReader(objs...), Prober: heldProber(t, cancel)}
		res, err := g.Evaluate(ctx, []Target{greenTarget()})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var database []Finding
		for _, f := range res.Findings {
			if f.Check == CheckDatabase {
				database = append(database, f)
			}
		}
		if len(database) != 1 || database[0].Reason != ReasonTimeout {
			t.Fatalf("run %d: database findings %v, want one Timeout", i, database)
		}
		if msg := database[0].Message; !strings.HasPrefix(msg, "the database check did not finish before the admission deadline") {
			t.Errorf("run %d: message %q does not name the check", i, msg)
		}
	}
}
