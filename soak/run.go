package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// sampleEvery is how often the guard's goroutines and memory are read
// during the load (and a progress line printed).
const sampleEvery = 10 * time.Second

// drainTimeout bounds the wait, after the load, for the guard's goroutines
// and the proxy's connections to come back down.
const drainTimeout = time.Minute

// run brings everything up, runs the load and the faults for s.duration,
// prints the report and reports whether every invariant held.
func run(ctx context.Context, s settings) (ok bool, err error) {
	e, err := start(ctx, s)
	if err != nil {
		return false, err
	}
	defer func() {
		if stopErr := e.stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	r := &results{tl: &timeline{}}
	if r.start, err = e.snapshot(ctx); err != nil {
		return false, err
	}
	r.maxGoroutines, r.maxRSS = r.start.goroutines, r.start.rssBytes
	logf("load for %s: guard has %.0f goroutines, %s RSS", s.duration, r.start.goroutines, mib(r.start.rssBytes))

	watchCtx, endWatch := context.WithCancel(ctx)
	defer endWatch()
	hist, err := watchGreen(watchCtx, e.cluster.Clientset)
	if err != nil {
		return false, err
	}

	began := time.Now()
	r.began, r.loadBefore = began, loadAvg()
	loadCtx, endLoad := context.WithTimeout(ctx, s.duration)
	defer endLoad()
	var makers sync.WaitGroup
	var flapErr error
	makers.Go(func() { flapErr = e.flapGreen(loadCtx, r.tl) })
	makers.Go(func() { e.cycleFaults(loadCtx, r.tl) })
	makers.Go(func() { e.watch(loadCtx, r) })
	stop := make(chan struct{})
	go func() {
		<-loadCtx.Done()
		close(stop)
	}()
	var hostile []sample
	makers.Go(func() { hostile = e.runHostile(ctx, stop) })
	r.samples = e.runLoad(ctx, stop)
	took := time.Since(began)
	makers.Wait()
	r.samples = append(r.samples, hostile...)
	r.silentPeak, r.silentAccepted = e.silent.stats()
	r.faultErr = flapErr
	if ctx.Err() != nil {
		return false, errors.New("interrupted")
	}

	logf("load stopped after %d requests; waiting up to %s for the guard to drain", len(r.samples), drainTimeout)
	if err := e.drain(ctx, r); err != nil {
		return false, err
	}
	if err := hist.catchUp(ctx, e.cluster.Clientset); err != nil {
		r.logErr = fmt.Errorf("the watch on deployment %s did not catch up with the API server: %w", tutorial.Green, err)
	} else if r.log, err = judgeLog(e.guard.LogPath, hist); err != nil {
		r.logErr = fmt.Errorf("reading the guard's log %s: %w", e.guard.LogPath, err)
	}
	if err := r.print(os.Stdout, s, took); err != nil {
		return false, err
	}
	fmt.Printf("guard log: %s\n", e.guard.LogPath)
	return len(r.violations()) == 0, nil
}

// watch samples the guard's goroutines and memory until ctx is done.
func (e *env) watch(ctx context.Context, r *results) {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g, err := e.snapshot(ctx)
		if err != nil {
			if ctx.Err() == nil {
				logf("reading the guard's metrics: %v", err)
			}
			continue
		}
		r.maxGoroutines, r.maxRSS = max(r.maxGoroutines, g.goroutines), max(r.maxRSS, g.rssBytes)
		logf("%d requests; guard: %.0f goroutines, %s RSS", e.sent.Load(), g.goroutines, mib(g.rssBytes))
	}
}

// drain waits until the guard's goroutines are back near their count
// before the load and no connection is open through the proxy, or
// drainTimeout passes; either way it records the final state, which the
// invariants judge.
func (e *env) drain(ctx context.Context, r *results) error {
	var last guardStats
	err := wait.PollUntilContextTimeout(ctx, time.Second, drainTimeout, true, func(ctx context.Context) (bool, error) {
		g, err := e.snapshot(ctx)
		if err != nil {
			return false, nil
		}
		last = g
		return g.goroutines <= r.start.goroutines+goroutineSlack && e.proxy.Open() == 0, nil
	})
	if last.at.IsZero() {
		return fmt.Errorf("the guard's /metrics did not answer after the load: %w", err)
	}
	r.end = last
	r.proxyAccepted, r.proxyOpen = e.proxy.Accepted(), e.proxy.Open()
	return nil
}
