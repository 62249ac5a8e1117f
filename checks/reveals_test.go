package checks

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/cutover-guard/cutover-guard/checks/probe"
	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"
)

// A finding whose words come from a connection string names every Secret
// and ConfigMap the string was read from, through $(VAR) references too,
// and its redacted rendering keeps none of those words.
func TestDatabaseFindingsNameWhatTheyReveal(t *testing.T) {
	const dsn = "postgres://shopuser:Tr0ub4dor-pw@db-secret-host.example.test:5432/shopdb"
	objects := []client.Object{
		secret("app-db", map[string]string{"url": dsn, "host": "db-secret-host.example.test", "password": "Tr0ub4dor-pw"}),
		configMap("app-config", map[string]string{"url": dsn, "user": "shopuser"}),
	}
	dbSecret := ObjectRef{Resource: "secrets", Namespace: "production", Name: "app-db"}
	dbConfig := ObjectRef{Resource: "configmaps", Namespace: "production", Name: "app-config"}
	tests := map[string]struct {
		env         []corev1.EnvVar
		wantReveals []ObjectRef
		wantSource  string
	}{
		"a secretKeyRef": {
			env:         []corev1.EnvVar{fromSecret("DATABASE_URL", "app-db", "url", false)},
			wantReveals: []ObjectRef{dbSecret},
			wantSource:  "secret production/app-db key url",
		},
		"a configMapKeyRef": {
			env:         []corev1.EnvVar{fromConfigMap("DATABASE_URL", "app-config", "url")},
			wantReveals: []ObjectRef{dbConfig},
			wantSource:  "configmap production/app-config key url",
		},
		"a literal built from a Secret and a ConfigMap": {
			env: []corev1.EnvVar{
				fromSecret("DB_HOST", "app-db", "host", false),
				fromSecret("DB_PASSWORD", "app-db", "password", false),
				fromConfigMap("DB_USER", "app-config", "user"),
				literal("DATABASE_URL", "postgres://$(DB_USER):$(DB_PASSWORD)@$(DB_HOST):5432/shopdb"),
			},
			wantReveals: []ObjectRef{dbConfig, dbSecret},
			wantSource: "env DATABASE_URL of container app in deployment production/app-green (with $(DB_USER) from configmap production/app-config key user, " +
				"$(DB_PASSWORD) from secret production/app-db key password, $(DB_HOST) from secret production/app-db key host)",
		},
		"a literal built from a variable built from a Secret": {
			env: []corev1.EnvVar{
				fromSecret("DB_HOST", "app-db", "host", false),
				literal("DB_ADDR", "$(DB_HOST):5432"),
				literal("DATABASE_URL", "postgres://shopuser:pw@$(DB_ADDR)/shopdb"),
			},
			wantReveals: []ObjectRef{dbSecret},
			wantSource:  "env DATABASE_URL of container app in deployment production/app-green (with $(DB_ADDR) from env DB_ADDR of container app in deployment production/app-green)",
		},
		"a literal of the Deployment's own reveals no Secret": {
			env: []corev1.EnvVar{literal("DATABASE_URL", dsn)},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := probe.NewProber(probe.ProberOptions{Resolver: probetest.FixedResolver("10.0.0.5"), Dial: probetest.RefuseDial})
			in := &Input{Reader: fake.NewClientBuilder().WithObjects(objects...).Build(), Prober: p, Target: Target{Service: production},
				Deployments: []appsv1.Deployment{deployment("app-green", nil, container("app", tc.env))}}
			findings, err := DatabaseReachable(t.Context(), in)
			if err != nil {
				t.Fatal(err)
			}
			if len(findings) != 1 || findings[0].Reason != ReasonDatabaseConnectRefused {
				t.Fatalf("findings = %+v, want one %s", findings, ReasonDatabaseConnectRefused)
			}
			f := findings[0]
			if diff := cmp.Diff(tc.wantReveals, f.Reveals); diff != "" {
				t.Errorf("Reveals (-want +got):\n%s", diff)
			}
			if f.Source != tc.wantSource {
				t.Errorf("Source = %q, want %q", f.Source, tc.wantSource)
			}
			red := f.Redacted(nil)
			if len(tc.wantReveals) == 0 {
				if red != f.String() {
					t.Errorf("Redacted = %q, want the full text %q", red, f.String())
				}
				return
			}
			for _, word := range []string{"db-secret-host", "5432", "shopuser", "shopdb", "Tr0ub4dor-pw"} {
				if strings.Contains(red, word) {
					t.Errorf("Redacted shows %q: %s", word, red)
				}
			}
			for _, want := range []string{"database check failed (DatabaseConnectRefused)", "for the connection string in " + tc.wantSource, "ask "} {
				if !strings.Contains(red, want) {
					t.Errorf("Redacted = %q, want it to say %q", red, want)
				}
			}
		})
	}
}

func TestFindingRedacted(t *testing.T) {
	db := ObjectRef{Resource: "secrets", Namespace: "shop", Name: "app-db"}
	cfg := ObjectRef{Resource: "configmaps", Namespace: "shop", Name: "app-config"}
	f := Finding{Check: CheckDatabase, Severity: Deny, Service: production, Reason: ReasonDatabaseAuthFailed,
		Message: "database at db:5432 rejected the password for user app", Fix: "check the password in secret shop/app-db key url",
		Reveals: []ObjectRef{db, cfg}, Source: "secret shop/app-db key url"}
	tests := map[string]struct {
		f          Finding
		unreadable []ObjectRef
		want       string
	}{
		"one unreadable Secret": {
			f: f, unreadable: []ObjectRef{db},
			want: "service production/app-green: database check failed (DatabaseAuthFailed) for the connection string in secret shop/app-db key url; " +
				"you may not read secret shop/app-db: ask its owner, or see the guard's log",
		},
		"nil is every object the finding reveals": {
			f: f,
			want: "service production/app-green: database check failed (DatabaseAuthFailed) for the connection string in secret shop/app-db key url; " +
				"you may not read secret shop/app-db or configmap shop/app-config: ask their owners, or see the guard's log",
		},
		"a warning warns": {
			f: Finding{Check: CheckDatabase, Severity: Warn, Service: production, Reason: ReasonDatabaseNoUser, Message: "names no user; db:5432 accepts",
				Reveals: []ObjectRef{db}, Source: "secret shop/app-db key url"},
			want: "service production/app-green: database check warned (DatabaseNoUser) for the connection string in secret shop/app-db key url; " +
				"you may not read secret shop/app-db: ask its owner, or see the guard's log",
		},
		"a finding that reveals nothing is shown whole": {
			f:    Finding{Check: CheckDeployment, Service: production, Message: "deployment app-green is not ready", Fix: "wait"},
			want: "service production/app-green: deployment app-green is not ready; wait",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := tc.f.Redacted(tc.unreadable); got != tc.want {
				t.Errorf("Redacted() =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
