package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Every test closes its proxy and echo server, which wait for their
// goroutines: none may be left over.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer echoes every connection on loopback and records how each ended.
type echoServer struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
	ends     []error
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln}
	e.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			e.mu.Lock()
			e.conns = append(e.conns, c)
			e.mu.Unlock()
			e.wg.Go(func() {
				err := echo(c)
				e.mu.Lock()
				e.ends = append(e.ends, err)
				e.mu.Unlock()
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		e.mu.Lock()
		for _, c := range e.conns {
			_ = c.Close()
		}
		e.mu.Unlock()
		e.wg.Wait()
	})
	return e
}

// echo copies c back to itself with plain reads and writes (io.Copy would
// splice, which reports a reset as an orderly end). It returns nil at EOF.
func echo(c net.Conn) error {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (e *echoServer) endings() []error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]error(nil), e.ends...)
}

func startProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes msg and reads back len(msg) bytes, failing after 10 s.
func roundTrip(c net.Conn, msg []byte) ([]byte, error) {
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return nil, err
	}
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	got := make([]byte, len(msg))
	n, err := io.ReadFull(c, got)
	return got[:n], err
}

// poll waits until cond holds, failing the test after 10 s.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 5*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func TestForwardEchoesAndCounts(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.ln.Addr().String())
	if got := p.Addr(); got[:len("127.0.0.1:")] != "127.0.0.1:" {
		t.Errorf("Addr() = %q, want 127.0.0.1:port", got)
	}
	msg := []byte("hello through the proxy")
	var clients []net.Conn
	for range 3 {
		c := dial(t, p.Addr())
		got, err := roundTrip(c, msg)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo = %q, %v; want %q", got, err, msg)
		}
		clients = append(clients, c)
	}
	if n := p.Accepted(); n != 3 {
		t.Errorf("Accepted() = %d, want 3", n)
	}
	if n := p.Open(); n != 3 {
		t.Errorf("Open() = %d, want 3", n)
	}
	for _, c := range clients {
		_ = c.Close()
	}
	poll(t, "open connections back to 0", func() bool { return p.Open() == 0 })
	poll(t, "echo server saw every connection end", func() bool { return len(echo.endings()) == 3 })
}

func TestBlackholeNeverAnswersNorDials(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.ln.Addr().String())
	p.Set(Options{Fault: Blackhole})
	c := dial(t, p.Addr())
	if _, err := c.Write([]byte("anyone there?")); err != nil {
		t.Fatal(err)
	}
	// A read deadline stands for the client's own timeout.
	if err := c.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Read(make([]byte, 16))
	var ne net.Error
	if n != 0 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("read = %d bytes, %v; want a timeout with nothing read", n, err)
	}
	if got := echo.accepted.Load(); got != 0 {
		t.Errorf("target saw %d connections, want 0", got)
	}
	if n := p.Open(); n != 1 {
		t.Errorf("Open() = %d, want 1", n)
	}
	_ = c.Close()
	poll(t, "the blackholed connection is released", func() bool { return p.Open() == 0 })
}

func TestResetAfterBytes(t *testing.T) {
	tests := map[string]struct {
		limit    int
		wantRead int
	}{
		"zero bytes resets as soon as the server is connected": {limit: 0, wantRead: 0},
		"one byte reaches the client before the reset":         {limit: 1, wantRead: 1},
		"five bytes reach the client before the reset":         {limit: 5, wantRead: 5},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			echo := startEcho(t)
			p := startProxy(t, echo.ln.Addr().String())
			p.Set(Options{Fault: ResetAfter, ResetAfterBytes: tc.limit})
			got, err := readUntilEnd(t, p.Addr(), []byte("0123456789"))
			if len(got) != tc.wantRead || string(got) != "0123456789"[:tc.wantRead] {
				t.Errorf("client read %q, want the first %d bytes", got, tc.wantRead)
			}
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("client read ended with %v, want a connection reset", err)
			}
			if tc.limit > 0 {
				poll(t, "the server side ended", func() bool { return len(echo.endings()) == 1 })
				if err := echo.endings()[0]; !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("server side ended with %v (%#v), want a connection reset", err, echo.endings())
				}
			}
			poll(t, "open connections back to 0", func() bool { return p.Open() == 0 })
		})
	}
}

func TestDelayHoldsFirstBytes(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.ln.Addr().String())
	p.Set(Options{Fault: Delay, Delay: 20 * time.Millisecond})
	c := dial(t, p.Addr())
	for _, msg := range []string{"first", "second"} {
		got, err := roundTrip(c, []byte(msg))
		if err != nil || string(got) != msg {
			t.Fatalf("echo = %q, %v; want %q", got, err, msg)
		}
	}
}

func TestCloseEndsHeldAndOpenConnections(t *testing.T) {
	echo := startEcho(t)
	p, err := Start(echo.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	forwarded := dial(t, p.Addr())
	if got, err := roundTrip(forwarded, []byte("x")); err != nil || string(got) != "x" {
		t.Fatalf("echo = %q, %v", got, err)
	}
	p.Set(Options{Fault: Delay, Delay: time.Hour})
	held := dial(t, p.Addr())
	if _, err := held.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	p.Set(Options{Fault: Blackhole})
	blackholed := dial(t, p.Addr())
	poll(t, "three connections open", func() bool { return p.Open() == 3 })

	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close() = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return: a connection held it")
	}
	for name, c := range map[string]net.Conn{"forwarded": forwarded, "held": held, "blackholed": blackholed} {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 8)); err == nil || isTimeout(err) {
			t.Errorf("%s connection: read after Close = %v, want it closed", name, err)
		}
	}
	if n := p.Open(); n != 0 {
		t.Errorf("Open() after Close = %d, want 0", n)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}
	if _, err := net.Dial("tcp", p.Addr()); err == nil {
		t.Error("the proxy still accepts connections after Close")
	}
}

func TestSetAppliesToNewConnectionsOnly(t *testing.T) {
	echo := startEcho(t)
	p := startProxy(t, echo.ln.Addr().String())
	before := dial(t, p.Addr())
	if _, err := roundTrip(before, []byte("a")); err != nil {
		t.Fatal(err)
	}
	p.Set(Options{Fault: Blackhole})
	after := dial(t, p.Addr())
	if _, err := after.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(before, []byte("still forwarded")); err != nil || string(got) != "still forwarded" {
		t.Errorf("connection accepted before Set: echo = %q, %v", got, err)
	}
	_ = after.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := after.Read(make([]byte, 4)); !isTimeout(err) {
		t.Errorf("connection accepted after Set: read %d bytes, %v; want no answer", n, err)
	}
}

func TestUnreachableTargetResetsClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	p := startProxy(t, target)
	if _, err := readUntilEnd(t, p.Addr(), nil); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read = %v, want a connection reset", err)
	}
	poll(t, "open connections back to 0", func() bool { return p.Open() == 0 })
}

func TestStartRejectsBadTarget(t *testing.T) {
	p, err := Start("no-port")
	if err == nil {
		_ = p.Close()
		t.Fatal("Start accepted a target without a port")
	}
	if want := `faultproxy: target "no-port" is not host:port`; !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Errorf("error %q does not contain %q", err, want)
	}
}

func TestFaultString(t *testing.T) {
	for f, want := range map[Fault]string{Forward: "forward", Blackhole: "blackhole", ResetAfter: "reset-after", Delay: "delay", Fault(9): "fault(9)"} {
		if got := f.String(); got != want {
			t.Errorf("Fault(%d).String() = %q, want %q", int(f), got, want)
		}
	}
}

// readUntilEnd connects to addr, writes msg and reads until the connection
// ends. A reset can arrive before the dial returns; that is its error then.
func readUntilEnd(t *testing.T, addr string, msg []byte) ([]byte, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.Close() }()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write(msg) // fails if the reset came first; the read says so
	return io.ReadAll(c)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
