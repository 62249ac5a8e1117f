// Package loadgen drives a target with a fixed number of workers in a closed
// loop (each sends its next request when the previous one is answered) for a
// bounded time and count, and records the latency of every request. It knows
// nothing about the guard: a request is a function.
package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Options bound a run.
type Options struct {
	// Concurrency is the number of workers; default 1.
	Concurrency int
	// Warmup is sent first and not recorded.
	Warmup time.Duration
	// Duration is the measured period.
	Duration time.Duration
	// MaxRequests stops the measured period early once this many requests
	// were sent (0: no bound but Duration). A run never goes past Duration.
	MaxRequests int
	// Rate, if set, makes the run open-loop: requests are due at this many
	// per second in total, whatever the answers, and a request's latency
	// counts from when it was due, so time spent waiting for a free worker
	// is included (no coordinated omission). MaxRequests is ignored.
	Rate float64
	// Pause is idle time a worker waits before each request, not timed
	// (closed loop only).
	Pause time.Duration
}

// Do sends one request. worker is in [0, Concurrency); i counts the requests
// of the run across workers. An error counts as a failed request.
type Do func(ctx context.Context, worker, i int) error

// Result is what a run measured.
type Result struct {
	Concurrency int
	// Latencies of the measured requests, failed ones included, ascending.
	Latencies []time.Duration
	Errors    int
	// FirstError is the first failure, to show what went wrong.
	FirstError error
	// Elapsed is the measured period as it really lasted.
	Elapsed time.Duration
}

// Requests is the number of measured requests.
func (r Result) Requests() int { return len(r.Latencies) }

// Throughput is measured requests per second.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(len(r.Latencies)) / r.Elapsed.Seconds()
}

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of the
// latencies; 0 when there are none.
func (r Result) Percentile(p float64) time.Duration {
	return Percentile(r.Latencies, p)
}

// Percentile returns the nearest-rank p-th percentile of ascending values.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// Run runs do with o.Concurrency workers: first for o.Warmup, unrecorded,
// then for o.Duration (or o.MaxRequests), recorded. It returns early with
// ctx's error if ctx ends.
func Run(ctx context.Context, o Options, do Do) (Result, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.Duration <= 0 {
		return Result{}, errors.New("loadgen: Duration must be positive")
	}
	if o.Warmup > 0 {
		warm := o
		warm.Duration, warm.MaxRequests = o.Warmup, 0
		if _, err := phase(ctx, warm, do); err != nil {
			return Result{}, err
		}
	}
	return phase(ctx, o, do)
}

func phase(ctx context.Context, o Options, do Do) (Result, error) {
	workers, maxRequests := o.Concurrency, o.MaxRequests
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	var (
		mu     sync.Mutex
		next   int
		res    = Result{Concurrency: workers}
		perRun = make([][]time.Duration, workers)
	)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil || (maxRequests > 0 && next >= maxRequests) {
			return 0, false
		}
		next++
		return next - 1, true
	}
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		res.Errors++
		if res.FirstError == nil {
			res.FirstError = err
		}
	}
	start := time.Now()
	// due hands out the time each request is due: now, in a closed loop;
	// on the schedule, in an open one.
	due := func() (time.Time, int, bool) {
		i, ok := take()
		if ok && o.Pause > 0 {
			select {
			case <-time.After(o.Pause):
			case <-ctx.Done():
				return time.Time{}, 0, false
			}
		}
		return time.Now(), i, ok
	}
	if o.Rate > 0 {
		interval := time.Duration(float64(time.Second) / o.Rate)
		schedule := make(chan time.Time, int(o.Rate*o.Duration.Seconds())+1)
		go func() {
			defer close(schedule)
			for i := 0; ; i++ {
				at := start.Add(time.Duration(i) * interval)
				if wait := time.Until(at); wait > 0 {
					select {
					case <-time.After(wait):
					case <-ctx.Done():
						return
					}
				}
				if ctx.Err() != nil {
					return
				}
				schedule <- at
			}
		}()
		var n atomic.Int64
		due = func() (time.Time, int, bool) {
			at, ok := <-schedule
			if !ok || ctx.Err() != nil {
				return time.Time{}, 0, false
			}
			return at, int(n.Add(1) - 1), true
		}
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for {
				t0, i, ok := due()
				if !ok {
					return
				}
				err := do(ctx, w, i)
				took := time.Since(t0)
				if err != nil && ctx.Err() != nil {
					return // cut off by the end of the phase: not a result
				}
				perRun[w] = append(perRun[w], took)
				if err != nil {
					fail(err)
				}
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return res, err
	}
	for _, l := range perRun {
		res.Latencies = append(res.Latencies, l...)
	}
	slices.Sort(res.Latencies)
	return res, nil
}

// Post returns a Do that POSTs body to url with client and passes the
// response to check (nil: any 200 is fine). The response body is read to
// the end so the connection is kept alive.
func Post(client *http.Client, url, contentType string, body []byte, check func(status int, body []byte) error) Do {
	return func(ctx context.Context, _, _ int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", contentType)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		got, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return err
		}
		if check != nil {
			return check(resp.StatusCode, got)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	}
}
