package webhook

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// publisher records decisions where operators see them.
type publisher struct {
	recorder events.EventRecorder
	metrics  *Metrics
}

// publish records one decision, once: its metrics, the audit annotations of
// the request in ctx, the decision's log line on the logger in ctx, and the
// Warning Event on the route (none on dry-run). Everything it records is
// derived from d alone.
func (p publisher) publish(ctx context.Context, d Decision) {
	p.metrics.recordDecision(d)

	audit := auditFromContext(ctx)
	for k, v := range d.auditAnnotations() {
		audit.set(k, v)
	}

	logDecision(ctx, d)

	if reason, note, ok := d.event(); ok && p.recorder != nil {
		p.recorder.Eventf(d.Route, nil, corev1.EventTypeWarning, reason, "Cutover", "%s", note)
	}
}

// logDecision writes the decision's one log line: at V(1) for the fast path
// (nearly every write), at Info for every decision on a target, as an error
// when the targets could not be checked.
func logDecision(ctx context.Context, d Decision) {
	log := logf.FromContext(ctx)
	if d.Path == pathFast {
		log.V(1).Info("no backend's share of traffic grows; allowed")
		return
	}
	log = log.WithValues("targets", d.targetNames())
	if fm := fieldManager(ctx); fm != "" {
		// Which tool wrote the update (kubectl-patch, kustomize-controller,
		// argocd-controller): beside the user, who ran it.
		log = log.WithValues("fieldManager", fm)
	}
	if len(d.Withheld) > 0 {
		// What the Event (and maybe the requester) was not told, for the
		// platform team: hosts, users and database names, never a
		// password (the checks never put one in a finding).
		log = log.WithValues("withheld", d.Withheld)
	}
	if d.OverrideOutcome != "" {
		if d.Override.fresh {
			log = log.WithValues("overrideUser", d.Override.user, "overrideReason", d.Override.reason)
		}
		log = log.WithValues("override", d.OverrideOutcome)
	}
	took := d.Took.Round(time.Microsecond).String()
	switch {
	case d.Result == ResultError:
		log.Error(d.Err, "could not check targets")
	case d.refused():
		log.Info("cutover override refused", "took", took)
	default:
		log.Info("cutover "+strings.TrimPrefix(d.Result, "allowed_"), "findings", d.findingReasons(), "observed", d.observed(), "checks", d.checkTimes(), "took", took)
	}
}

// maxFieldManager bounds the field manager written to the log (the API
// server allows 128 characters).
const maxFieldManager = 128

// fieldManager is the field manager named in the options of the admission
// request in ctx (its Update-, Patch- or CreateOptions), on one line;
// empty when there is none.
func fieldManager(ctx context.Context) string {
	req, err := admission.RequestFromContext(ctx)
	if err != nil || len(req.Options.Raw) == 0 {
		return ""
	}
	var opts struct {
		FieldManager string `json:"fieldManager"`
	}
	if json.Unmarshal(req.Options.Raw, &opts) != nil {
		return ""
	}
	return oneLine(opts.FieldManager, maxFieldManager)
}
