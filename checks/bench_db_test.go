package checks

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/cutover-guard/cutover-guard/internal/testdb"
)

// The local servers every developer and CI machine runs (see .ci/run).
const (
	localPostgres     = "127.0.0.1:5432"
	localMariaDB      = "127.0.0.1:3306"
	localPostgresDSN  = "postgresql://postgres@" + localPostgres + "/test?sslmode=disable"
	localMariaDBDSN   = "mysql://root@" + localMariaDB + "/test"
	benchProbeTimeout = 5 * time.Second
)

// benchProber probes loopback servers; ttl < 0 turns the cache off.
func benchProber(ttl time.Duration) *Prober {
	return NewProber(ProberOptions{PrivateCIDRs: loopback, Timeout: benchProbeTimeout, CacheTTL: ttl})
}

// needReachable skips the benchmark when the local server does not answer.
func needReachable(b *testing.B, dsn string) {
	b.Helper()
	if r := benchProber(-1).probe(b.Context(), dsn); !r.passed() {
		b.Skipf("the local database is needed (%s): %s", r.reason, r.message)
	}
}

func benchProbe(b *testing.B, p *Prober, dsn string) {
	b.Helper()
	needReachable(b, dsn)
	b.ReportAllocs()
	for b.Loop() {
		if r := p.probe(b.Context(), dsn); !r.passed() {
			b.Fatalf("probe: %s: %s", r.reason, r.message)
		}
	}
}

// BenchmarkProbeColdPostgres is one uncached database check against the
// local PostgreSQL: TCP connect, startup and authentication, SELECT 1, close.
func BenchmarkProbeColdPostgres(b *testing.B) { benchProbe(b, benchProber(-1), localPostgresDSN) }

// BenchmarkProbeColdMariaDB is the same against the local MariaDB.
func BenchmarkProbeColdMariaDB(b *testing.B) { benchProbe(b, benchProber(-1), localMariaDBDSN) }

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

// benchShared runs, per iteration, 50 concurrent database checks of one
// target (one connection string) against a fresh Prober, through a TCP proxy
// that counts the connections reaching the server. It reports them as
// conns/op and fails unless every iteration opened exactly one.
func benchShared(b *testing.B, server, scheme, userAndDB string) {
	const switches = 50
	proxy := testdb.StartProxy(b, server)
	dsn := scheme + "://" + userAndDB[:indexByte(userAndDB, '/')] + "@" + proxy.Addr + userAndDB[indexByte(userAndDB, '/'):]
	needReachable(b, dsn)
	reader := fake.NewClientBuilder().Build()
	deps := []appsv1.Deployment{deployment("app-green", nil, container("app", []corev1.EnvVar{literal("DATABASE_URL", dsn)}))}
	b.ReportAllocs()
	start := proxy.Accepts()
	iterations := 0
	for b.Loop() {
		iterations++
		p := benchProber(DefaultDatabaseCacheTTL)
		before := proxy.Accepts()
		var wg sync.WaitGroup
		failed := make(chan []Finding, switches)
		for range switches {
			wg.Go(func() {
				if f := DatabaseReachable(b.Context(), reader, p, production, deps, nil); len(f) > 0 {
					failed <- f
				}
			})
		}
		wg.Wait()
		close(failed)
		for f := range failed {
			b.Fatalf("check failed: %+v", f)
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
