package probe

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"
	"github.com/cutover-guard/cutover-guard/internal/faultproxy"
	"github.com/cutover-guard/cutover-guard/internal/testdb"
	"github.com/cutover-guard/cutover-guard/internal/testenv"
)

// These tests put internal/faultproxy between the prober and a real
// database: the local PostgreSQL (127.0.0.1:5432, trust authentication,
// database test) and MariaDB (127.0.0.1:3306, root without a password,
// database test), or a throwaway server from internal/testdb where the test
// stops it. Each fault must end in its own denial, and the probe must return:
// every probe runs under a hang detector of three times its timeout (or
// more), which is not a timing assertion. Nothing leaves loopback; the DNS
// server is the test's own.

// leakUser is a login made for the connection-leak test, so that its
// server-side connections can be told from everyone else's. The local
// servers' addresses, localPostgres and localMariaDB, are the benchmarks'.
const leakUser = "cutover_guard_leak"

// faultTimeout is the probe budget of the fault cases: faults that never
// answer are denied after it.
const faultTimeout = 500 * time.Millisecond

// requireLocal ends the test (testenv.Unavailable) when nothing listens at
// addr.
func requireLocal(t *testing.T, addr string) {
	t.Helper()
	if testing.Short() {
		t.Skip("uses the local database servers")
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		testenv.Unavailable(t, "no database server at %s (start the local PostgreSQL and MariaDB, see .ci/run): %v", addr, err)
		return
	}
	_ = c.Close()
}

func startFaultProxy(t *testing.T, target string, o faultproxy.Options) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	p.Set(o)
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close the fault proxy: %v", err)
		}
	})
	return p
}

// probeReturns probes dsn (as if from secretSource) and fails the test if
// the probe has not returned after hang.
func probeReturns(t *testing.T, p *Prober, dsn string, hang time.Duration) *outcome {
	t.Helper()
	done := make(chan *outcome, 1)
	go func() { done <- probeOutcome(t, p, dsn) }()
	select {
	case f := <-done:
		return f
	case <-time.After(hang):
		t.Fatalf("the probe did not return within %s", hang)
		return nil
	}
}

// faultCase is one fault in front of a database. want is the denial's
// reason; messages are the acceptable messages (more than one only where
// the outcome depends on which of two packets the kernel sees first), with
// %s standing for the proxy's address.
type faultCase struct {
	fault    faultproxy.Options
	query    string // PostgreSQL connection string parameters
	want     Reason
	messages []string
	fix      string
}

// runFaultCases probes dsnFor(proxy address, query) through a fault proxy in
// front of target for each case.
func runFaultCases(t *testing.T, target string, dsnFor func(addr, query string) string, tests map[string]faultCase) {
	t.Helper()
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			verifyNoLeaks(t)
			proxy := startFaultProxy(t, target, tc.fault)
			p := NewProber(ProberOptions{PrivateCIDRs: loopback, Ports: probetest.AnyPort(), Timeout: faultTimeout})
			f := probeReturns(t, p, dsnFor(proxy.Addr(), tc.query), 3*faultTimeout+5*time.Second)
			if f == nil {
				t.Fatalf("the probe passed, want a %s denial", tc.want)
			}
			if f.Reason != tc.want {
				t.Errorf("reason %s, want %s: %s", f.Reason, tc.want, f.Message)
			}
			// A message that carries its own fix ("message; fix") is
			// one of several outcomes with different fixes.
			var want []string
			for _, m := range tc.messages {
				if !strings.Contains(m, "; ") {
					m += "; " + tc.fix
				}
				want = append(want, strings.ReplaceAll(m, "%s", proxy.Addr()))
			}
			if got := f.Message + "; " + f.Fix; !slices.Contains(want, got) {
				t.Errorf("outcome %q, want one of %q", got, want)
			}
		})
	}
}

func postgresVia(addr, query string) string {
	return "postgresql://postgres@" + addr + "/test?" + query
}

func mariaDBVia(addr, _ string) string { return "mysql://root@" + addr + "/test" }

const (
	// Every failure before the server said a word reads the same.
	wantNotReachable = "database at %s is not reachable"
	notReachableFix  = "check that the cluster is in the database's Trusted sources, and that " + secretSource + " names the database's private hostname and port"
	noResponse       = wantNotReachable
	noResponseFix    = notReachableFix
	resetFix         = "retry; if this repeats, check the database's logs and any proxy or firewall between the cluster and %s"
	resetOpen        = wantNotReachable + "; " + notReachableFix
	resetTLS         = "database at %s reset the connection during the TLS handshake"
	resetLogin       = "database at %s reset the connection during the login"
)

func TestFaultsPostgres(t *testing.T) {
	requireLocal(t, localPostgres)
	runFaultCases(t, localPostgres, postgresVia, map[string]faultCase{
		"a server that never answers is denied for no response": {
			fault: faultproxy.Options{Fault: faultproxy.Blackhole}, query: "sslmode=disable",
			want: ReasonNoResponse, messages: []string{noResponse}, fix: noResponseFix,
		},
		"a server that never answers the TLS request is denied for no response": {
			fault: faultproxy.Options{Fault: faultproxy.Blackhole}, query: "sslmode=require",
			want: ReasonNoResponse, messages: []string{noResponse}, fix: noResponseFix,
		},
		"a reset before the server sent a byte": {
			fault: faultproxy.Options{Fault: faultproxy.ResetAfter}, query: "sslmode=disable",
			want: ReasonConnectionReset, messages: []string{resetOpen}, fix: resetFix,
		},
		"a reset right after the server agreed to TLS": {
			fault: faultproxy.Options{Fault: faultproxy.ResetAfter, ResetAfterBytes: 1}, query: "sslmode=require",
			want: ReasonConnectionReset, messages: []string{resetTLS}, fix: resetFix,
		},
		"a reset in the middle of the server's certificate": {
			fault: faultproxy.Options{Fault: faultproxy.ResetAfter, ResetAfterBytes: 200}, query: "sslmode=require",
			want: ReasonConnectionReset, messages: []string{resetTLS}, fix: resetFix,
		},
		"a reset in the middle of the authentication answer": {
			fault: faultproxy.Options{Fault: faultproxy.ResetAfter, ResetAfterBytes: 4}, query: "sslmode=disable",
			want: ReasonConnectionReset, messages: []string{resetLogin}, fix: resetFix,
		},
		"a reset among the startup parameters": {
			fault: faultproxy.Options{Fault: faultproxy.ResetAfter, ResetAfterBytes: 40}, query: "sslmode=disable",
			want: ReasonConnectionReset, messages: []string{resetLogin}, fix: resetFix,
		},
		"latency above the timeout is denied for no response": {
			fault: faultproxy.Options{Fault: faultproxy.Delay, Delay: 4 * faultTimeout}, query: "sslmode=disable",
			want: ReasonNoResponse, messages: []string{noResponse}, fix: noResponseFix,
		},
		"latency above the timeout during TLS is denied for no response": {
			fault: faultproxy.Options{Fault: faultproxy.Delay, Delay: 4 * faultTimeout}, query: "sslmode=require",
			want: ReasonNoResponse, messages: []string{noResponse}, fix: noResponseFix,
		},
	})
}

func TestFaultsMariaDB(t *testing.T) {
	requireLocal(t, localMariaDB)
	// MariaDB speaks first: its greeting and the proxy's reset can reach the
	// client before its connect has returned, and then the driver sees only
	// the reset.
	runFaultCases(t, localMariaDB, mariaDBVia, map[string]faultCase{
		"a server that never answers is denied for no response": {
			fault: faultproxy.Options{Fault: faultproxy.Blackhole},
			want:  ReasonNoResponse, messages: []string{noResponse}, fix: noResponseFix,
		},
		"a reset before the server sent a byte": {
			fault: faultproxy.Options{Fault: faultproxy.ResetAfter},
			want:  ReasonConnectionReset, messages: []string{resetOpen}, fix: notReachableFix,
		},
		"a reset in the middle of the greeting": {
			fault: faultproxy.Options{Fault: faultproxy.ResetAfter, ResetAfterBytes: 4},
			want:  ReasonConnectionReset, messages: []string{resetLogin, resetOpen}, fix: resetFix,
		},
		"a reset after the greeting, in the authentication answer": {
			fault: faultproxy.Options{Fault: faultproxy.ResetAfter, ResetAfterBytes: 0x70},
			want:  ReasonConnectionReset, messages: []string{resetLogin, resetOpen}, fix: resetFix,
		},
		"latency above the timeout is denied for no response": {
			fault: faultproxy.Options{Fault: faultproxy.Delay, Delay: 4 * faultTimeout},
			want:  ReasonNoResponse, messages: []string{noResponse}, fix: noResponseFix,
		},
	})
}

func TestFaultsLatencyBelowTimeoutPasses(t *testing.T) {
	for name, tc := range map[string]struct {
		target string
		dsn    string
	}{
		"postgres": {localPostgres, postgresVia("%s", "sslmode=disable")},
		"mariadb":  {localMariaDB, mariaDBVia("%s", "")},
	} {
		t.Run(name, func(t *testing.T) {
			requireLocal(t, tc.target)
			verifyNoLeaks(t)
			proxy := startFaultProxy(t, tc.target, faultproxy.Options{Fault: faultproxy.Delay, Delay: 100 * time.Millisecond})
			p := NewProber(ProberOptions{PrivateCIDRs: loopback, Ports: probetest.AnyPort(), Timeout: 10 * time.Second})
			if got := probeReturns(t, p, strings.ReplaceAll(tc.dsn, "%s", proxy.Addr()), 30*time.Second); got != nil {
				t.Errorf("outcome %v, want a pass", got)
			}
			if n := proxy.Accepted(); n != 1 {
				t.Errorf("the proxy saw %d connections, want 1", n)
			}
		})
	}
}

// establishedTo counts this network namespace's established TCP
// connections to a local port, from /proc/net/tcp.
func establishedTo(t *testing.T, port int) int {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	want := fmt.Sprintf(":%04X", port)
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 3 && strings.HasSuffix(fields[2], want) && fields[3] == "01" {
			n++
		}
	}
	return n
}

func TestFaultsServerRestartDuringProbe(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a PostgreSQL server")
	}
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("needs /proc/net/tcp to see the proxy's connection to the server")
	}
	verifyNoLeaks(t)
	srv := testdb.StartPostgres(t, testdb.PostgresOptions{Password: pgPassword})
	// The proxy holds the probe's first bytes, well inside the probe's
	// timeout, for longer than the server can take to stop (Stop kills it
	// after 10 s): the server goes away while the probe waits, and the probe
	// ends as soon as it has gone, not when the hold ends. A shorter hold
	// could hand the startup message to a server still shutting down, which
	// answers 57P03 instead.
	proxy := startFaultProxy(t, srv.Addr(), faultproxy.Options{Fault: faultproxy.Delay, Delay: 15 * time.Second})
	p := NewProber(ProberOptions{PrivateCIDRs: loopback, Ports: probetest.AnyPort(), Timeout: 30 * time.Second})
	dsn := withHost(t, srv.URL("postgresql", "sslmode=disable"), proxy.Addr())

	done := make(chan *outcome, 1)
	go func() { done <- probeOutcome(t, p, dsn) }()
	poll(t, "the proxy connected to the server for the probe", func() bool {
		return proxy.Open() == 1 && establishedTo(t, srv.Port) == 1
	})
	srv.Stop(t)
	var got *outcome
	select {
	case got = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the probe did not return after the server stopped")
	}
	want := denial(ReasonConnectionClosed,
		"database at "+proxy.Addr()+" is not reachable",
		"check that the cluster is in the database's Trusted sources, and that "+secretSource+" names the database's private hostname and port")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("outcome while the server restarts (-want +got):\n%s", diff)
	}

	srv.Start(t)
	proxy.Set(faultproxy.Options{})
	if got := probeReturns(t, p, dsn, 30*time.Second); got != nil {
		t.Errorf("outcome after the server is back on port %d: %v, want a pass", srv.Port, got)
	}
}

// poll waits until cond holds, failing the test after 30 s.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !eventually(t.Context(), 10*time.Millisecond, 30*time.Second, cond) {
		t.Fatalf("%s: not within 30s", what)
	}
}

// eventually checks cond every interval until it holds (true) or timeout or
// ctx ends (false).
func eventually(ctx context.Context, interval, timeout time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

func TestFaultsUnresolvableHost(t *testing.T) {
	const host = "db-green.private.cutover-guard.test"
	tests := map[string]struct {
		answer      bool
		wantMessage string
		wantFix     string
	}{
		"a name that does not exist (NXDOMAIN)": {
			answer:      true,
			wantMessage: "database host " + host + " does not resolve",
			wantFix:     "check the host in " + secretSource,
		},
		"a DNS server that never answers": {
			answer:      false,
			wantMessage: "database host " + host + " did not resolve within 500ms",
			wantFix:     "check the cluster's DNS, and the host in " + secretSource,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			verifyNoLeaks(t)
			srv := testdb.StartDNS(t, tc.answer)
			p := NewProber(ProberOptions{PrivateCIDRs: loopback, Ports: probetest.AnyPort(), Timeout: faultTimeout, Resolver: srv.Resolver()})
			got := probeReturns(t, p, "postgresql://postgres:"+pgPasswordEncoded+"@"+host+":5432/test?sslmode=disable", 3*faultTimeout+5*time.Second)
			want := denial(ReasonHostUnresolvable, tc.wantMessage, tc.wantFix)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
			if !srv.Asked(host) {
				t.Errorf("the test's DNS server was not asked for %s (%d queries)", host, srv.Queries())
			}
			assertNoSecret(t, got, pgPassword, pgPasswordEncoded)
		})
	}
}

// pgPasswordEncoded is pgPassword as it appears in a URL.
var pgPasswordEncoded = strings.TrimPrefix(url.UserPassword("postgres", pgPassword).String(), "postgres:")

// leakCounter counts one login's connections as the database server sees
// them, through an administrative connection of the test's own.
type leakCounter func(ctx context.Context) (int, error)

func postgresLeakCounter(t *testing.T) leakCounter {
	t.Helper()
	admin, err := pgconn.Connect(t.Context(), "postgresql://postgres@"+localPostgres+"/test?sslmode=disable")
	if err != nil {
		t.Fatalf("connect to the local PostgreSQL: %v", err)
	}
	t.Cleanup(func() { _ = admin.Close(context.Background()) })
	// Roles are cluster-wide; creating one that exists is not an error here.
	create := "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '" + leakUser + "') THEN CREATE ROLE " + leakUser + " LOGIN; END IF; END $$"
	if _, err := admin.Exec(t.Context(), create).ReadAll(); err != nil {
		t.Fatalf("create role %s: %v", leakUser, err)
	}
	return func(ctx context.Context) (int, error) {
		res := admin.ExecParams(ctx, "SELECT count(*) FROM pg_stat_activity WHERE client_addr = '127.0.0.1' AND backend_type = 'client backend' AND usename = $1",
			[][]byte{[]byte(leakUser)}, nil, nil, nil).Read()
		if res.Err != nil {
			return 0, res.Err
		}
		return strconv.Atoi(string(res.Rows[0][0]))
	}
}

func mariaDBLeakCounter(t *testing.T) leakCounter {
	t.Helper()
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName = "root", "tcp", localMariaDB, "test"
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { _ = db.Close() })
	for _, stmt := range []string{
		"CREATE USER IF NOT EXISTS '" + leakUser + "'@'127.0.0.1'",
		"GRANT SELECT ON test.* TO '" + leakUser + "'@'127.0.0.1'",
	} {
		if _, err := db.ExecContext(t.Context(), stmt); err != nil {
			t.Fatalf("prepare user %s: %v", leakUser, err)
		}
	}
	return func(ctx context.Context) (int, error) {
		var n int
		err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ?", leakUser).Scan(&n)
		return n, err
	}
}

// leakFault is one kind of probe in the connection-leak mix.
type leakFault struct {
	fault faultproxy.Options
	query string
	// slow faults are denied at the timeout, as DatabaseNoResponse; on a
	// starved machine the timeout can also strike before the connect
	// returned (DatabaseConnectTimeout). Either way the probe ends.
	slow bool
	want Reason // for a fault that is not slow; "" for a probe that passes
}

func repeat(f leakFault, n int) []leakFault {
	out := make([]leakFault, n)
	for i := range out {
		out[i] = f
	}
	return out
}

func TestLeakThousandProbes(t *testing.T) {
	tests := map[string]struct {
		target  string
		dsn     func(addr, query string) string
		counter func(t *testing.T) leakCounter
		mix     []leakFault
	}{
		"postgres": {
			target: localPostgres, counter: postgresLeakCounter,
			dsn: func(addr, query string) string { return "postgresql://" + leakUser + "@" + addr + "/test?" + query },
			mix: append(repeat(leakFault{query: "sslmode=disable"}, 14),
				leakFault{query: "sslmode=require"},
				leakFault{fault: faultproxy.Options{Fault: faultproxy.ResetAfter}, query: "sslmode=disable", want: ReasonConnectionReset},
				leakFault{fault: faultproxy.Options{Fault: faultproxy.ResetAfter, ResetAfterBytes: 40}, query: "sslmode=disable", want: ReasonConnectionReset},
				leakFault{fault: faultproxy.Options{Fault: faultproxy.ResetAfter, ResetAfterBytes: 200}, query: "sslmode=require", want: ReasonConnectionReset},
				leakFault{fault: faultproxy.Options{Fault: faultproxy.Blackhole}, query: "sslmode=disable", slow: true},
				leakFault{fault: faultproxy.Options{Fault: faultproxy.Delay, Delay: time.Second}, query: "sslmode=disable", slow: true},
			),
		},
		"mariadb": {
			target: localMariaDB, counter: mariaDBLeakCounter,
			dsn: func(addr, _ string) string { return "mysql://" + leakUser + "@" + addr + "/test" },
			mix: append(repeat(leakFault{}, 15),
				leakFault{fault: faultproxy.Options{Fault: faultproxy.ResetAfter}, want: ReasonConnectionReset},
				leakFault{fault: faultproxy.Options{Fault: faultproxy.ResetAfter, ResetAfterBytes: 4}, want: ReasonConnectionReset},
				leakFault{fault: faultproxy.Options{Fault: faultproxy.ResetAfter, ResetAfterBytes: 0x70}, want: ReasonConnectionReset},
				leakFault{fault: faultproxy.Options{Fault: faultproxy.Blackhole}, slow: true},
				leakFault{fault: faultproxy.Options{Fault: faultproxy.Delay, Delay: time.Second}, slow: true},
			),
		},
	}
	const probes, workers = 1000, 8
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			requireLocal(t, tc.target)
			verifyNoLeaks(t)
			count := tc.counter(t)
			baseline, err := count(t.Context())
			if err != nil {
				t.Fatalf("count connections: %v", err)
			}
			// Each worker has its own proxies, so no two probes in flight
			// share a connection string (and a singleflight attempt).
			proxies := make([][]*faultproxy.Proxy, workers)
			for w := range proxies {
				for _, m := range tc.mix {
					proxies[w] = append(proxies[w], startFaultProxy(t, tc.target, m.fault))
				}
			}
			fast := NewProber(ProberOptions{PrivateCIDRs: loopback, Ports: probetest.AnyPort(), Timeout: 10 * time.Second})
			slow := NewProber(ProberOptions{PrivateCIDRs: loopback, Ports: probetest.AnyPort(), Timeout: 300 * time.Millisecond})

			start := time.Now()
			var passed, denied atomic.Int64
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for i := w; i < probes; i += workers {
						k := (i / workers) % len(tc.mix)
						m, proxy := tc.mix[k], proxies[w][k]
						p := fast
						if m.slow {
							p = slow
						}
						got := probeReturns(t, p, tc.dsn(proxy.Addr(), m.query), 30*time.Second)
						switch {
						case m.want == "" && got == nil:
							passed.Add(1)
						case m.want != "" && got != nil && got.Reason == m.want,
							m.slow && got != nil && (got.Reason == ReasonNoResponse || got.Reason == ReasonConnectTimeout):
							denied.Add(1)
						default:
							t.Errorf("probe %d (%v): outcome %v, want %q", i, m.fault.Fault, got, m.want)
							return
						}
					}
				})
			}
			wg.Wait()
			t.Logf("%d probes (%d passed, %d denied) in %s", probes, passed.Load(), denied.Load(), time.Since(start).Round(time.Millisecond))
			if passed.Load()+denied.Load() != probes || passed.Load() == 0 || denied.Load() == 0 {
				t.Fatalf("%d passed and %d denied of %d probes", passed.Load(), denied.Load(), probes)
			}

			var accepted int64
			for _, ps := range proxies {
				for _, proxy := range ps {
					accepted += proxy.Accepted()
				}
			}
			if accepted != probes {
				for k, m := range tc.mix {
					var n int64
					for w := range proxies {
						n += proxies[w][k].Accepted()
					}
					t.Logf("kind %d %v %d %q: %d", k, m.fault.Fault, m.fault.ResetAfterBytes, m.query, n)
				}
				t.Errorf("the proxies accepted %d connections for %d probes, want one each", accepted, probes)
			}
			poll(t, "every connection through the proxies closed", func() bool {
				for _, ps := range proxies {
					for _, proxy := range ps {
						if proxy.Open() != 0 {
							return false
						}
					}
				}
				return true
			})
			var last int
			if !eventually(t.Context(), 20*time.Millisecond, 30*time.Second, func() bool {
				last, err = count(t.Context())
				return err == nil && last == baseline
			}) {
				t.Errorf("the server holds %d connections of %s, want the baseline %d: %v", last, leakUser, baseline, err)
			}
		})
	}
}

func TestFaultsNoDialOutsideAProbe(t *testing.T) {
	tr := &dialTracker{dialFn: func(context.Context, string, string) (net.Conn, error) {
		t.Error("a connection outside a probe reached the dialer")
		return nil, errNotProbe
	}}
	if _, err := tr.dial(t.Context(), "tcp", localPostgres); !errors.Is(err, errNotProbe) {
		t.Errorf("dial outside a probe: %v, want %v", err, errNotProbe)
	}
	if st := tr.state(); st.connected != 0 {
		t.Errorf("%d connections counted, want 0", st.connected)
	}
}

func TestFaultsServerShuttingDownDuringLogin(t *testing.T) {
	pg, perr := parseDSN("postgresql://app@10.0.0.5:5432/app")
	if perr != nil {
		t.Fatal(perr.message)
	}
	my, perr := parseDSN("mysql://app@10.0.0.6:3306/app")
	if perr != nil {
		t.Fatal(perr.message)
	}
	tests := map[string]struct {
		got  Result
		want *outcome
	}{
		"postgres ends the session for a shutdown (57P01)": {
			got: pgServerError(pg, &pgconn.PgError{Code: "57P01"}, stageConnect),
			want: denial(ReasonConnectionClosed,
				"database at 10.0.0.5:5432 ended the login because it is shutting down or restarting (SQLSTATE 57P01)",
				"retry once the database is up"),
		},
		"postgres ends the session after a crash of another backend (57P02)": {
			got: pgServerError(pg, &pgconn.PgError{Code: "57P02"}, stageConnect),
			want: denial(ReasonConnectionClosed,
				"database at 10.0.0.5:5432 ended the login because it is shutting down or restarting (SQLSTATE 57P02)",
				"retry once the database is up"),
		},
		"mariadb refuses the login while shutting down (1053)": {
			got: mysqlServerError(my, &mysql.MySQLError{Number: 1053}, stageConnect),
			want: denial(ReasonConnectionClosed,
				"database at 10.0.0.6:3306 ended the login because it is shutting down (mysql error 1053)",
				"retry once the database is up"),
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
