package probe

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"
	"github.com/cutover-guard/cutover-guard/internal/testdb"
	"github.com/cutover-guard/cutover-guard/internal/testenv"
)

// The local servers every developer and CI machine runs (see .ci/run).
const (
	localPostgres     = "127.0.0.1:5432"
	localMariaDB      = "127.0.0.1:3306"
	localPostgresDSN  = "postgresql://postgres@" + localPostgres + "/test?sslmode=disable"
	localMariaDBDSN   = "mysql://root@" + localMariaDB + "/test"
	benchProbeTimeout = 5 * time.Second
)

// benchProber probes loopback servers; a zero ttl turns the cache off.
func benchProber(ttl time.Duration) *Prober {
	return NewProber(ProberOptions{PrivateCIDRs: loopback, Ports: probetest.AnyPort(), Timeout: benchProbeTimeout, CacheTTL: ttl})
}

// needReachable skips the benchmark when the local server does not answer.
func needReachable(b *testing.B, dsn string) {
	b.Helper()
	if r, err := benchProber(0).Probe(b.Context(), dsn); err != nil || !r.Passed() {
		testenv.Unavailable(b, "the local database is needed (%s): %s", r.Reason, r.Message.Render("the benchmark"))
	}
}

func benchProbe(b *testing.B, p *Prober, dsn string) {
	b.Helper()
	needReachable(b, dsn)
	b.ReportAllocs()
	for b.Loop() {
		if r, err := p.Probe(b.Context(), dsn); err != nil || !r.Passed() {
			b.Fatalf("probe: %s: %s (%v)", r.Reason, r.Message.Render("the benchmark"), err)
		}
	}
}

// BenchmarkProbeColdPostgres is one uncached database check against the
// local PostgreSQL: TCP connect, startup and authentication, SELECT 1, close.
func BenchmarkProbeColdPostgres(b *testing.B) { benchProbe(b, benchProber(0), localPostgresDSN) }

// BenchmarkProbeColdMariaDB is the same against the local MariaDB.
func BenchmarkProbeColdMariaDB(b *testing.B) { benchProbe(b, benchProber(0), localMariaDBDSN) }

// BenchmarkProbeCached is a database check answered from the cache.
func BenchmarkProbeCached(b *testing.B) { benchProbe(b, benchProber(time.Hour), localPostgresDSN) }

// BenchmarkDriverConnectPostgres is the floor under BenchmarkProbeColdPostgres:
// the driver alone connects, runs SELECT 1 and closes.
func BenchmarkDriverConnectPostgres(b *testing.B) {
	needReachable(b, localPostgresDSN)
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithTimeout(b.Context(), benchProbeTimeout)
		conn, err := pgconn.Connect(ctx, localPostgresDSN)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
			b.Fatal(err)
		}
		if err := conn.Close(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
}

// BenchmarkDriverConnectMariaDB is the floor under BenchmarkProbeColdMariaDB.
func BenchmarkDriverConnectMariaDB(b *testing.B) {
	needReachable(b, localMariaDBDSN)
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName = "root", "tcp", localMariaDB, "test"
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithTimeout(b.Context(), benchProbeTimeout)
		conn, err := connector.Connect(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := conn.(interface{ Ping(context.Context) error }).Ping(ctx); err != nil {
			b.Fatal(err)
		}
		if err := conn.Close(); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
}

// benchShared runs, per iteration, 50 concurrent probes of one connection
// string (the database checks of 50 switches to one target) against a fresh
// Prober, through a TCP proxy that counts the connections reaching the
// server. It reports them as conns/op and fails unless every iteration
// opened exactly one.
func benchShared(b *testing.B, server, scheme, userAndDB string) {
	const switches = 50
	proxy := testdb.StartProxy(b, server)
	dsn := scheme + "://" + userAndDB[:indexByte(userAndDB, '/')] + "@" + proxy.Addr + userAndDB[indexByte(userAndDB, '/'):]
	needReachable(b, dsn)
	b.ReportAllocs()
	start := proxy.Accepts()
	iterations := 0
	for b.Loop() {
		iterations++
		p := benchProber(DefaultCacheTTL)
		before := proxy.Accepts()
		var wg sync.WaitGroup
		failed := make(chan Reason, switches)
		for range switches {
			wg.Go(func() {
				if r, err := p.Probe(b.Context(), dsn); err != nil || !r.Passed() {
					failed <- r.Reason
				}
			})
		}
		wg.Wait()
		close(failed)
		for r := range failed {
			b.Fatalf("probe failed: %s", r)
		}
		if n := proxy.Accepts() - before; n != 1 {
			b.Fatalf("%d concurrent checks of one target opened %d connections, want 1", switches, n)
		}
	}
	b.ReportMetric(float64(proxy.Accepts()-start)/float64(iterations), "conns/op")
	b.ReportMetric(switches, "switches/op")
}

func indexByte(s string, c byte) int {
	for i := range len(s) {
		if s[i] == c {
			return i
		}
	}
	return len(s)
}

// BenchmarkProbeShared50Postgres is 50 concurrent switches to one target
// whose database (the local PostgreSQL) nobody checked yet: they share one
// probe, one server connection.
func BenchmarkProbeShared50Postgres(b *testing.B) {
	benchShared(b, localPostgres, "postgresql", "postgres/test?sslmode=disable")
}

// BenchmarkProbeShared50MariaDB is the same against the local MariaDB.
func BenchmarkProbeShared50MariaDB(b *testing.B) {
	benchShared(b, localMariaDB, "mysql", "root/test")
}

// The probes a switch pays with fresh passes, per driver and login: a
// throwaway server of the benchmark's own with password authentication
// (scram-sha-256 for PostgreSQL), with and without TLS. The setup (initdb
// and start, a few seconds) is not timed.

// BenchmarkProbeColdPostgresScram is one uncached check of a PostgreSQL
// that asks for a scram-sha-256 password.
func BenchmarkProbeColdPostgresScram(b *testing.B) {
	srv := testdb.StartPostgres(b, testdb.PostgresOptions{})
	benchProbe(b, benchProber(0), srv.URL("postgresql", "sslmode=disable"))
}

// BenchmarkProbeColdPostgresTLS is the same over TLS (sslmode=require).
func BenchmarkProbeColdPostgresTLS(b *testing.B) {
	srv := testdb.StartPostgres(b, testdb.PostgresOptions{TLS: true})
	benchProbe(b, benchProber(0), srv.URL("postgresql", "sslmode=require"))
}

// BenchmarkProbeColdMariaDBPassword is one uncached check of a MariaDB user
// with a password (mysql_native_password).
func BenchmarkProbeColdMariaDBPassword(b *testing.B) {
	srv := testdb.StartMariaDB(b, testdb.MariaDBOptions{})
	benchProbe(b, benchProber(0), srv.URL("mysql", ""))
}
