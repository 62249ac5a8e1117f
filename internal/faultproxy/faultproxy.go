// Package faultproxy is a TCP proxy on loopback that injects faults between
// a client and a server: no answer, a reset after some bytes, or a delay.
// Tests and load programs put it in front of a real database to see how the
// database check behaves when the network misbehaves.
//
// It uses only the standard library and does not depend on package testing,
// so long-running programs can use it as well as tests. It never dials
// anything but the target it was started with.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is what the proxy does to a connection.
type Fault int

const (
	// Forward copies bytes both ways unchanged (the default).
	Forward Fault = iota
	// Blackhole accepts the connection, reads and discards what the client
	// sends and never answers; it does not connect to the target.
	Blackhole
	// ResetAfter forwards until Options.ResetAfterBytes bytes came back from
	// the server, then resets both sides (SO_LINGER 0).
	ResetAfter
	// Delay forwards, holding the first bytes of each direction for
	// Options.Delay.
	Delay
)

// String names the fault.
func (f Fault) String() string {
	switch f {
	case Forward:
		return "forward"
	case Blackhole:
		return "blackhole"
	case ResetAfter:
		return "reset-after"
	case Delay:
		return "delay"
	}
	return fmt.Sprintf("fault(%d)", int(f))
}

// Options selects the fault for new connections.
type Options struct {
	// Fault is what happens to a connection; default Forward.
	Fault Fault
	// ResetAfterBytes is, for ResetAfter, how many bytes from the server
	// reach the client before both sides are reset. Zero or less resets
	// both sides as soon as the server connection is open.
	ResetAfterBytes int
	// Delay is, for Delay, how long the first bytes of each direction are
	// held.
	Delay time.Duration
}

// dialTimeout bounds the connection to the target.
const dialTimeout = 10 * time.Second

// Proxy accepts connections on a loopback port and forwards them to a target
// with the fault set when each was accepted. It is safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string
	ctx    context.Context // done when Close is called
	cancel context.CancelFunc

	accepted atomic.Int64
	open     atomic.Int64
	wg       sync.WaitGroup
	once     sync.Once
	closeErr error

	mu     sync.Mutex
	opts   Options
	conns  map[net.Conn]struct{} // client and server sides still open
	closed bool
}

// Start listens on 127.0.0.1 on a free port and forwards to target
// (host:port).
func Start(target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("faultproxy: target %q is not host:port: %w", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen on 127.0.0.1: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{ln: ln, target: target, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the proxy's address, "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Set changes the fault for connections accepted after the call; open
// connections keep theirs.
func (p *Proxy) Set(o Options) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.opts = o
}

// Accepted is the number of connections accepted so far.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// Open is the number of client connections currently open through the proxy.
func (p *Proxy) Open() int { return int(p.open.Load()) }

// Close stops listening, closes every connection and waits until all of the
// proxy's goroutines have returned. It may be called more than once.
func (p *Proxy) Close() error {
	p.once.Do(func() {
		p.mu.Lock()
		p.closed = true
		conns := make([]net.Conn, 0, len(p.conns))
		for c := range p.conns {
			conns = append(conns, c)
		}
		p.mu.Unlock()
		p.cancel()
		p.closeErr = p.ln.Close()
		for _, c := range conns {
			_ = c.Close()
		}
		p.wg.Wait()
	})
	return p.closeErr
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || p.ctx.Err() != nil {
				return
			}
			// A transient error (too many open files): back off briefly.
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		p.accepted.Add(1)
		p.mu.Lock()
		opts := p.opts
		p.mu.Unlock()
		if !p.track(c) {
			_ = c.Close()
			return
		}
		p.open.Add(1)
		p.wg.Add(1)
		go p.serve(c, opts)
	}
}

// track registers an open connection; it is false once the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

// serve handles one client connection until it ends.
func (p *Proxy) serve(client net.Conn, o Options) {
	defer p.wg.Done()
	defer p.open.Add(-1)
	defer p.untrack(client)
	defer func() { _ = client.Close() }()

	if o.Fault == Blackhole {
		_, _ = io.Copy(io.Discard, client)
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
	server, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.target)
	cancel()
	if err != nil {
		// The client sees what it would see from a server that is down.
		reset(client)
		return
	}
	defer func() { _ = server.Close() }()
	if !p.track(server) {
		return
	}
	defer p.untrack(server)

	if o.Fault == ResetAfter && o.ResetAfterBytes <= 0 {
		reset(client, server)
		return
	}
	var delay time.Duration
	if o.Fault == Delay {
		delay = o.Delay
	}
	limit := -1
	if o.Fault == ResetAfter {
		limit = o.ResetAfterBytes
	}
	done := make(chan struct{}, 2)
	go func() {
		p.copy(server, client, delay, -1)
		done <- struct{}{}
	}()
	go func() {
		if p.copy(client, server, delay, limit) {
			reset(client, server)
		}
		done <- struct{}{}
	}()
	<-done
	// Either side ending ends the connection: close both so the other copy
	// returns too.
	_ = client.Close()
	_ = server.Close()
	<-done
}

// copy copies src to dst, holding the first bytes for delay, until either
// side fails or, if limit >= 0, limit bytes were copied; it reports whether
// the limit was reached.
func (p *Proxy) copy(dst, src net.Conn, delay time.Duration, limit int) bool {
	buf := make([]byte, 32*1024)
	first := true
	copied := 0
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if first && delay > 0 {
				t := time.NewTimer(delay)
				select {
				case <-p.ctx.Done():
					t.Stop()
					return false
				case <-t.C:
				}
			}
			first = false
			chunk := buf[:n]
			if limit >= 0 && copied+n >= limit {
				chunk = buf[:limit-copied]
			}
			if _, werr := dst.Write(chunk); werr != nil {
				return false
			}
			copied += len(chunk)
			if limit >= 0 && copied >= limit {
				return true
			}
		}
		if err != nil {
			return false
		}
	}
}

// reset closes each connection with SO_LINGER 0, so its peer gets a TCP RST
// instead of an orderly end. Every linger is set before the first close:
// closing one side ends the other copy, after which serve closes the rest.
func reset(conns ...net.Conn) {
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	for _, c := range conns {
		_ = c.Close()
	}
}
