package testdb

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// checkTornDown asserts that a server's process group and data directory are
// gone once its test's cleanups have run.
func checkTornDown(t *testing.T, s *Server) {
	t.Helper()
	if _, err := os.Stat(s.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data directory %s still exists (%v)", s.dir, err)
	}
	if err := syscall.Kill(-s.proc.cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d still exists (%v)", s.proc.cmd.Process.Pid, err)
	}
	if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		_ = c.Close()
		t.Errorf("%s still accepts connections", s.Addr())
	}
}

func TestPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	var s *Server
	t.Run("password login works and a wrong one fails", func(t *testing.T) {
		s = StartPostgres(t, PostgresOptions{Password: "pw-One:2"})
		conn, err := pgconn.Connect(t.Context(), s.URL("postgresql", "sslmode=disable"))
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		_ = conn.Close(context.Background())
		bad := *s
		bad.Password = "wrong"
		var pgErr *pgconn.PgError
		if _, err := pgconn.Connect(t.Context(), bad.URL("postgresql", "sslmode=disable")); !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
			t.Fatalf("wrong password: got %v, want SQLSTATE 28P01", err)
		}
		if _, err := pgconn.Connect(t.Context(), s.URL("postgresql", "sslmode=require")); err == nil {
			t.Fatal("sslmode=require succeeded against a server without TLS")
		}
	})
	if s != nil {
		checkTornDown(t, s)
	}
}

func TestPostgresTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	s := StartPostgres(t, PostgresOptions{TLS: true})
	conn, err := pgconn.Connect(t.Context(), s.URL("postgresql", "sslmode=require"))
	if err != nil {
		t.Fatalf("connect with sslmode=require: %v", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, ok := conn.Conn().(*tls.Conn); !ok {
		t.Fatalf("connection is %T, want *tls.Conn", conn.Conn())
	}
}

func TestMariaDB(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	var s *Server
	t.Run("starts and accepts its user", func(t *testing.T) {
		s = StartMariaDB(t, MariaDBOptions{})
		if s.Port == 0 {
			t.Fatal("no port")
		}
	})
	if s != nil {
		checkTornDown(t, s)
	}
}

func TestBlackholeNeverAnswers(t *testing.T) {
	addr := Blackhole(t)
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	n, err := c.Read(make([]byte, 1))
	var ne net.Error
	if n != 0 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read = %d, %v; want a timeout", n, err)
	}
}

func TestClosedPortRefuses(t *testing.T) {
	_, err := net.DialTimeout("tcp", ClosedPort(t), time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial = %v, want connection refused", err)
	}
}

func TestProxyCountsAndForwards(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("hi"))
			_ = c.Close()
		}
	}()
	p := StartProxy(t, ln.Addr().String())
	for i := range 3 {
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
			t.Fatalf("connection %d read %q, %v", i, buf, err)
		}
		_ = c.Close()
	}
	if got := p.Accepts(); got != 3 {
		t.Fatalf("Accepts() = %d, want 3", got)
	}
}
