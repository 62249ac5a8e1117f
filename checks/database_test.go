package checks

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgconn"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// fixedResolver resolves every name to ips.
func fixedResolver(ips ...string) func(context.Context, string) ([]netip.Addr, error) {
	return func(context.Context, string) ([]netip.Addr, error) {
		out := make([]netip.Addr, len(ips))
		for i, s := range ips {
			out[i] = netip.MustParseAddr(s)
		}
		return out, nil
	}
}

// refuseDial fails every connection as a closed port would, without a packet.
func refuseDial(context.Context, string, string) (net.Conn, error) {
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
}

var production = types.NamespacedName{Namespace: "production", Name: "app-green"}

type envOpt func(*corev1.Container)

func deployment(name string, annotations map[string]string, containers ...corev1.Container) appsv1.Deployment {
	return appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: name, Annotations: annotations},
		Spec:       appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: containers}}},
	}
}

func container(name string, env []corev1.EnvVar, envFrom ...corev1.EnvFromSource) corev1.Container {
	return corev1.Container{Name: name, Env: env, EnvFrom: envFrom}
}

func literal(name, value string) corev1.EnvVar { return corev1.EnvVar{Name: name, Value: value} }

func fromSecret(name, secret, key string, optional bool) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: key, Optional: &optional}}}
}

func fromConfigMap(name, cm, key string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: cm}, Key: key}}}
}

func secret(name string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: name}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

func configMap(name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: name}, Data: data}
}

const tutorialURL = "postgresql://app:Tr0ub4dor-pw@private-db-postgresql-nyc1-12345.db.ondigitalocean.com:25060/defaultdb?sslmode=require"

// found is what a discovery test compares: the value and a rendering of its source.
type found struct {
	Value, Source, Object string
}

func TestDiscoverDSNs(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	dbSecret := secret("db-credentials", map[string]string{"url": tutorialURL, "password": "Tr0ub4dor-pw"})
	tests := map[string]struct {
		objects     []client.Object
		deployments []appsv1.Deployment
		envNames    []string
		want        []found
		findings    []Finding
	}{
		"a secretKeyRef as in the tutorial": {
			objects: []client.Object{dbSecret},
			deployments: []appsv1.Deployment{deployment("app-green", nil,
				container("app", []corev1.EnvVar{fromSecret("DATABASE_URL", "db-credentials", "url", false)}))},
			want: []found{{tutorialURL, "secret production/db-credentials key url", "secret db-credentials"}},
		},
		"a literal value": {
			deployments: []appsv1.Deployment{deployment("app-green", nil,
				container("app", []corev1.EnvVar{literal("DATABASE_URL", "postgres://app:pw@db/app")}))},
			want: []found{{"postgres://app:pw@db/app", "env DATABASE_URL of container app in deployment production/app-green", "deployment app-green"}},
		},
		"a configMapKeyRef": {
			objects: []client.Object{configMap("app-config", map[string]string{"db": "mysql://app:pw@db/app"})},
			deployments: []appsv1.Deployment{deployment("app-green", nil,
				container("app", []corev1.EnvVar{fromConfigMap("DATABASE_URL", "app-config", "db")}))},
			want: []found{{"mysql://app:pw@db/app", "configmap production/app-config key db", "configmap app-config"}},
		},
		"envFrom a secret with a prefix": {
			objects: []client.Object{secret("db", map[string]string{"DATABASE_URL": "postgres://a:b@db/x"})},
			deployments: []appsv1.Deployment{deployment("app-green", nil,
				container("app", nil, corev1.EnvFromSource{Prefix: "APP_", SecretRef: &corev1.SecretEnvSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "db"}}}))},
			envNames: []string{"APP_DATABASE_URL"},
			want:     []found{{"postgres://a:b@db/x", "secret production/db key DATABASE_URL", "secret db"}},
		},
		"the later envFrom source wins, and env wins over envFrom": {
			objects: []client.Object{
				configMap("first", map[string]string{"DATABASE_URL": "postgres://first@db/x", "OTHER_URL": "postgres://first@db/o"}),
				configMap("second", map[string]string{"DATABASE_URL": "postgres://second@db/x", "OTHER_URL": "postgres://second@db/o"}),
			},
			deployments: []appsv1.Deployment{deployment("app-green", nil,
				container("app", []corev1.EnvVar{literal("DATABASE_URL", "postgres://env@db/x")},
					corev1.EnvFromSource{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "first"}}},
					corev1.EnvFromSource{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "second"}}}))},
			envNames: []string{"DATABASE_URL", "OTHER_URL"},
			want: []found{
				{"postgres://env@db/x", "env DATABASE_URL of container app in deployment production/app-green", "deployment app-green"},
				{"postgres://second@db/o", "configmap production/second key OTHER_URL", "configmap second"},
			},
		},
		"$(VAR) references are expanded like the kubelet does": {
			objects: []client.Object{dbSecret},
			deployments: []appsv1.Deployment{deployment("app-green", nil,
				container("app", []corev1.EnvVar{
					fromSecret("DB_PASSWORD", "db-credentials", "password", false),
					literal("DATABASE_URL", "postgres://app:$(DB_PASSWORD)@db/app?x=$$(LITERAL)&y=$(UNSET)"),
				}))},
			want: []found{{"postgres://app:Tr0ub4dor-pw@db/app?x=$(LITERAL)&y=$(UNSET)",
				"env DATABASE_URL of container app in deployment production/app-green (with $(DB_PASSWORD) from secret production/db-credentials key password)",
				"deployment app-green"}},
		},
		"a reference to a variable defined later is not expanded": {
			deployments: []appsv1.Deployment{deployment("app-green", nil,
				container("app", []corev1.EnvVar{
					literal("DATABASE_URL", "postgres://app:$(DB_PASSWORD)@db/app"),
					literal("DB_PASSWORD", "pw"),
				}))},
			want: []found{{"postgres://app:$(DB_PASSWORD)@db/app", "env DATABASE_URL of container app in deployment production/app-green", "deployment app-green"}},
		},
		"a missing secret is named with the variable that uses it": {
			deployments: []appsv1.Deployment{deployment("app-green", nil,
				container("app", []corev1.EnvVar{fromSecret("DATABASE_URL", "db-credentials", "url", false)}))},
			findings: []Finding{{Check: CheckDatabase, Severity: Deny, Service: production, Object: "secret db-credentials",
				Reason:  ReasonDatabaseSecretNotFound,
				Message: "secret production/db-credentials does not exist (used by env DATABASE_URL of container app in deployment app-green)",
				Fix:     "create it: kubectl create secret generic db-credentials -n production --from-literal=url='postgresql://USER:PASSWORD@PRIVATE_HOST:25060/DATABASE?sslmode=require'"}},
		},
		"a missing key is named": {
			objects: []client.Object{secret("db-credentials", map[string]string{"uri": "x"})},
			deployments: []appsv1.Deployment{deployment("app-green", nil,
				container("app", []corev1.EnvVar{fromSecret("DATABASE_URL", "db-credentials", "url", false)}))},
			findings: []Finding{{Check: CheckDatabase, Severity: Deny, Service: production, Object: "secret db-credentials",
				Reason:  ReasonDatabaseSecretNotFound,
				Message: "secret production/db-credentials has no key url (used by env DATABASE_URL of container app in deployment app-green)",
				Fix:     "add key url to secret db-credentials, or fix the key in deployment app-green"}},
		},
		"a missing optional secret counts as no connection string": {
			deployments: []appsv1.Deployment{deployment("app-green", nil,
				container("app", []corev1.EnvVar{fromSecret("DATABASE_URL", "db-credentials", "url", true)}))},
			findings: []Finding{{Check: CheckDatabase, Severity: Warn, Service: production, Object: "deployment app-green",
				Reason:  ReasonDatabaseURLNotFound,
				Message: "no database connection string found (looked for DATABASE_URL); database check skipped"}},
		},
		"a missing configmap": {
			deployments: []appsv1.Deployment{deployment("app-green", nil,
				container("app", []corev1.EnvVar{fromConfigMap("DATABASE_URL", "app-config", "url")}))},
			findings: []Finding{{Check: CheckDatabase, Severity: Deny, Service: production, Object: "configmap app-config",
				Reason:  ReasonDatabaseConfigMapNotFound,
				Message: "configmap production/app-config does not exist (used by env DATABASE_URL of container app in deployment app-green)",
				Fix:     "create configmap app-config in namespace production, or fix the reference in deployment app-green"}},
		},
		"a missing envFrom secret that is not optional": {
			deployments: []appsv1.Deployment{deployment("app-green", nil,
				container("app", nil, corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "db"}}}))},
			findings: []Finding{{Check: CheckDatabase, Severity: Deny, Service: production, Object: "secret db",
				Reason:  ReasonDatabaseSecretNotFound,
				Message: "secret production/db does not exist (used by envFrom of container app in deployment app-green)",
				Fix:     "create it: kubectl create secret generic db -n production --from-literal=DATABASE_URL='postgresql://USER:PASSWORD@PRIVATE_HOST:25060/DATABASE?sslmode=require'"}},
		},
		"no connection string is a warning that names what was looked for": {
			deployments: []appsv1.Deployment{deployment("app-green", nil,
				container("app", []corev1.EnvVar{literal("PORT", "8080")}))},
			findings: []Finding{{Check: CheckDatabase, Severity: Warn, Service: production, Object: "deployment app-green",
				Reason:  ReasonDatabaseURLNotFound,
				Message: "no database connection string found (looked for DATABASE_URL); database check skipped"}},
		},
		"the annotation replaces the configured names": {
			deployments: []appsv1.Deployment{deployment("app-green", map[string]string{AnnotationDatabaseURLEnv: " PRIMARY_DB , REPLICA_DB,"},
				container("app", []corev1.EnvVar{
					literal("DATABASE_URL", "postgres://ignored@db/x"),
					literal("PRIMARY_DB", "postgres://primary@db/x"),
					literal("REPLICA_DB", "postgres://replica@db/x"),
				}))},
			want: []found{
				{"postgres://primary@db/x", "env PRIMARY_DB of container app in deployment production/app-green", "deployment app-green"},
				{"postgres://replica@db/x", "env REPLICA_DB of container app in deployment production/app-green", "deployment app-green"},
			},
		},
		"an empty annotation turns the check off": {
			deployments: []appsv1.Deployment{deployment("app-green", map[string]string{AnnotationDatabaseURLEnv: ""},
				container("app", []corev1.EnvVar{literal("DATABASE_URL", "postgres://x@db/x")}))},
		},
		"configured names are all looked for": {
			deployments: []appsv1.Deployment{deployment("app-green", nil, container("app", nil))},
			envNames:    []string{"DB_URL", "POSTGRES_URL"},
			findings: []Finding{{Check: CheckDatabase, Severity: Warn, Service: production, Object: "deployment app-green",
				Reason:  ReasonDatabaseURLNotFound,
				Message: "no database connection string found (looked for DB_URL, POSTGRES_URL); database check skipped"}},
		},
		"deployments and containers sharing one string yield it once": {
			objects: []client.Object{dbSecret},
			deployments: []appsv1.Deployment{
				deployment("app-green", nil,
					container("app", []corev1.EnvVar{fromSecret("DATABASE_URL", "db-credentials", "url", false)}),
					container("worker", []corev1.EnvVar{literal("DATABASE_URL", tutorialURL)})),
				deployment("app-green-canary", nil,
					container("app", []corev1.EnvVar{fromSecret("DATABASE_URL", "db-credentials", "url", false)})),
			},
			want: []found{{tutorialURL, "secret production/db-credentials key url", "secret db-credentials"}},
		},
		"sidecars are searched, plain init containers are not": {
			deployments: []appsv1.Deployment{func() appsv1.Deployment {
				d := deployment("app-green", nil, container("app", nil))
				d.Spec.Template.Spec.InitContainers = []corev1.Container{
					{Name: "migrate", Env: []corev1.EnvVar{literal("DATABASE_URL", "postgres://migrate@db/x")}},
					{Name: "proxy", RestartPolicy: &always, Env: []corev1.EnvVar{literal("DATABASE_URL", "postgres://sidecar@db/x")}},
				}
				return d
			}()},
			want: []found{{"postgres://sidecar@db/x", "env DATABASE_URL of container proxy in deployment production/app-green", "deployment app-green"}},
		},
		"a field reference is not a connection string": {
			deployments: []appsv1.Deployment{deployment("app-green", nil,
				container("app", []corev1.EnvVar{{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{
					FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}))},
			findings: []Finding{{Check: CheckDatabase, Severity: Warn, Service: production, Object: "deployment app-green",
				Reason:  ReasonDatabaseURLNotFound,
				Message: "no database connection string found (looked for DATABASE_URL); database check skipped"}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var gets atomic.Int32
			r := fake.NewClientBuilder().WithObjects(tc.objects...).WithInterceptorFuncs(interceptor.Funcs{
				Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
					gets.Add(1)
					return c.Get(ctx, key, obj, opts...)
				},
				List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
					t.Error("discovery listed objects; it must only GET")
					return errors.New("no list")
				},
			}).Build()
			uses, findings := discoverDSNs(t.Context(), r, production, tc.deployments, tc.envNames)
			var got []found
			for _, u := range uses {
				got = append(got, found{u.value, u.src.String(), u.src.object()})
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("connection strings (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.findings, findings); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
			if n := gets.Load(); n > int32(len(tc.objects))+1 {
				t.Errorf("%d GETs for %d objects: each must be read once", n, len(tc.objects))
			}
		})
	}
}

func TestDiscoverDSNsUnreadableSecret(t *testing.T) {
	r := fake.NewClientBuilder().WithInterceptorFuncs(interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "db-credentials", errors.New("rbac"))
		},
	}).Build()
	deps := []appsv1.Deployment{deployment("app-green", nil,
		container("app", []corev1.EnvVar{fromSecret("DATABASE_URL", "db-credentials", "url", false)}))}
	_, findings := discoverDSNs(t.Context(), r, production, deps, nil)
	want := []Finding{{Check: CheckDatabase, Severity: Deny, Service: production, Object: "secret db-credentials",
		Reason:  ReasonDatabaseSourceUnreadable,
		Message: "secret production/db-credentials may not be read by the webhook (forbidden)",
		Fix:     "let the webhook get secrets in namespace production, then retry"}}
	if diff := cmp.Diff(want, findings); diff != "" {
		t.Errorf("findings (-want +got):\n%s", diff)
	}
}

func TestExpandEnv(t *testing.T) {
	vars := map[string]string{"A": "x", "B": "$(A)"}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	tests := map[string]struct{ in, want string }{
		"no reference":                    {"plain", "plain"},
		"a reference":                     {"a$(A)b", "axb"},
		"values are not expanded again":   {"$(B)", "$(A)"},
		"$$ is a literal dollar":          {"$$(A)", "$(A)"},
		"an unknown reference stays":      {"$(C)", "$(C)"},
		"an unterminated reference stays": {"a$(A", "a$(A"},
		"a lone dollar stays":             {"a$b$", "a$b$"},
		"an empty reference stays":        {"$()", "$()"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := expandEnv(tc.in, lookup); got != tc.want {
				t.Errorf("expandEnv(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// observed records Observe calls.
type observed struct {
	mu    sync.Mutex
	calls []observation
}

type observation struct {
	Result Reason
	Cached bool
}

func (o *observed) observe(r Reason, cached bool, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, observation{r, cached})
}

func (o *observed) get() []observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]observation(nil), o.calls...)
}

// probeFinding runs DatabaseReachable for one literal connection string.
func probeFinding(t *testing.T, p *Prober, dsn string) []Finding {
	t.Helper()
	r := fake.NewClientBuilder().Build()
	deps := []appsv1.Deployment{deployment("app-green", nil,
		container("app", []corev1.EnvVar{literal("DATABASE_URL", dsn)}))}
	return DatabaseReachable(t.Context(), r, p, production, deps, nil)
}

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
				return fixedResolver("10.0.0.5", "192.0.2.7")
			},
			want: Finding{Reason: ReasonDatabaseHostPublic,
				Message: "database host db.example.test resolves to 192.0.2.7, which is not a private address",
				Fix:     "use the database's private network hostname in " + src + ", or add its range to --private-cidrs"},
		},
		"a public IP literal": {
			dsn:      "mysql://app:Tr0ub4dor-pw@192.0.2.7:3306/app",
			resolver: noResolve,
			want: Finding{Reason: ReasonDatabaseHostPublic,
				Message: "database host 192.0.2.7 is not a private address",
				Fix:     "use the database's private network hostname in " + src + ", or add its range to --private-cidrs"},
		},
		"a host that does not resolve": {
			dsn: "postgres://app:Tr0ub4dor-pw@db.example.test:5432/app",
			resolver: func(*testing.T) func(context.Context, string) ([]netip.Addr, error) {
				return func(context.Context, string) ([]netip.Addr, error) {
					return nil, &net.DNSError{Err: "no such host", Name: "db.example.test", IsNotFound: true}
				}
			},
			want: Finding{Reason: ReasonDatabaseHostUnresolvable,
				Message: "database host db.example.test does not resolve",
				Fix:     "check the host in " + src},
		},
		"a closed port": {
			dsn:      "postgres://app:Tr0ub4dor-pw@db.example.test:5432/app",
			resolver: func(*testing.T) func(context.Context, string) ([]netip.Addr, error) { return fixedResolver("10.0.0.5") },
			want: Finding{Reason: ReasonDatabaseConnectRefused,
				Message: "nothing is listening at db.example.test:5432 (connection refused)",
				Fix:     "check the host and port in " + src + " and that the database is running"},
		},
		"an un-encoded password gets the tutorial's hint": {
			dsn:      "postgresql://app:Tr0ub@dor/pw@db:5432/app",
			resolver: noResolve,
			want: Finding{Reason: ReasonDatabasePasswordNotEncoded,
				Message: "the database url in " + src + " has a password with special characters that are not url-encoded",
				Fix:     encodeHint},
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
			p := NewProber(ProberOptions{Resolver: tc.resolver(t)})
			p.dial = refuseDial
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

func TestProbeConnectTimeout(t *testing.T) {
	p := NewProber(ProberOptions{Timeout: 300 * time.Millisecond, Resolver: fixedResolver("10.0.0.5")})
	p.dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done() // packets dropped by a firewall
		return nil, ctx.Err()
	}
	start := time.Now()
	res := p.probe(t.Context(), "postgres://app:pw@db.internal:5432/app")
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("probe took %s with a 300ms timeout", el)
	}
	want := probeResult{severity: Deny, reason: ReasonDatabaseConnectTimeout,
		message: "database at db.internal:5432 is not reachable within 300ms",
		fix:     "is the cluster in the database's Trusted sources?"}
	if diff := cmp.Diff(want, res, cmp.AllowUnexported(probeResult{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestProbeHonoursCallerDeadlineAndCaches(t *testing.T) {
	release := make(chan struct{})
	var dials atomic.Int32
	obs := &observed{}
	now := time.Unix(1000, 0)
	var nowMu sync.Mutex
	p := NewProber(ProberOptions{Timeout: 5 * time.Second, CacheTTL: 10 * time.Second, Resolver: fixedResolver("10.0.0.5"), Observe: obs.observe})
	p.now = func() time.Time { nowMu.Lock(); defer nowMu.Unlock(); return now }
	p.dial = func(ctx context.Context, n, a string) (net.Conn, error) {
		dials.Add(1)
		<-release
		return refuseDial(ctx, n, a)
	}
	const dsn = "postgres://app:pw@db.internal:5432/app?sslmode=disable" // one dial per probe

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if res := p.probe(ctx, dsn); res.reason != ReasonDatabaseCheckTimeout {
		t.Fatalf("probe past the caller's deadline = %+v, want %s", res, ReasonDatabaseCheckTimeout)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("caller waited %s past its 100ms deadline", el)
	}
	close(release) // the probe, detached from the caller, finishes and is cached

	var res probeResult
	for deadline := time.Now().Add(5 * time.Second); ; {
		res = p.probe(t.Context(), dsn)
		if res.reason == ReasonDatabaseConnectRefused || time.Now().After(deadline) {
			break
		}
	}
	if res.reason != ReasonDatabaseConnectRefused {
		t.Fatalf("probe = %+v, want %s", res, ReasonDatabaseConnectRefused)
	}
	p.probe(t.Context(), dsn)
	if n := dials.Load(); n != 1 {
		t.Errorf("%d dials, want 1 (later probes must reuse the result)", n)
	}
	calls := obs.get()
	if last := calls[len(calls)-1]; last != (observation{ReasonDatabaseConnectRefused, true}) {
		t.Errorf("last observation = %+v, want a cached refusal", last)
	}

	nowMu.Lock()
	now = now.Add(11 * time.Second)
	nowMu.Unlock()
	p.probe(t.Context(), dsn)
	if n := dials.Load(); n != 2 {
		t.Errorf("%d dials after the TTL, want 2", n)
	}
}

func TestProbeWithoutCache(t *testing.T) {
	var dials atomic.Int32
	p := NewProber(ProberOptions{CacheTTL: -1, Resolver: fixedResolver("10.0.0.5")})
	p.dial = func(ctx context.Context, n, a string) (net.Conn, error) { dials.Add(1); return refuseDial(ctx, n, a) }
	for range 3 {
		p.probe(t.Context(), "postgres://app:pw@db.internal:5432/app?sslmode=disable")
	}
	if n := dials.Load(); n != 3 {
		t.Errorf("%d dials, want 3 with the cache off", n)
	}
}

func TestProbeWithoutUserChecksReachabilityOnly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	p := NewProber(ProberOptions{PrivateCIDRs: mustPrefixes("127.0.0.1/32")})
	got := probeFinding(t, p, "postgres://"+ln.Addr().String()+"/app")
	want := []Finding{{Check: CheckDatabase, Severity: Warn, Service: production, Object: "deployment app-green",
		Reason:  ReasonDatabaseNoUser,
		Message: "database url names no user; only checked that " + ln.Addr().String() + " accepts connections",
		Fix:     "add the user to env DATABASE_URL of container app in deployment production/app-green to have the login checked"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestDatabaseReachableWithoutDeployments(t *testing.T) {
	p := NewProber(ProberOptions{})
	if got := DatabaseReachable(t.Context(), fake.NewClientBuilder().Build(), p, production, nil, nil); got != nil {
		t.Errorf("got %v, want nil", got)
	}
	if got := DatabaseReachable(t.Context(), fake.NewClientBuilder().Build(), nil, production,
		[]appsv1.Deployment{deployment("x", nil)}, nil); got != nil {
		t.Errorf("nil prober: got %v, want nil", got)
	}
}

func TestNewProberDefaults(t *testing.T) {
	p := NewProber(ProberOptions{})
	if p.timeout != DefaultDatabaseTimeout || p.ttl != DefaultDatabaseCacheTTL {
		t.Errorf("timeout %s ttl %s, want defaults", p.timeout, p.ttl)
	}
	if diff := cmp.Diff(DefaultPrivateCIDRs(), p.private, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("private CIDRs (-want +got):\n%s", diff)
	}
	for addr, private := range map[string]bool{
		"10.1.2.3": true, "172.31.0.1": true, "192.168.1.1": true, "100.64.0.1": true, "fd12::1": true,
		"172.32.0.1": false, "8.8.8.8": false, "127.0.0.1": false, "2001:db8::1": false,
	} {
		if got := p.isPrivate(netip.MustParseAddr(addr)); got != private {
			t.Errorf("isPrivate(%s) = %v, want %v", addr, got, private)
		}
	}
}

func TestServerErrorMapping(t *testing.T) {
	pg, _ := parseDSN("postgres://app:pw@db:5432/appdb?sslmode=disable")
	my, _ := parseDSN("mysql://app:pw@db:3306/appdb")
	tests := map[string]struct {
		got  probeResult
		want probeResult
	}{
		"postgres: a wrong password": {
			got: pgServerError(pg, &pgconn.PgError{Code: "28P01", Message: `password authentication failed for user "app"`}, stageConnect),
			want: deny(ReasonDatabaseAuthFailed, "database at db:5432 rejected the password for user app",
				"check the password in "+srcPlaceholder),
		},
		"postgres: no pg_hba rule for plain text": {
			got: pgServerError(pg, &pgconn.PgError{Code: "28000", Message: `no pg_hba.conf entry for host "10.0.0.9", user "app", database "appdb", no encryption`}, stageConnect),
			want: deny(ReasonDatabaseTLSRequired, "database at db:5432 has no rule for unencrypted connections of user app (sslmode=disable)",
				"set sslmode=require in "+srcPlaceholder),
		},
		"postgres: a missing database": {
			got: pgServerError(pg, &pgconn.PgError{Code: "3D000"}, stageConnect),
			want: deny(ReasonDatabaseNotFound, "database appdb does not exist at db:5432",
				"create it, or fix the database name in "+srcPlaceholder),
		},
		"postgres: an unknown code is shown, the server's text is not": {
			got: pgServerError(pg, &pgconn.PgError{Code: "XX000", Message: "internal error with secret pw"}, stageConnect),
			want: deny(ReasonDatabaseProbeFailed, "database at db:5432 refused the connection (SQLSTATE XX000)",
				"check the connection string in "+srcPlaceholder+" and the database's logs"),
		},
		"postgres: SELECT 1 failing": {
			got: pgServerError(pg, &pgconn.PgError{Code: "57014"}, stageQuery),
			want: deny(ReasonDatabaseQueryFailed, "database at db:5432 accepted the login but SELECT 1 failed (SQLSTATE 57014)",
				"check the database's health"),
		},
		"mysql: access denied": {
			got: mysqlServerError(my, &mysql.MySQLError{Number: 1045}, stageConnect),
			want: deny(ReasonDatabaseAuthFailed, "database at db:3306 rejected the password for user app",
				"check the password in "+srcPlaceholder),
		},
		"mysql: no access to the database, which may not exist": {
			got: mysqlServerError(my, &mysql.MySQLError{Number: 1044}, stageConnect),
			want: deny(ReasonDatabaseAuthFailed, "database at db:3306 does not let user app use database appdb (or it does not exist)",
				"check the database name in "+srcPlaceholder+", or grant the user access to it"),
		},
		"mysql: secure transport required": {
			got: mysqlServerError(my, &mysql.MySQLError{Number: 3159}, stageConnect),
			want: deny(ReasonDatabaseTLSRequired, "database at db:3306 requires TLS but the connection string disables it (default ssl-mode=PREFERRED)",
				"set ssl-mode=REQUIRED in "+srcPlaceholder),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.got, cmp.AllowUnexported(probeResult{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestProbeRecoversFromPanicWithoutShowingIt(t *testing.T) {
	p := NewProber(ProberOptions{Resolver: fixedResolver("10.0.0.5")})
	p.dial = func(context.Context, string, string) (net.Conn, error) {
		panic("driver bug while handling postgres://app:Tr0ub4dor-pw@db.internal/app")
	}
	got := probeFinding(t, p, "postgres://app:Tr0ub4dor-pw@db.internal:5432/app")
	want := []Finding{{Check: CheckDatabase, Severity: Deny, Service: production, Object: "deployment app-green",
		Reason:  ReasonDatabaseProbeFailed,
		Message: "the database check of db.internal:5432 failed with an internal error",
		Fix:     "retry; if this repeats, report it"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	assertNoSecret(t, got, "Tr0ub4dor-pw")
}
