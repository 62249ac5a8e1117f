package loadgen

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	tests := map[string]struct {
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		"no values give zero":                     {nil, 50, 0},
		"the median of four is the second":        {ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		"p99 of a hundred is the ninety-ninth":    {ms(seq(100)...), 99, 99 * time.Millisecond},
		"p99 of ten is the largest":               {ms(seq(10)...), 99, 10 * time.Millisecond},
		"p100 is the largest":                     {ms(5, 6, 7), 100, 7 * time.Millisecond},
		"a tiny percentile is the smallest value": {ms(5, 6, 7), 0.001, 5 * time.Millisecond},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("Percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

func TestRunCountsRequestsAndFailures(t *testing.T) {
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := served.Add(1)
		if n%10 == 0 {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(`{"allowed":true}`))
	}))
	defer srv.Close()

	res, err := Run(t.Context(), Options{Concurrency: 4, Duration: 5 * time.Second, MaxRequests: 200},
		Post(srv.Client(), srv.URL, "application/json", []byte(`{}`), nil))
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests() != 200 {
		t.Errorf("%d measured requests, want 200 (MaxRequests)", res.Requests())
	}
	if res.Errors != 20 {
		t.Errorf("%d errors, want 20 (every tenth answer is a 500)", res.Errors)
	}
	if res.FirstError == nil || !strings.Contains(res.FirstError.Error(), "500") {
		t.Errorf("first error %v, want the HTTP 500", res.FirstError)
	}
	for i := 1; i < len(res.Latencies); i++ {
		if res.Latencies[i] < res.Latencies[i-1] {
			t.Fatal("latencies are not sorted")
		}
	}
}

func TestRunStopsAtDurationAndDropsCutOffRequests(t *testing.T) {
	var warm atomic.Bool
	res, err := Run(t.Context(), Options{Concurrency: 2, Warmup: 50 * time.Millisecond, Duration: 200 * time.Millisecond},
		func(ctx context.Context, _, _ int) error {
			warm.Store(true)
			select {
			case <-time.After(30 * time.Millisecond):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	if !warm.Load() || res.Requests() == 0 {
		t.Fatalf("no requests ran: %+v", res)
	}
	if res.Errors != 0 {
		t.Errorf("%d errors: requests cut off by the end of the run must not count (%v)", res.Errors, res.FirstError)
	}
	// Two workers, 30ms each, in 200ms: at most 2*ceil(200/30) = 14.
	if res.Requests() > 14 {
		t.Errorf("%d requests in 200ms with 2 workers of 30ms each", res.Requests())
	}
}

func TestRunEndsWithTheCallersContext(t *testing.T) {
	ctx, cancel := context.WithCancelCause(t.Context())
	stop := errors.New("stopped by the caller")
	go func() { time.Sleep(20 * time.Millisecond); cancel(stop) }()
	_, err := Run(ctx, Options{Duration: time.Minute}, func(ctx context.Context, _, _ int) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, stop) {
		t.Errorf("err = %v, want the caller's cause", err)
	}
}

func TestOpenLoopCountsQueueingFromWhenARequestWasDue(t *testing.T) {
	// One worker taking at least 20ms per request, due every 5ms: the k-th
	// request (from 0) is due at 5k ms but cannot start before 20k ms, so
	// the last of n waited at least 15(n-1) ms, and its latency must show it.
	res, err := Run(t.Context(), Options{Concurrency: 1, Rate: 200, Duration: 300 * time.Millisecond},
		func(context.Context, int, int) error { time.Sleep(20 * time.Millisecond); return nil })
	if err != nil {
		t.Fatal(err)
	}
	n := res.Requests()
	if n < 2 || n > 16 {
		t.Fatalf("%d requests by one 20ms worker in 300ms", n)
	}
	if want := time.Duration(n-1) * 15 * time.Millisecond; res.Percentile(100) < want {
		t.Errorf("slowest latency %v, want at least %v: queueing behind a busy worker is not counted", res.Percentile(100), want)
	}
}

func TestPauseIsNotTimed(t *testing.T) {
	const pause = 200 * time.Millisecond
	res, err := Run(t.Context(), Options{Concurrency: 1, Pause: pause, Duration: time.Minute, MaxRequests: 3},
		func(context.Context, int, int) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests() != 3 {
		t.Fatalf("%d requests, want 3", res.Requests())
	}
	if p := res.Percentile(100); p >= pause {
		t.Errorf("latency %v includes the pause", p)
	}
	if res.Elapsed < 3*pause {
		t.Errorf("3 requests with %v pauses took %v", pause, res.Elapsed)
	}
}
