package clientauth_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// With --client-ca-file the guard's /readyz checks its webhook port with
// its own client certificate: probing it, as the kubelet does every five
// seconds, logs no failed handshake. A handshake without a certificate,
// the control, is logged, so the log would show the probes' if they failed.
func TestReadinessProbesLogNoHandshakeError(t *testing.T) {
	s := setup(t)
	ctx := t.Context()
	const failed = "TLS handshake error"
	before := strings.Count(s.Guard.Log(), failed)
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", s.Guard.HealthPort)
	for range 5 {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/readyz answered %d, want 200", resp.StatusCode)
		}
	}
	if err := handshake(ctx, s.Guard.Port, s.Guard.CABundle, nil, 0); err == nil {
		t.Fatal("a handshake without a client certificate succeeded")
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(s.Guard.Log(), failed) < before+1 {
		if time.Now().After(deadline) {
			t.Fatal("the control's failed handshake was not logged")
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if got := strings.Count(s.Guard.Log(), failed) - before; got != 1 {
		t.Errorf("%d failed handshakes logged since the probes, want 1 (the control's):\n%s", got, s.Guard.Log())
	}
}
