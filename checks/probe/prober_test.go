package probe

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"

	"github.com/go-sql-driver/mysql"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgconn"
)

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

func TestProbeConnectTimeout(t *testing.T) {
	p := NewProber(ProberOptions{Timeout: 300 * time.Millisecond, Resolver: probetest.FixedResolver("10.0.0.5")})
	p.dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done() // packets dropped by a firewall
		return nil, ctx.Err()
	}
	start := time.Now()
	got := probeOutcome(t, p, "postgres://app:pw@db.internal:5432/app")
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("probe took %s with a 300ms timeout", el)
	}
	want := denial(ReasonConnectTimeout,
		"database at db.internal:5432 is not reachable",
		"check that the cluster is in the database's Trusted sources, and that "+secretSource+" names the database's private hostname and port")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// A probe whose only caller gives up ends with it, so that nothing a
// decision started outlives its answer; a probe cut short is not cached.
// A probe that finishes is cached for the TTL.
func TestProbeHonoursCallerDeadlineAndCaches(t *testing.T) {
	release := make(chan struct{})
	var dials atomic.Int32
	dialEnded := make(chan struct{}, 1)
	obs := &observed{}
	now := time.Unix(1000, 0)
	var nowMu sync.Mutex
	p := NewProber(ProberOptions{Timeout: 5 * time.Second, CacheTTL: 10 * time.Second, Resolver: probetest.FixedResolver("10.0.0.5"), Observe: obs.observe})
	p.now = func() time.Time { nowMu.Lock(); defer nowMu.Unlock(); return now }
	p.dial = func(ctx context.Context, n, a string) (net.Conn, error) {
		if dials.Add(1) == 1 {
			<-ctx.Done() // the first probe is held until its caller gives up
			dialEnded <- struct{}{}
			return nil, ctx.Err()
		}
		<-release
		return probetest.RefuseDial(ctx, n, a)
	}
	const dsn = "postgres://app:pw@db.internal:5432/app?sslmode=disable" // one dial per probe

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if res, err := p.Probe(ctx, dsn); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("probe past the caller's deadline = %+v, %v; want the context's error", res, err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("caller waited %s past its 100ms deadline", el)
	}
	select {
	case <-dialEnded:
	case <-time.After(2 * time.Second):
		t.Fatal("the probe ran on after its only caller gave up")
	}
	if calls := obs.get(); len(calls) != 0 {
		t.Errorf("observations %+v for a caller that got no result, want none", calls)
	}
	close(release)

	if res, _ := p.Probe(t.Context(), dsn); res.Reason != ReasonConnectRefused {
		t.Fatalf("probe = %+v, want %s", res, ReasonConnectRefused)
	}
	_, _ = p.Probe(t.Context(), dsn)
	if n := dials.Load(); n != 2 {
		t.Errorf("%d dials, want 2 (the probe cut short is not cached; later probes reuse the next result)", n)
	}
	calls := obs.get()
	if last := calls[len(calls)-1]; last != (observation{ReasonConnectRefused, true}) {
		t.Errorf("last observation = %+v, want a cached refusal", last)
	}

	nowMu.Lock()
	now = now.Add(11 * time.Second)
	nowMu.Unlock()
	_, _ = p.Probe(t.Context(), dsn)
	if n := dials.Load(); n != 3 {
		t.Errorf("%d dials after the TTL, want 3", n)
	}
}

func TestProbeWithoutCache(t *testing.T) {
	for name, ttl := range map[string]time.Duration{"a zero TTL": 0, "a negative TTL": -time.Second} {
		t.Run(name, func(t *testing.T) {
			var dials atomic.Int32
			p := NewProber(ProberOptions{CacheTTL: ttl, Resolver: probetest.FixedResolver("10.0.0.5"),
				Dial: func(ctx context.Context, n, a string) (net.Conn, error) {
					dials.Add(1)
					return probetest.RefuseDial(ctx, n, a)
				}})
			for range 3 {
				_, _ = p.Probe(t.Context(), "postgres://app:pw@db.internal:5432/app?sslmode=disable")
			}
			if n := dials.Load(); n != 3 {
				t.Errorf("%d dials, want 3 with the cache off", n)
			}
		})
	}
}

func TestNewProberDefaults(t *testing.T) {
	p := NewProber(ProberOptions{})
	if p.timeout != DefaultTimeout || p.ttl != 0 {
		t.Errorf("timeout %s ttl %s, want the default timeout and no cache", p.timeout, p.ttl)
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
		got  Result
		want *outcome
	}{
		"postgres: a wrong password": {
			got: pgServerError(pg, &pgconn.PgError{Code: "28P01", Message: `password authentication failed for user "app"`}, stageConnect),
			want: denial(ReasonAuthFailed, "database at db:5432 rejected the password for user app",
				"check the password in "+secretSource),
		},
		"postgres: no pg_hba rule for plain text": {
			got: pgServerError(pg, &pgconn.PgError{Code: "28000", Message: `no pg_hba.conf entry for host "10.0.0.9", user "app", database "appdb", no encryption`}, stageConnect),
			want: denial(ReasonTLSRequired, "database at db:5432 has no rule for unencrypted connections of user app (sslmode=disable)",
				"set sslmode=require in "+secretSource),
		},
		"postgres: a missing database": {
			got: pgServerError(pg, &pgconn.PgError{Code: "3D000"}, stageConnect),
			want: denial(ReasonNotFound, "database appdb does not exist at db:5432",
				"create it, or fix the database name in "+secretSource),
		},
		"postgres: an unknown code is shown, the server's text is not": {
			got: pgServerError(pg, &pgconn.PgError{Code: "XX000", Message: "internal error with secret pw"}, stageConnect),
			want: denial(ReasonProbeFailed, "database at db:5432 refused the connection (SQLSTATE XX000)",
				"check the connection string in "+secretSource+" and the database's logs"),
		},
		"postgres: SELECT 1 failing": {
			got: pgServerError(pg, &pgconn.PgError{Code: "57014"}, stageQuery),
			want: denial(ReasonQueryFailed, "database at db:5432 accepted the login but SELECT 1 failed (SQLSTATE 57014)",
				"check the database's health"),
		},
		"mysql: access denied": {
			got: mysqlServerError(my, &mysql.MySQLError{Number: 1045}, stageConnect),
			want: denial(ReasonAuthFailed, "database at db:3306 rejected the password for user app",
				"check the password in "+secretSource),
		},
		"mysql: no access to the database, which may not exist": {
			got: mysqlServerError(my, &mysql.MySQLError{Number: 1044}, stageConnect),
			want: denial(ReasonAuthFailed, "database at db:3306 does not let user app use database appdb (or it does not exist)",
				"check the database name in "+secretSource+", or grant the user access to it"),
		},
		"mysql: secure transport required": {
			got: mysqlServerError(my, &mysql.MySQLError{Number: 3159}, stageConnect),
			want: denial(ReasonTLSRequired, "database at db:3306 requires TLS but the connection string disables it (default ssl-mode=PREFERRED)",
				"set ssl-mode=REQUIRED in "+secretSource),
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, rendered(tc.got)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestProbeRecoversFromPanicWithoutShowingIt(t *testing.T) {
	p := NewProber(ProberOptions{Resolver: probetest.FixedResolver("10.0.0.5")})
	p.dial = func(context.Context, string, string) (net.Conn, error) {
		panic("driver bug while handling postgres://app:Tr0ub4dor-pw@db.internal/app")
	}
	got := probeOutcome(t, p, "postgres://app:Tr0ub4dor-pw@db.internal:5432/app")
	want := denial(ReasonProbeFailed,
		"the database check of db.internal:5432 failed with an internal error",
		"retry; if this repeats, report it")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	assertNoSecret(t, got, "Tr0ub4dor-pw")
}
