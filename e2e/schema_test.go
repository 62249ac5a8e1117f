package e2e_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for golang-migrate
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// The README's expand/contract release through kubectl, with the real
// golang-migrate writing its table in a throwaway database on the local
// PostgreSQL, which blue and green share through the tutorial's Secret:
//
//	1 create users(name)     blue runs on 1..2
//	2 expand: add email      green runs on 2..3
//	3 contract: drop name
//	4 a migration that fails (dirty)
//
// The cutover is denied before green's migration and allowed after; the
// rollback is allowed while blue's range covers the schema and denied once
// the contract ran; a dirty state is denied until repaired.
func TestSchemaGateExpandContract(t *testing.T) {
	e := setup(t)
	e.reset(t, world{greenReady: true})

	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "cg_e2e_schema_" + hex.EncodeToString(b[:])
	admin, err := sql.Open("pgx", "postgres://postgres@"+localPostgres+"/postgres?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ExecContext(t.Context(), "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", "postgres://postgres@"+localPostgres+"/"+name+"?sslmode=disable")
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
	src, err := iofs.New(fstest.MapFS{
		"1_users.up.sql":       {Data: []byte("CREATE TABLE users (id INT PRIMARY KEY, name TEXT)")},
		"1_users.down.sql":     {Data: []byte("DROP TABLE users")},
		"2_email.up.sql":       {Data: []byte("ALTER TABLE users ADD COLUMN email TEXT")},
		"2_email.down.sql":     {Data: []byte("ALTER TABLE users DROP COLUMN email")},
		"3_drop_name.up.sql":   {Data: []byte("ALTER TABLE users DROP COLUMN name")},
		"3_drop_name.down.sql": {Data: []byte("ALTER TABLE users ADD COLUMN name TEXT")},
		"4_broken.up.sql":      {Data: []byte("ALTER TABLE no_such_table ADD COLUMN x INT")},
		"4_broken.down.sql":    {Data: []byte("SELECT 1")},
	}, ".")
	if err != nil {
		t.Fatal(err)
	}
	drv, err := migratepgx.WithInstance(db, &migratepgx.Config{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx", drv)
	if err != nil {
		t.Fatal(err)
	}
	step := func(n int) error { return m.Steps(n) }
	if err := step(1); err != nil {
		t.Fatal(err)
	}

	// Blue and green read the one Secret: now the throwaway database.
	if err := tutorial.SetSecret(t.Context(), e.kube, tutorial.Namespace,
		"postgresql://postgres@"+localPostgres+"/"+name+"?sslmode=require"); err != nil {
		t.Fatal(err)
	}
	annotate := func(deployment string, kv ...string) {
		t.Helper()
		args := append([]string{"annotate", "deployment", deployment, "-n", tutorial.Namespace, "--overwrite"}, kv...)
		if r := e.kubectl().Run(t.Context(), args...); !r.OK() {
			t.Fatal(r)
		}
	}
	annotate(tutorial.Blue, "cutover-guard.dev/schema-tool=golang-migrate", "cutover-guard.dev/schema-min=1", "cutover-guard.dev/schema-max=2")
	annotate(tutorial.Green, "cutover-guard.dev/schema-tool=golang-migrate", "cutover-guard.dev/schema-min=2", "cutover-guard.dev/schema-max=3")
	t.Cleanup(func() {
		// The next test's reset replaces the Deployments; this keeps the
		// Secret from pointing at a dropped database meanwhile.
		_ = tutorial.SetSecret(context.Background(), e.kube, tutorial.Namespace, postgresDSN)
	})

	// A pass, with the schema state it read, is reused for up to a
	// second: a verdict right after a migration may still be the one
	// before. Each switch is first tried with --dry-run=server (checked
	// alike, changing nothing) until its verdict is the expected one, with
	// a deadline; then it is made for real and must get that verdict.
	const src0 = "the database in secret production/db-credentials key url"
	settle := func(cmd string, deny bool, want []string) {
		t.Helper()
		err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 15*time.Second, true, func(context.Context) (bool, error) {
			r := e.kubectl().Shell(t.Context(), cmd+" --dry-run=server")
			if deny {
				return r.Denied() && containsAll(r.Output, want), nil
			}
			return r.OK(), nil
		})
		if err != nil {
			t.Logf("the dry run never got the expected verdict: %v", err)
		}
	}
	denied := func(cmd string, want ...string) {
		t.Helper()
		settle(cmd, true, want)
		requireDenied(t, e.sh(t, cmd), tutorial.HTTPRouteWebhook, want...)
	}
	allowed := func(cmd string) {
		t.Helper()
		settle(cmd, false, nil)
		requireOutput(t, e.sh(t, cmd), tutorial.PatchedOutput)
	}

	// Before green's migration: denied, with the fix.
	denied(tutorial.CutoverCommand,
		"service production/app-green: deployment app-green needs 2 (cutover-guard.dev/schema-min) but the golang-migrate schema of "+src0+" is at version 1; "+
			"run app-green's migrations: migrate -path <dir> -database <url> up, then retry")
	e.checkBackend(t, tutorial.Blue)

	// The expand step: both colors run on it.
	if err := step(1); err != nil {
		t.Fatal(err)
	}
	allowed(tutorial.CutoverCommand)
	e.checkBackend(t, tutorial.Green)
	allowed(tutorial.RollbackCommand)
	e.checkBackend(t, tutorial.Blue)
	allowed(tutorial.CutoverCommand)
	e.checkBackend(t, tutorial.Green)

	// The contract step: blue would break.
	if err := step(1); err != nil {
		t.Fatal(err)
	}
	denied(tutorial.RollbackCommand,
		"service production/app-blue: deployment app-blue runs on schemas up to 2 (cutover-guard.dev/schema-max) but the golang-migrate schema of "+src0+" is at 3: its code would break on it; "+
			"keep the traffic where it is and roll forward instead; switching back to app-blue needs the schema migrated down to 2 first")
	e.checkBackend(t, tutorial.Green)

	// A migration that fails leaves golang-migrate dirty: denied (blue's
	// range is lifted, so that the dirty flag alone denies).
	annotate(tutorial.Blue, "cutover-guard.dev/schema-max-")
	if err := step(1); err == nil {
		t.Fatal("migration 4 applied; want it to fail")
	}
	denied(tutorial.RollbackCommand,
		"service production/app-blue: the golang-migrate schema of "+src0+" is dirty at version 4: a migration failed halfway; "+
			"repair the schema by hand, mark it (migrate force 4, or the version before)")
	e.checkBackend(t, tutorial.Green)
	if err := m.Force(3); err != nil {
		t.Fatal(err)
	}
	allowed(tutorial.RollbackCommand)
	e.checkBackend(t, tutorial.Blue)

	// Nothing of the connection string reached the denials.
	for _, r := range e.transcript.Runs() {
		if strings.Contains(r.Output, "postgresql://") {
			t.Errorf("a connection string in kubectl's output:\n%s", r.Output)
		}
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
