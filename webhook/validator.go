package webhook

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
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

// decide decides on a write and publishes the decision, once; oldObj is the
// zero T for a create.
func (v *Validator[T]) decide(ctx context.Context, oldObj, obj T) (admission.Warnings, error) {
	start := time.Now()
	d := v.judge(ctx, oldObj, obj)
	d.Took = time.Since(start)
	v.publisher().publish(ctx, d)
	return d.response()
}

// publisher records the validator's decisions.
func (v *Validator[T]) publisher() publisher {
	return publisher{recorder: v.Recorder, metrics: v.Metrics}
}

// judge builds the decision on a write: the targets it switches traffic to
// and what the checks find about them, the override it asks for, and the
// verdict. It records nothing.
func (v *Validator[T]) judge(ctx context.Context, oldObj, obj T) Decision {
	targets, warnings := Targets(v.Reduce(oldObj), v.Reduce(obj))
	if len(targets) == 0 {
		return allowedFast(v.Kind, obj, warnings)
	}
	d := Decision{Kind: v.Kind, Route: obj, Path: pathChecked, Targets: targets, DryRun: isDryRun(ctx),
		Override: overrideOf(ctx, oldObj, obj, v.OverrideGroups)}

	route := strings.ToLower(v.Kind) + " " + obj.GetNamespace() + "/" + obj.GetName()
	if outcome, err := d.Override.refusal(route, v.OverrideGroups); err != nil {
		d.Result, d.OverrideOutcome, d.Denials, d.Warnings = ResultDenied, outcome, []string{err.Error()}, warnings
		return d
	}

	res, err := v.Guard.Evaluate(ctx, targets)
	if err != nil {
		d.Result, d.Err, d.Warnings = ResultError, err, warnings
		return d
	}
	d.Checks = res
	for _, f := range res.Findings {
		if f.Severity == checks.Deny {
			d.Denials = append(d.Denials, f.String())
			continue
		}
		warnings = append(warnings, truncate(f.String(), maxWarning))
	}
	denied := len(d.Denials) > 0
	d.OverrideOutcome = d.Override.outcome(denied)
	d.Warnings = append(d.Override.warnings(d.Denials), warnings...)
	switch {
	case denied && d.Override.applies():
		d.Result = ResultOverridden
	case denied:
		d.Result = ResultDenied
	case len(d.Warnings) > 0:
		d.Result = ResultWarned
	default:
		d.Result = ResultAllowed
	}
	return d
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
