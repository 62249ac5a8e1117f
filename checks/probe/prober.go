package probe

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

const (
	// DefaultTimeout bounds one probe (--db-timeout).
	DefaultTimeout = 2 * time.Second
	// DefaultCacheTTL is how long a failed probe is remembered, as backoff
	// (--db-cache-ttl).
	DefaultCacheTTL = 10 * time.Second
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
// A Prober is safe for concurrent use.
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

	group singleflight.Group
	mu    sync.Mutex
	cache map[[sha256.Size]byte]cacheEntry
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
	}
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
// case the error is ctx's, and the probe runs on for the callers after.
func (p *Prober) Probe(ctx context.Context, raw string) (Result, error) {
	start := time.Now()
	res, cached, err := p.probe(ctx, raw)
	if err == nil && p.observe != nil {
		p.observe(res.Reason, cached, time.Since(start))
	}
	return res, err
}

func (p *Prober) probe(ctx context.Context, raw string) (_ Result, cached bool, _ error) {
	// The cache is consulted before parsing: only a string that parsed is
	// ever cached, and parsing a postgres URL reads files (pgpass, service
	// file), which cost a cached answer most of its time.
	key := sha256.Sum256([]byte(raw))
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
	var ran atomic.Bool // this caller's probe went to the database
	ch := p.group.DoChan(string(key[:]), func() (v any, _ error) {
		// singleflight would re-raise a panic on a fresh goroutine, ending
		// the process, and its value may hold the connection string.
		defer func() {
			if recover() != nil {
				v = deny(ReasonProbeFailed,
					fmt.Sprintf("the database check of %s failed with an internal error", d.addr()),
					plain("retry; if this repeats, report it"))
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
		return out.Val.(Result), !ran.Load(), nil
	case <-ctx.Done():
		return Result{}, false, ctx.Err()
	}
}

// run probes d in order: host private, TCP connect, TLS, authentication,
// database exists, SELECT 1. The first failure ends it.
func (p *Prober) run(ctx context.Context, d *dsn) Result {
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
		return Result{Reason: ReasonReachable, ChainNotVerified: d.caFileIgnored}
	}
	return p.classify(ctx, d, t, stage, err)
}
