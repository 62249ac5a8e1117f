package checks

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cutover-guard/cutover-guard/checks/probe"
)

// Func is the one signature of every check: Reference, WorkloadReady,
// EndpointsReady and DatabaseReachable. A check reads the fields of in that
// it needs and may set those that its doc names, for the checks after it.
//
// The rule for reads is the same in every check: an object the target
// refers to that does not exist (NotFound) is a finding; any other failed
// read (forbidden, timeout, unavailable) is an error, never a finding,
// because the check could not decide. An error reaches the client as an
// "internal error:" answer; a read cut short by the deadline becomes the
// Guard's Timeout denial.
type Func func(ctx context.Context, in *Input) ([]Finding, error)

// Input is one target, where to read about it, and what the checks before
// have learnt. Guard runs each check on its own copy and keeps the copy only
// when the check finished.
type Input struct {
	// Reader reads live state; it must not be an informer cache.
	Reader client.Reader
	// Prober probes databases; nil leaves DatabaseReachable nothing to do.
	Prober *probe.Prober
	// Smoker sends the smoke gate's requests; nil: SmokeTested warns that
	// the gate is off.
	Smoker *Smoker
	// DatabaseEnv names the environment variables that hold a connection
	// string; empty means DefaultDatabaseURLEnv.
	DatabaseEnv []string
	// MaxDatabaseURLs bounds the distinct connection strings probed for
	// this target; more is a Deny finding. Default
	// DefaultMaxDatabaseURLsPerTarget.
	MaxDatabaseURLs int
	Target          Target
	// requestURLs, set by Guard, is what is left of the update's budget of
	// connection strings; nil is no bound beyond MaxDatabaseURLs.
	requestURLs *urlBudget
	// namespaceURLs, set by Guard, is each namespace's budget of distinct
	// connection strings per minute; nil is no such bound.
	namespaceURLs *namespaceURLs

	// Service and Port are set by Reference when the reference is usable:
	// the target's Service and the Service port the backendRef maps to.
	Service *corev1.Service
	Port    corev1.ServicePort
	// Workloads is set by WorkloadReady: those whose pods Service selects
	// (Deployments, StatefulSets, DaemonSets, Rollouts, pods without a
	// controller). The database check reads their pod templates.
	Workloads []Workload
	// Deployments is set by WorkloadReady: the Workloads that are
	// Deployments. A caller that sets only Deployments (and no Workloads)
	// has the database check read those.
	Deployments []appsv1.Deployment
	// UnknownWorkloads says whether pods of a controller the guard cannot
	// judge are a denial (the default) or a warning.
	UnknownWorkloads UnknownWorkloads
	// rollouts, set by Guard, remembers that the Rollout API is not served.
	rollouts *servedAPI
	// smokeObserved is set by SmokeTested: the pods it read.
	smokeObserved []Observed
}

// workloads is what the database check reads: Workloads, or, when only
// Deployments was set, those.
func (in *Input) workloads() []Workload {
	if in.Workloads != nil || len(in.Deployments) == 0 {
		return in.Workloads
	}
	out := make([]Workload, len(in.Deployments))
	for i := range in.Deployments {
		out[i] = deploymentWorkload(&in.Deployments[i])
	}
	return out
}
