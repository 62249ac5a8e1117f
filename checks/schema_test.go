package checks

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/cutover-guard/cutover-guard/checks/probe"
)

func schemaWorkload(annotations map[string]string) Workload {
	d := deployment("app-green", annotations, container("app", nil))
	return deploymentWorkload(&d)
}

func TestSchemaAnnotationParsing(t *testing.T) {
	tests := map[string]struct {
		annotations map[string]string
		want        *schemaSpec // nil with wantErr "": declares nothing
		wantErr     string
	}{
		"nothing declared": {annotations: map[string]string{"other": "x"}},
		"golang-migrate with a range, leading zeros dropped": {
			annotations: map[string]string{AnnotationSchemaTool: "golang-migrate", AnnotationSchemaMin: "0005", AnnotationSchemaMax: "7"},
			want:        &schemaSpec{tool: probe.ToolGolangMigrate, min: "5", max: "7"},
		},
		"the tool alone": {
			annotations: map[string]string{AnnotationSchemaTool: "liquibase"},
			want:        &schemaSpec{tool: probe.ToolLiquibase},
		},
		"flyway underscores read as dots": {
			annotations: map[string]string{AnnotationSchemaTool: "flyway", AnnotationSchemaMin: "2_1", AnnotationSchemaMax: "2.10"},
			want:        &schemaSpec{tool: probe.ToolFlyway, min: "2.1", max: "2.10"},
		},
		"django app.migration": {
			annotations: map[string]string{AnnotationSchemaTool: "django", AnnotationSchemaMin: "shop.0002_order_email"},
			want:        &schemaSpec{tool: probe.ToolDjango, min: "shop.0002_order_email"},
		},
		"alembic revisions": {
			annotations: map[string]string{AnnotationSchemaTool: "alembic", AnnotationSchemaMin: "ae1027a6acf,27c6a30d7c24"},
			want:        &schemaSpec{tool: probe.ToolAlembic, min: "ae1027a6acf,27c6a30d7c24", revs: []string{"ae1027a6acf", "27c6a30d7c24"}},
		},
		"an unknown tool": {
			annotations: map[string]string{AnnotationSchemaTool: "Flyway"},
			wantErr:     `annotation cutover-guard.dev/schema-tool of deployment app-green is "Flyway"; want one of golang-migrate, goose, flyway, liquibase, alembic, django, rails, prisma, atlas`,
		},
		"a range without a tool": {
			annotations: map[string]string{AnnotationSchemaMax: "3"},
			wantErr:     "annotation cutover-guard.dev/schema-max of deployment app-green needs annotation cutover-guard.dev/schema-tool (one of golang-migrate, goose, flyway, liquibase, alembic, django, rails, prisma, atlas)",
		},
		"a non-integer golang-migrate version": {
			annotations: map[string]string{AnnotationSchemaTool: "golang-migrate", AnnotationSchemaMin: "v5"},
			wantErr:     `annotation cutover-guard.dev/schema-min of deployment app-green is "v5"; for golang-migrate want an unsigned integer version, e.g. 20240301120000`,
		},
		"a negative goose version": {
			annotations: map[string]string{AnnotationSchemaTool: "goose", AnnotationSchemaMax: "-1"},
			wantErr:     `annotation cutover-guard.dev/schema-max of deployment app-green is "-1"; for goose want an unsigned integer version, e.g. 20240301120000`,
		},
		"too many digits": {
			annotations: map[string]string{AnnotationSchemaTool: "rails", AnnotationSchemaMin: strings.Repeat("9", 21)},
			wantErr:     `annotation cutover-guard.dev/schema-min of deployment app-green is "` + strings.Repeat("9", 21) + `"; for rails want an unsigned integer version, e.g. 20240301120000`,
		},
		"a flyway version with an empty part": {
			annotations: map[string]string{AnnotationSchemaTool: "flyway", AnnotationSchemaMin: "2..1"},
			wantErr:     `annotation cutover-guard.dev/schema-min of deployment app-green is "2..1"; for flyway want a dotted version, e.g. 2.1 or 2_1`,
		},
		"a django migration without its app": {
			annotations: map[string]string{AnnotationSchemaTool: "django", AnnotationSchemaMin: "0002_order_email"},
			wantErr:     `annotation cutover-guard.dev/schema-min of deployment app-green is "0002_order_email"; for django want app.migration, e.g. shop.0002_order_email`,
		},
		"alembic has no max": {
			annotations: map[string]string{AnnotationSchemaTool: "alembic", AnnotationSchemaMax: "ae1027a6acf"},
			wantErr:     "annotation cutover-guard.dev/schema-max of deployment app-green: alembic records only the current revision, not which came before; list every revision this code runs on in cutover-guard.dev/schema-min instead",
		},
		"an alembic list with an empty entry": {
			annotations: map[string]string{AnnotationSchemaTool: "alembic", AnnotationSchemaMin: "ae1027a6acf,"},
			wantErr:     `annotation cutover-guard.dev/schema-min of deployment app-green is "ae1027a6acf,"; for alembic want schema-min: the revisions this code runs on, comma-separated (at most 16), e.g. ae1027a6acf,27c6a30d7c24; no schema-max`,
		},
		"min above max": {
			annotations: map[string]string{AnnotationSchemaTool: "flyway", AnnotationSchemaMin: "2.10", AnnotationSchemaMax: "2.9"},
			wantErr:     "annotations of deployment app-green: cutover-guard.dev/schema-min 2.10 is newer than cutover-guard.dev/schema-max 2.9; want min <= max",
		},
		"a name with a control character": {
			annotations: map[string]string{AnnotationSchemaTool: "prisma", AnnotationSchemaMin: "init\n"},
			wantErr:     `annotation cutover-guard.dev/schema-min of deployment app-green is "init\n"; for prisma want a migration name, e.g. 20240201000000_add_email`,
		},
		"an empty liquibase id": {
			annotations: map[string]string{AnnotationSchemaTool: "liquibase", AnnotationSchemaMax: ""},
			wantErr:     `annotation cutover-guard.dev/schema-max of deployment app-green is ""; for liquibase want a changeset id, e.g. add-email`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			w := schemaWorkload(tc.annotations)
			got, msg := parseSchemaSpec(&w)
			if msg != tc.wantErr {
				t.Errorf("error:\n got %q\nwant %q", msg, tc.wantErr)
			}
			if tc.want != nil {
				tc.want.workload, tc.want.name = "deployment app-green", "app-green"
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(schemaSpec{})); diff != "" {
				t.Errorf("spec (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCompareSchemaVersions(t *testing.T) {
	for _, tc := range []struct {
		tool probe.SchemaTool
		a, b string
		want int
	}{
		{probe.ToolGolangMigrate, "9", "10", -1},
		{probe.ToolRails, "20240301120000", "20240101000000", 1},
		{probe.ToolGoose, "007", "7", 0},
		{probe.ToolFlyway, "2.9", "2.10", -1},
		{probe.ToolFlyway, "2.0", "2", 0},
		{probe.ToolFlyway, "3", "2.99.1", 1},
	} {
		got := compareSchemaVersions(tc.tool, tc.a, tc.b)
		if (got < 0) != (tc.want < 0) || (got > 0) != (tc.want > 0) {
			t.Errorf("compare %s %q %q = %d, want sign of %d", tc.tool, tc.a, tc.b, got, tc.want)
		}
	}
}

// The verdicts on a state read over a connection string from a Secret: the
// finding carries the Secret as Reveals, as the probe's own finding does.
func TestSchemaVerdicts(t *testing.T) {
	src := dsnSource{kind: "secret", namespace: "production", name: "app-db", key: "url", deployment: "app-green"}
	const db = "the database in secret production/app-db key url"
	spec := func(tool probe.SchemaTool, min, max string) *schemaSpec {
		s := &schemaSpec{workload: "deployment app-green", name: "app-green", tool: tool, min: min, max: max}
		if tool == probe.ToolAlembic && min != "" {
			s.revs = strings.Split(min, ",")
		}
		return s
	}
	type verdict struct{ Reason, Message, Fix string }
	tests := map[string]struct {
		spec  *schemaSpec
		state probe.SchemaState
		want  []verdict
	}{
		"inside the range":      {spec: spec(probe.ToolGolangMigrate, "5", "7"), state: probe.SchemaState{Version: "6"}},
		"at both ends":          {spec: spec(probe.ToolFlyway, "2.1", "2.1.0"), state: probe.SchemaState{Version: "2.1"}},
		"the tool alone, clean": {spec: spec(probe.ToolGoose, "", ""), state: probe.SchemaState{Version: "3"}},
		"behind": {spec: spec(probe.ToolGolangMigrate, "5", ""), state: probe.SchemaState{Version: "4"},
			want: []verdict{{"SchemaBehind", "deployment app-green needs 5 (cutover-guard.dev/schema-min) but the golang-migrate schema of " + db + " is at version 4",
				"run app-green's migrations: migrate -path <dir> -database <url> up, then retry"}}},
		"nothing applied": {spec: spec(probe.ToolRails, "20240101000000", ""), state: probe.SchemaState{},
			want: []verdict{{"SchemaBehind", "deployment app-green needs 20240101000000 (cutover-guard.dev/schema-min) but the rails schema of " + db + " has no migration applied",
				"run app-green's migrations: bin/rails db:migrate, then retry"}}},
		"ahead: the contract ran": {spec: spec(probe.ToolGolangMigrate, "3", "5"), state: probe.SchemaState{Version: "6"},
			want: []verdict{{"SchemaAhead", "deployment app-green runs on schemas up to 5 (cutover-guard.dev/schema-max) but the golang-migrate schema of " + db + " is at 6: its code would break on it",
				"keep the traffic where it is and roll forward instead; switching back to app-green needs the schema migrated down to 5 first"}}},
		"dirty, and behind": {spec: spec(probe.ToolGolangMigrate, "5", ""), state: probe.SchemaState{Version: "4", Dirty: 1},
			want: []verdict{
				{"SchemaDirty", "the golang-migrate schema of " + db + " is dirty at version 4: a migration failed halfway",
					"repair the schema by hand, mark it (migrate force 4, or the version before), then run app-green's migrations: migrate -path <dir> -database <url> up, then retry"},
				{"SchemaBehind", "deployment app-green needs 5 (cutover-guard.dev/schema-min) but the golang-migrate schema of " + db + " is at version 4",
					"run app-green's migrations: migrate -path <dir> -database <url> up, then retry"}}},
		"dirty with no range declared": {spec: spec(probe.ToolGolangMigrate, "", ""), state: probe.SchemaState{Version: "4", Dirty: 1},
			want: []verdict{{"SchemaDirty", "the golang-migrate schema of " + db + " is dirty at version 4: a migration failed halfway",
				"repair the schema by hand, mark it (migrate force 4, or the version before), then run app-green's migrations: migrate -path <dir> -database <url> up, then retry"}}},
		"a failed flyway migration": {spec: spec(probe.ToolFlyway, "", ""), state: probe.SchemaState{Version: "1.1", Dirty: 2},
			want: []verdict{{"SchemaDirty", db + " has 2 failed migrations in flyway_schema_history",
				"repair the schema, run flyway repair, then run app-green's migrations: flyway migrate, then retry"}}},
		"liquibase locked": {spec: spec(probe.ToolLiquibase, "add-email", ""), state: probe.SchemaState{Version: "add-email", Locked: true, MinApplied: true},
			want: []verdict{{"SchemaLocked", "the liquibase changelog lock of " + db + " is held: a migration is running",
				"wait for it to finish and retry; if none runs, release the lock (liquibase release-locks)"}}},
		"prisma: min not applied": {spec: spec(probe.ToolPrisma, "20240201000000_add_email", ""), state: probe.SchemaState{Version: "20240101000000_init"},
			want: []verdict{{"SchemaBehind", "deployment app-green needs 20240201000000_add_email (cutover-guard.dev/schema-min) but the prisma schema of " + db + " has not applied it (latest applied: 20240101000000_init)",
				"run app-green's migrations: prisma migrate deploy, then retry"}}},
		"django: applied after max in the same app": {spec: spec(probe.ToolDjango, "", "shop.0002_order_email"), state: probe.SchemaState{Version: "shop.0003_x", MaxApplied: true, AfterMax: 1},
			want: []verdict{{"SchemaAhead", "deployment app-green runs on schemas up to shop.0002_order_email (cutover-guard.dev/schema-max) but the django schema of " + db + " has moved on: 1 migration of app shop was applied after it: its code would break on it",
				"keep the traffic where it is and roll forward instead; switching back to app-green needs the schema migrated down to shop.0002_order_email first"}}},
		"a max that was never applied: nothing after it": {spec: spec(probe.ToolAtlas, "", "20240301000000"), state: probe.SchemaState{Version: "20240201000000"}},
		"alembic at a listed revision":                   {spec: spec(probe.ToolAlembic, "ae1027a6acf,27c6a30d7c24", ""), state: probe.SchemaState{Version: "27c6a30d7c24", Heads: []string{"27c6a30d7c24"}, HeadCount: 1}},
		"alembic elsewhere": {spec: spec(probe.ToolAlembic, "ae1027a6acf", ""), state: probe.SchemaState{Version: "1975ea83b712", Heads: []string{"1975ea83b712"}, HeadCount: 1},
			want: []verdict{{"SchemaBehind", "deployment app-green needs ae1027a6acf (cutover-guard.dev/schema-min) but the alembic schema of " + db + " is at revision 1975ea83b712",
				"run app-green's migrations: alembic upgrade head, then retry"}}},
		"alembic with three heads": {spec: spec(probe.ToolAlembic, "a,b", ""), state: probe.SchemaState{Version: "a", Heads: []string{"a", "b"}, HeadCount: 3},
			want: []verdict{{"SchemaBehind", "deployment app-green needs a,b (cutover-guard.dev/schema-min) but the alembic schema of " + db + " has 3 heads (unmerged branches)",
				"run app-green's migrations: alembic upgrade head, then retry"}}},
		"the table is missing": {spec: spec(probe.ToolGoose, "3", ""), state: probe.SchemaState{Missing: true},
			want: []verdict{{"SchemaTableMissing", "deployment app-green declares cutover-guard.dev/schema-tool goose but " + db + " has no goose table goose_db_version",
				"run app-green's migrations: goose up, then retry; or correct cutover-guard.dev/schema-tool (and the connection string) if the database is another's"}}},
		"a version that is not the tool's": {spec: spec(probe.ToolRails, "1", ""), state: probe.SchemaState{Version: "abc"},
			want: []verdict{{"SchemaUnreadable", `the rails table schema_migrations of ` + db + ` holds version "abc", which is not an unsigned integer version, e.g. 20240301120000`,
				"check that rails is the tool that migrates this database (cutover-guard.dev/schema-tool)"}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			st := tc.state
			st.Tool = tc.spec.tool
			fs := schemaVerdict(production, tc.spec, src, &st)
			var got []verdict
			for _, f := range fs {
				got = append(got, verdict{string(f.Reason), f.Message, f.Fix})
				if f.Check != CheckSchema || f.Severity != Deny || f.Object != "deployment app-green" {
					t.Errorf("finding %+v: want a schema denial of deployment app-green", f)
				}
				if diff := cmp.Diff([]ObjectRef{{Resource: "secrets", Namespace: "production", Name: "app-db"}}, f.Reveals); diff != "" || f.Source != "secret production/app-db key url" {
					t.Errorf("reveals (-want +got):\n%s source %q", diff, f.Source)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("verdicts (-want +got):\n%s", diff)
			}
		})
	}
}

// schemaPostgres creates a throwaway database on the machine's PostgreSQL
// (127.0.0.1:5432, trust) and returns its connection string and a handle.
func schemaPostgres(t *testing.T) (string, *sql.DB) {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "cg_gate_" + hex.EncodeToString(b[:])
	admin, err := sql.Open("pgx", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ExecContext(t.Context(), "CREATE DATABASE "+name); err != nil {
		_ = admin.Close()
		t.Skipf("no postgres server to create a database on: %v", err)
	}
	dsn := "postgres://postgres@127.0.0.1:5432/" + name + "?sslmode=disable"
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
		_ = admin.Close()
	})
	return dsn, db
}

// The gate through DatabaseReachable, against a real PostgreSQL: the
// string from a Secret, read by the workloads that declare a tool.
func TestSchemaGateDatabaseReachable(t *testing.T) {
	dsn, db := schemaPostgres(t)
	for _, st := range []string{
		"CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)",
		"INSERT INTO schema_migrations VALUES (4, false)",
	} {
		if _, err := db.ExecContext(t.Context(), st); err != nil {
			t.Fatal(err)
		}
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "app-db"}, Data: map[string][]byte{"url": []byte(dsn)}}
	p := probe.NewProber(probe.ProberOptions{PrivateCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, Ports: []uint16{5432}, PassTTL: -1})
	run := func(t *testing.T, deps ...appsv1.Deployment) []Finding {
		t.Helper()
		in := &Input{Reader: fake.NewClientBuilder().WithObjects(secret).Build(), Prober: p, Target: Target{Service: production}, Deployments: deps}
		f, err := DatabaseReachable(t.Context(), in)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	env := []corev1.EnvVar{fromSecret("DATABASE_URL", "app-db", "url", false)}
	gm := func(name, min, max string) appsv1.Deployment {
		a := map[string]string{AnnotationSchemaTool: "golang-migrate"}
		if min != "" {
			a[AnnotationSchemaMin] = min
		}
		if max != "" {
			a[AnnotationSchemaMax] = max
		}
		return deployment(name, a, container("app", env))
	}

	if f := run(t, deployment("app-green", nil, container("app", env))); len(f) != 0 {
		t.Errorf("no annotations: findings %v, want none", f)
	}
	if f := run(t, gm("app-green", "4", "6")); len(f) != 0 {
		t.Errorf("inside the range: findings %v, want none", f)
	}
	f := run(t, gm("app-green", "5", ""))
	if got := reasons(f); !cmp.Equal(got, []Reason{ReasonSchemaBehind}) {
		t.Fatalf("behind: reasons %v, want [SchemaBehind]: %v", got, f)
	}
	if want := []ObjectRef{{Resource: "secrets", Namespace: "production", Name: "app-db"}}; !cmp.Equal(f[0].Reveals, want) {
		t.Errorf("reveals %v, want %v", f[0].Reveals, want)
	}
	if strings.Contains(f[0].String(), dsn) {
		t.Errorf("the finding holds the connection string: %s", f[0])
	}
	// Two workloads on one string, different ranges: each is judged.
	f = run(t, gm("app-green", "5", ""), gm("app-blue", "1", "3"))
	if got := reasons(f); !cmp.Equal(got, []Reason{ReasonSchemaBehind, ReasonSchemaAhead}) {
		t.Errorf("two workloads: reasons %v, want [SchemaBehind SchemaAhead]: %v", got, f)
	}
	// Migrated: the denial goes (a pass is not reused here: PassTTL -1).
	if _, err := db.ExecContext(t.Context(), "UPDATE schema_migrations SET version = 5"); err != nil {
		t.Fatal(err)
	}
	if f := run(t, gm("app-green", "5", "")); len(f) != 0 {
		t.Errorf("after the migration: findings %v, want none", f)
	}
	// A bad annotation, and a declared tool with no string to read over.
	bad := deployment("app-green", map[string]string{AnnotationSchemaTool: "golang-migrate", AnnotationSchemaMin: "five"}, container("app", env))
	if got := reasons(run(t, bad)); !cmp.Equal(got, []Reason{ReasonSchemaAnnotationInvalid}) {
		t.Errorf("bad annotation: reasons %v", got)
	}
	none := deployment("app-green", map[string]string{AnnotationSchemaTool: "goose"}, container("app", nil))
	if got := reasons(run(t, none)); !cmp.Equal(got, []Reason{ReasonDatabaseURLNotFound, ReasonSchemaNoDatabase}) {
		t.Errorf("no connection string: reasons %v", got)
	}
	// The wrong tool: its table is missing.
	if got := reasons(run(t, deployment("app-green", map[string]string{AnnotationSchemaTool: "flyway"}, container("app", env)))); !cmp.Equal(got, []Reason{ReasonSchemaTableMissing}) {
		t.Errorf("missing table: reasons %v", got)
	}
}

// Whatever a namespace writes into the annotations, parsing ends with a
// spec whose values are bounded and printable, or a message, never a panic.
func FuzzParseSchemaSpec(f *testing.F) {
	for _, s := range [][3]string{
		{"golang-migrate", "5", "7"}, {"flyway", "2_1", "2.10"}, {"django", "shop.0002_x", ""},
		{"alembic", "ae1027a6acf,27c6a30d7c24", ""}, {"prisma", "20240201000000_add_email", "x"}, {"rails", "", "-1"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, tool, min, max string) {
		a := map[string]string{AnnotationSchemaTool: tool}
		if min != "" {
			a[AnnotationSchemaMin] = min
		}
		if max != "" {
			a[AnnotationSchemaMax] = max
		}
		w := schemaWorkload(a)
		s, msg := parseSchemaSpec(&w)
		if (s == nil) == (msg == "") {
			t.Fatalf("spec %v and message %q: want exactly one", s, msg)
		}
		if len(msg) > 1024 {
			t.Errorf("message of %d bytes", len(msg))
		}
		if s == nil {
			return
		}
		for _, v := range []string{s.min, s.max} {
			if len(v) > maxSchemaName {
				t.Errorf("value of %d bytes kept", len(v))
			}
			for _, r := range v {
				if r < 0x20 || r > 0x7e {
					t.Errorf("value %q kept with a character outside printable ASCII", v)
				}
			}
		}
	})
}
