package probe

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

const (
	// DefaultTimeout bounds one probe (--db-timeout).
	DefaultTimeout = 2 * time.Second
	// DefaultCacheTTL is how long a failed probe is remembered, as backoff
	// (--db-cache-ttl).
	DefaultCacheTTL = 10 * time.Second
	// DefaultMaxInFlight bounds the probes a Prober runs at once
	// (--db-max-in-flight).
	DefaultMaxInFlight = 32
	// DefaultPassTTL is how long a passed probe is reused, and the most it
	// may be: a switch is allowed on a pass at most this old.
	DefaultPassTTL = time.Second
)

// ProberOptions configures a Prober. A zero field whose zero has no meaning
// (no ranges, no time to probe, no resolver, no dialer) takes its default; a
// zero CacheTTL means no cache.
type ProberOptions struct {
	// PrivateCIDRs are the ranges every address of a database host must lie
	// in. Default DefaultPrivateCIDRs().
	PrivateCIDRs []netip.Prefix
	// Timeout bounds one probe, from name resolution to SELECT 1.
	// Default DefaultTimeout.
	Timeout time.Duration
	// CacheTTL is how long a failed probe is remembered for the same
	// connection string, so that a broken database is not dialled on every
	// retry; zero or negative turns the cache off (passes included).
	// DefaultCacheTTL is the guard's default.
	CacheTTL time.Duration
	// MaxInFlight bounds the probes running at once, process-wide; a probe
	// beyond it waits for a slot as long as a caller waits for it, and is
	// never started once every caller has gone or its deadline has passed.
	// Default DefaultMaxInFlight.
	MaxInFlight int
	// MaxInFlightPerTenant bounds the slots of MaxInFlight that the probes
	// of one tenant (WithTenant) hold at once, so that one tenant's probes
	// of databases that never answer leave slots for the others. Default
	// half of MaxInFlight, at least 1; more than MaxInFlight is cut to it.
	MaxInFlightPerTenant int
	// PassTTL is how long a passed probe is reused; zero means
	// DefaultPassTTL, negative never reuses a pass, and more than
	// DefaultPassTTL is cut to it.
	PassTTL time.Duration
	// Ports are the only ports a probe connects to; a connection string
	// naming another is denied before any lookup. Default
	// DefaultDatabasePorts.
	Ports []uint16
	// Resolver looks up a host name. Default net.DefaultResolver.
	Resolver func(ctx context.Context, host string) ([]netip.Addr, error)
	// Dial opens a TCP connection to an address the host policy has
	// checked. Default a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Observe, if set, is called once per probe request that got a Result,
	// with its Reason, whether the result was reused (from the cache or
	// another caller's probe in flight), and how long the caller waited. A
	// caller whose context ended first is not observed: it got no Result.
	// It must be safe for concurrent use.
	Observe func(result Reason, cached bool, d time.Duration)
}

// Prober checks that a connection string leads to a database that answers.
// Passes are reused for at most DefaultPassTTL, failures remembered briefly
// as backoff, keyed by a SHA-256 of the connection string,
// and concurrent probes of the same string share one connection attempt.
// At most MaxInFlight probes run at once, at most MaxInFlightPerTenant of
// them for one tenant. A Prober is safe for concurrent use.
type Prober struct {
	private []netip.Prefix
	timeout time.Duration
	ttl     time.Duration
	passTTL time.Duration
	ports   portSet
	resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	observe func(result Reason, cached bool, d time.Duration)
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	now     func() time.Time

	slots   chan struct{} // one per probe running
	tenants *tenantSlots  // each tenant's share of slots
	flights sync.Mutex    // guards inFlight and each flight's callers
	// inFlight is the probe of each connection string that callers wait
	// for, by tenant and the cache key.
	inFlight map[flightKey]*flight

	mu    sync.Mutex
	cache map[[sha256.Size]byte]cacheEntry
}

// flightKey names a flight: callers share one only within a tenant, so a
// probe waiting for one tenant's share of slots never holds up a caller of
// another tenant who asked for the same string (the cache, keyed by the
// string alone, is still shared).
type flightKey struct {
	tenant string
	dsn    [sha256.Size]byte
}

// flight is one probe shared by the callers of one tenant that asked for
// the same connection string while it was waiting or running.
//
// It runs while at least one caller waits: when the last one's context
// ends, the probe's context is cancelled and its result, cut short, is
// neither cached nor given to anyone. A probe with one caller therefore
// ends at the earlier of its own timeout and that caller's deadline; one
// shared by callers with different deadlines runs until the last of them
// gives up (or its timeout), so that no caller is answered "timeout"
// because another's deadline came first.
type flight struct {
	done     chan struct{} // closed when res is set, or the flight is abandoned
	res      Result
	ran      bool      // the probe went to the database (not a cache hit)
	callers  int       // guarded by Prober.flights, as are the next three
	deadline time.Time // the latest of the callers' deadlines
	// unbounded is set when a caller has no deadline.
	unbounded bool
	// abandoned is set, before done is closed, when the flight got a slot
	// only after every caller's deadline: it never started.
	abandoned bool
	cancel    context.CancelFunc
}

// NewProber returns a Prober with o's settings.
func NewProber(o ProberOptions) *Prober {
	p := &Prober{
		private: slices.Clone(o.PrivateCIDRs),
		timeout: o.Timeout,
		ttl:     max(o.CacheTTL, 0),
		passTTL: min(o.PassTTL, DefaultPassTTL),
		ports:   newPortSet(o.Ports),
		resolve: o.Resolver,
		observe: o.Observe,
		dial:    o.Dial,
		now:     time.Now,
		cache:   map[[sha256.Size]byte]cacheEntry{},

		inFlight: map[flightKey]*flight{},
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	p.slots = make(chan struct{}, o.MaxInFlight)
	if o.MaxInFlightPerTenant <= 0 {
		o.MaxInFlightPerTenant = max(o.MaxInFlight/2, 1)
	}
	p.tenants = newTenantSlots(min(o.MaxInFlightPerTenant, o.MaxInFlight))
	if len(p.private) == 0 {
		p.private = DefaultPrivateCIDRs()
	}
	if o.PassTTL == 0 {
		p.passTTL = DefaultPassTTL
	}
	if p.timeout <= 0 {
		p.timeout = DefaultTimeout
	}
	if p.resolve == nil {
		p.resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if p.dial == nil {
		p.dial = (&net.Dialer{}).DialContext
	}
	return p
}

// Probe checks raw, or reuses a recent or in-flight result for it. It
// returns when the probe ends or ctx does, whichever is first; in the second
// case the error is ctx's, and the probe runs on only if another caller
// still waits for it (see flight).
func (p *Prober) Probe(ctx context.Context, raw string) (Result, error) {
	return p.observed(ctx, raw, nil)
}

// ProbeSchema probes raw as Probe does and, once logged in, reads over the
// same connection where the migrations of q.Tool stand instead of running
// SELECT 1: a Result that passed carries it in Schema. The read is one
// statement in a read-only transaction under a statement timeout (see
// SchemaQuery). Its result is cached and shared like a probe's, keyed by
// the string and the query: a pass, with its schema state, is reused for at
// most the pass TTL.
func (p *Prober) ProbeSchema(ctx context.Context, raw string, q SchemaQuery) (Result, error) {
	return p.observed(ctx, raw, &q)
}

func (p *Prober) observed(ctx context.Context, raw string, q *SchemaQuery) (Result, error) {
	start := time.Now()
	res, cached, err := p.probe(ctx, raw, q)
	if err == nil && p.observe != nil {
		p.observe(res.Reason, cached, time.Since(start))
	}
	return res, err
}

func (p *Prober) probe(ctx context.Context, raw string, q *SchemaQuery) (_ Result, cached bool, _ error) {
	// The cache is consulted before parsing: only a string that parsed is
	// ever cached, and parsing a postgres URL reads files (pgpass, service
	// file), which cost a cached answer most of its time.
	key := sha256.Sum256([]byte(raw + q.key()))
	if r, ok := p.lookupCache(key); ok {
		return r, true, nil
	}
	d, perr := parseDSN(raw)
	if perr != nil {
		return Result{
			Reason:  perr.reason,
			Message: inSource("the database url in ", " "+perr.message),
			Fix:     plain(perr.fix),
		}, false, nil
	}
	fk := flightKey{tenant: tenantOf(ctx), dsn: key}
	p.flights.Lock()
	f, joined := p.inFlight[fk]
	if !joined {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{done: make(chan struct{}), cancel: cancel}
		p.inFlight[fk] = f
		go p.fly(fctx, fk, f, d, q)
	}
	f.callers++
	if dl, ok := ctx.Deadline(); !ok {
		f.unbounded = true
	} else if dl.After(f.deadline) {
		f.deadline = dl
	}
	p.flights.Unlock()
	select {
	case <-f.done:
		if f.abandoned { // this caller's deadline passed before a slot came
			return Result{}, false, context.DeadlineExceeded
		}
		return f.res, joined || !f.ran, nil
	case <-ctx.Done():
		p.flights.Lock()
		if f.callers--; f.callers == 0 {
			f.cancel() // nobody waits: the probe ends, or never starts
			if p.inFlight[fk] == f {
				delete(p.inFlight, fk)
			}
		}
		p.flights.Unlock()
		return Result{}, false, ctx.Err()
	}
}

// fly waits for a slot of its tenant's share, then for one of the
// Prober's, probes d under ctx (cancelled when no caller waits any more)
// and gives the callers of f the result. The tenant's slot comes first, so
// that a tenant past its share waits without holding a slot another
// tenant could use.
func (p *Prober) fly(ctx context.Context, fk flightKey, f *flight, d *dsn, q *SchemaQuery) {
	defer f.cancel()
	key := fk.dsn
	ok, release := p.tenants.acquire(ctx, fk.tenant)
	defer release()
	if !ok {
		return // every caller gave up while it waited: never started
	}
	select {
	case p.slots <- struct{}{}:
		defer func() { <-p.slots }()
	case <-ctx.Done():
		return // every caller gave up while it waited: never started
	}
	// Every caller's deadline may have passed before their leaving is
	// seen: then the flight is abandoned, under the lock so that no
	// caller joins it after.
	p.flights.Lock()
	if f.abandoned = ctx.Err() != nil || (!f.unbounded && !time.Now().Before(f.deadline)); f.abandoned {
		if p.inFlight[fk] == f {
			delete(p.inFlight, fk)
		}
	}
	p.flights.Unlock()
	if f.abandoned {
		close(f.done)
		return
	}
	// Checked again here: a probe that finished between our lookup and
	// the flight's start has stored its result.
	r, ok := p.lookupCache(key)
	if !ok {
		f.ran = true
		r = p.runRecovered(ctx, d, q)
		if ctx.Err() == nil { // a probe cut short says nothing about the database
			p.storeCache(key, r)
		}
	}
	p.flights.Lock()
	if p.inFlight[fk] == f {
		delete(p.inFlight, fk)
	}
	p.flights.Unlock()
	f.res = r
	close(f.done)
}

// runRecovered is run, with a panic turned into a denial: the probe runs on
// its own goroutine, where a panic would end the process, and its value may
// hold the connection string.
func (p *Prober) runRecovered(ctx context.Context, d *dsn, q *SchemaQuery) (r Result) {
	defer func() {
		if recover() != nil {
			r = deny(ReasonProbeFailed,
				fmt.Sprintf("the database check of %s failed with an internal error", d.addr()),
				plain("retry; if this repeats, report it"))
		}
	}()
	return p.run(ctx, d, q)
}

// run probes d in order: host private, TCP connect, TLS, authentication,
// database exists, SELECT 1 (or q's schema query). The first failure ends
// it.
func (p *Prober) run(ctx context.Context, d *dsn, q *SchemaQuery) Result {
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
	var schema *SchemaState
	switch d.driver {
	case driverPostgres:
		stage, schema, err = p.connectPostgres(ctx, d, t, addrs, q)
	case driverMySQL:
		stage, schema, err = p.connectMySQL(ctx, d, t, addrs, q)
	}
	if err == nil {
		return Result{Reason: ReasonReachable, ChainNotVerified: d.caFileIgnored, Schema: schema}
	}
	return p.classify(ctx, d, t, stage, err)
}
