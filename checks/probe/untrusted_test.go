package probe

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"
	"github.com/cutover-guard/cutover-guard/internal/testdb"
)

// A connection string naming a port outside the allowlist is denied before
// anything is resolved or dialled: the probe cannot scan ports.
func TestProbePortNotAllowed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepts atomic.Int32
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			_ = c.Close()
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	addr := ln.Addr().String()
	port := strconv.Itoa(int(portOf(t, addr)))

	var dials, lookups atomic.Int32
	tests := map[string]string{
		"a postgres url":                       "postgres://app:s3cret@" + addr + "/app",
		"a postgres url whose second host is":  "postgres://app:s3cret@127.0.0.1:5432," + addr + "/app",
		"a mysql url":                          "mysql://app:s3cret@" + addr + "/app",
		"a url without a user (only connects)": "postgres://" + addr + "/app",
		"a host name":                          "postgres://app:s3cret@db.internal:" + port + "/app",
	}
	for name, dsn := range tests {
		t.Run(name, func(t *testing.T) {
			p := NewProber(ProberOptions{
				PrivateCIDRs: loopback,
				Ports:        []uint16{6433, 5432, 6432},
				Resolver: func(ctx context.Context, host string) ([]netip.Addr, error) {
					lookups.Add(1)
					return probetest.FixedResolver("127.0.0.1")(ctx, host)
				},
				Dial: func(ctx context.Context, n, a string) (net.Conn, error) {
					dials.Add(1)
					return (&net.Dialer{}).DialContext(ctx, n, a)
				},
			})
			got := probeOutcome(t, p, dsn)
			want := denial(ReasonPortNotAllowed,
				"database port "+port+" is not one the guard probes (5432,6432-6433)",
				"use the database's port in "+secretSource+", or ask the platform team to add it to --database-ports")
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
			assertNoSecret(t, got, "s3cret")
		})
	}
	if n := dials.Load(); n != 0 {
		t.Errorf("%d dials for a port outside the allowlist, want none", n)
	}
	if n := accepts.Load(); n != 0 {
		t.Errorf("the listener accepted %d connections, want none", n)
	}
	if n := lookups.Load(); n != 0 {
		t.Errorf("%d lookups for a port outside the allowlist, want none", n)
	}
}

func TestPortsParseAndFormat(t *testing.T) {
	tests := map[string]struct {
		list    string
		want    string
		wantErr string
	}{
		"the defaults":                   {list: FormatPorts(DefaultDatabasePorts), want: "3306,5432,6432,25060-25061,26257"},
		"spaces, repeats and a range":    {list: " 5432, 3306,5432 ,20000-20002", want: "3306,5432,20000-20002"},
		"a port beyond 65535 is refused": {list: "5432,70000", wantErr: `"70000" is not a port or a range such as 20000-20100`},
		"port zero is refused":           {list: "0", wantErr: `"0" is not a port or a range such as 20000-20100`},
		"a backwards range is refused":   {list: "6000-5000", wantErr: `"6000-5000" is not a port or a range such as 20000-20100`},
		"an empty list is refused":       {list: " , ", wantErr: "name at least one port"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ports, err := ParsePorts(tc.list)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("ParsePorts(%q) error = %v, want %q", tc.list, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := FormatPorts(ports); got != tc.want {
				t.Errorf("FormatPorts(ParsePorts(%q)) = %q, want %q", tc.list, got, tc.want)
			}
		})
	}
}

// A value that decodes to a control character would end a log line or a
// protocol field early; the string is refused, naming the part.
func TestParseDSNRefusesDecodedControlCharacters(t *testing.T) {
	tests := map[string]struct{ dsn, part string }{
		"a newline in the postgres user":     {"postgres://app%0Aevil:pw@db:5432/app", "user name"},
		"a ^A in the postgres password":      {"postgres://app:p%01w@db:5432/app", "password"},
		"a carriage return in the database":  {"postgres://app:pw@db:5432/app%0D", "database name"},
		"a newline in the host":              {"postgres://app:pw@db%0A.internal:5432/app", "host"},
		"an escape in the query's user":      {"postgres://db:5432/app?user=a%1Bb", "user name"},
		"a newline in the mysql user":        {"mysql://app%0A:pw@db:3306/app", "user name"},
		"a DEL in the mysql password":        {"mysql://app:p%7Fw@db:3306/app", "password"},
		"a tab in the mysql database":        {"mysql://app:pw@db:3306/a%09pp", "database name"},
		"a C1 control in the mysql password": {"mysql://app:p%C2%85w@db:3306/app", "password"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := parseDSN(tc.dsn)
			want := "has a " + tc.part + " with control characters once %-decoded"
			if err == nil {
				t.Fatalf("parsed, want %q", want)
			}
			if err.reason != ReasonURLInvalid || err.message != want {
				t.Errorf("got %s %q, want %s %q", err.reason, err.message, ReasonURLInvalid, want)
			}
		})
	}
}

// Run-time parameters would make the server work for whoever wrote the
// string (work_mem, statement_timeout, search_path): none reach pgx.
func TestParseDSNDropsRuntimeParameters(t *testing.T) {
	d, err := parseDSN("postgres://app:pw@db:5432/app?options=-c%20work_mem%3D4GB&statement_timeout=0&search_path=x&target_session_attrs=read-write&sslmode=require")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{}, d.pg.RuntimeParams); diff != "" {
		t.Errorf("run-time parameters (-want +got):\n%s", diff)
	}
	if d.pg.ValidateConnect == nil {
		t.Error("target_session_attrs=read-write was dropped; it decides which server counts")
	}
	if d.tls != tlsRequire {
		t.Errorf("tls %v, want require", d.tls)
	}
}

// A pass is at most DefaultPassTTL old when it allows a switch: a database
// that passed and then stopped is denied on the next probe a second later,
// while the denial is remembered as backoff and says so.
func TestProbePassIsFresh(t *testing.T) {
	srv := testdb.StartPostgres(t, testdb.PostgresOptions{Password: pgPassword})
	dsn := srv.URL("postgresql", "sslmode=disable")
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var dials atomic.Int32
	p := NewProber(ProberOptions{PrivateCIDRs: loopback, Ports: []uint16{uint16(srv.Port)}, Timeout: 5 * time.Second, CacheTTL: DefaultCacheTTL,
		Dial: func(ctx context.Context, n, a string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, n, a)
		}})
	p.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }

	if got := probeOutcome(t, p, dsn); got != nil {
		t.Fatalf("first probe: %s, want a pass", got)
	}
	advance(500 * time.Millisecond)
	if got := probeOutcome(t, p, dsn); got != nil || dials.Load() != 1 {
		t.Fatalf("probe 0.5s later: %s after %d dials, want the pass reused", got, dials.Load())
	}

	srv.Stop(t)
	advance(1500 * time.Millisecond)
	notReachable := denial(ReasonConnectRefused, "database at "+srv.Addr()+" is not reachable",
		"check that the cluster is in the database's Trusted sources, and that "+secretSource+" names the database's private hostname and port")
	if diff := cmp.Diff(notReachable, probeOutcome(t, p, dsn)); diff != "" {
		t.Errorf("probe 2s after the pass, the database stopped (-want +got):\n%s", diff)
	}

	advance(3 * time.Second)
	remembered := *notReachable
	remembered.Message += " (checked 3s ago)"
	dialed := dials.Load()
	if diff := cmp.Diff(&remembered, probeOutcome(t, p, dsn)); diff != "" {
		t.Errorf("probe 3s after the denial (-want +got):\n%s", diff)
	}
	if n := dials.Load(); n != dialed {
		t.Errorf("%d dials for a remembered denial, want none", n-dialed)
	}
}

func TestNewProberPassTTL(t *testing.T) {
	tests := map[string]struct{ in, want time.Duration }{
		"zero is the default":      {0, DefaultPassTTL},
		"shorter is kept":          {200 * time.Millisecond, 200 * time.Millisecond},
		"longer is cut to 1s":      {time.Hour, DefaultPassTTL},
		"negative never reuses it": {-time.Second, -time.Second},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := NewProber(ProberOptions{PassTTL: tc.in}).passTTL; got != tc.want {
				t.Errorf("passTTL = %s, want %s", got, tc.want)
			}
		})
	}
}

// Refused, timed out and silent read the same to the requester; the cause
// is in Detail, for the guard's log only.
func TestProbeNotReachableHidesTheCause(t *testing.T) {
	blackhole := func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	tests := map[string]struct {
		dial       func(ctx context.Context, network, addr string) (net.Conn, error)
		wantReason Reason
		wantDetail string
	}{
		"refused":   {dial: probetest.RefuseDial, wantReason: ReasonConnectRefused, wantDetail: "connection refused"},
		"timed out": {dial: blackhole, wantReason: ReasonConnectTimeout, wantDetail: "no connection within 200ms"},
	}
	var messages []string
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := NewProber(ProberOptions{Timeout: 200 * time.Millisecond, Resolver: probetest.FixedResolver("10.0.0.5"), Dial: tc.dial})
			res, err := p.Probe(t.Context(), "postgres://app:s3cret@db.internal:5432/app")
			if err != nil {
				t.Fatal(err)
			}
			if res.Reason != tc.wantReason || res.Detail != tc.wantDetail {
				t.Errorf("reason %s, detail %q; want %s, %q", res.Reason, res.Detail, tc.wantReason, tc.wantDetail)
			}
			messages = append(messages, res.Message.Render(secretSource)+"; "+res.Fix.Render(secretSource))
		})
	}
	if len(messages) == 2 && messages[0] != messages[1] {
		t.Errorf("the requester can tell the causes apart:\n%s\n%s", messages[0], messages[1])
	}
}
