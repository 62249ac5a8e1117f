package webhook

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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

// Validator validates writes of one kind. T is *gwv1.HTTPRoute or
// *gwv1.GRPCRoute, whose Reduce turns it into a Route, or *corev1.Service,
// whose TargetsOf is ServiceTargets.
type Validator[T client.Object] struct {
	Kind   string
	Reduce func(T) *Route
	// TargetsOf, when set, finds the targets of a write instead of
	// Targets over Reduce.
	TargetsOf func(oldObj, obj T) TargetSet
	Guard     Evaluator
	// CheckCreate checks routes on create too, every backend with a share
	// of traffic being a target (the guard's default, DefaultCheckCreate).
	// A denied create says to retry once the backends are Ready: a GitOps
	// sync that applies the workload and the route together is delayed
	// until the workload is Ready, since it retries a failed apply.
	CheckCreate bool
	Recorder    events.EventRecorder
	Metrics     *Metrics
	// OverrideGroups are the users and groups who may let a denied switch
	// through with AnnotationOverride; empty means nobody.
	OverrideGroups []string
	// Access says whether the requester may read the Secrets and
	// ConfigMaps a finding reveals; nil shows every requester every
	// finding in full. Events are redacted either way.
	Access AccessReviewer
}

// DefaultCheckCreate is the default of --check-create: creates are checked.
const DefaultCheckCreate = true

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
	var none T
	created := any(oldObj) == any(none)
	var set TargetSet
	if v.TargetsOf != nil {
		set = v.TargetsOf(oldObj, obj)
	} else {
		set = Targets(v.Reduce(oldObj), v.Reduce(obj))
	}
	warnings := set.Warnings
	if len(set.Checked) == 0 && len(set.Mirrors) == 0 {
		return allowedFast(v.Kind, obj, warnings)
	}
	d := Decision{Kind: v.Kind, Route: obj, Path: pathChecked, Targets: set.Checked, Mirrors: set.Mirrors, DryRun: isDryRun(ctx),
		Override: overrideOf(ctx, oldObj, obj, v.OverrideGroups)}

	route := strings.ToLower(v.Kind) + " " + obj.GetNamespace() + "/" + obj.GetName()
	if outcome, err := d.Override.refusal(route, v.OverrideGroups); err != nil {
		d.Result, d.OverrideOutcome, d.Warnings = ResultDenied, outcome, warnings
		d.Denials, d.PublicDenials = []string{err.Error()}, []string{err.Error()}
		return d
	}

	res, err := v.Guard.Evaluate(ctx, append(slices.Clone(set.Checked), set.Mirrors...))
	if err != nil && len(set.Checked) == 0 {
		// Only mirrors, which never deny: a failure to check them cannot either.
		d.Result, d.Warnings = ResultWarned, append(warnings, truncate("request mirror targets not checked: "+err.Error(), maxWarning))
		return d
	}
	if err != nil {
		d.Result, d.Err, d.Warnings = ResultError, err, warnings
		return d
	}
	downgradeMirrors(res.Findings, set.Mirrors)
	d.Checks = res
	// The verdict is settled by the findings alone; how much of them the
	// requester reads is settled after, and cannot change it.
	text := renderFindings(ctx, v.Access, res.Findings)
	d.Withheld = text.Withheld
	for i, f := range res.Findings {
		if f.Severity == checks.Deny {
			d.Denials = append(d.Denials, text.Shown[i])
			d.PublicDenials = append(d.PublicDenials, text.Public[i])
			continue
		}
		warnings = append(warnings, truncate(text.Shown[i], maxWarning))
	}
	denied := len(d.Denials) > 0
	if denied && created {
		// Names only the route's own Services: no redaction needed.
		retry := retryOnCreate(obj.GetNamespace(), res.Findings)
		d.Denials = append(d.Denials, retry)
		d.PublicDenials = append(d.PublicDenials, retry)
	}
	if denied && created && d.DryRun && !d.Override.applies() {
		// A dry-run create is answered with what the create would be told,
		// as warnings: GitOps tools (Flux's kustomize-controller, Argo CD)
		// dry-run a whole commit before they apply any of it, and a route
		// created in the same commit as its Services and Deployments
		// cannot pass until they exist and are Ready. Denying the dry-run
		// would keep them from ever being applied; the real create is
		// judged in full. A dry-run update is still denied: the route
		// exists, and so do the objects the switch depends on.
		for _, msg := range d.Denials {
			warnings = append(warnings, truncate(dryRunCreateNote+msg, maxWarning))
		}
		d.Denials, d.PublicDenials, denied = nil, nil, false
	}
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

// dryRunCreateNote starts each warning of a dry-run create the checks
// would deny.
const dryRunCreateNote = "a create would be denied (not this dry run): "

// mirrorNote starts the message of every finding about a mirror target.
const mirrorNote = "mirror only, not denied: "

// downgradeMirrors turns every finding about a mirror target into a
// warning: a mirrored request's response is dropped, so a mirror that
// cannot serve fails no client. Targets puts no Service both among the
// checked targets and the mirrors, so a finding's Service tells them apart.
func downgradeMirrors(findings []checks.Finding, mirrors []checks.Target) {
	if len(mirrors) == 0 {
		return
	}
	mirrored := make(map[types.NamespacedName]bool, len(mirrors))
	for _, m := range mirrors {
		mirrored[m.Service] = true
	}
	for i := range findings {
		if mirrored[findings[i].Service] {
			findings[i].Severity = checks.Warn
			findings[i].Message = mirrorNote + findings[i].Message
		}
	}
}

// retryOnCreate is the last line of a denied create: it names the Services
// found unfit and says the create will pass once they are Ready, so that a
// GitOps tool, which applies the workload and the route together and
// retries a failed apply, is delayed, not deadlocked.
func retryOnCreate(namespace string, findings []checks.Finding) string {
	var names []string
	seen := map[types.NamespacedName]bool{}
	for _, f := range findings {
		if f.Severity != checks.Deny || seen[f.Service] {
			continue
		}
		seen[f.Service] = true
		name := f.Service.Name
		if f.Service.Namespace != namespace {
			name = f.Service.String()
		}
		names = append(names, name)
	}
	verb := "is"
	if len(names) > 1 {
		verb = "are"
	}
	return fmt.Sprintf("the route is new: retry once %s %s Ready: GitOps tools retry a failed apply", strings.Join(names, ", "), verb)
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
