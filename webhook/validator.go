package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/cutover-guard/cutover-guard/checks"
)

// ReasonCutoverDenied is the reason of the Warning Event recorded on a route
// whose update was denied.
const ReasonCutoverDenied = "CutoverDenied"

// maxWarning is the longest admission warning we send; kubectl prints each on
// one line.
const maxWarning = 120

// maxEventNote is the longest note an events.k8s.io/v1 Event may carry.
const maxEventNote = 1024

// Evaluator decides on targets; *checks.Guard is the implementation.
type Evaluator interface {
	Evaluate(ctx context.Context, targets []checks.Target) (checks.Result, error)
}

// Validator validates writes of one route kind. T is *gwv1.HTTPRoute or
// *gwv1.GRPCRoute; Reduce turns it into a Route.
type Validator[T client.Object] struct {
	Kind   string
	Reduce func(T) *Route
	Guard  Evaluator
	// CheckCreate checks routes on create too (off by default, so a GitOps
	// sync that creates the workload and the route together cannot deadlock).
	CheckCreate bool
	Recorder    events.EventRecorder
	Metrics     *Metrics
	// OverrideGroups are the users and groups who may let a denied switch
	// through with AnnotationOverride; empty means nobody.
	OverrideGroups []string
}

// ValidateCreate checks a new route only when CheckCreate is set.
func (v *Validator[T]) ValidateCreate(ctx context.Context, obj T) (admission.Warnings, error) {
	if !v.CheckCreate {
		return nil, nil
	}
	var none T
	return v.decide(ctx, none, obj)
}

// ValidateUpdate denies an update that moves traffic to a backend that cannot serve.
func (v *Validator[T]) ValidateUpdate(ctx context.Context, oldObj, newObj T) (admission.Warnings, error) {
	return v.decide(ctx, oldObj, newObj)
}

// ValidateDelete allows every delete.
func (v *Validator[T]) ValidateDelete(context.Context, T) (admission.Warnings, error) {
	return nil, nil
}

// decide checks the targets of a write; oldObj is the zero T for a create.
func (v *Validator[T]) decide(ctx context.Context, oldObj, obj T) (admission.Warnings, error) {
	start := time.Now()
	log := logf.FromContext(ctx)
	audit := auditFromContext(ctx)

	targets, warnings := Targets(v.Reduce(oldObj), v.Reduce(obj))
	if len(targets) == 0 {
		v.allowFast(log, start)
		return warnings, nil
	}

	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.String()
	}
	audit.set("targets", strings.Join(names, ","))
	log = log.WithValues("targets", names)
	override := overrideOf(ctx, oldObj, obj, v.OverrideGroups)
	if err := v.refuseOverride(ctx, log, obj, override, start); err != nil {
		return warnings, err
	}

	res, err := v.Guard.Evaluate(ctx, targets)
	if err != nil {
		v.Metrics.record(v.Kind, ResultError, "checked", time.Since(start), checks.Result{})
		audit.set("decision", ResultError)
		log.Error(err, "could not check targets")
		return warnings, internalError(err)
	}

	var denials []string
	var reasons []string
	for _, f := range res.Findings {
		reasons = append(reasons, string(f.Check)+"/"+string(f.Reason))
		if f.Severity == checks.Deny {
			denials = append(denials, f.String())
			continue
		}
		warnings = append(warnings, truncate(f.String(), maxWarning))
	}
	if len(reasons) > 0 {
		audit.set("findings", strings.Join(reasons, ","))
	}

	warnings = append(override.warnings(denials), warnings...)
	log = v.noteOverride(log, audit, override, override.outcome(len(denials) > 0))

	result := ResultAllowed
	switch {
	case len(denials) > 0 && override.applies():
		result = ResultOverridden
	case len(denials) > 0:
		result = ResultDenied
	case len(warnings) > 0:
		result = ResultWarned
	}
	took := time.Since(start)
	v.Metrics.record(v.Kind, result, "checked", took, res)
	audit.set("decision", result)
	read := make([]string, len(res.Observed))
	for i, o := range res.Observed {
		read[i] = o.String()
	}
	log.Info("cutover "+strings.TrimPrefix(result, "allowed_"), "findings", reasons, "observed", read, "took", took.Round(time.Microsecond).String())

	if result == ResultOverridden {
		v.recordOverridden(ctx, obj, override, denials)
	}
	if len(denials) == 0 || result == ResultOverridden {
		return warnings, nil
	}
	msg := strings.Join(denials, "\n")
	if !isDryRun(ctx) && v.Recorder != nil {
		v.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, ReasonCutoverDenied, "Cutover", "%s", truncate(msg, maxEventNote))
	}
	return warnings, errors.New(msg)
}

// allowFast records and logs an update that switches no traffic.
func (v *Validator[T]) allowFast(log logr.Logger, start time.Time) {
	v.Metrics.record(v.Kind, ResultAllowed, "fast", time.Since(start), checks.Result{})
	log.V(1).Info("no backend newly receives traffic; allowed")
}

func isDryRun(ctx context.Context) bool {
	req, err := admission.RequestFromContext(ctx)
	return err == nil && req.DryRun != nil && *req.DryRun
}

// internalError is a failure to decide, not a verdict: a 500 whose message
// begins "internal error:".
func internalError(err error) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusInternalServerError,
		Reason:  metav1.StatusReasonInternalError,
		Message: fmt.Sprintf("internal error: %v", err),
	}}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
