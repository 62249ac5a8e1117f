package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/cutover-guard/cutover-guard/internal/testcert"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// With --client-ca-file the readiness check presents the process's own
// client certificate: the webhook server (controller-runtime's, as run
// serves it) answers it without logging a failed handshake, as it does for
// controller-runtime's StartedChecker, and accepts it with --client-cn too;
// another process's certificate of the same kind is refused.
func TestReadyzWithClientAuthLogsNoHandshakeError(t *testing.T) {
	// net/http logs failed handshakes to the standard logger.
	var logged syncBuffer
	prev, prevFlags := log.Writer(), log.Flags()
	log.SetOutput(&logged)
	t.Cleanup(func() { log.SetOutput(prev); log.SetFlags(prevFlags) })

	dir := t.TempDir()
	serving, err := testcert.Issue("localhost")
	if err != nil {
		t.Fatal(err)
	}
	if err := serving.WriteKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	ca, err := testcert.NewAuthority()
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CAPEM)
	auth := &clientAuth{CAs: pool, CommonName: "kube-apiserver"}
	if err := auth.addSelfCheck(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	server := crwebhook.NewServer(crwebhook.Options{Port: port, CertDir: dir, TLSOpts: []func(*tls.Config){auth.TLSConfig}})
	server.Register("/validate-httproute", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	ctx := t.Context()
	done := make(chan error, 1)
	go func() { done <- server.Start(ctx) }()
	t.Cleanup(func() {
		if err := <-done; err != nil {
			t.Errorf("webhook server: %v", err)
		}
	})

	check := auth.readyChecker(port)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "/readyz", nil)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if err = check(req); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readiness check never passed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for range 5 {
		if err := check(req); err != nil {
			t.Fatalf("readiness check: %v", err)
		}
	}

	// Another process's readiness certificate is nobody's here.
	stranger := &clientAuth{CAs: pool}
	if err := stranger.addSelfCheck(); err != nil {
		t.Fatal(err)
	}
	if err := stranger.readyChecker(port)(req); err == nil {
		t.Error("a readiness certificate this process did not make was accepted")
	}
	// The control: controller-runtime's check, without a certificate,
	// is logged as a failed handshake; so the log would show ours.
	_ = server.StartedChecker()(req)
	for deadline := time.Now().Add(10 * time.Second); strings.Count(logged.String(), "TLS handshake error") < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("the failed handshakes of the stranger and StartedChecker were not logged; the log:\n%s", logged.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := strings.Count(logged.String(), "TLS handshake error"); n != 2 {
		t.Errorf("%d failed handshakes logged, want 2 (the stranger's and StartedChecker's, none of the 6 readiness checks):\n%s", n, logged.String())
	}
}
