package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"
)

// Three hundred probes at once of databases that accept and never answer
// open at most MaxInFlight connections; every caller is answered by its
// deadline; no probe starts after it, and none outlives it by more than a
// small margin.
func TestProberBoundsProbesInFlight(t *testing.T) {
	const probes, inFlight = 300, 16
	silent := probetest.NewSilent(t)
	before := goleak.IgnoreCurrent()

	var mu sync.Mutex
	var lateDials int
	deadline := time.Now().Add(time.Second)
	p := NewProber(ProberOptions{PrivateCIDRs: loopback, Ports: probetest.AnyPort(), Timeout: time.Minute, MaxInFlight: inFlight,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if time.Now().After(deadline.Add(50 * time.Millisecond)) {
				mu.Lock()
				lateDials++
				mu.Unlock()
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}})
	ctx, cancel := context.WithDeadline(t.Context(), deadline)
	defer cancel()
	errs := make([]error, probes)
	var wg sync.WaitGroup
	for i := range probes {
		wg.Go(func() {
			_, errs[i] = p.Probe(ctx, fmt.Sprintf("postgres://app:pw@127.0.0.1:%d/db%d?sslmode=disable", silent.Port(), i))
		})
	}
	wg.Wait()
	answered := time.Now()
	if late := answered.Sub(deadline); late > 500*time.Millisecond {
		t.Errorf("callers answered %v after their deadline", late)
	}
	for i, err := range errs {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("probe %d: %v, want the deadline's error", i, err)
		}
	}
	if peak := silent.Peak(); peak > inFlight || peak == 0 {
		t.Errorf("%d connections open at once, want 1 to %d", peak, inFlight)
	}
	t.Logf("peak %d connections at once, %d accepted in all", silent.Peak(), silent.Accepted())
	if lateDials > 0 {
		t.Errorf("%d probes started after their caller's deadline", lateDials)
	}
	// goleak polls until the probes' goroutines and the listener's
	// connection handlers (which end when the probe closes) are gone.
	if err := goleak.Find(before); err != nil {
		t.Fatal(err)
	}
	if outlived := time.Since(answered); outlived > time.Second {
		t.Errorf("probes outlived the answer by %v", outlived)
	}
	if n := silent.Open(); n != 0 {
		t.Errorf("%d connections still open after the answer", n)
	}
}
