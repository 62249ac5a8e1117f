package webhook

import (
	"context"
	"slices"

	"golang.org/x/sync/errgroup"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/cutover-guard/cutover-guard/checks"
)

// maxReviewsInFlight bounds the SubjectAccessReviews one decision sends at
// once.
const maxReviewsInFlight = 4

// renderedFindings are the findings of one decision in the two texts that
// leave the guard: Shown to the requester, Public for the Event, which
// anyone who may view the namespace reads.
type renderedFindings struct {
	// Shown is each finding as the requester may read it: in full, or
	// redacted when a SubjectAccessReview does not say they may get every
	// object the finding reveals.
	Shown []string
	// Public is each finding redacted of every Secret and ConfigMap.
	Public []string
	// Withheld is the full text of each finding redacted somewhere (in
	// Public at least), for the guard's log.
	Withheld []string
}

// renderFindings renders findings for the requester of the request in ctx.
// A nil reviewer shows them everything. A review that fails, or a request
// without a user, redacts: the failure costs detail, never the verdict.
func renderFindings(ctx context.Context, reviewer AccessReviewer, findings []checks.Finding) renderedFindings {
	var out renderedFindings
	var objs []checks.ObjectRef
	for _, f := range findings {
		for _, o := range f.Reveals {
			if !slices.Contains(objs, o) {
				objs = append(objs, o)
			}
		}
	}
	unreadable := map[checks.ObjectRef]bool{}
	if reviewer != nil && len(objs) > 0 {
		unreadable = mayNotGet(ctx, reviewer, objs)
	}
	for _, f := range findings {
		out.Public = append(out.Public, f.Redacted(nil))
		if len(f.Reveals) == 0 {
			out.Shown = append(out.Shown, f.String())
			continue
		}
		out.Withheld = append(out.Withheld, f.String())
		var hidden []checks.ObjectRef
		for _, o := range f.Reveals {
			if unreadable[o] {
				hidden = append(hidden, o)
			}
		}
		if len(hidden) == 0 {
			out.Shown = append(out.Shown, f.String())
			continue
		}
		out.Shown = append(out.Shown, f.Redacted(hidden))
	}
	return out
}

// mayNotGet asks reviewer about each object for the request's user and
// returns those the user may not get, or could not be asked about.
func mayNotGet(ctx context.Context, reviewer AccessReviewer, objs []checks.ObjectRef) map[checks.ObjectRef]bool {
	out := make(map[checks.ObjectRef]bool, len(objs))
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		for _, o := range objs {
			out[o] = true
		}
		return out
	}
	user := req.UserInfo
	denied := make([]bool, len(objs))
	var g errgroup.Group
	g.SetLimit(maxReviewsInFlight)
	for i, o := range objs {
		g.Go(func() error {
			ok, err := reviewer.MayGet(ctx, user, o)
			if err != nil {
				logf.FromContext(ctx).Info("could not review the requester's access; the finding is redacted", "object", o.String(), "error", err.Error())
			}
			denied[i] = err != nil || !ok
			return nil
		})
	}
	_ = g.Wait()
	for i, o := range objs {
		if denied[i] {
			out[o] = true
		}
	}
	return out
}
