package probe

import (
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// bombServer listens on 127.0.0.1 and hands every connection to serve, which
// the server ends by closing the connection when the test does.
func bombServer(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { serve(c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// stream writes zeros to c until a write fails.
func stream(c net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// pgBomb answers an SSLRequest with N and a startup message with the header
// of an authentication message 1 GiB long, then streams its body.
func pgBomb(c net.Conn) {
	defer func() { _ = c.Close() }()
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		if string(hdr[:]) == string(sslRequest) {
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

// mysqlBomb greets with packet headers announcing 16 MiB-1 payloads, over
// and over, without end.
func mysqlBomb(c net.Conn) {
	defer func() { _ = c.Close() }()
	pkt := make([]byte, 64<<10)
	for {
		for seq := range 256 {
			copy(pkt, []byte{0xff, 0xff, 0xff, byte(seq)})
			if _, err := c.Write(pkt); err != nil {
				return
			}
		}
	}
}

// A server on a private address must not make the guard allocate what it
// announces: the probe stops reading and denies, having allocated a few
// MiB at most.
func TestProbeMemoryBomb(t *testing.T) {
	tests := map[string]struct {
		serve  func(net.Conn)
		dsn    func(addr string) string
		driver string
	}{
		"a postgres server announcing a 1 GiB message": {
			serve:  pgBomb,
			dsn:    func(a string) string { return "postgres://app:s3cret@" + a + "/app?sslmode=prefer" },
			driver: "postgres",
		},
		"a mysql server greeting with endless 16 MiB packets": {
			serve:  mysqlBomb,
			dsn:    func(a string) string { return "mysql://app:s3cret@" + a + "/app?ssl-mode=DISABLED" },
			driver: "mysql",
		},
		"a mysql server greeting with endless 16 MiB packets, TLS preferred": {
			serve:  mysqlBomb,
			dsn:    func(a string) string { return "mysql://app:s3cret@" + a + "/app" },
			driver: "mysql",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			verifyNoLeaks(t)
			addr := bombServer(t, tc.serve)
			p := NewProber(ProberOptions{PrivateCIDRs: loopback, Timeout: 10 * time.Second, Ports: []uint16{portOf(t, addr)}})

			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			got := probeOutcome(t, p, tc.dsn(addr))
			runtime.ReadMemStats(&after)

			want := denial(ReasonProbeFailed,
				"database at "+addr+" sent more than 1024 KiB, which no "+tc.driver+" server sends to a login and SELECT 1",
				"check the scheme, host and port in "+secretSource)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
			grew := after.TotalAlloc - before.TotalAlloc
			t.Logf("allocated %d KiB during the probe", grew>>10)
			if grew > 16<<20 {
				t.Errorf("the probe allocated %d MiB, want under 16 MiB", grew>>20)
			}
		})
	}
}

func portOf(t testing.TB, addr string) uint16 {
	t.Helper()
	_, ps, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	return uint16(n)
}
