package main

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/cutover-guard/cutover-guard/bench/gobench"
	"github.com/cutover-guard/cutover-guard/bench/loadgen"
)

// cell is one load measurement: a review body against a guard at one
// concurrency.
type cell struct {
	label       string
	guard       *guard
	body        []byte
	concurrency int
	// rate, if set, makes the cell open-loop at this many reviews/s.
	rate float64
	// measure, if set, replaces the measured period.
	measure time.Duration
}

func (c cell) load() string {
	if c.rate > 0 {
		return fmt.Sprintf("%d connections, %.0f/s offered", c.concurrency, c.rate)
	}
	return fmt.Sprintf("%d in flight", c.concurrency)
}

// cellResult holds the medians of a cell over the runs.
type cellResult struct {
	throughput, p50, p99 float64 // per second; nanoseconds
	cpuPerReq            float64 // nanoseconds of guard CPU per review
	apiCPUPerReq         float64 // nanoseconds of kube-apiserver and etcd CPU per review
	requests, errors     int
	firstError           error
}

// periods returns the warm-up and measured period of one load run.
func (l *lab) periods() (warmup, measure time.Duration) {
	if l.s.quick {
		return 300 * time.Millisecond, time.Second
	}
	return 500 * time.Millisecond, 2 * time.Second
}

// allowed checks that the guard answered an AdmissionReview with an allow.
func allowed(status int, body []byte) error {
	if status != 200 {
		return fmt.Errorf("HTTP %d: %s", status, body)
	}
	if !bytes.Contains(body, []byte(`"allowed":true`)) {
		return fmt.Errorf("not allowed: %s", body)
	}
	return nil
}

// measureCells runs every cell s.runs times (the cells in turn within each
// run, so drift in the machine's load spreads over all of them) and returns
// the medians.
func (l *lab) measureCells(ctx context.Context, cells []cell) ([]cellResult, error) {
	warmup, measure := l.periods()
	type sample struct {
		res         loadgen.Result
		cpu, apiCPU time.Duration
	}
	samples := make([][]sample, len(cells))
	control := []int{componentPID(l.cluster, "kube-apiserver"), componentPID(l.cluster, "etcd")}
	controlCPU := func() time.Duration {
		var sum time.Duration
		for _, pid := range control {
			if t, err := cpuTime(pid); err == nil {
				sum += t
			}
		}
		return sum
	}
	for run := range l.s.runs {
		for i, c := range cells {
			do := loadgen.Post(l.client, c.guard.URL, "application/json", c.body, allowed)
			opts := loadgen.Options{Concurrency: c.concurrency, Rate: c.rate, Duration: warmup}
			if _, err := loadgen.Run(ctx, opts, do); err != nil {
				return nil, err
			}
			opts.Duration = measure
			if c.measure > 0 {
				opts.Duration = c.measure
			}
			cpu0, err := cpuTime(c.guard.PID())
			if err != nil {
				return nil, err
			}
			api0 := controlCPU()
			res, err := loadgen.Run(ctx, opts, do)
			if err != nil {
				return nil, err
			}
			cpu1, err := cpuTime(c.guard.PID())
			if err != nil {
				return nil, err
			}
			samples[i] = append(samples[i], sample{res, cpu1 - cpu0, controlCPU() - api0})
			if l.s.verbose || res.Errors > 0 {
				logf("run %d %s c=%d: %.0f/s p50 %s p99 %s errors %d %v", run+1, c.label, c.concurrency, res.Throughput(),
					dur(res.Percentile(50)), dur(res.Percentile(99)), res.Errors, res.FirstError)
			}
		}
	}
	out := make([]cellResult, len(cells))
	for i := range cells {
		var tp, p50, p99, cpu, apiCPU []float64
		for _, s := range samples[i] {
			tp = append(tp, s.res.Throughput())
			p50 = append(p50, float64(s.res.Percentile(50)))
			p99 = append(p99, float64(s.res.Percentile(99)))
			if n := s.res.Requests(); n > 0 {
				cpu = append(cpu, float64(s.cpu)/float64(n))
				apiCPU = append(apiCPU, float64(s.apiCPU)/float64(n))
			}
			out[i].requests += s.res.Requests()
			out[i].errors += s.res.Errors
			if out[i].firstError == nil {
				out[i].firstError = s.res.FirstError
			}
		}
		out[i].throughput, out[i].p50, out[i].p99 = gobench.Median(tp), gobench.Median(p50), gobench.Median(p99)
		out[i].cpuPerReq, out[i].apiCPUPerReq = gobench.Median(cpu), gobench.Median(apiCPU)
	}
	return out, nil
}

// httpsLoad is part 2: the guard's HTTPS server, kept-alive connections,
// AdmissionReviews posted by a Go load generator on the same machine.
func httpsLoad(ctx context.Context, l *lab, r *report) error {
	logf("HTTPS load")
	fast, warm, cold := "fast path (label-only update)", "switch path, DB cache warm", "switch path, DB cache off (--db-cache-ttl=0)"
	var cells []cell
	for _, c := range []int{1, 8, 64} {
		cells = append(cells, cell{label: fast, guard: l.warm, body: l.fastBody, concurrency: c})
	}
	for _, rate := range []float64{2000, 5000} {
		cells = append(cells, cell{label: fast, guard: l.warm, body: l.fastBody, concurrency: 64, rate: rate})
	}
	for _, c := range []int{1, 8, 64} {
		cells = append(cells, cell{label: warm, guard: l.warm, body: l.switchBody, concurrency: c})
	}
	for _, c := range []int{1, 8, 64} {
		cells = append(cells, cell{label: cold, guard: l.cold, body: l.switchBody, concurrency: c})
	}
	_, measure := l.periods()
	cells = append(cells, cell{label: warm + ", guard given --kubeconfig", guard: l.flagged, body: l.switchBody, concurrency: 8, measure: 3 * measure})

	res, err := l.measureCells(ctx, cells)
	if err != nil {
		return err
	}
	warmup, _ := l.periods()
	t := r.table("2. The guard's HTTPS server under load",
		fmt.Sprintf("`bin/cutover-guard` on 127.0.0.1 with a throwaway CA, HTTP/1.1 with keep-alive; a Go load generator (`bench/loadgen`) on the same 2 cores posts the webhook's testdata AdmissionReviews "+
			"(`labels-only.json`, `cutover-to-green.json`). \"N in flight\" is a closed loop (each connection sends its next review when answered): its latency is queueing once the machine is saturated "+
			"(mean latency = in flight / throughput). \"offered\" is an open loop at a fixed rate over 64 connections, latency counted from when a review was due. "+
			"The switch path reads live state from the local kube-apiserver (Service, Deployments, EndpointSlices, Secret) and probes the local PostgreSQL (cache off: every review connects). "+
			"Per run: %s warm-up, %s measured; medians over %d runs. CPU columns: user+system time of the guard, and of kube-apiserver plus etcd, per review.", warmup, measure, l.s.runs),
		"path", "load", "reviews/s", "p50", "p99", "guard CPU/review", "apiserver+etcd CPU/review", "errors")
	for i, c := range cells {
		o := res[i]
		errs := fmt.Sprintf("%d of %d", o.errors, o.requests)
		if o.firstError != nil {
			errs += fmt.Sprintf(" (%v)", o.firstError)
		}
		t.add(c.label, c.load(), fmt.Sprintf("%.0f", o.throughput), dur(ns(o.p50)), dur(ns(o.p99)), dur(ns(o.cpuPerReq)), dur(ns(o.apiCPUPerReq)), errs)
	}
	find := func(label string, concurrency int, rate float64) cellResult {
		for i, c := range cells {
			if c.label == label && c.concurrency == concurrency && c.rate == rate {
				return res[i]
			}
		}
		return cellResult{}
	}
	best := 0.0
	for _, c := range []int{1, 8, 64} {
		best = max(best, find(fast, c, 0).throughput)
	}
	closed64, open2k, open5k := find(fast, 64, 0), find(fast, 64, 2000), find(fast, 64, 5000)
	r.goal("fast path p99 over TLS, 64 in flight (closed loop, saturated)", "< 2ms", dur(ns(closed64.p99)), closed64.p99 < float64(2*time.Millisecond))
	r.goal("fast path p99 over TLS, 64 connections at 2,000/s", "< 2ms", dur(ns(open2k.p99)), open2k.p99 < float64(2*time.Millisecond))
	r.goal("fast path p99 over TLS, 64 connections at 5,000/s", "< 2ms", dur(ns(open5k.p99)), open5k.p99 < float64(2*time.Millisecond))
	r.goal("fast-path reviews/s on this machine (best closed loop)", ">= 5,000/s", fmt.Sprintf("%.0f/s", best), best >= 5000)
	for _, c := range []int{1, 8, 64} {
		o := find(warm, c, 0)
		r.goal(fmt.Sprintf("switch path p99, DB cache warm, %d in flight", c), "< 20ms", dur(ns(o.p99)), o.p99 < float64(20*time.Millisecond))
	}

	rss, hwm, err := memory(l.warm.PID())
	if err != nil {
		return err
	}
	r.note("guard (warm) memory after the HTTPS load: VmRSS %s, VmHWM (peak) %s", mib(rss), mib(hwm))
	return nil
}
