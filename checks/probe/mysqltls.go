package probe

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"sync"
	"time"
)

// The MySQL driver upgrades a connection to TLS itself, after the server's
// greeting (tls.Client over the connection it dialed), and from then on
// reads packets through the TLS connection: the packet headers the tracker
// checks before the driver allocates room for a packet (frameCheck) are
// encrypted. A server that declares a 16 MiB packet inside TLS would make
// the driver allocate 16 MiB at once, per probe, before the byte budget
// ends the read.
//
// So the probe keeps the plaintext in its own hands: the driver's TLS
// handshake is answered in process, over a pipe, with a certificate the
// guard made for the purpose and the driver is told to trust, while the
// probe itself completes the TLS handshake with the server, with the TLS
// settings the connection string asked for. Between the two, every packet
// header the server sends is checked before the driver sees it, and the
// byte budget still counts the server's TLS records.

// spliceName is the server name of the in-process TLS endpoint.
const spliceName = "mysql-probe.cutover-guard.invalid"

// spliceTLS returns the server and client TLS configs of the in-process
// endpoint, made once per process.
var spliceTLS = sync.OnceValues(func() (server, client *tls.Config) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic("cutover-guard: generating the MySQL probe's TLS key: " + err.Error())
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: spliceName},
		DNSNames:     []string{spliceName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic("cutover-guard: making the MySQL probe's TLS certificate: " + err.Error())
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic("cutover-guard: parsing the MySQL probe's TLS certificate: " + err.Error())
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	server = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}}
	client = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: spliceName}
	return server, client
})

// mysqlSplice is one probe connection to a MySQL server, as the driver
// uses it: plain until the driver asks for TLS, then the driver's end of
// the in-process pipe.
type mysqlSplice struct {
	raw    *trackedConn
	ctx    context.Context
	server *tls.Config // the connection string's TLS settings, for the real server

	mu      sync.Mutex
	pipe    net.Conn // the driver's end, once TLS began
	relay   net.Conn // the relay's end
	real    *tls.Conn
	tlsErr  error // the real handshake's failure
	closed  bool
	stopped sync.WaitGroup
}

// spliceMySQL wraps raw, the tracked connection to a MySQL server, so that
// a TLS upgrade goes through the probe's own handshake with tlsConfig.
func spliceMySQL(ctx context.Context, raw *trackedConn, tlsConfig *tls.Config) *mysqlSplice {
	return &mysqlSplice{raw: raw, ctx: ctx, server: tlsConfig}
}

func (s *mysqlSplice) conn() net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pipe != nil {
		return s.pipe
	}
	return s.raw
}

func (s *mysqlSplice) Read(b []byte) (int, error) { return s.conn().Read(b) }

func (s *mysqlSplice) Write(b []byte) (int, error) {
	c := s.conn()
	n, err := c.Write(b)
	if err == nil && c == net.Conn(s.raw) && isSSLRequest(b) {
		s.upgrade()
	}
	return n, err
}

// isSSLRequest reports whether b is the MySQL SSL request packet: after it,
// the client begins TLS.
func isSSLRequest(b []byte) bool {
	return len(b) == 4+mysqlSSLRequestLen && int(b[0])|int(b[1])<<8|int(b[2])<<16 == mysqlSSLRequestLen
}

// upgrade starts the relay: the real TLS handshake with the server, the
// in-process one with the driver, then the plaintext both ways, the
// server's packet headers checked.
func (s *mysqlSplice) upgrade() {
	driverEnd, relayEnd := net.Pipe()
	real := tls.Client(s.raw, s.server)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = driverEnd.Close()
		_ = relayEnd.Close()
		return
	}
	s.pipe, s.relay, s.real = driverEnd, relayEnd, real
	s.mu.Unlock()
	stop := context.AfterFunc(s.ctx, s.shut)
	s.stopped.Go(func() {
		defer stop()
		defer s.shut()
		if err := real.HandshakeContext(s.ctx); err != nil {
			s.mu.Lock()
			s.tlsErr = err
			s.mu.Unlock()
			return
		}
		serverSide, _ := spliceTLS()
		inner := tls.Server(relayEnd, serverSide)
		if err := inner.HandshakeContext(s.ctx); err != nil {
			return
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			defer s.shut()
			_, _ = io.Copy(real, inner) // the driver's packets: its own, not checked
		})
		wg.Go(func() {
			defer s.shut()
			f := &frames{}
			buf := make([]byte, 16<<10)
			for {
				n, err := real.Read(buf)
				if n > 0 && !f.check(buf[:n]) {
					_ = s.raw.overflow()
					return
				}
				if n > 0 {
					if _, werr := inner.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		})
		wg.Wait()
	})
}

// handshakeErr is the failure of the probe's TLS handshake with the
// server, if it failed.
func (s *mysqlSplice) handshakeErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tlsErr
}

// shut closes every connection of the splice, which ends the relay.
func (s *mysqlSplice) shut() {
	s.mu.Lock()
	s.closed = true
	pipe, relay := s.pipe, s.relay
	s.mu.Unlock()
	if pipe != nil {
		_ = pipe.Close()
		_ = relay.Close()
	}
	_ = s.raw.Close()
}

// Close closes the splice and waits for its relay to end.
func (s *mysqlSplice) Close() error {
	s.shut()
	s.stopped.Wait()
	return nil
}

func (s *mysqlSplice) LocalAddr() net.Addr                { return s.raw.LocalAddr() }
func (s *mysqlSplice) RemoteAddr() net.Addr               { return s.raw.RemoteAddr() }
func (s *mysqlSplice) SetDeadline(t time.Time) error      { return s.conn().SetDeadline(t) }
func (s *mysqlSplice) SetReadDeadline(t time.Time) error  { return s.conn().SetReadDeadline(t) }
func (s *mysqlSplice) SetWriteDeadline(t time.Time) error { return s.conn().SetWriteDeadline(t) }

// frames follows MySQL packet headers in a stream.
type frames struct {
	hdr     [4]byte
	hdrLen  int // bytes of hdr read so far
	bodyRem int // bytes of the current packet's payload still to come
}

// check follows the packet headers in b, the next bytes of the stream, and
// reports false at a header announcing more than maxMessageLen: the driver
// would allocate room for the whole packet before reading it.
func (f *frames) check(b []byte) bool {
	for len(b) > 0 {
		if f.bodyRem > 0 {
			k := min(f.bodyRem, len(b))
			f.bodyRem -= k
			b = b[k:]
			continue
		}
		f.hdr[f.hdrLen] = b[0]
		f.hdrLen++
		b = b[1:]
		if f.hdrLen == len(f.hdr) {
			f.hdrLen = 0
			f.bodyRem = int(f.hdr[0]) | int(f.hdr[1])<<8 | int(f.hdr[2])<<16
			if f.bodyRem > maxMessageLen {
				return false
			}
		}
	}
	return true
}
