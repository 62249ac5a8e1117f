package checks

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Check names one of the checks run against a target. Values are bounded and
// safe to use as metric labels.
type Check string

// The checks, in the order they run for a target.
const (
	CheckReference  Check = "reference"
	CheckDeployment Check = "deployment"
	CheckEndpoints  Check = "endpoints"
	CheckDatabase   Check = "database"
)

// Reason is a short, bounded, CamelCase code for a finding. It is safe to use
// as a metric label and an audit annotation value.
type Reason string

// Severity says whether a finding blocks the cutover.
type Severity int

const (
	// Deny blocks the update.
	Deny Severity = iota
	// Warn is returned to the client as an admission warning; the update is allowed.
	Warn
)

// Target is a Service backend that receives traffic after a route update and
// did not before, or a Service whose selector an update switches.
type Target struct {
	// Route is the route being updated; its namespace is where ReferenceGrants
	// must allow a cross-namespace reference from.
	Route types.NamespacedName
	// RouteKind is HTTPRoute or GRPCRoute.
	RouteKind string
	// Service is the backend Service.
	Service types.NamespacedName
	// Port is the backendRef port; nil when the ref names none.
	Port *int32
	// Proposed, set for a Service selector switch, is the Service as the
	// update writes it: Route is then the Service itself, RouteKind
	// "Service", and the checks judge the pods its new selector selects
	// (the stored Service and its EndpointSlices are still the old ones).
	Proposed *corev1.Service
}

// String renders the target as "service ns/name:port".
func (t Target) String() string {
	if t.Port == nil {
		return fmt.Sprintf("service %s", t.Service)
	}
	return fmt.Sprintf("service %s:%d", t.Service, *t.Port)
}

// Finding is one thing a check found wrong (or worth a warning) about a target.
// Message says what is wrong and names the object, lower-case; Fix says what
// to do about it. Neither may contain a secret.
type Finding struct {
	Check    Check
	Severity Severity
	// Service is the target Service the finding is about.
	Service types.NamespacedName
	// Object names the object at fault, e.g. "deployment app-green".
	Object string
	Reason Reason
	// Message says what is wrong, e.g. "deployment app-green is not ready (0/2 ready, 2 pending)".
	Message string
	// Fix says what to do, e.g. "wait for: kubectl rollout status deployment/app-green -n production".
	Fix string
	// Reveals lists the Secrets and ConfigMaps whose contents Message and
	// Fix carry (the host, port, user or database name of a connection
	// string read from them). A requester who may not get one of them is
	// shown Redacted instead; empty when the text reveals no such content.
	Reveals []ObjectRef
	// Source names the place the connection string came from, object and
	// key names only (e.g. "secret shop/app-db key url"), for Redacted.
	Source string
}

// ObjectRef names a Secret or ConfigMap that a finding's text was read from.
type ObjectRef struct {
	// Resource is "secrets" or "configmaps" (core group).
	Resource  string
	Namespace string
	Name      string
}

// String renders the object as "secret shop/app-db".
func (o ObjectRef) String() string {
	return fmt.Sprintf("%s %s/%s", strings.TrimSuffix(o.Resource, "s"), o.Namespace, o.Name)
}

// Redacted renders the finding without anything read from the objects in
// unreadable: which check found what (its Reason), where the connection
// string came from, and whom to ask:
//
//	service shop/app-green: database check failed (DatabaseAuthFailed) for the connection string in secret shop/app-db key url; you may not read secret shop/app-db: ask its owner, or see the guard's log
//
// A finding that reveals nothing renders as String.
func (f Finding) Redacted(unreadable []ObjectRef) string {
	if len(f.Reveals) == 0 {
		return f.String()
	}
	if len(unreadable) == 0 {
		unreadable = f.Reveals
	}
	verb := "failed"
	if f.Severity == Warn {
		verb = "warned"
	}
	names := make([]string, len(unreadable))
	for i, o := range unreadable {
		names[i] = o.String()
	}
	what, it := strings.Join(names, " or "), "its owner"
	if len(unreadable) > 1 {
		it = "their owners"
	}
	return fmt.Sprintf("service %s: %s check %s (%s) for the connection string in %s; you may not read %s: ask %s, or see the guard's log",
		f.Service, f.Check, verb, f.Reason, f.Source, what, it)
}

// String renders the finding as one line:
//
//	service production/app-green: deployment app-green is not ready (0/2 ready); wait for: kubectl rollout status ...
func (f Finding) String() string {
	s := fmt.Sprintf("service %s: %s", f.Service, f.Message)
	if f.Fix != "" {
		s += "; " + f.Fix
	}
	return s
}
