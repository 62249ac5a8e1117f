package probe

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"

	"github.com/google/go-cmp/cmp"

	"github.com/cutover-guard/cutover-guard/internal/testdb"
)

// These tests probe real servers started by internal/testdb on loopback
// ports. Loopback is not a private range by default, so the probers here
// allow 127.0.0.1/32 only: 127.0.0.2 then stands for a public address. No
// test needs DNS.

// Passwords with every character the tutorial says to encode.
const (
	pgPassword    = "Pg-s3cr@t:pa/ss?#1"
	mysqlPassword = "My-s3cr@t:pa/ss?#1"
)

// withPassword returns dsn with its password replaced (and url-encoded).
func withPassword(t *testing.T, dsn, password string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), password)
	return u.String()
}

// withHost returns dsn with its host:port replaced.
func withHost(t *testing.T, dsn, hostport string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = hostport
	return u.String()
}

type integrationCase struct {
	dsn      string
	opts     ProberOptions // PrivateCIDRs default to loopback, Timeout to 5s, Ports to any
	want     *outcome      // nil: the probe passes
	within   time.Duration // if set, a hang detector: the check must end within this long (generous: the machine may be loaded)
	password string        // if set, must appear nowhere in the findings
}

func runIntegrationCases(t *testing.T, tests map[string]integrationCase) {
	t.Helper()
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if tc.opts.PrivateCIDRs == nil {
				tc.opts.PrivateCIDRs = loopback
			}
			if tc.opts.Timeout == 0 {
				tc.opts.Timeout = 5 * time.Second
			}
			if tc.opts.Ports == nil {
				tc.opts.Ports = probetest.AnyPort()
			}
			p := NewProber(tc.opts)
			start := time.Now()
			got := probeOutcome(t, p, tc.dsn)
			took := time.Since(start)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
			if tc.within > 0 && took > tc.within {
				t.Errorf("check took %s, want at most %s", took, tc.within)
			}
			if tc.password != "" {
				assertNoSecret(t, got, tc.password, url.QueryEscape(tc.password), url.PathEscape(tc.password), tc.dsn)
			}
		})
	}
}

func TestDatabaseIntegrationPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL server")
	}
	t.Parallel()
	srv := testdb.StartPostgres(t, testdb.PostgresOptions{Password: pgPassword})
	good := srv.URL("postgresql", "sslmode=disable")
	addr := srv.Addr()
	blackhole := testdb.Blackhole(t)
	closed := testdb.ClosedPort(t)
	_, port, _ := net.SplitHostPort(addr)

	runIntegrationCases(t, map[string]integrationCase{
		"a reachable database with an encoded password passes": {dsn: good},
		"the default sslmode=prefer falls back to plain text":  {dsn: srv.URL("postgres", "")},
		"a hostname is dialled at the address that was checked": {
			dsn:  withHost(t, good, "db.cutover-guard.test:"+port),
			opts: ProberOptions{Resolver: probetest.FixedResolver("127.0.0.1")},
		},
		"a wrong password names the secret to fix": {
			dsn:      withPassword(t, good, "Wrong-p@ss"),
			password: "Wrong-p@ss",
			want: denial(ReasonAuthFailed,
				"database at "+addr+" rejected the password for user postgres",
				"check the password in "+secretSource),
		},
		"a missing database": {
			dsn:      strings.Replace(good, "/app?", "/nosuchdb?", 1),
			password: pgPassword,
			want: denial(ReasonNotFound,
				"database nosuchdb does not exist at "+addr,
				"create it, or fix the database name in "+secretSource),
		},
		"sslmode=require against a server without TLS": {
			dsn:      srv.URL("postgresql", "sslmode=require"),
			password: pgPassword,
			want: denial(ReasonTLSUnavailable,
				"database at "+addr+" does not offer TLS but the connection string requires it (sslmode=require)",
				"enable TLS on the database, or change the TLS setting in "+secretSource),
		},
		"nothing listening": {
			dsn:      withHost(t, good, closed),
			password: pgPassword,
			want: denial(ReasonConnectRefused,
				"database at "+closed+" is not reachable",
				"check that the cluster is in the database's Trusted sources, and that "+secretSource+" names the database's private hostname and port"),
		},
		"a listener that never answers is denied within the timeout": {
			dsn:      withHost(t, good, blackhole),
			opts:     ProberOptions{Timeout: 500 * time.Millisecond},
			within:   10 * time.Second,
			password: pgPassword,
			want: denial(ReasonNoResponse,
				"database at "+blackhole+" is not reachable",
				"check that the cluster is in the database's Trusted sources, and that "+secretSource+" names the database's private hostname and port"),
		},
		"an un-encoded password gets the url-encoding hint": {
			dsn:      "postgresql://postgres:" + pgPassword + "@" + addr + "/app?sslmode=disable",
			password: pgPassword,
			want: denial(ReasonPasswordNotEncoded,
				"the database url in "+secretSource+" has a password with special characters that are not url-encoded",
				encodeHint),
		},
		"target_session_attrs=standby against a primary": {
			dsn:      srv.URL("postgresql", "sslmode=disable&target_session_attrs=standby"),
			password: pgPassword,
			want: denial(ReasonProbeFailed,
				"database at "+addr+" accepted the login but does not meet the connection string's target_session_attrs",
				"check target_session_attrs and the hosts in "+secretSource),
		},
		"a public address is denied before connecting": {
			dsn:      withHost(t, good, "127.0.0.2:"+port),
			password: pgPassword,
			want: denial(ReasonHostPublic,
				"database host 127.0.0.2 is not a private address",
				"use the database's private network hostname in "+secretSource+", or add its range to --private-cidrs"),
		},
		"a hostname resolving to a public address": {
			dsn:      withHost(t, good, "db.cutover-guard.test:"+port),
			opts:     ProberOptions{Resolver: probetest.FixedResolver("127.0.0.1", "127.0.0.2")},
			password: pgPassword,
			want: denial(ReasonHostPublic,
				"database host db.cutover-guard.test resolves to 127.0.0.2, which is not a private address",
				"use the database's private network hostname in "+secretSource+", or add its range to --private-cidrs"),
		},
		"the DigitalOcean public hostname is denied without DNS": {
			dsn: withHost(t, good, "db-postgresql-nyc1-12345.db.ondigitalocean.com:25060"),
			opts: ProberOptions{Resolver: func(context.Context, string) ([]netip.Addr, error) {
				t.Error("resolver called for a DigitalOcean public hostname")
				return nil, fmt.Errorf("no DNS in tests")
			}},
			password: pgPassword,
			want: denial(ReasonHostPublic,
				"database host db-postgresql-nyc1-12345.db.ondigitalocean.com is the public hostname",
				"use the private hostname private-db-postgresql-nyc1-12345.db.ondigitalocean.com from the Private network tab in "+secretSource),
		},
	})

	t.Run("a second probe within the TTL reuses the result", func(t *testing.T) {
		proxy := testdb.StartProxy(t, addr)
		obs := &observed{}
		p := NewProber(ProberOptions{PrivateCIDRs: loopback, Ports: probetest.AnyPort(), Timeout: 5 * time.Second, CacheTTL: DefaultCacheTTL, Observe: obs.observe})
		dsn := withHost(t, good, proxy.Addr)
		for range 2 {
			if got := probeOutcome(t, p, dsn); got != nil {
				t.Fatalf("outcome: %v", got)
			}
		}
		if n := proxy.Accepts(); n != 1 {
			t.Errorf("server saw %d connections, want 1", n)
		}
		want := []observation{{ReasonReachable, false}, {ReasonReachable, true}}
		if diff := cmp.Diff(want, obs.get()); diff != "" {
			t.Errorf("observations (-want +got):\n%s", diff)
		}
	})

	t.Run("50 concurrent identical probes share one connection", func(t *testing.T) {
		proxy := testdb.StartProxy(t, addr)
		obs := &observed{}
		release := make(chan struct{})
		var dialer net.Dialer
		p := NewProber(ProberOptions{PrivateCIDRs: loopback, Ports: probetest.AnyPort(), Timeout: 10 * time.Second, CacheTTL: DefaultCacheTTL, Observe: obs.observe,
			Dial: func(ctx context.Context, network, a string) (net.Conn, error) {
				<-release // hold the first probe until every caller has started
				return dialer.DialContext(ctx, network, a)
			}})
		dsn := withHost(t, good, proxy.Addr)
		var started atomic.Int32
		var wg sync.WaitGroup
		outcomes := make([]*outcome, 50)
		for i := range outcomes {
			wg.Go(func() {
				started.Add(1)
				outcomes[i] = probeOutcome(t, p, dsn)
			})
		}
		for deadline := time.Now().Add(10 * time.Second); started.Load() < 50 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond) // poll
		}
		close(release)
		wg.Wait()
		for i, o := range outcomes {
			if o != nil {
				t.Errorf("caller %d: outcome %v", i, o)
			}
		}
		if n := proxy.Accepts(); n != 1 {
			t.Errorf("server saw %d connections, want 1", n)
		}
		fresh := 0
		calls := obs.get()
		for _, o := range calls {
			if !o.Cached {
				fresh++
			}
		}
		if len(calls) != 50 || fresh != 1 {
			t.Errorf("%d observations, %d not cached; want 50 and 1", len(calls), fresh)
		}
	})
}

func TestDatabaseIntegrationPostgresTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL server")
	}
	t.Parallel()
	srv := testdb.StartPostgres(t, testdb.PostgresOptions{Password: pgPassword, TLS: true})
	addr := srv.Addr()
	runIntegrationCases(t, map[string]integrationCase{
		"sslmode=require against a TLS server passes": {dsn: srv.URL("postgresql", "sslmode=require")},
		"a CA file in the app's pod does not stop the check, and the chain is not verified": {
			dsn:  srv.URL("postgresql", "sslmode=verify-full&sslrootcert=/etc/app/ca.crt"),
			want: &outcome{Reason: ReasonReachable, ChainNotVerified: true},
		},
		"sslmode=disable is fine when the server allows it": {dsn: srv.URL("postgresql", "sslmode=disable")},
		"a wrong password over TLS is an authentication error": {
			dsn:      withPassword(t, srv.URL("postgresql", "sslmode=require"), "Wrong-p@ss"),
			password: "Wrong-p@ss",
			want: denial(ReasonAuthFailed,
				"database at "+addr+" rejected the password for user postgres",
				"check the password in "+secretSource),
		},
		"verify-full against a self-signed certificate": {
			dsn:      srv.URL("postgresql", "sslmode=verify-full"),
			password: pgPassword,
			want: denial(ReasonTLSFailed,
				"the TLS handshake with database at "+addr+" failed: the server certificate is not signed by a trusted authority (sslmode=verify-full)",
				"check the TLS setting in "+secretSource+" and the server certificate"),
		},
	})
}

// The MySQL driver's TLS goes through the probe's splice (mysqltls.go):
// against a real MariaDB with TLS, a login passes, a wrong password is the
// server's own answer over TLS, and certificate verification is the
// connection string's, not the splice's.
func TestDatabaseIntegrationMariaDBTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a MariaDB server")
	}
	t.Parallel()
	srv := testdb.StartMariaDB(t, testdb.MariaDBOptions{Password: mysqlPassword, TLS: true})
	addr := srv.Addr()
	runIntegrationCases(t, map[string]integrationCase{
		"ssl-mode=REQUIRED against a TLS server passes": {dsn: srv.URL("mysql", "ssl-mode=REQUIRED")},
		"TLS preferred (the default) passes":            {dsn: srv.URL("mysql", "")},
		"a wrong password over TLS is an authentication error": {
			dsn:      withPassword(t, srv.URL("mysql", "ssl-mode=REQUIRED"), "Wrong-p@ss"),
			password: "Wrong-p@ss",
			want: denial(ReasonAuthFailed,
				"database at "+addr+" rejected the password for user app",
				"check the password in "+secretSource),
		},
		"VERIFY_IDENTITY against a self-signed certificate": {
			dsn:      srv.URL("mysql", "ssl-mode=VERIFY_IDENTITY"),
			password: mysqlPassword,
			want: denial(ReasonTLSFailed,
				"the TLS handshake with database at "+addr+" failed: the server certificate is not signed by a trusted authority (ssl-mode=VERIFY_IDENTITY)",
				"check the TLS setting in "+secretSource+" and the server certificate"),
		},
	})
}

func TestDatabaseIntegrationMariaDB(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a MariaDB server")
	}
	t.Parallel()
	srv := testdb.StartMariaDB(t, testdb.MariaDBOptions{Password: mysqlPassword})
	good := srv.URL("mysql", "")
	addr := srv.Addr()
	blackhole := testdb.Blackhole(t)
	runIntegrationCases(t, map[string]integrationCase{
		"a reachable database passes":    {dsn: good},
		"ssl-mode=DISABLED passes":       {dsn: srv.URL("mysql", "ssl-mode=DISABLED")},
		"the golang-migrate form passes": {dsn: strings.Replace(good, "@"+addr, "@tcp("+addr+")", 1)},
		"a wrong password names the secret to fix": {
			dsn:      withPassword(t, good, "Wrong-p@ss"),
			password: "Wrong-p@ss",
			want: denial(ReasonAuthFailed,
				"database at "+addr+" rejected the password for user app",
				"check the password in "+secretSource),
		},
		"a missing database": {
			dsn:      strings.TrimSuffix(good, "/app") + "/nosuchdb",
			password: mysqlPassword,
			want: denial(ReasonNotFound,
				"database nosuchdb does not exist at "+addr,
				"create it, or fix the database name in "+secretSource),
		},
		"ssl-mode=REQUIRED against a server without TLS": {
			dsn:      srv.URL("mysql", "ssl-mode=REQUIRED"),
			password: mysqlPassword,
			want: denial(ReasonTLSUnavailable,
				"database at "+addr+" does not offer TLS but the connection string requires it (ssl-mode=REQUIRED)",
				"enable TLS on the database, or change the TLS setting in "+secretSource),
		},
		"a listener that never answers is denied within the timeout": {
			dsn:      withHost(t, good, blackhole),
			opts:     ProberOptions{Timeout: 500 * time.Millisecond},
			within:   10 * time.Second,
			password: mysqlPassword,
			want: denial(ReasonNoResponse,
				"database at "+blackhole+" is not reachable",
				"check that the cluster is in the database's Trusted sources, and that "+secretSource+" names the database's private hostname and port"),
		},
		"an un-encoded password gets the url-encoding hint": {
			dsn:      "mysql://app:" + mysqlPassword + "@" + addr + "/app",
			password: mysqlPassword,
			want: denial(ReasonPasswordNotEncoded,
				"the database url in "+secretSource+" has a password with special characters that are not url-encoded",
				encodeHint),
		},
	})
}
