package probetest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Silent is a TCP listener on 127.0.0.1 that accepts every connection and
// never answers: a database port behind a proxy that hangs. It counts the
// connections open at once.
type Silent struct {
	ln net.Listener

	mu             sync.Mutex
	open, peak     int
	accepted       int
	wg             sync.WaitGroup
	conns          map[net.Conn]bool
	stoppedServing bool
}

// NewSilent listens until t's cleanup, which closes every connection left
// open and waits for the listener's goroutines.
func NewSilent(t testing.TB) *Silent {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Silent{ln: ln, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.close)
	return s
}

// Port is the port the listener accepts on.
func (s *Silent) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Peak is the most connections that were open at once.
func (s *Silent) Peak() int { s.mu.Lock(); defer s.mu.Unlock(); return s.peak }

// Open is the connections open now: those the client has not closed.
func (s *Silent) Open() int { s.mu.Lock(); defer s.mu.Unlock(); return s.open }

// Accepted is the connections accepted so far.
func (s *Silent) Accepted() int { s.mu.Lock(); defer s.mu.Unlock(); return s.accepted }

func (s *Silent) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.stoppedServing {
			s.mu.Unlock()
			_ = c.Close()
			continue
		}
		s.open++
		s.accepted++
		s.peak = max(s.peak, s.open)
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			_, _ = io.Copy(io.Discard, c) // never answers; returns when the client closes
			_ = c.Close()
			s.mu.Lock()
			s.open--
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *Silent) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	s.stoppedServing = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
