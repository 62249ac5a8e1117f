package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
)

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
	// mysqlFraming makes each connection check MySQL packet headers as they
	// arrive, until TLS begins (see frameCheck).
	mysqlFraming bool
	// oversized is set when the server sent more than maxReceived bytes or
	// announced a message larger than maxMessageLen.
	oversized bool
}

// Bounds on what one probe reads from a server. A database's answers to a
// login and SELECT 1 take a few KiB; anything near these is not a database
// the application can use, and each byte is memory the guard would hold.
const (
	// maxReceived bounds the bytes read over all of a probe's connections.
	maxReceived = 1 << 20
	// maxMessageLen bounds one protocol message (a postgres message body, a
	// MySQL packet payload) before the driver allocates room for it.
	maxMessageLen = 1 << 20
)

// errOversized ends a read that would take a probe past maxReceived or
// start a message larger than maxMessageLen.
var errOversized = errors.New("server sent more than the probe reads")

type trackerState struct {
	connected                         int
	tlsRefused, tlsAccepted, netReady bool
	// tlsDone is true once a TLS handshake completed.
	tlsDone   bool
	received  int
	ioErr     error
	oversized bool
}

func (t *dialTracker) state() trackerState {
	t.mu.Lock()
	tc := t.tlsConn
	st := trackerState{connected: t.connected, tlsRefused: t.tlsRefused, tlsAccepted: t.tlsAccepted,
		netReady: t.netReady, received: t.received, ioErr: t.ioErr, oversized: t.oversized}
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
	framing := t.mysqlFraming
	t.mu.Unlock()
	return &trackedConn{Conn: c, t: t, frames: framing}, nil
}

// sslRequest is the PostgreSQL SSLRequest message.
var sslRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}

// trackedConn notes the server's one-byte answer to an SSLRequest and
// enforces maxReceived and, for MySQL, maxMessageLen.
type trackedConn struct {
	net.Conn
	t         *dialTracker
	writes    int
	sslAsked  bool
	sslAnswer bool

	// frames: MySQL packet headers are checked (plain text only).
	frames bool
	f      frames
}

// mysqlSSLRequestLen is the payload length of MySQL's SSL request packet,
// after which the connection carries TLS records, not packets. A login
// packet is always longer.
const mysqlSSLRequestLen = 32

func (c *trackedConn) Write(b []byte) (int, error) {
	if c.writes == 0 && string(b) == string(sslRequest) {
		c.sslAsked = true
	}
	if c.frames && len(b) >= 4 && int(b[0])|int(b[1])<<8|int(b[2])<<16 == mysqlSSLRequestLen {
		c.frames = false
	}
	c.writes++
	n, err := c.Conn.Write(b)
	if err != nil {
		c.t.noteIO(0, err)
	}
	return n, err
}

func (c *trackedConn) Read(b []byte) (int, error) {
	c.t.mu.Lock()
	left := maxReceived - c.t.received
	c.t.mu.Unlock()
	if left <= 0 {
		return 0, c.overflow()
	}
	if len(b) > left {
		b = b[:left]
	}
	n, err := c.Conn.Read(b)
	if n > 0 && c.frames && !c.f.check(b[:n]) {
		c.t.noteIO(n, nil)
		return 0, c.overflow()
	}
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

// overflow marks the probe as fed too much and closes the connection, so
// that nothing more is read from it.
func (c *trackedConn) overflow() error {
	c.t.mu.Lock()
	c.t.oversized = true
	c.t.mu.Unlock()
	_ = c.Close()
	return errOversized
}
