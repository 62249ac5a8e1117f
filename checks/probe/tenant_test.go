package probe

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"
)

// One tenant probing fifty databases that accept and never answer holds at
// most its share of the slots; another tenant's probe of a database that
// answers finds a slot at once and passes while the flood still waits.
func TestProberTenantShareLeavesSlotsForOthers(t *testing.T) {
	const inFlight, share = 4, 2
	requireLocal(t, localPostgres)
	silent := probetest.NewSilent(t)
	p := NewProber(ProberOptions{PrivateCIDRs: loopback, Ports: probetest.AnyPort(), Timeout: time.Minute, MaxInFlight: inFlight})

	floodCtx, cancel := context.WithTimeout(WithTenant(t.Context(), "tenant-a"), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = p.Probe(floodCtx, fmt.Sprintf("postgres://app:pw@127.0.0.1:%d/db%d?sslmode=disable", silent.Port(), i))
		})
	}
	// The flood holds its share before tenant-b asks.
	for deadline := time.Now().Add(2 * time.Second); silent.Open() < share; {
		if time.Now().After(deadline) {
			t.Fatalf("the flood opened %d connections, want %d", silent.Open(), share)
		}
		time.Sleep(5 * time.Millisecond)
	}

	ctx, cancelB := context.WithTimeout(WithTenant(t.Context(), "tenant-b"), 2*time.Second)
	defer cancelB()
	start := time.Now()
	r, err := p.Probe(ctx, localPostgresDSN)
	took := time.Since(start)
	if err != nil || !r.Passed() {
		t.Fatalf("tenant-b: %v %s %s", err, r.Reason, r.Message.Render("the test"))
	}
	t.Logf("tenant-b passed in %v while tenant-a held %d connections", took.Round(time.Millisecond), silent.Open())
	if took > time.Second {
		t.Errorf("tenant-b waited %v for a slot", took)
	}

	// The share is judged while the flood waits: once it is cancelled, a
	// waiting flight may take a freed slot and dial before the listener
	// has seen the freed connection close, which the listener would count
	// as one more open at once.
	peak := silent.Peak()
	cancel()
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("flood probe %d: %v, want its caller's cancellation", i, err)
		}
	}
	if peak > share {
		t.Errorf("tenant-a held %d connections at once, want at most its share %d", peak, share)
	}
	// The flights end just after their callers: poll for their leaving.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		p.tenants.mu.Lock()
		left := len(p.tenants.sems)
		p.tenants.mu.Unlock()
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d tenant semaphores left after every probe ended", left)
		}
	}
}

// Without a tenant share given, a tenant may hold half the slots, at least
// one; a share above MaxInFlight is cut to it.
func TestProberTenantShareDefault(t *testing.T) {
	for name, tc := range map[string]struct{ inFlight, perTenant, want int }{
		"half of the slots":        {inFlight: 32, want: 16},
		"at least one":             {inFlight: 1, want: 1},
		"as configured":            {inFlight: 8, perTenant: 3, want: 3},
		"no more than all of them": {inFlight: 4, perTenant: 9, want: 4},
	} {
		t.Run(name, func(t *testing.T) {
			p := NewProber(ProberOptions{MaxInFlight: tc.inFlight, MaxInFlightPerTenant: tc.perTenant})
			if p.tenants.limit != tc.want {
				t.Errorf("share %d, want %d", p.tenants.limit, tc.want)
			}
		})
	}
}
