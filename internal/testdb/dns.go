package testdb

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DNS is a DNS server on a loopback UDP port that answers every query with
// NXDOMAIN, or with nothing at all, and remembers what it was asked. With
// Resolver it stands in for "a hostname that does not resolve" without a
// packet leaving loopback.
type DNS struct {
	// Addr is the server's host:port.
	Addr string

	queries atomic.Int64
	mu      sync.Mutex
	names   []string
}

// StartDNS starts a DNS server that answers NXDOMAIN (answer) or never
// answers (!answer); t.Cleanup stops it.
func StartDNS(t testing.TB, answer bool) *DNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &DNS{Addr: pc.LocalAddr().String()}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			s.queries.Add(1)
			if len(r.Question) > 0 {
				s.mu.Lock()
				s.names = append(s.names, r.Question[0].Name)
				s.mu.Unlock()
			}
			if !answer {
				return // the resolver times out
			}
			m := new(dns.Msg)
			m.SetRcode(r, dns.RcodeNameError)
			_ = w.WriteMsg(m)
		})}
	served := make(chan error, 1)
	go func() { served <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-served:
		t.Fatalf("dns server: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the dns server did not start")
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Errorf("stop the dns server: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("dns server: %v", err)
		}
	})
	return s
}

// Queries is how many queries the server was sent.
func (s *DNS) Queries() int64 { return s.queries.Load() }

// Asked reports whether the server was asked about name.
func (s *DNS) Asked(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.ContainsFunc(s.names, func(n string) bool { return strings.HasPrefix(n, name+".") })
}

// Resolver resolves with the Go resolver, sending every query to this
// server whatever /etc/resolv.conf says, in the form of
// probe.ProberOptions.Resolver.
//
// A lookup the caller gave up on would keep reading its socket until the
// resolver's own per-query timeout (resolv.conf's, 5 s by default): the
// socket is closed when the lookup is cancelled, so that leak checks see only
// goroutines that would stay.
func (s *DNS) Resolver() func(ctx context.Context, host string) ([]netip.Addr, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "udp", s.Addr)
		if err == nil {
			context.AfterFunc(ctx, func() { _ = c.Close() })
		}
		return c, err
	}}
	return func(ctx context.Context, host string) ([]netip.Addr, error) {
		return r.LookupNetIP(ctx, "ip", host)
	}
}
