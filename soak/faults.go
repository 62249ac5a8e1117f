package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
	"github.com/cutover-guard/cutover-guard/internal/faultproxy"
)

// window is a span of time in which every switch to green must be denied:
// green was known not to be Ready, or every database probe of green's
// connection string was known to meet a fault.
type window struct {
	from, to time.Time
	why      string
}

// timeline holds the windows the fault makers recorded; it is safe for
// concurrent use.
type timeline struct {
	mu      sync.Mutex
	windows []window
	// counts are the phases entered, by name.
	counts map[string]int
}

func (t *timeline) add(w window) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if w.to.After(w.from) {
		t.windows = append(t.windows, w)
	}
}

func (t *timeline) count(phase string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counts == nil {
		t.counts = map[string]int{}
	}
	t.counts[phase]++
}

// covering returns why [from, to] lies wholly inside a window, or "" if it
// does not.
func (t *timeline) covering(from, to time.Time) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, w := range t.windows {
		if !from.Before(w.from) && !to.After(w.to) {
			return w.why
		}
	}
	return ""
}

// pause waits d or until ctx is done; it reports whether ctx is still live.
// It paces the fault makers; nothing waits on it for a state.
func pause(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// Why a switch to green must be denied.
const (
	whyGreenNotReady = "green not ready"
	whyDatabaseFault = "database fault"
)

// flapGreen alternates green between Ready (serving) and not Ready (its
// pods held Pending) until ctx is done. The time from the moment green is
// confirmed held until the moment it is told to serve again is a window:
// nothing can make green Ready in it.
func (e *env) flapGreen(ctx context.Context, t *timeline) error {
	for {
		if err := tutorial.Serve(ctx, e.kube, e.green(false)); err != nil {
			return ctxOr(ctx, fmt.Errorf("making green serve: %w", err))
		}
		t.count("green ready")
		if e.s.verbose {
			logf("green is Ready")
		}
		if !pause(ctx, e.s.flap) {
			return nil
		}
		if err := tutorial.HoldPending(ctx, e.kube, e.green(true)); err != nil {
			return ctxOr(ctx, fmt.Errorf("holding green pending: %w", err))
		}
		held := time.Now()
		t.count("green not ready")
		if e.s.verbose {
			logf("green is held not Ready")
		}
		pause(ctx, e.s.flap)
		t.add(window{from: held, to: time.Now(), why: whyGreenNotReady})
		if ctx.Err() != nil {
			return nil
		}
	}
}

// faultPhases is the proxy's cycle: each fault with a forward phase before
// it, so that switches to green can also be allowed.
func (s settings) faultPhases() []faultproxy.Options {
	return []faultproxy.Options{
		{Fault: faultproxy.Forward},
		{Fault: faultproxy.Blackhole},
		{Fault: faultproxy.Forward},
		// A few bytes of the server's first message, then a reset: the
		// connection dies mid-handshake.
		{Fault: faultproxy.ResetAfter, ResetAfterBytes: 5},
		{Fault: faultproxy.Forward},
		// Well above --db-timeout: the probe times out.
		{Fault: faultproxy.Delay, Delay: 3 * s.dbTimeout},
	}
}

// cycleFaults sets the proxy in front of green's database to each phase
// in turn until ctx is done. A fault phase is a window from
// faultWindowDelay after it is set (once no earlier probe or cached answer
// can stand in) until the next phase is set.
func (e *env) cycleFaults(ctx context.Context, t *timeline) {
	phases := e.s.faultPhases()
	for i := 0; ; i++ {
		o := phases[i%len(phases)]
		e.proxy.Set(o)
		set := time.Now()
		t.count("database " + o.Fault.String())
		if e.s.verbose {
			logf("database path: %s", o.Fault)
		}
		live := pause(ctx, e.s.faultPhase)
		if o.Fault != faultproxy.Forward {
			t.add(window{from: set.Add(e.s.faultWindowDelay()), to: time.Now(), why: whyDatabaseFault + " " + o.Fault.String()})
		}
		if !live {
			e.proxy.Set(faultproxy.Options{Fault: faultproxy.Forward})
			return
		}
	}
}

// ctxOr returns nil if ctx is done (the error is the stop), else err.
func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
