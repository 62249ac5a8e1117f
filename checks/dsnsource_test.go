package checks

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
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

var production = types.NamespacedName{Namespace: "production", Name: "app-green"}

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
			uses, findings, err := discoverDSNs(t.Context(), r, production, asWorkloads(tc.deployments), tc.envNames)
			if err != nil {
				t.Fatal(err)
			}
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

// A Secret or ConfigMap that cannot be read for any reason but NotFound is an
// error, as every check's failed read is: the check could not decide.
func TestDiscoverDSNsReadErrorIsAnError(t *testing.T) {
	tests := map[string]struct {
		err  error
		want []string
	}{
		"a forbidden secret says which permission to grant": {
			err: apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "db-credentials", errors.New("rbac")),
			want: []string{"reading secret production/db-credentials: ",
				"let the guard get secrets in namespace production (apply this version's manifests/rbac)"},
		},
		"a timeout names the secret": {
			err:  apierrors.NewTimeoutError("etcd is slow", 1),
			want: []string{"reading secret production/db-credentials: "},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var gets atomic.Int32
			r := fake.NewClientBuilder().WithInterceptorFuncs(interceptor.Funcs{
				Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
					gets.Add(1)
					return tc.err
				},
			}).Build()
			deps := []appsv1.Deployment{deployment("app-green", nil, container("app", []corev1.EnvVar{
				fromSecret("DATABASE_URL", "db-credentials", "url", false),
				fromSecret("REPLICA_URL", "db-replica", "url", false),
			}))}
			uses, findings, err := discoverDSNs(t.Context(), r, production, asWorkloads(deps), []string{"DATABASE_URL", "REPLICA_URL"})
			if err == nil {
				t.Fatalf("no error; connection strings %v, findings %v", uses, findings)
			}
			if uses != nil || findings != nil {
				t.Errorf("connection strings %v and findings %v alongside an error, want none", uses, findings)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if n := gets.Load(); n != 1 {
				t.Errorf("%d GETs, want 1: nothing is read after a failed read", n)
			}
		})
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
			if got, fits := expandEnv(tc.in, -1, lookup); got != tc.want || !fits {
				t.Errorf("expandEnv(%q) = %q, %v; want %q, true", tc.in, got, fits, tc.want)
			}
		})
	}
}

// A tenant's Secret and ConfigMap of hundreds of keys, each near the
// object's 1 MiB in all: the decision keeps only the keys its lookups use,
// every other one dropped right after the GET.
func TestDiscoverDSNsKeepsOnlyKeysUsed(t *testing.T) {
	filler := func(prefix string) map[string]string {
		m := map[string]string{}
		for i := range 200 {
			m[fmt.Sprintf("%sjunk-%03d", prefix, i)] = strings.Repeat("x", 4<<10)
		}
		return m
	}
	sData := filler("")
	sData["password"] = "pw"
	sData["DATABASE_URL"] = "unused: the env entry below sets DATABASE_URL"
	cmData := filler("")
	cmData["REPLICA_URL"] = "postgres://app:$(DB_PASSWORD)@replica/app"
	cmData["DB_HOST"] = "db"
	dep := deployment("app-green", map[string]string{AnnotationDatabaseURLEnv: "DATABASE_URL,REPLICA_URL"}, container("app",
		[]corev1.EnvVar{fromSecret("DB_PASSWORD", "db", "password", false), literal("DATABASE_URL", "postgres://app:$(DB_PASSWORD)@$(DB_HOST)/app")},
		corev1.EnvFromSource{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}},
		corev1.EnvFromSource{Prefix: "S_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}}},
	))
	r := fake.NewClientBuilder().WithObjects(secret("db", sData), configMap("settings", cmData)).Build()
	ws := []Workload{deploymentWorkload(&dep)}
	res := newEnvResolver(t.Context(), r, production, ws, nil)
	var got []string
	for _, n := range []string{"DATABASE_URL", "REPLICA_URL"} {
		if v := res.value(&ws[0], &ws[0].Template.Spec.Containers[0], n); v.ok {
			got = append(got, v.v)
		}
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	if diff := cmp.Diff([]string{"postgres://app:pw@db/app", "postgres://app:$(DB_PASSWORD)@replica/app"}, got); diff != "" {
		t.Errorf("connection strings (-want +got):\n%s", diff)
	}
	kept := map[string][]string{}
	for k, f := range res.objects {
		kept[k.kind+"/"+k.name] = slices.Sorted(maps.Keys(f.data))
	}
	// settings: DATABASE_URL and REPLICA_URL may be looked up through
	// envFrom, and DB_PASSWORD and DB_HOST as $(VAR)s; db: password by
	// reference, and only S_-prefixed names through envFrom (none here).
	want := map[string][]string{"configmap/settings": {"DB_HOST", "REPLICA_URL"}, "secret/db": {"password"}}
	if diff := cmp.Diff(want, kept); diff != "" {
		t.Errorf("keys kept after the GETs (-want +got):\n%s", diff)
	}
}

// A connection string longer than maxDSNLen (a Secret value may be 1 MiB)
// is a denial that names where it is, without being parsed; the value is
// kept only as far as that takes.
func TestDiscoverDSNsConnectionStringTooLong(t *testing.T) {
	huge := "postgres://app:pw@db/app?x=" + strings.Repeat("a", 1<<20-64)
	r := fake.NewClientBuilder().WithObjects(secret("db", map[string]string{"url": huge})).Build()
	deps := []appsv1.Deployment{deployment("app-green", nil, container("app", []corev1.EnvVar{fromSecret("DATABASE_URL", "db", "url", false)}))}
	uses, findings, err := discoverDSNs(t.Context(), r, production, asWorkloads(deps), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(uses) != 0 {
		t.Errorf("%d connection strings to probe, want none", len(uses))
	}
	want := []Finding{{
		Check: CheckDatabase, Severity: Deny, Service: production, Object: "secret db", Reason: ReasonDatabaseURLTooLong,
		Message: "the connection string in env DATABASE_URL of container app in deployment app-green (secret production/db key url) is longer than 4096 bytes; the guard does not parse it",
		Fix:     "put only the connection string in secret production/db key url: a real one takes a few hundred bytes",
	}}
	if diff := cmp.Diff(want, findings); diff != "" {
		t.Errorf("findings (-want +got):\n%s", diff)
	}

	ws := asWorkloads(deps)
	res := newEnvResolver(t.Context(), r, production, ws, nil)
	v := res.value(&ws[0], &ws[0].Template.Spec.Containers[0], "DATABASE_URL")
	if len(v.v) != maxDSNLen+1 {
		t.Errorf("the decision holds %d bytes of the value, want %d", len(v.v), maxDSNLen+1)
	}
}
