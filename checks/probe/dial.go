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
