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

	appsv1 "k8s.io/api/apps/v1"
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
	// Reader reads live state; it must not be an informer cache.
	Reader client.Reader
	// Prober probes databases; nil skips the database check with a warning.
	Prober *Prober
	// DatabaseEnv names the environment variables that hold a connection string.
	DatabaseEnv []string
	// MaxConcurrentTargets bounds how many targets are checked at once, so a
	// route with hundreds of new backendRefs cannot flood the API server.
	// Default DefaultMaxConcurrentTargets.
	MaxConcurrentTargets int
}

// DefaultMaxConcurrentTargets is the default of Guard.MaxConcurrentTargets.
const DefaultMaxConcurrentTargets = 16

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

// Denied reports whether any finding blocks the update.
func (r Result) Denied() bool {
	for _, f := range r.Findings {
		if f.Severity == Deny {
			return true
		}
	}
	return false
}

// Evaluate runs every check for every target concurrently and returns before
// ctx's deadline: a check still running then becomes a Timeout denial that
// names it. An error means the checks could not be carried out (the API
// server could not be read), not that a target is unfit.
func (g *Guard) Evaluate(ctx context.Context, targets []Target) (Result, error) {
	results := make([]Result, len(targets))
	errs := make([]error, len(targets))
	limit := g.MaxConcurrentTargets
	if limit <= 0 {
		limit = DefaultMaxConcurrentTargets
	}
	// Not errgroup.WithContext: one target's error must not cancel the
	// others' reads, and every target must report (a Timeout at worst).
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
			results[i], errs[i] = g.evaluate(ctx, t)
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

type outcome[T any] struct {
	val      T
	findings []Finding
	err      error
	took     time.Duration
}

// evaluate runs the checks for one target: Reference first (the others need
// the Service), then the Deployment selection, then the rest concurrently.
func (g *Guard) evaluate(ctx context.Context, t Target) (Result, error) {
	var res Result
	svc, done, err := runCheck(ctx, t, &res, CheckReference, func(ctx context.Context) (*corev1.Service, []Finding, error) {
		return Reference(ctx, g.Reader, t)
	})
	if err != nil || !done || svc == nil {
		return res, err
	}
	res.Observed = append(res.Observed, observedObject("Service", svc))
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		res.Findings = append(res.Findings, Finding{Check: CheckReference, Severity: Warn, Service: t.Service, Object: "service " + svc.Name,
			Reason: ReasonExternalNameNotChecked, Message: fmt.Sprintf("service %s is of type ExternalName; readiness not checked", svc.Name)})
		return res, nil
	}
	port, _ := ServicePort(svc, t.Port)

	deployments, done, err := runCheck(ctx, t, &res, CheckDeployment, func(ctx context.Context) ([]appsv1.Deployment, []Finding, error) {
		d, err := SelectDeployments(ctx, g.Reader, svc)
		if err != nil {
			return nil, nil, err
		}
		return d, DeploymentReady(svc, d), nil
	})
	if err != nil || !done {
		return res, err
	}
	for i := range deployments {
		res.Observed = append(res.Observed, observedObject("Deployment", &deployments[i]))
	}

	type check struct {
		name Check
		fn   func(ctx context.Context) (struct{}, []Finding, error)
	}
	checks := []check{{CheckEndpoints, func(ctx context.Context) (struct{}, []Finding, error) {
		f, err := EndpointsReady(ctx, g.Reader, svc, port)
		return struct{}{}, f, err
	}}}
	if g.Prober != nil {
		checks = append(checks, check{CheckDatabase, func(ctx context.Context) (struct{}, []Finding, error) {
			return struct{}{}, DatabaseReachable(ctx, g.Reader, g.Prober, t.Service, deployments, g.DatabaseEnv), nil
		}})
	} else {
		res.Findings = append(res.Findings, Finding{Check: CheckDatabase, Severity: Warn, Service: t.Service, Reason: ReasonDatabaseNotChecked,
			Message: "database not checked (the guard runs with --skip-database-check)"})
	}
	var mu sync.Mutex
	errs := make([]error, 0, len(checks))
	var wg sync.WaitGroup
	for _, c := range checks {
		wg.Go(func() {
			var local Result
			_, _, err := runCheck(ctx, t, &local, c.name, c.fn)
			mu.Lock()
			defer mu.Unlock()
			res.Runs = append(res.Runs, local.Runs...)
			res.Findings = append(res.Findings, local.Findings...)
			errs = append(errs, err)
		})
	}
	wg.Wait()
	slices.SortStableFunc(res.Findings, func(a, b Finding) int { return checkOrder(a.Check) - checkOrder(b.Check) })
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
	return slices.Index([]Check{CheckReference, CheckDeployment, CheckEndpoints, CheckDatabase}, c)
}

// runCheck runs one check, waiting no longer than ctx allows, and appends its
// findings and timing to res. It returns the check's value and done=true when
// the check finished. A check that is still running when ctx ends, or that
// fails because ctx ended, becomes a Timeout denial (done=false, no error);
// its goroutine's late result is dropped.
func runCheck[T any](ctx context.Context, t Target, res *Result, c Check, fn func(context.Context) (T, []Finding, error)) (T, bool, error) {
	start := time.Now()
	ch := make(chan outcome[T], 1)
	go func() {
		v, f, err := fn(ctx)
		ch <- outcome[T]{val: v, findings: f, err: err, took: time.Since(start)}
	}()
	var o outcome[T]
	select {
	case o = <-ch:
	case <-ctx.Done():
		o = outcome[T]{err: ctx.Err(), took: time.Since(start)}
	}
	run := Run{Target: t, Check: c, Duration: o.took}
	var zero T
	if o.err != nil && ctx.Err() != nil {
		to := timedOut(t, c, o.took)
		res.Runs = append(res.Runs, to.Runs...)
		res.Findings = append(res.Findings, to.Findings...)
		return zero, false, nil
	}
	if o.err != nil {
		return zero, false, o.err
	}
	for _, f := range o.findings {
		if f.Severity == Deny {
			run.Denied = true
		}
	}
	res.Runs = append(res.Runs, run)
	res.Findings = append(res.Findings, o.findings...)
	return o.val, true, nil
}
