package checks

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/cutover-guard/cutover-guard/checks/probe"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Reasons found by Guard itself.
const (
	// ReasonTimeout marks a check that was still running when the deadline came.
	ReasonTimeout Reason = "Timeout"
	// ReasonDatabaseNotChecked marks a target whose database was not probed
	// because the guard runs without a Prober.
	ReasonDatabaseNotChecked Reason = "DatabaseNotChecked"
)

// Guard runs every check against a set of targets.
type Guard struct {
	// Reader reads live state: every GET must reach the API server. It
	// may answer the finding LISTs from a cache of its own (FindCache).
	Reader client.Reader
	// Prober probes databases; nil skips the database check with a warning.
	Prober *probe.Prober
	// Smoker sends the smoke gate's requests (SmokeTested); nil turns the
	// gate off: a target that opts in gets a warning.
	Smoker *Smoker
	// DatabaseEnv names the environment variables that hold a connection string.
	DatabaseEnv []string
	// MaxConcurrentTargets bounds how many targets are checked at once, so a
	// route with hundreds of new backendRefs cannot flood the API server.
	// Default DefaultMaxConcurrentTargets.
	MaxConcurrentTargets int
	// MaxDatabaseURLsPerTarget bounds the distinct connection strings
	// probed for one target. Default DefaultMaxDatabaseURLsPerTarget.
	MaxDatabaseURLsPerTarget int
	// MaxDatabaseURLsPerRequest bounds the distinct connection strings
	// probed for one update, across its targets: together with the
	// per-target bound it caps the connections one update opens. Which
	// targets' strings fit is first come, first served; the others get a
	// Deny finding. Default DefaultMaxDatabaseURLsPerRequest.
	MaxDatabaseURLsPerRequest int
	// MaxDecisionsPerNamespace bounds the decisions Evaluate checks at
	// once for one namespace; one more is denied at once (NamespaceBusy).
	// Default DefaultMaxDecisionsPerNamespace.
	//
	// It counts by the namespace of the route, not of the target Services:
	// the route's namespace is the tenant asking (a ReferenceGrant lets it
	// name Services elsewhere, whose owners must not be charged for it), and
	// it lives here rather than in the webhook because every checked
	// decision, of any route kind or caller, passes through Evaluate.
	MaxDecisionsPerNamespace int
	// DatabaseURLsPerNamespacePerMinute bounds the distinct connection
	// strings probed per minute for the Deployments of one namespace (where
	// the string is written); past it a string is denied without a probe
	// (DatabaseBudgetExceeded). Default
	// DefaultDatabaseURLsPerNamespacePerMinute.
	DatabaseURLsPerNamespacePerMinute int

	// UnknownWorkloads says whether a target whose pods belong to a
	// controller the guard cannot judge is denied (the default,
	// DefaultUnknownWorkloads) or warned about.
	UnknownWorkloads UnknownWorkloads

	// now is the clock of the per-minute budget; nil is time.Now.
	now      func() time.Time
	rollouts servedAPI
	once     sync.Once
	busy     *busyNamespaces
	urlsN    *namespaceURLs
	// selectors are the Services' selectors read ahead with (readahead.go).
	selectors *rememberedSelectors
	// sources are the Secrets and ConfigMaps read ahead beside the
	// Deployment named like a Service (readahead.go).
	sources *rememberedSources
}

// init sets up the per-namespace bounds on the first decision.
func (g *Guard) init() {
	g.once.Do(func() {
		limit := g.MaxDecisionsPerNamespace
		if limit <= 0 {
			limit = DefaultMaxDecisionsPerNamespace
		}
		g.busy = &busyNamespaces{limit: limit, n: map[string]int{}}
		perMinute := g.DatabaseURLsPerNamespacePerMinute
		if perMinute <= 0 {
			perMinute = DefaultDatabaseURLsPerNamespacePerMinute
		}
		now := g.now
		if now == nil {
			now = time.Now
		}
		g.urlsN = newNamespaceURLs(perMinute, now)
		g.selectors = newRememberedSelectors()
		g.sources = newRememberedSources()
	})
}

const (
	// DefaultMaxConcurrentTargets is the default of Guard.MaxConcurrentTargets.
	DefaultMaxConcurrentTargets = 16
	// DefaultMaxDatabaseURLsPerRequest is the default of
	// Guard.MaxDatabaseURLsPerRequest (--max-database-urls-per-request).
	DefaultMaxDatabaseURLsPerRequest = 16
)

// Observed names an object a decision read, at the resourceVersion read, so
// a decision can be traced to the state it saw.
type Observed struct {
	Kind            string
	Namespace       string
	Name            string
	ResourceVersion string
}

// String renders the object as "deployment production/app-green@12345".
func (o Observed) String() string {
	return fmt.Sprintf("%s %s/%s@%s", strings.ToLower(o.Kind), o.Namespace, o.Name, o.ResourceVersion)
}

func observedObject(kind string, obj client.Object) Observed {
	return Observed{Kind: kind, Namespace: obj.GetNamespace(), Name: obj.GetName(), ResourceVersion: obj.GetResourceVersion()}
}

// Run records how long one check took for one target.
type Run struct {
	Target   Target
	Check    Check
	Duration time.Duration
	// Denied is true when the check produced at least one Deny finding.
	Denied bool
	// TimedOut is true when the check was still running at the deadline.
	TimedOut bool
}

// Result is what Evaluate found: every finding, one Run per check that ran,
// and the Services and Deployments the decision read.
type Result struct {
	Findings []Finding
	Runs     []Run
	Observed []Observed
}

// Evaluate runs every check for every target concurrently and returns before
// ctx's deadline: a check still running then becomes a Timeout denial that
// names it. An error means the checks could not be carried out (the API
// server could not be read), not that a target is unfit.
//
// A decision from a namespace (the targets' route's) that already has
// MaxDecisionsPerNamespace in flight is denied at once, NamespaceBusy.
func (g *Guard) Evaluate(ctx context.Context, targets []Target) (Result, error) {
	g.init()
	if len(targets) > 0 {
		ns := targets[0].Route.Namespace
		if !g.busy.acquire(ns) {
			return namespaceBusy(ns, g.busy.limit, targets), nil
		}
		defer g.busy.release(ns)
	}
	results := make([]Result, len(targets))
	errs := make([]error, len(targets))
	limit := g.MaxConcurrentTargets
	if limit <= 0 {
		limit = DefaultMaxConcurrentTargets
	}
	// Not errgroup.WithContext: one target's error must not cancel the
	// others' reads, and every target must report (a Timeout at worst).
	perRequest := g.MaxDatabaseURLsPerRequest
	if perRequest <= 0 {
		perRequest = DefaultMaxDatabaseURLsPerRequest
	}
	budget := newURLBudget(perRequest)
	// The slots the targets leave free are for reading ahead (readahead.go):
	// targets and reads ahead together stay within limit.
	var ahead *semaphore.Weighted
	if spare := limit - len(targets); spare > 0 {
		ahead = semaphore.NewWeighted(int64(spare))
	}
	var eg errgroup.Group
	eg.SetLimit(limit)
	for i, t := range targets {
		eg.Go(func() error {
			if ctx.Err() != nil {
				// Waited for a slot past the deadline: report it as the
				// first check that could not run.
				results[i] = timedOut(t, CheckReference, 0)
				return nil
			}
			results[i], errs[i] = g.evaluate(ctx, t, budget, ahead)
			return nil
		})
	}
	_ = eg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Result{}, err
	}
	var out Result
	for _, r := range results {
		out.Findings = append(out.Findings, r.Findings...)
		out.Runs = append(out.Runs, r.Runs...)
		out.Observed = append(out.Observed, r.Observed...)
	}
	return out, nil
}

// outcome is what one run of a check ended with.
type outcome struct {
	in       Input
	findings []Finding
	err      error
	took     time.Duration
}

// evaluate runs the checks for one target: Reference first (the others need
// the Service), then the endpoints beside WorkloadReady followed by
// DatabaseReachable (which needs the workloads). A selector switch
// (t.Proposed) has its endpoints-to-be judged from the pods
// (SelectedPodsReady): its EndpointSlices still hold the old selector's.
func (g *Guard) evaluate(ctx context.Context, t Target, budget *urlBudget, ahead *semaphore.Weighted) (Result, error) {
	var res Result
	unknown := g.UnknownWorkloads
	if unknown == "" {
		unknown = DefaultUnknownWorkloads
	}
	reader := g.Reader
	if ahead != nil && t.Proposed == nil {
		// A selector switch reads no Service: nothing to read ahead of.
		ra := newReadAhead(ctx, g.Reader, ahead)
		defer ra.stop()
		g.readAheadFor(ra, t)
		reader = ra
	}
	in := Input{Reader: reader, Prober: g.Prober, Smoker: g.Smoker, DatabaseEnv: g.DatabaseEnv, MaxDatabaseURLs: g.MaxDatabaseURLsPerTarget, Target: t,
		UnknownWorkloads: unknown, requestURLs: budget, namespaceURLs: g.urlsN, rollouts: &g.rollouts}
	in, done, err := runCheck(ctx, in, &res, CheckReference, Reference)
	if err != nil || !done || in.Service == nil {
		return res, err
	}
	res.Observed = append(res.Observed, observedObject("Service", in.Service))
	if t.Proposed == nil {
		g.selectors.remember(in.Service) // for the next decision's reads ahead
	}
	if in.Service.Spec.Type == corev1.ServiceTypeExternalName {
		return res, nil // no workloads or endpoints to check; Reference warned
	}
	// Two chains at once, each reading what it needs: the endpoints (the
	// Service's EndpointSlices, or for a selector switch the pods the new
	// selector picks), and the workloads then their database (the database
	// check reads the workloads' env). Neither waits for the other's reads.
	endpoints := EndpointsReady
	if t.Proposed != nil {
		endpoints = SelectedPodsReady
	}
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	merge := func(local *Result, err error) {
		mu.Lock()
		defer mu.Unlock()
		res.Runs = append(res.Runs, local.Runs...)
		res.Findings = append(res.Findings, local.Findings...)
		res.Observed = append(res.Observed, local.Observed...)
		errs = append(errs, err)
	}
	wg.Go(func() {
		var local Result
		_, _, err := runCheck(ctx, in, &local, CheckEndpoints, endpoints)
		merge(&local, err)
	})
	wg.Go(func() {
		var local Result
		in, done, err := runCheck(ctx, in, &local, CheckDeployment, WorkloadReady)
		if err != nil || !done {
			merge(&local, err)
			return
		}
		for _, w := range in.Workloads {
			local.Observed = append(local.Observed, observedObject(w.Kind, w.Object))
		}
		// The smoke gate (opt-in) reads the workloads' annotations: it
		// runs beside the database check, neither waiting for the other.
		if smokeOptedIn(&in) {
			wg.Go(func() {
				var smoke Result
				out, done, err := runCheck(ctx, in, &smoke, CheckSmoke, SmokeTested)
				if done {
					smoke.Observed = append(smoke.Observed, out.smokeObserved...)
				}
				merge(&smoke, err)
			})
		}
		if g.Prober == nil {
			local.Findings = append(local.Findings, Finding{Check: CheckDatabase, Severity: Warn, Service: t.Service, Reason: ReasonDatabaseNotChecked,
				Message: "database not checked (the guard runs with --skip-database-check)"})
			merge(&local, nil)
			return
		}
		_, _, err = runCheck(ctx, in, &local, CheckDatabase, DatabaseReachable)
		merge(&local, err)
	})
	wg.Wait()
	slices.SortStableFunc(res.Findings, func(a, b Finding) int { return checkOrder(a.Check) - checkOrder(b.Check) })
	slices.SortStableFunc(res.Runs, func(a, b Run) int { return checkOrder(a.Check) - checkOrder(b.Check) })
	return res, errors.Join(errs...)
}

// timedOut is the Timeout denial of check c on t, which ran for took.
func timedOut(t Target, c Check, took time.Duration) Result {
	return Result{
		Runs: []Run{{Target: t, Check: c, Duration: took, TimedOut: true, Denied: true}},
		Findings: []Finding{{Check: c, Severity: Deny, Service: t.Service, Reason: ReasonTimeout,
			Message: fmt.Sprintf("the %s check did not finish before the admission deadline (%s)", c, took.Round(time.Millisecond)),
			Fix:     "retry; if it keeps timing out, raise the webhook timeoutSeconds or lower --db-timeout"}},
	}
}

func checkOrder(c Check) int {
	return slices.Index([]Check{CheckReference, CheckDeployment, CheckEndpoints, CheckDatabase, CheckSchema, CheckSmoke}, c)
}

// runCheck runs check c (fn) on a copy of in, waiting no longer than ctx
// allows, and appends its findings and timing to res. It returns the copy as
// the check left it and done=true when the check finished. A check that is
// still running when ctx ends, or that fails because ctx ended, becomes a
// Timeout denial (done=false, no error); its goroutine's late result is
// dropped.
func runCheck(ctx context.Context, in Input, res *Result, c Check, fn Func) (Input, bool, error) {
	start, t := time.Now(), in.Target
	ch := make(chan outcome, 1)
	go func() {
		f, err := fn(ctx, &in) // in is this goroutine's own copy from here on
		ch <- outcome{in: in, findings: f, err: err, took: time.Since(start)}
	}()
	var o outcome
	select {
	case o = <-ch:
	case <-ctx.Done():
		o = outcome{err: ctx.Err(), took: time.Since(start)}
	}
	if o.err != nil && ctx.Err() != nil {
		to := timedOut(t, c, o.took)
		res.Runs = append(res.Runs, to.Runs...)
		res.Findings = append(res.Findings, to.Findings...)
		return Input{}, false, nil
	}
	if o.err != nil {
		return Input{}, false, o.err
	}
	run := Run{Target: t, Check: c, Duration: o.took}
	for _, f := range o.findings {
		if f.Severity == Deny {
			run.Denied = true
		}
	}
	res.Runs = append(res.Runs, run)
	res.Findings = append(res.Findings, o.findings...)
	return o.in, true, nil
}
