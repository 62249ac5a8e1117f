package checks

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Reasons of the database check. Each failure stage has its own; all but
// ReasonDatabaseURLNotFound and ReasonDatabaseNoUser (warnings) deny.
// ReasonDatabaseReachable never appears in a Finding: it is what Observe
// reports for a probe that passed.
const (
	ReasonDatabaseURLNotFound        Reason = "DatabaseURLNotFound"
	ReasonDatabaseNoUser             Reason = "DatabaseNoUser"
	ReasonDatabaseSecretNotFound     Reason = "DatabaseSecretNotFound"
	ReasonDatabaseConfigMapNotFound  Reason = "DatabaseConfigMapNotFound"
	ReasonDatabaseSourceUnreadable   Reason = "DatabaseSourceUnreadable"
	ReasonDatabaseURLInvalid         Reason = "DatabaseURLInvalid"
	ReasonDatabaseSchemeUnsupported  Reason = "DatabaseSchemeUnsupported"
	ReasonDatabasePasswordNotEncoded Reason = "DatabasePasswordNotEncoded"
	ReasonDatabaseHostPublic         Reason = "DatabaseHostPublic"
	ReasonDatabaseHostUnresolvable   Reason = "DatabaseHostUnresolvable"
	ReasonDatabaseConnectTimeout     Reason = "DatabaseConnectTimeout"
	ReasonDatabaseConnectRefused     Reason = "DatabaseConnectRefused"
	ReasonDatabaseUnreachable        Reason = "DatabaseUnreachable"
	ReasonDatabaseNoResponse         Reason = "DatabaseNoResponse"
	ReasonDatabaseConnectionReset    Reason = "DatabaseConnectionReset"
	ReasonDatabaseConnectionClosed   Reason = "DatabaseConnectionClosed"
	ReasonDatabaseTLSUnavailable     Reason = "DatabaseTLSUnavailable"
	ReasonDatabaseTLSRequired        Reason = "DatabaseTLSRequired"
	ReasonDatabaseTLSFailed          Reason = "DatabaseTLSFailed"
	ReasonDatabaseAuthFailed         Reason = "DatabaseAuthFailed"
	ReasonDatabaseNotFound           Reason = "DatabaseNotFound"
	ReasonDatabaseQueryFailed        Reason = "DatabaseQueryFailed"
	ReasonDatabaseProbeFailed        Reason = "DatabaseProbeFailed"
	ReasonDatabaseCheckTimeout       Reason = "DatabaseCheckTimeout"
	ReasonDatabaseReachable          Reason = "DatabaseReachable"
)

const (
	// DefaultDatabaseURLEnv is the environment variable looked for when no
	// names are configured.
	DefaultDatabaseURLEnv = "DATABASE_URL"
	// AnnotationDatabaseURLEnv on a Deployment names, comma-separated, the
	// environment variables holding its connection strings. It replaces the
	// configured names for that Deployment; an empty value turns the database
	// check off for it.
	AnnotationDatabaseURLEnv = "cutover-guard.dev/database-url-env"

	// DefaultDatabaseTimeout bounds one probe (--db-timeout).
	DefaultDatabaseTimeout = 2 * time.Second
	// DefaultDatabaseCacheTTL is how long a probe result is reused.
	DefaultDatabaseCacheTTL = 10 * time.Second
)

// DefaultPrivateCIDRs returns the ranges a database address must lie in by
// default (--private-cidrs): RFC 1918, RFC 6598 shared address space and IPv6
// unique local addresses.
func DefaultPrivateCIDRs() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("100.64.0.0/10"),
		netip.MustParsePrefix("fc00::/7"),
	}
}

// ProberOptions configures a Prober. Zero fields take the defaults.
type ProberOptions struct {
	// PrivateCIDRs are the ranges every address of a database host must lie
	// in. Default DefaultPrivateCIDRs().
	PrivateCIDRs []netip.Prefix
	// Timeout bounds one probe, from name resolution to SELECT 1.
	// Default DefaultDatabaseTimeout.
	Timeout time.Duration
	// CacheTTL is how long a probe result is reused for the same connection
	// string. Default DefaultDatabaseCacheTTL; negative disables the cache.
	CacheTTL time.Duration
	// Resolver looks up a host name. Default net.DefaultResolver.
	Resolver func(ctx context.Context, host string) ([]netip.Addr, error)
	// Observe, if set, is called once per probe request with its outcome
	// (one of the bounded Database* reasons), whether the result was reused
	// (from the cache or another caller's probe in flight), and how long the
	// caller waited. It must be safe for concurrent use.
	Observe func(result Reason, cached bool, d time.Duration)
}

// Prober checks that a connection string leads to a database that answers.
// Results are cached briefly, keyed by a SHA-256 of the connection string,
// and concurrent probes of the same string share one connection attempt.
// A Prober is safe for concurrent use.
type Prober struct {
	private []netip.Prefix
	timeout time.Duration
	ttl     time.Duration
	resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	observe func(result Reason, cached bool, d time.Duration)
	// dial opens TCP connections; tests replace it.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	now  func() time.Time

	group singleflight.Group
	mu    sync.Mutex
	cache map[[sha256.Size]byte]cacheEntry
}

type cacheEntry struct {
	res     probeResult
	expires time.Time
}

// NewProber returns a Prober with o's settings.
func NewProber(o ProberOptions) *Prober {
	p := &Prober{
		private: slices.Clone(o.PrivateCIDRs),
		timeout: o.Timeout,
		ttl:     o.CacheTTL,
		resolve: o.Resolver,
		observe: o.Observe,
		dial:    (&net.Dialer{}).DialContext,
		now:     time.Now,
		cache:   map[[sha256.Size]byte]cacheEntry{},
	}
	if len(p.private) == 0 {
		p.private = DefaultPrivateCIDRs()
	}
	if p.timeout <= 0 {
		p.timeout = DefaultDatabaseTimeout
	}
	if p.ttl == 0 {
		p.ttl = DefaultDatabaseCacheTTL
	}
	if p.resolve == nil {
		p.resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	return p
}

// Timeout is the budget of one probe.
func (p *Prober) Timeout() time.Duration { return p.timeout }

// srcPlaceholder stands for where a connection string came from in a cached
// probeResult; printable() quotes any name containing a NUL, so it cannot
// clash with a host or user name.
const srcPlaceholder = "\x00src\x00"

// probeResult is the outcome of probing one connection string, independent of
// where the string came from (so it can be cached and shared).
type probeResult struct {
	severity Severity
	reason   Reason
	// message and fix may contain srcPlaceholder.
	message string
	fix     string
}

func (r probeResult) passed() bool { return r.reason == ReasonDatabaseReachable }

func deny(reason Reason, message, fix string) probeResult {
	return probeResult{severity: Deny, reason: reason, message: message, fix: fix}
}

// probe runs the checks on one connection string, or reuses a recent or
// in-flight result. It returns when the probe ends or ctx does, whichever is
// first.
func (p *Prober) probe(ctx context.Context, raw string) (res probeResult) {
	start := time.Now()
	cached := false
	defer func() {
		if p.observe != nil {
			p.observe(res.reason, cached, time.Since(start))
		}
	}()

	// The cache is consulted before parsing: only a string that parsed is
	// ever cached, and parsing a postgres URL reads files (pgpass, service
	// file), which cost a cached answer most of its time.
	key := sha256.Sum256([]byte(raw))
	if r, ok := p.lookupCache(key); ok {
		cached = true
		return r
	}
	d, perr := parseDSN(raw)
	if perr != nil {
		return probeResult{
			severity: Deny,
			reason:   perr.reason,
			message:  "the database url in " + srcPlaceholder + " " + perr.message,
			fix:      perr.fix,
		}
	}
	var ran atomic.Bool // this caller's probe went to the database
	ch := p.group.DoChan(string(key[:]), func() (v any, _ error) {
		// singleflight would re-raise a panic on a fresh goroutine, ending
		// the process, and its value may hold the connection string.
		defer func() {
			if recover() != nil {
				v = deny(ReasonDatabaseProbeFailed,
					fmt.Sprintf("the database check of %s failed with an internal error", d.addr()),
					"retry; if this repeats, report it")
			}
		}()
		// Checked again here: a probe that finished between our lookup
		// and DoChan has stored its result.
		if r, ok := p.lookupCache(key); ok {
			return r, nil
		}
		ran.Store(true)
		// The result is shared and cached: it must not depend on one
		// caller's deadline, only on p.timeout.
		r := p.run(context.WithoutCancel(ctx), d)
		p.storeCache(key, r)
		return r, nil
	})
	select {
	case out := <-ch:
		cached = !ran.Load()
		return out.Val.(probeResult)
	case <-ctx.Done():
		return deny(ReasonDatabaseCheckTimeout,
			fmt.Sprintf("the database check of %s did not finish before the request deadline", d.addr()),
			"retry the update; if this repeats, raise the webhook's timeoutSeconds or lower --db-timeout")
	}
}

func (p *Prober) lookupCache(key [sha256.Size]byte) (probeResult, bool) {
	if p.ttl < 0 {
		return probeResult{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.cache[key]
	if !ok || !p.now().Before(e.expires) {
		return probeResult{}, false
	}
	return e.res, true
}

func (p *Prober) storeCache(key [sha256.Size]byte, r probeResult) {
	if p.ttl < 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if len(p.cache) >= 128 {
		for k, e := range p.cache {
			if !now.Before(e.expires) {
				delete(p.cache, k)
			}
		}
	}
	p.cache[key] = cacheEntry{res: r, expires: now.Add(p.ttl)}
}

// run probes d in order: host private, TCP connect, TLS, authentication,
// database exists, SELECT 1. The first failure ends it.
func (p *Prober) run(ctx context.Context, d *dsn) probeResult {
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, probeDial{}, true), p.timeout)
	defer cancel()

	addrs, res, ok := p.checkHosts(ctx, d)
	if !ok {
		return res
	}
	t := &dialTracker{dialFn: p.dial}
	if d.user == "" {
		return p.reachableOnly(ctx, d, t, addrs)
	}
	var err error
	var stage string
	switch d.driver {
	case driverPostgres:
		stage, err = p.connectPostgres(ctx, d, t, addrs)
	case driverMySQL:
		stage, err = p.connectMySQL(ctx, d, t, addrs)
	}
	if err == nil {
		return probeResult{reason: ReasonDatabaseReachable}
	}
	return p.classify(ctx, d, t, stage, err)
}

// checkHosts resolves every host of d and requires each address to be
// private. A DigitalOcean public hostname is denied without resolving it.
func (p *Prober) checkHosts(ctx context.Context, d *dsn) (map[string][]netip.Addr, probeResult, bool) {
	addrs := map[string][]netip.Addr{}
	for _, e := range d.endpoints {
		host := printable(e.host)
		if public, private := digitalOceanPublic(e.host); public {
			return nil, deny(ReasonDatabaseHostPublic,
				fmt.Sprintf("database host %s is the public hostname", host),
				fmt.Sprintf("use the private hostname %s from the Private network tab in %s", printable(private), srcPlaceholder)), false
		}
		if _, done := addrs[e.host]; done {
			continue
		}
		ips, err := p.lookup(ctx, e.host)
		if err != nil {
			if ctx.Err() != nil {
				return nil, deny(ReasonDatabaseHostUnresolvable,
					fmt.Sprintf("database host %s did not resolve within %s", host, p.timeout),
					"check the cluster's DNS, and the host in "+srcPlaceholder), false
			}
			return nil, deny(ReasonDatabaseHostUnresolvable,
				fmt.Sprintf("database host %s does not resolve", host),
				"check the host in "+srcPlaceholder), false
		}
		for _, ip := range ips {
			if p.isPrivate(ip) {
				continue
			}
			what := fmt.Sprintf("database host %s resolves to %s, which is not a private address", host, ip)
			if ip.String() == e.host {
				what = fmt.Sprintf("database host %s is not a private address", host)
			}
			return nil, deny(ReasonDatabaseHostPublic, what,
				"use the database's private network hostname in "+srcPlaceholder+", or add its range to --private-cidrs"), false
		}
		addrs[e.host] = ips
	}
	return addrs, probeResult{}, true
}

// digitalOceanPublic reports whether host is a DigitalOcean managed database
// public hostname, and the private one to use instead.
func digitalOceanPublic(host string) (bool, string) {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	const suffix = ".db.ondigitalocean.com"
	if !strings.HasSuffix(h, suffix) || len(h) == len(suffix) || strings.HasPrefix(h, "private-") {
		return false, ""
	}
	return true, "private-" + h
}

func (p *Prober) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.WithZone("").Unmap()}, nil
	}
	ips, err := p.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, ip := range ips {
		ip = ip.WithZone("").Unmap()
		if ip.IsValid() && !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no addresses")
	}
	return out, nil
}

func (p *Prober) isPrivate(ip netip.Addr) bool {
	for _, c := range p.private {
		if c.Contains(ip) {
			return true
		}
	}
	return false
}

// dialTracker dials the checked addresses and records how far each
// connection got, so that a failure can be told apart by stage without
// reading driver error text.
type dialTracker struct {
	dialFn func(ctx context.Context, network, addr string) (net.Conn, error)

	mu          sync.Mutex
	connected   int       // TCP connections established
	tlsRefused  bool      // postgres: the server answered N to SSLRequest
	tlsAccepted bool      // postgres: the server answered S to SSLRequest
	netReady    bool      // postgres: TLS (if any) begun, protocol begun
	tlsConn     *tls.Conn // postgres: the TLS connection, once begun
	received    int       // bytes read from the server, TLS records included
	ioErr       error     // the first read or write error that was not a timeout
}

type trackerState struct {
	connected                         int
	tlsRefused, tlsAccepted, netReady bool
	// tlsDone is true once a TLS handshake completed.
	tlsDone  bool
	received int
	ioErr    error
}

func (t *dialTracker) state() trackerState {
	t.mu.Lock()
	tc := t.tlsConn
	st := trackerState{connected: t.connected, tlsRefused: t.tlsRefused, tlsAccepted: t.tlsAccepted,
		netReady: t.netReady, received: t.received, ioErr: t.ioErr}
	t.mu.Unlock()
	if tc != nil {
		st.tlsDone = tc.ConnectionState().HandshakeComplete
	}
	return st
}

// noteIO records what one read or write saw.
func (t *dialTracker) noteIO(read int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.received += read
	if err != nil && t.ioErr == nil && !isNetTimeout(err) && !errors.Is(err, net.ErrClosed) {
		t.ioErr = err
	}
}

// probeDial marks the context of a probe's own connection attempts.
type probeDial struct{}

// errNotProbe refuses a connection that is not part of a probe.
var errNotProbe = errors.New("connection outside a probe refused")

func (t *dialTracker) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	// pgx sends a cancel request on a fresh connection, in the background
	// and after the probe returned, when a connection breaks during its
	// handshake. A probe has nothing to cancel: only dials under the probe's
	// context may reach the database.
	if ctx.Value(probeDial{}) == nil {
		return nil, errNotProbe
	}
	c, err := t.dialFn(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.connected++
	t.mu.Unlock()
	return &trackedConn{Conn: c, t: t}, nil
}

// sslRequest is the PostgreSQL SSLRequest message.
var sslRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}

// trackedConn notes the server's one-byte answer to an SSLRequest.
type trackedConn struct {
	net.Conn
	t         *dialTracker
	writes    int
	sslAsked  bool
	sslAnswer bool
}

func (c *trackedConn) Write(b []byte) (int, error) {
	if c.writes == 0 && string(b) == string(sslRequest) {
		c.sslAsked = true
	}
	c.writes++
	n, err := c.Conn.Write(b)
	if err != nil {
		c.t.noteIO(0, err)
	}
	return n, err
}

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.sslAsked && !c.sslAnswer {
		c.sslAnswer = true
		c.t.mu.Lock()
		switch b[0] {
		case 'N':
			c.t.tlsRefused = true
		case 'S':
			c.t.tlsAccepted = true
		}
		c.t.mu.Unlock()
	}
	c.t.noteIO(n, err)
	return n, err
}

// Stages at which a connected probe can fail after the driver's connect.
const (
	stageConnect = "connect"
	stageQuery   = "query"
)

func (p *Prober) connectPostgres(ctx context.Context, d *dsn, t *dialTracker, addrs map[string][]netip.Addr) (string, error) {
	cfg := d.pg
	cfg.ConnectTimeout = 0
	cfg.DialFunc = t.dial
	cfg.LookupFunc = func(_ context.Context, host string) ([]string, error) {
		ips, ok := addrs[host]
		if !ok {
			return nil, errors.New("host was not checked")
		}
		out := make([]string, len(ips))
		for i, ip := range ips {
			out[i] = ip.String()
		}
		return out, nil
	}
	cfg.AfterNetConnect = func(_ context.Context, _ *pgconn.Config, c net.Conn) (net.Conn, error) {
		t.mu.Lock()
		t.netReady = true
		if tc, ok := c.(*tls.Conn); ok {
			t.tlsConn = tc
		}
		t.mu.Unlock()
		return c, nil
	}
	cfg.OnNotice = nil
	cfg.OnNotification = nil
	cfg.RuntimeParams["application_name"] = "cutover-guard"

	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return stageConnect, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 100*time.Millisecond)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
		return stageQuery, err
	}
	return "", nil
}

func (p *Prober) connectMySQL(ctx context.Context, d *dsn, t *dialTracker, addrs map[string][]netip.Addr) (string, error) {
	cfg := d.my
	e := d.endpoints[0]
	cfg.DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) {
		var errs []error
		for _, ip := range addrs[e.host] {
			c, err := t.dial(ctx, "tcp", netip.AddrPortFrom(ip, e.port).String())
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		return nil, errors.Join(errs...)
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return stageConnect, err
	}
	c, err := connector.Connect(ctx)
	if err != nil {
		return stageConnect, err
	}
	defer c.Close()
	q, ok := c.(driver.QueryerContext)
	if !ok {
		return stageQuery, errors.New("driver cannot query")
	}
	rows, err := q.QueryContext(ctx, "SELECT 1", nil)
	if err != nil {
		return stageQuery, err
	}
	defer rows.Close()
	if err := rows.Next(make([]driver.Value, len(rows.Columns()))); err != nil {
		return stageQuery, err
	}
	return "", nil
}

// reachableOnly checks a connection string without a user: it can only show
// that a TCP connection opens.
func (p *Prober) reachableOnly(ctx context.Context, d *dsn, t *dialTracker, addrs map[string][]netip.Addr) probeResult {
	var errs []error
	for _, e := range d.endpoints {
		for _, ip := range addrs[e.host] {
			c, err := t.dial(ctx, "tcp", netip.AddrPortFrom(ip, e.port).String())
			if err == nil {
				c.Close()
				return probeResult{
					severity: Warn,
					reason:   ReasonDatabaseNoUser,
					message:  fmt.Sprintf("database url names no user; only checked that %s accepts connections", d.addr()),
					fix:      "add the user to " + srcPlaceholder + " to have the login checked",
				}
			}
			errs = append(errs, err)
		}
	}
	return p.classify(ctx, d, t, stageConnect, errors.Join(errs...))
}

// classify maps a failed connection or query to our own words. Driver error
// text is never used: only error types, codes and what the tracker saw.
func (p *Prober) classify(ctx context.Context, d *dsn, t *dialTracker, stage string, err error) probeResult {
	at := "database at " + d.addr()
	st := t.state()

	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgServerError(d, pgErr, stage)
	}
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		return mysqlServerError(d, myErr, stage)
	}
	if stage == stageQuery {
		if ctx.Err() != nil {
			return deny(ReasonDatabaseQueryFailed,
				fmt.Sprintf("%s did not answer SELECT 1 within %s", at, p.timeout),
				"check the database's load and health")
		}
		return deny(ReasonDatabaseQueryFailed,
			fmt.Sprintf("%s accepted the login but SELECT 1 failed", at),
			"check the database's health")
	}
	if st.tlsRefused || errors.Is(err, mysql.ErrNoTLS) {
		return deny(ReasonDatabaseTLSUnavailable,
			fmt.Sprintf("%s does not offer TLS but the connection string requires it (%s)", at, d.tlsParam),
			"enable TLS on the database, or change the TLS setting in "+srcPlaceholder)
	}
	if detail, ok := tlsFailure(err); ok {
		return deny(ReasonDatabaseTLSFailed,
			fmt.Sprintf("the TLS handshake with %s failed: %s (%s)", at, detail, d.tlsParam),
			"check the TLS setting in "+srcPlaceholder+" and the server certificate")
	}
	timedOut := ctx.Err() != nil || pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) || isNetTimeout(err)
	switch {
	case st.connected == 0 && timedOut:
		return deny(ReasonDatabaseConnectTimeout,
			fmt.Sprintf("%s is not reachable within %s", at, p.timeout),
			"is the cluster in the database's Trusted sources?")
	case !timedOut && dropped(err, st) != "":
		return droppedConnection(d, st, dropped(err, st))
	case st.connected == 0 && errors.Is(err, syscall.ECONNREFUSED):
		return deny(ReasonDatabaseConnectRefused,
			fmt.Sprintf("nothing is listening at %s (connection refused)", d.addr()),
			"check the host and port in "+srcPlaceholder+" and that the database is running")
	case st.connected == 0:
		return deny(ReasonDatabaseUnreachable,
			fmt.Sprintf("%s is not reachable (no route)", at),
			"is the database in the cluster's VPC, and the cluster in its Trusted sources?")
	case st.tlsAccepted && !st.netReady && timedOut:
		return deny(ReasonDatabaseNoResponse,
			fmt.Sprintf("the TLS handshake with %s did not finish within %s", at, p.timeout),
			"check that the port in "+srcPlaceholder+" is the database's port")
	case st.tlsAccepted && !st.netReady:
		return deny(ReasonDatabaseTLSFailed,
			fmt.Sprintf("the TLS handshake with %s failed (%s)", at, d.tlsParam),
			"check the TLS setting in "+srcPlaceholder+" and the server certificate")
	case st.netReady && !timedOut && d.pg != nil && d.pg.ValidateConnect != nil:
		return deny(ReasonDatabaseProbeFailed,
			fmt.Sprintf("%s accepted the login but does not meet the connection string's target_session_attrs", at),
			"check target_session_attrs and the hosts in "+srcPlaceholder)
	case timedOut:
		return deny(ReasonDatabaseNoResponse,
			fmt.Sprintf("%s accepted the connection but did not answer within %s", at, p.timeout),
			"check that the port in "+srcPlaceholder+" is the database's port, and the database's health")
	default:
		return deny(ReasonDatabaseProbeFailed,
			fmt.Sprintf("%s closed the connection or did not speak the %s protocol", at, d.driver),
			"check the scheme, host and port in "+srcPlaceholder)
	}
}

// Ways a connection can be dropped by the server (or something in between)
// before the probe finished.
const (
	droppedReset  = "reset"
	droppedClosed = "closed"
)

// dropped tells whether the connection was reset or closed, from the
// driver's error or, as the MySQL driver reports both as "invalid
// connection", from what the connection itself saw.
func dropped(err error, st trackerState) string {
	for _, e := range []error{err, st.ioErr} {
		switch {
		case e == nil:
		case errors.Is(e, syscall.ECONNRESET), errors.Is(e, syscall.EPIPE), errors.Is(e, syscall.ECONNABORTED):
			return droppedReset
		}
	}
	if st.connected == 0 {
		return ""
	}
	for _, e := range []error{err, st.ioErr} {
		if e != nil && (errors.Is(e, io.EOF) || errors.Is(e, io.ErrUnexpectedEOF)) {
			return droppedClosed
		}
	}
	return ""
}

// droppedConnection is the denial for a connection the database reset or
// closed before the login finished, naming how far the handshake got.
func droppedConnection(d *dsn, st trackerState, how string) probeResult {
	at := "database at " + d.addr()
	var when string
	switch {
	case st.connected == 0 || st.received == 0:
		when = "as soon as it was opened"
	case st.tlsAccepted && !st.tlsDone:
		when = "during the TLS handshake"
	default:
		when = "during the login"
	}
	if how == droppedReset {
		return deny(ReasonDatabaseConnectionReset,
			fmt.Sprintf("%s reset the connection %s", at, when),
			"retry; if this repeats, check the database's logs and any proxy or firewall between the cluster and "+d.addr())
	}
	return deny(ReasonDatabaseConnectionClosed,
		fmt.Sprintf("%s closed the connection %s", at, when),
		"retry once the database is up; if this repeats, check that the port in "+srcPlaceholder+" is the database's port, and the database's logs")
}

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// tlsFailure recognises certificate and handshake errors.
func tlsFailure(err error) (string, bool) {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		header    tls.RecordHeaderError
		alert     tls.AlertError
	)
	switch {
	case errors.As(err, &unknownCA):
		return "the server certificate is not signed by a trusted authority", true
	case errors.As(err, &hostname):
		return "the server certificate does not match the host name", true
	case errors.As(err, &invalid):
		return "the server certificate is invalid or expired", true
	case errors.As(err, &verify):
		return "the server certificate could not be verified", true
	case errors.As(err, &header):
		return "the server did not answer with TLS", true
	case errors.As(err, &alert):
		return "the server rejected the handshake", true
	}
	return "", false
}

func pgServerError(d *dsn, e *pgconn.PgError, stage string) probeResult {
	at := "database at " + d.addr()
	user, db := printable(d.user), printable(d.database)
	if stage == stageQuery {
		return deny(ReasonDatabaseQueryFailed,
			fmt.Sprintf("%s accepted the login but SELECT 1 failed (SQLSTATE %s)", at, sqlState(e.Code)),
			"check the database's health")
	}
	switch e.Code {
	case "28P01":
		return deny(ReasonDatabaseAuthFailed,
			fmt.Sprintf("%s rejected the password for user %s", at, user),
			"check the password in "+srcPlaceholder)
	case "28000":
		if d.tls == tlsDisable && strings.Contains(e.Message, "no encryption") {
			return deny(ReasonDatabaseTLSRequired,
				fmt.Sprintf("%s has no rule for unencrypted connections of user %s (sslmode=disable)", at, user),
				"set sslmode=require in "+srcPlaceholder)
		}
		return deny(ReasonDatabaseAuthFailed,
			fmt.Sprintf("%s does not let user %s connect to database %s (pg_hba.conf)", at, user, db),
			"check the user and database in "+srcPlaceholder+" and the database's access rules")
	case "3D000":
		return deny(ReasonDatabaseNotFound,
			fmt.Sprintf("database %s does not exist at %s", db, d.addr()),
			"create it, or fix the database name in "+srcPlaceholder)
	case "42501":
		return deny(ReasonDatabaseAuthFailed,
			fmt.Sprintf("%s does not let user %s connect to database %s (no CONNECT privilege)", at, user, db),
			"grant CONNECT, or fix the user in "+srcPlaceholder)
	case "53300":
		return deny(ReasonDatabaseProbeFailed,
			fmt.Sprintf("%s has no free connection slots", at),
			"raise the database's connection limit or use a connection pool")
	case "57P03":
		return deny(ReasonDatabaseProbeFailed,
			fmt.Sprintf("%s is starting up, shutting down or in recovery", at),
			"wait until the database accepts connections")
	case "57P01", "57P02":
		// admin_shutdown, crash_shutdown: the server ended the session.
		return deny(ReasonDatabaseConnectionClosed,
			fmt.Sprintf("%s ended the login because it is shutting down or restarting (SQLSTATE %s)", at, e.Code),
			"retry once the database is up")
	}
	return deny(ReasonDatabaseProbeFailed,
		fmt.Sprintf("%s refused the connection (SQLSTATE %s)", at, sqlState(e.Code)),
		"check the connection string in "+srcPlaceholder+" and the database's logs")
}

func sqlState(code string) string {
	if len(code) != 5 {
		return "?"
	}
	for _, r := range code {
		if !(r >= '0' && r <= '9' || r >= 'A' && r <= 'Z') {
			return "?"
		}
	}
	return code
}

func mysqlServerError(d *dsn, e *mysql.MySQLError, stage string) probeResult {
	at := "database at " + d.addr()
	user, db := printable(d.user), printable(d.database)
	if stage == stageQuery {
		return deny(ReasonDatabaseQueryFailed,
			fmt.Sprintf("%s accepted the login but SELECT 1 failed (mysql error %d)", at, e.Number),
			"check the database's health")
	}
	switch e.Number {
	case 1045:
		return deny(ReasonDatabaseAuthFailed,
			fmt.Sprintf("%s rejected the password for user %s", at, user),
			"check the password in "+srcPlaceholder)
	case 1044:
		return deny(ReasonDatabaseAuthFailed,
			fmt.Sprintf("%s does not let user %s use database %s (or it does not exist)", at, user, db),
			"check the database name in "+srcPlaceholder+", or grant the user access to it")
	case 1049:
		return deny(ReasonDatabaseNotFound,
			fmt.Sprintf("database %s does not exist at %s", db, d.addr()),
			"create it, or fix the database name in "+srcPlaceholder)
	case 1130:
		return deny(ReasonDatabaseAuthFailed,
			fmt.Sprintf("%s does not accept connections from this cluster", at),
			"allow the cluster's addresses for user "+user)
	case 3159:
		return deny(ReasonDatabaseTLSRequired,
			fmt.Sprintf("%s requires TLS but the connection string disables it (%s)", at, d.tlsParam),
			"set ssl-mode=REQUIRED in "+srcPlaceholder)
	case 1040:
		return deny(ReasonDatabaseProbeFailed,
			fmt.Sprintf("%s has no free connection slots", at),
			"raise max_connections or use a connection pool")
	case 1053:
		return deny(ReasonDatabaseConnectionClosed,
			fmt.Sprintf("%s ended the login because it is shutting down (mysql error 1053)", at),
			"retry once the database is up")
	}
	return deny(ReasonDatabaseProbeFailed,
		fmt.Sprintf("%s refused the connection (mysql error %d)", at, e.Number),
		"check the connection string in "+srcPlaceholder+" and the database's logs")
}

// DatabaseReachable finds the connection strings the pods of deployments use
// (the Deployments that serve svc) and probes each distinct one once with p.
//
// A connection string is the value of an environment variable named in
// envNames (default DATABASE_URL), or in a Deployment's
// AnnotationDatabaseURLEnv, given as a literal value (with $(VAR) references
// expanded as the kubelet does), a secretKeyRef, a configMapKeyRef or envFrom.
// The app containers and the sidecar containers (init containers with
// restartPolicy Always) are searched; plain init containers are not: they
// ran to completion before the pods became ready, which the deployment check
// already requires. Secrets and ConfigMaps are read with single GETs.
//
// It returns one Finding per problem: a missing Secret or key, a connection
// string that fails a stage of the probe. A target whose Deployments hold no
// connection string gets one Warn finding. A nil p, or no deployments,
// returns nil.
func DatabaseReachable(ctx context.Context, r client.Reader, p *Prober, svc types.NamespacedName, deployments []appsv1.Deployment, envNames []string) []Finding {
	if p == nil || len(deployments) == 0 {
		return nil
	}
	uses, findings := discoverDSNs(ctx, r, svc, deployments, envNames)
	results := make([]probeResult, len(uses))
	g := new(errgroup.Group)
	g.SetLimit(4)
	for i, u := range uses {
		g.Go(func() error {
			results[i] = p.probe(ctx, u.value)
			return nil
		})
	}
	_ = g.Wait()
	for i, r := range results {
		if r.passed() {
			continue
		}
		src := uses[i].src
		findings = append(findings, Finding{
			Check:    CheckDatabase,
			Severity: r.severity,
			Service:  svc,
			Object:   src.object(),
			Reason:   r.reason,
			Message:  strings.ReplaceAll(r.message, srcPlaceholder, src.String()),
			Fix:      strings.ReplaceAll(r.fix, srcPlaceholder, src.String()),
		})
	}
	return findings
}

// dsnUse is a distinct connection string and the first place it was found.
type dsnUse struct {
	value string
	src   dsnSource
}

// discoverDSNs collects the distinct connection strings of deployments'
// containers, in the order found, and findings for broken references (or the
// warning that there is none).
func discoverDSNs(ctx context.Context, r client.Reader, svc types.NamespacedName, deployments []appsv1.Deployment, envNames []string) ([]dsnUse, []Finding) {
	if len(envNames) == 0 {
		envNames = []string{DefaultDatabaseURLEnv}
	}
	res := &envResolver{ctx: ctx, r: r, svc: svc, objects: map[objectKey]fetched{}, reported: map[string]bool{}}
	var uses []dsnUse
	seen := map[string]bool{}
	var looked []string
	firstChecked := ""
	for i := range deployments {
		dep := &deployments[i]
		names := envNames
		if a, ok := dep.Annotations[AnnotationDatabaseURLEnv]; ok {
			names = splitNames(a)
			if len(names) == 0 {
				continue // turned off for this Deployment
			}
		}
		if firstChecked == "" {
			firstChecked = dep.Name
		}
		for _, n := range names {
			if n = printable(n); !slices.Contains(looked, n) {
				looked = append(looked, n)
			}
		}
		spec := &dep.Spec.Template.Spec
		containers := slices.Clone(spec.Containers)
		for _, c := range spec.InitContainers {
			if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
				containers = append(containers, c)
			}
		}
		for ci := range containers {
			c := &containers[ci]
			for _, n := range names {
				v, src, ok := res.value(dep, c, n, len(c.Env))
				if !ok || seen[v] {
					continue
				}
				seen[v] = true
				uses = append(uses, dsnUse{value: v, src: src})
			}
		}
	}
	if len(uses) == 0 && len(res.findings) == 0 && firstChecked != "" {
		res.findings = append(res.findings, Finding{
			Check:    CheckDatabase,
			Severity: Warn,
			Service:  svc,
			Object:   "deployment " + firstChecked,
			Reason:   ReasonDatabaseURLNotFound,
			Message:  fmt.Sprintf("no database connection string found (looked for %s); database check skipped", nameList(looked)),
		})
	}
	return uses, res.findings
}

func splitNames(s string) []string {
	var out []string
	for n := range strings.SplitSeq(s, ",") {
		if n = strings.TrimSpace(n); n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

func nameList(names []string) string {
	s := []rune(strings.Join(names, ", "))
	if len(s) > 60 {
		return string(s[:57]) + "..."
	}
	return string(s)
}

// dsnSource says where a connection string came from; it names objects and
// keys, never values.
type dsnSource struct {
	kind       string // "secret", "configmap" or "env" (a literal value)
	namespace  string
	name       string // the Secret or ConfigMap; the Deployment for "env"
	key        string
	envName    string
	container  string
	deployment string
	refs       []string // "$(DB_PASSWORD) from secret ns/db key password"
}

func (s dsnSource) base() string {
	switch s.kind {
	case "secret", "configmap":
		return fmt.Sprintf("%s %s/%s key %s", s.kind, s.namespace, s.name, s.key)
	default:
		return fmt.Sprintf("env %s of container %s in deployment %s/%s", printable(s.envName), s.container, s.namespace, s.deployment)
	}
}

func (s dsnSource) String() string {
	if len(s.refs) == 0 {
		return s.base()
	}
	return s.base() + " (with " + strings.Join(s.refs, ", ") + ")"
}

func (s dsnSource) object() string {
	switch s.kind {
	case "secret", "configmap":
		return s.kind + " " + s.name
	default:
		return "deployment " + s.deployment
	}
}

type objectKey struct{ kind, name string }

type fetched struct {
	data     map[string]string
	notFound bool
	err      error
}

// envResolver resolves environment variables of a Deployment's containers as
// the kubelet would, reading each Secret and ConfigMap at most once.
type envResolver struct {
	ctx      context.Context
	r        client.Reader
	svc      types.NamespacedName
	objects  map[objectKey]fetched
	findings []Finding
	reported map[string]bool
}

// value resolves variable name in container c from env entries before index
// upTo and from envFrom. ok is false if the variable is unset, optional and
// missing, comes from a field reference, or its source is broken (which adds
// a finding).
func (e *envResolver) value(dep *appsv1.Deployment, c *corev1.Container, name string, upTo int) (string, dsnSource, bool) {
	for i := upTo - 1; i >= 0; i-- {
		ev := &c.Env[i]
		if ev.Name != name {
			continue
		}
		user := fmt.Sprintf("env %s of container %s in deployment %s", printable(name), c.Name, dep.Name)
		switch {
		case ev.ValueFrom == nil:
			src := dsnSource{kind: "env", namespace: dep.Namespace, envName: name, container: c.Name, deployment: dep.Name}
			v := expandEnv(ev.Value, func(ref string) (string, bool) {
				rv, rsrc, ok := e.value(dep, c, ref, i)
				if ok {
					src.refs = append(src.refs, "$("+printable(ref)+") from "+rsrc.base())
				}
				return rv, ok
			})
			return v, src, true
		case ev.ValueFrom.SecretKeyRef != nil:
			ref := ev.ValueFrom.SecretKeyRef
			v, ok := e.key("secret", ref.Name, ref.Key, ref.Optional != nil && *ref.Optional, user, dep.Name)
			return v, dsnSource{kind: "secret", namespace: dep.Namespace, name: ref.Name, key: ref.Key, envName: name, container: c.Name, deployment: dep.Name}, ok
		case ev.ValueFrom.ConfigMapKeyRef != nil:
			ref := ev.ValueFrom.ConfigMapKeyRef
			v, ok := e.key("configmap", ref.Name, ref.Key, ref.Optional != nil && *ref.Optional, user, dep.Name)
			return v, dsnSource{kind: "configmap", namespace: dep.Namespace, name: ref.Name, key: ref.Key, envName: name, container: c.Name, deployment: dep.Name}, ok
		default:
			return "", dsnSource{}, false
		}
	}
	for j := len(c.EnvFrom) - 1; j >= 0; j-- {
		ef := &c.EnvFrom[j]
		key, ok := strings.CutPrefix(name, ef.Prefix)
		if !ok {
			continue
		}
		user := fmt.Sprintf("envFrom of container %s in deployment %s", c.Name, dep.Name)
		var kind, objName string
		var optional bool
		switch {
		case ef.SecretRef != nil:
			kind, objName, optional = "secret", ef.SecretRef.Name, ef.SecretRef.Optional != nil && *ef.SecretRef.Optional
		case ef.ConfigMapRef != nil:
			kind, objName, optional = "configmap", ef.ConfigMapRef.Name, ef.ConfigMapRef.Optional != nil && *ef.ConfigMapRef.Optional
		default:
			continue
		}
		data, ok := e.object(kind, objName, key, optional, user, dep.Name)
		if !ok {
			continue
		}
		if v, ok := data[key]; ok {
			return v, dsnSource{kind: kind, namespace: dep.Namespace, name: objName, key: key, envName: name, container: c.Name, deployment: dep.Name}, true
		}
	}
	return "", dsnSource{}, false
}

// key returns one key of a Secret or ConfigMap, reporting a missing object or
// key unless optional.
func (e *envResolver) key(kind, name, key string, optional bool, user, deployment string) (string, bool) {
	data, ok := e.object(kind, name, key, optional, user, deployment)
	if !ok {
		return "", false
	}
	v, ok := data[key]
	if !ok && !optional {
		e.report(kind, name, fmt.Sprintf("%s %s/%s has no key %s (used by %s)", kind, e.svc.Namespace, name, key, user),
			fmt.Sprintf("add key %s to %s %s, or fix the key in deployment %s", key, kind, name, deployment))
	}
	return v, ok
}

// object GETs a Secret's or ConfigMap's data once per DatabaseReachable call.
// key is the key wanted, for the fix of a missing object.
func (e *envResolver) object(kind, name, key string, optional bool, user, deployment string) (map[string]string, bool) {
	k := objectKey{kind, name}
	f, done := e.objects[k]
	if !done {
		f = e.fetch(kind, name)
		e.objects[k] = f
	}
	switch {
	case f.notFound && optional:
		return nil, false
	case f.notFound:
		fix := fmt.Sprintf("create %s %s in namespace %s, or fix the reference in deployment %s", kind, name, e.svc.Namespace, deployment)
		if kind == "secret" {
			fix = fmt.Sprintf("create it: kubectl create secret generic %s -n %s --from-literal=%s='postgresql://USER:PASSWORD@PRIVATE_HOST:25060/DATABASE?sslmode=require'", name, e.svc.Namespace, key)
		}
		e.report(kind, name, fmt.Sprintf("%s %s/%s does not exist (used by %s)", kind, e.svc.Namespace, name, user), fix)
		return nil, false
	case f.err != nil:
		why := "could not be read"
		switch {
		case apierrors.IsForbidden(f.err):
			why = "may not be read by the webhook (forbidden)"
		case apierrors.IsTimeout(f.err), apierrors.IsServerTimeout(f.err), errors.Is(f.err, context.DeadlineExceeded):
			why = "could not be read in time"
		}
		e.add(Finding{
			Check: CheckDatabase, Severity: Deny, Service: e.svc, Object: kind + " " + name,
			Reason:  ReasonDatabaseSourceUnreadable,
			Message: fmt.Sprintf("%s %s/%s %s", kind, e.svc.Namespace, name, why),
			Fix:     "let the webhook get " + kind + "s in namespace " + e.svc.Namespace + ", then retry",
		})
		return nil, false
	}
	return f.data, true
}

func (e *envResolver) fetch(kind, name string) fetched {
	key := types.NamespacedName{Namespace: e.svc.Namespace, Name: name}
	switch kind {
	case "secret":
		var s corev1.Secret
		if err := e.r.Get(e.ctx, key, &s); err != nil {
			return fetched{notFound: apierrors.IsNotFound(err), err: err}
		}
		data := make(map[string]string, len(s.Data)+len(s.StringData))
		for k, v := range s.Data {
			data[k] = string(v)
		}
		for k, v := range s.StringData { // only set on objects that never went through the API server
			data[k] = v
		}
		return fetched{data: data}
	default:
		var cm corev1.ConfigMap
		if err := e.r.Get(e.ctx, key, &cm); err != nil {
			return fetched{notFound: apierrors.IsNotFound(err), err: err}
		}
		return fetched{data: cm.Data}
	}
}

func (e *envResolver) report(kind, name, message, fix string) {
	reason := ReasonDatabaseSecretNotFound
	if kind == "configmap" {
		reason = ReasonDatabaseConfigMapNotFound
	}
	e.add(Finding{
		Check: CheckDatabase, Severity: Deny, Service: e.svc, Object: kind + " " + name,
		Reason: reason, Message: message, Fix: fix,
	})
}

// add appends f unless the same finding is already there.
func (e *envResolver) add(f Finding) {
	id := string(f.Reason) + "\x00" + f.Message
	if !e.reported[id] {
		e.reported[id] = true
		e.findings = append(e.findings, f)
	}
}

// expandEnv expands $(NAME) references like the kubelet: $$ is a literal $,
// an unresolved or unterminated reference stays as written.
func expandEnv(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			v, ok := "", false
			if name != "" {
				v, ok = lookup(name)
			}
			if ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
