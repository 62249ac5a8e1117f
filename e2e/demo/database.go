package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cutover-guard/cutover-guard/internal/testdb"
)

// dbEnv chooses the database: "local" (127.0.0.1:5432 only), "throwaway",
// or unset (local if it answers, else throwaway).
const dbEnv = "CUTOVER_GUARD_DEMO_DB"

// database is the database green's pods are said to use.
type database struct {
	// dsn is the connection string for the Secret.
	dsn string
	// shown is dsn with any password hidden, for printing.
	shown string
	stop  func()
}

// startDatabase uses the local PostgreSQL (trust authentication, database
// test) if it answers, else starts a throwaway one with a random password.
func startDatabase(ctx context.Context, printf func(string, ...any)) (*database, error) {
	choice := os.Getenv(dbEnv)
	if choice != "throwaway" {
		for _, dsn := range []string{
			"postgresql://postgres@127.0.0.1:5432/test?sslmode=require",
			"postgresql://postgres@127.0.0.1:5432/test?sslmode=disable",
		} {
			if answers(ctx, dsn) {
				printf("Using the local PostgreSQL at 127.0.0.1:5432 (database test).\n")
				return &database{dsn: dsn, shown: dsn, stop: func() {}}, nil
			}
		}
		if choice == "local" {
			return nil, fmt.Errorf("%s=local, but the PostgreSQL at 127.0.0.1:5432 does not accept user postgres on database test", dbEnv)
		}
	}
	printf("Starting a throwaway PostgreSQL ...\n")
	pw := make([]byte, 12)
	if _, err := rand.Read(pw); err != nil {
		return nil, err
	}
	t := &testingAdapter{name: "demo", logf: func(string, ...any) {}}
	var srv *testdb.Server
	if err := t.do(func() {
		srv = testdb.StartPostgres(t, testdb.PostgresOptions{Password: "demo-" + hex.EncodeToString(pw)})
	}); err != nil {
		t.cleanup()
		return nil, fmt.Errorf("throwaway PostgreSQL: %w", err)
	}
	dsn := srv.URL("postgresql", "sslmode=disable")
	u, _ := url.Parse(dsn)
	u.User = url.UserPassword(srv.User, "xxxxx")
	printf("  listening on %s (user %s, database %s; password not shown).\n", srv.Addr(), srv.User, srv.Database)
	return &database{dsn: dsn, shown: u.String(), stop: t.cleanup}, nil
}

// answers reports whether dsn logs in and answers.
func answers(ctx context.Context, dsn string) bool {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return false
	}
	defer func() { _ = conn.Close(context.Background()) }()
	_, err = conn.Exec(ctx, "SELECT 1").ReadAll()
	return err == nil
}

// testingAdapter lets the demo, which is not a test, start servers with
// internal/testdb: it keeps their cleanups, and turns Fatal and Skip into an
// error returned by do. It implements the testing.TB methods testdb calls;
// the embedded interface is nil, so any other would panic.
type testingAdapter struct {
	testing.TB
	name     string
	logf     func(string, ...any)
	cleanups []func()
	failed   bool
}

// stopTest is the panic value of Fatal and Skip.
type stopTest struct{ msg string }

// do runs f, returning the message of a Fatal or Skip as an error.
func (t *testingAdapter) do(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s, ok := r.(stopTest)
			if !ok {
				panic(r)
			}
			err = errors.New(s.msg)
		}
	}()
	f()
	return nil
}

// cleanup runs the registered cleanups, last first.
func (t *testingAdapter) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}

func (t *testingAdapter) Helper()                         {}
func (t *testingAdapter) Name() string                    { return t.name }
func (t *testingAdapter) Cleanup(f func())                { t.cleanups = append(t.cleanups, f) }
func (t *testingAdapter) Log(args ...any)                 { t.logf("%s", fmt.Sprint(args...)) }
func (t *testingAdapter) Logf(format string, args ...any) { t.logf(format, args...) }
func (t *testingAdapter) Error(args ...any)               { t.failed = true; t.logf("%s", fmt.Sprint(args...)) }
func (t *testingAdapter) Errorf(format string, args ...any) {
	t.failed = true
	t.logf(format, args...)
}
func (t *testingAdapter) Fail()                        { t.failed = true }
func (t *testingAdapter) Failed() bool                 { return t.failed }
func (t *testingAdapter) FailNow()                     { panic(stopTest{"failed"}) }
func (t *testingAdapter) Fatal(args ...any)            { panic(stopTest{fmt.Sprint(args...)}) }
func (t *testingAdapter) Fatalf(f string, args ...any) { panic(stopTest{fmt.Sprintf(f, args...)}) }
func (t *testingAdapter) Skip(args ...any)             { panic(stopTest{fmt.Sprint(args...)}) }
func (t *testingAdapter) Skipf(f string, args ...any)  { panic(stopTest{fmt.Sprintf(f, args...)}) }
func (t *testingAdapter) SkipNow()                     { panic(stopTest{"skipped"}) }
func (t *testingAdapter) Context() context.Context     { return context.Background() }
func (t *testingAdapter) TempDir() string {
	d, _ := os.MkdirTemp("", "cutover-guard-demo-db-")
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}
