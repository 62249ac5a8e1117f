package webhook

import (
	"errors"
	"fmt"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/cutover-guard/cutover-guard/checks"
)

// Decision paths, the "path" label of cutover_guard_decisions_total.
const (
	// pathFast: no backend's share of traffic grows; nothing was read.
	pathFast = "fast"
	// pathChecked: the targets were checked, or an override attempt was
	// refused before they could be.
	pathChecked = "checked"
)

// Decision is everything one decision on a route write found and answers.
// The validator builds exactly one per decision; publish turns it into the
// metrics, the audit annotations, the log line and the Event, so that the
// four cannot disagree.
type Decision struct {
	// Kind is the route kind (KindHTTPRoute or KindGRPCRoute).
	Kind string
	// Route is the route as written; its Event is recorded on it.
	Route client.Object
	// Path is pathFast or pathChecked.
	Path string
	// Result is one of the Result* values.
	Result string
	// Targets are the backends whose share of traffic grows.
	Targets []checks.Target
	// Mirrors are the backends that newly receive mirrored requests;
	// findings about them are warnings.
	Mirrors []checks.Target
	// Checks is what the checks found, ran and read; empty when they did
	// not run.
	Checks checks.Result
	// Denials are the rendered Deny findings, or the refusal of an
	// override attempt, as the requester may read them; the response's
	// message is made of them.
	Denials []string
	// PublicDenials are the same, redacted of everything read from a
	// Secret or ConfigMap: the Event's note, which is widely readable, is
	// made of them.
	PublicDenials []string
	// Withheld is the full text of each finding redacted in the Event or
	// the response, for the guard's log only.
	Withheld []string
	// Warnings are the admission warnings of the response.
	Warnings admission.Warnings
	// Override is what the update says about AnnotationOverride.
	Override overrideRequest
	// OverrideOutcome is one of the Override* outcomes; empty when the
	// update carries no annotation, or the checks could not run.
	OverrideOutcome string
	// Err is the failure to decide of a ResultError decision.
	Err error
	// DryRun: the request has no side effects, so no Event is recorded.
	DryRun bool
	// Took is how long the decision took.
	Took time.Duration
}

// allowedFast is the decision on a write that switches no traffic.
func allowedFast(kind string, route client.Object, warnings []string) Decision {
	return Decision{Kind: kind, Route: route, Path: pathFast, Result: ResultAllowed, Warnings: warnings}
}

// refused reports whether the decision denies an override attempt before
// any check ran.
func (d Decision) refused() bool {
	return d.OverrideOutcome == OverrideNotAllowed || d.OverrideOutcome == OverrideNoReason
}

// response is the warnings and the error the validator answers with: a
// denial (403) made of the Denials, an internal error (500), or none. The
// message holds the Denials that fit in maxMessage and counts the rest; at
// most maxWarnings warnings are sent.
func (d Decision) response() (admission.Warnings, error) {
	warnings := capWarnings(d.Warnings)
	switch d.Result {
	case ResultError:
		return warnings, internalError(d.Err)
	case ResultDenied:
		return warnings, errors.New(joinCapped(d.Denials, "\n", maxMessage, moreFindings))
	}
	return warnings, nil
}

// targetNames renders the targets as "service production/app-green:80",
// then the mirrors as "mirror service production/app-shadow:80".
func (d Decision) targetNames() []string {
	names := make([]string, 0, len(d.Targets)+len(d.Mirrors))
	for _, t := range d.Targets {
		names = append(names, t.String())
	}
	for _, t := range d.Mirrors {
		names = append(names, "mirror "+t.String())
	}
	return names
}

// findingReasons renders each finding as "check/reason"; nil when there
// are none.
func (d Decision) findingReasons() []string {
	var reasons []string
	for _, f := range d.Checks.Findings {
		reasons = append(reasons, string(f.Check)+"/"+string(f.Reason))
	}
	return reasons
}

// auditFindings renders the findings as findingReasons does, the denials
// first (each group in the order found), so that a capped annotation drops
// warnings before denials.
func (d Decision) auditFindings() []string {
	var deny, warn []string
	for _, f := range d.Checks.Findings {
		r := string(f.Check) + "/" + string(f.Reason)
		if f.Severity == checks.Deny {
			deny = append(deny, r)
		} else {
			warn = append(warn, r)
		}
	}
	return append(deny, warn...)
}

// observed renders the objects the checks read, at the version read.
func (d Decision) observed() []string {
	read := make([]string, len(d.Checks.Observed))
	for i, o := range d.Checks.Observed {
		read[i] = o.String()
	}
	return read
}

// checkTimes renders how long each check of each target ran, in the order
// they are reported: "app-green reference 1.02ms", with "(timed out)" for a
// check the deadline ended. A slow switch's log line says where the time
// went.
func (d Decision) checkTimes() []string {
	out := make([]string, len(d.Checks.Runs))
	for i, r := range d.Checks.Runs {
		out[i] = fmt.Sprintf("%s %s %s", r.Target.Service.Name, r.Check, r.Duration.Round(time.Microsecond))
		if r.TimedOut {
			out[i] += " (timed out)"
		}
	}
	return out
}

// auditAnnotations are the annotations the decision adds to the request's
// audit event; none for the fast path.
func (d Decision) auditAnnotations() map[string]string {
	if d.Path == pathFast {
		return nil
	}
	a := map[string]string{"decision": d.Result, "targets": joinCapped(d.targetNames(), ",", maxAuditValue, moreItems)}
	if reasons := d.auditFindings(); len(reasons) > 0 {
		a["findings"] = joinCapped(reasons, ",", maxAuditValue, moreItems)
	}
	if d.OverrideOutcome != "" {
		a["overrideResult"] = d.OverrideOutcome
		if d.Override.fresh && d.Override.reason != "" {
			a["override"] = d.Override.reason
		}
		if d.OverrideOutcome == OverrideApplied {
			a["overriddenBy"] = d.Override.user
		}
	}
	return a
}

// event is the reason and note of the Warning Event the decision records on
// its route; ok is false when it records none (allowed, failed, or dry-run).
func (d Decision) event() (reason, note string, ok bool) {
	if d.DryRun {
		return "", "", false
	}
	switch d.Result {
	case ResultDenied:
		return ReasonCutoverDenied, joinCapped(d.PublicDenials, "\n", maxEventNote, moreFindings), true
	case ResultOverridden:
		return ReasonCutoverOverridden, d.Override.eventNote(d.PublicDenials), true
	}
	return "", "", false
}
