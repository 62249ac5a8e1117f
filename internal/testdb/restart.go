package testdb

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Stop stops the server the way a crash or an immediate shutdown would
// (PostgreSQL: SIGQUIT; MariaDB: SIGKILL) and waits until it has exited. Its
// data is kept: Start brings it back on the same port.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	p := s.proc
	select {
	case <-p.exited:
		return
	default:
	}
	_ = syscall.Kill(p.cmd.Process.Pid, s.stop)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("%s did not stop within 10s; killing it", filepath.Base(p.cmd.Path))
	}
	// The leader is left unreaped (its cleanup reaps it), so the group id
	// is still ours.
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// Start starts a stopped server again on its port and waits until it
// accepts a login.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	p := s.launch(s.Port)
	s.proc = p
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := s.login(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited while starting again on port %d: %v\n%s", filepath.Base(p.cmd.Path), s.Port, err, p.logTail())
		case <-time.After(50 * time.Millisecond): // poll interval
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready on port %d after %s: %v\n%s", filepath.Base(p.cmd.Path), s.Port, startTimeout, err, p.logTail())
		}
	}
}
