package probetest

import (
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/cutover-guard/cutover-guard/internal/testcert"
)

// Bomb is a TCP listener on 127.0.0.1 that hands every connection to a
// hostile "database": one that answers a client with a message header
// declaring far more than any database sends to a login (PostgresBomb,
// MySQLBomb, MySQLTLSBomb).
type Bomb struct {
	ln net.Listener

	mu       sync.Mutex
	conns    []net.Conn
	accepted int
	wg       sync.WaitGroup
}

// NewBomb listens until t's cleanup, which closes every connection and
// waits for the servers to end.
func NewBomb(t testing.TB, serve func(net.Conn)) *Bomb {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Bomb{ln: ln}
	b.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.accepted++
			b.mu.Unlock()
			b.wg.Go(func() { serve(c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			_ = c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

// Addr is the listener's "127.0.0.1:port".
func (b *Bomb) Addr() string { return b.ln.Addr().String() }

// Port is the port the listener accepts on.
func (b *Bomb) Port() int { return b.ln.Addr().(*net.TCPAddr).Port }

// Accepted is the connections accepted so far.
func (b *Bomb) Accepted() int { b.mu.Lock(); defer b.mu.Unlock(); return b.accepted }

// stream writes zeros to c until a write fails.
func stream(c io.Writer) {
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// pgSSLRequest is the PostgreSQL SSLRequest message.
var pgSSLRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}

// PostgresBomb answers an SSLRequest with N and a startup message with the
// header of an authentication message 1 GiB long, then streams its body.
func PostgresBomb(c net.Conn) {
	defer func() { _ = c.Close() }()
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		if string(hdr[:]) == string(pgSSLRequest) {
			if _, err := c.Write([]byte{'N'}); err != nil {
				return
			}
			continue
		}
		n := int64(binary.BigEndian.Uint32(hdr[:4])) - 8
		if _, err := io.CopyN(io.Discard, c, n); err != nil {
			return
		}
		if _, err := c.Write([]byte{'R', 0x40, 0, 0, 0}); err != nil { // 1 GiB
			return
		}
		stream(c)
		return
	}
}

// MySQLBomb greets with packet headers announcing 16 MiB-1 payloads, over
// and over, without end.
func MySQLBomb(c net.Conn) {
	defer func() { _ = c.Close() }()
	mysqlPackets(c, 0)
}

// mysqlPackets writes packet headers announcing 16 MiB-1 payloads, their
// sequence numbers from first on, without end.
func mysqlPackets(c io.Writer, first byte) {
	pkt := make([]byte, 64<<10)
	for {
		for i := range 256 {
			copy(pkt, []byte{0xff, 0xff, 0xff, first + byte(i)})
			if _, err := c.Write(pkt); err != nil {
				return
			}
		}
	}
}

// MySQL capability flags of the greeting.
const (
	myLongPassword = 0x1
	myProtocol41   = 0x200
	mySSL          = 0x800
	mySecureConn   = 0x8000
	myPluginAuth   = 0x80000
)

// mysqlGreeting is a protocol 10 greeting offering TLS and
// mysql_native_password, as a MySQL 8 server sends it.
func mysqlGreeting() []byte {
	caps := uint32(myLongPassword | myProtocol41 | mySSL | mySecureConn | myPluginAuth)
	p := []byte{10}
	p = append(p, "8.0.36\x00"...)
	p = binary.LittleEndian.AppendUint32(p, 1) // connection id
	p = append(p, "abcdefgh"...)               // auth data, part 1
	p = append(p, 0)                           // filler
	p = binary.LittleEndian.AppendUint16(p, uint16(caps))
	p = append(p, 0xff)                        // utf8mb4_0900_ai_ci
	p = binary.LittleEndian.AppendUint16(p, 2) // autocommit
	p = binary.LittleEndian.AppendUint16(p, uint16(caps>>16))
	p = append(p, 21)                    // auth data length
	p = append(p, make([]byte, 10)...)   // reserved
	p = append(p, "ijklmnopqrst\x00"...) // auth data, part 2
	p = append(p, "mysql_native_password\x00"...)
	return append([]byte{byte(len(p)), byte(len(p) >> 8), byte(len(p) >> 16), 0}, p...)
}

// MySQLTLSBomb returns a server that greets as MySQL 8 offering TLS, takes
// the client's SSL request and completes the TLS handshake (with a
// throwaway certificate), then answers the login, inside TLS, with packet
// headers announcing 16 MiB-1 payloads without end.
func MySQLTLSBomb(t testing.TB) func(net.Conn) {
	t.Helper()
	b, err := testcert.Issue()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(b.CertPEM, b.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return func(c net.Conn) {
		defer func() { _ = c.Close() }()
		if _, err := c.Write(mysqlGreeting()); err != nil {
			return
		}
		var req [4 + 32]byte // the SSL request
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return
		}
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		var hdr [4]byte // the login packet
		if _, err := io.ReadFull(tc, hdr[:]); err != nil {
			return
		}
		if _, err := io.CopyN(io.Discard, tc, int64(hdr[0])|int64(hdr[1])<<8|int64(hdr[2])<<16); err != nil {
			return
		}
		mysqlPackets(tc, hdr[3]+1)
	}
}
