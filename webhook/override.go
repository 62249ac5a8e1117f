package webhook

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// AnnotationOverride is the break-glass annotation: set (or changed) in the
// same update as a switch the checks deny, by a user or group listed in
// --override-groups, its value is the reason the switch goes through anyway.
// An annotation left from an earlier update overrides nothing.
const AnnotationOverride = "cutover-guard.dev/override"

// ReasonCutoverOverridden is the reason of the Warning Event recorded on a
// route whose denied switch went through by override.
const ReasonCutoverOverridden = "CutoverOverridden"

// maxOverrideReason bounds the reason as it appears in Events, logs, audit
// annotations and messages, in bytes.
const maxOverrideReason = 256

// maxOverrideUser bounds a user name as it appears in messages and Events.
const maxOverrideUser = 128

// Override outcomes: the "result" label of cutover_guard_overrides_total and
// the overrideResult audit annotation.
const (
	// OverrideApplied: an allowed user let a switch the checks deny through.
	OverrideApplied = "overridden"
	// OverrideNotNeeded: the checks allow the switch; nothing was overridden.
	OverrideNotNeeded = "not_needed"
	// OverrideNotAllowed: the user is not in --override-groups; refused.
	OverrideNotAllowed = "refused_not_allowed"
	// OverrideNoReason: the annotation has no reason; refused.
	OverrideNoReason = "refused_no_reason"
	// OverrideLeftover: the annotation is unchanged from the old object and
	// was ignored; the checks decided as usual.
	OverrideLeftover = "ignored_leftover"
)

// overrideRequest is what one update says about the override annotation.
type overrideRequest struct {
	// present: the new object carries the annotation.
	present bool
	// fresh: the annotation is set or changed in this very update.
	fresh bool
	// reason is the annotation's value on one line, bounded; empty if blank.
	reason string
	// user is the requesting user's name on one line, bounded.
	user string
	// allowed: the user, or one of the user's groups, is in --override-groups.
	allowed bool
}

// overrideOf reads the override annotation of an update by the requesting
// user. oldObj is the zero T for a create.
func overrideOf[T client.Object](ctx context.Context, oldObj, obj T, overriders []string) overrideRequest {
	value, present := overrideAnnotation(obj)
	if !present {
		return overrideRequest{}
	}
	previous, had := overrideAnnotation(oldObj)
	o := overrideRequest{present: true, fresh: !had || previous != value, reason: oneLine(value, maxOverrideReason)}
	if req, err := admission.RequestFromContext(ctx); err == nil {
		o.user = oneLine(req.UserInfo.Username, maxOverrideUser)
		o.allowed = mayOverride(overriders, req.UserInfo.Username, req.UserInfo.Groups)
	}
	return o
}

func overrideAnnotation[T client.Object](o T) (string, bool) {
	var none T
	if any(o) == any(none) {
		return "", false
	}
	v, ok := o.GetAnnotations()[AnnotationOverride]
	return v, ok
}

// mayOverride reports whether user, or one of groups, is one of overriders.
func mayOverride(overriders []string, user string, groups []string) bool {
	for _, o := range overriders {
		if o == user || slices.Contains(groups, o) {
			return true
		}
	}
	return false
}

// applies reports whether this update asks to override the checks.
func (o overrideRequest) applies() bool { return o.fresh && o.allowed && o.reason != "" }

// refusal is the outcome and denial of an override attempt that is refused
// whatever the checks find; err is nil when the attempt is not refused.
func (o overrideRequest) refusal(route string, overriders []string) (outcome string, err error) {
	if !o.fresh {
		return "", nil
	}
	switch {
	case !o.allowed && len(overriders) == 0:
		return OverrideNotAllowed, fmt.Errorf("%s: %s is set by user %s, but no one may override the guard (--override-groups is empty); "+
			"remove the annotation and fix what the checks find, or ask the guard's operators to list you in --override-groups", route, AnnotationOverride, o.userName())
	case !o.allowed:
		return OverrideNotAllowed, fmt.Errorf("%s: %s is set by user %s, who is not in --override-groups (%s); "+
			"ask one of them to make this switch, or remove the annotation", route, AnnotationOverride, o.userName(), strings.Join(overriders, ", "))
	case o.reason == "":
		return OverrideNoReason, fmt.Errorf("%s: %s is set by user %s without a reason; "+
			`set it to why this switch must go through despite the checks (e.g. "INC-1234: green verified by hand"), or remove the annotation`,
			route, AnnotationOverride, o.userName())
	}
	return "", nil
}

func (o overrideRequest) userName() string {
	if o.user == "" {
		return "(unknown)"
	}
	return o.user
}

// outcome is the override outcome of an update the checks denied or not;
// empty when the update does not carry the annotation.
func (o overrideRequest) outcome(denied bool) string {
	switch {
	case !o.present:
		return ""
	case !o.fresh:
		return OverrideLeftover
	case !denied:
		return OverrideNotNeeded
	}
	return OverrideApplied
}

// warnings are the admission warnings about the annotation once the checks
// have run.
func (o overrideRequest) warnings(denials []string) []string {
	switch o.outcome(len(denials) > 0) {
	case OverrideLeftover:
		return []string{AnnotationOverride + " is left from an earlier update and was ignored; set a new reason to override"}
	case OverrideNotNeeded:
		return []string{AnnotationOverride + " was not needed: the checks allow this switch; nothing was overridden"}
	case OverrideApplied:
		out := []string{truncate(fmt.Sprintf("cutover-guard overridden by %s: %d finding(s) would deny this switch", o.userName(), len(denials)), maxWarning)}
		for _, d := range denials {
			out = append(out, truncate("overridden: "+d, maxWarning))
		}
		return out
	}
	return nil
}

// eventNote is the note of the CutoverOverridden Event: who, why, and what
// the checks found.
func (o overrideRequest) eventNote(denials []string) string {
	head := fmt.Sprintf("cutover overridden by %s with reason %q; the checks found:\n", o.userName(), o.reason)
	return head + joinCapped(denials, "\n", maxEventNote-len(head), moreFindings)
}

// oneLine turns user text into one line of printable characters: control
// characters and runs of white space become one space, invalid UTF-8 is
// replaced, and the result is cut to at most n bytes on a rune boundary.
func oneLine(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	space := false
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	out := b.String()
	if len(out) <= n {
		return out
	}
	cut := n - len("...")
	for cut > 0 && !utf8.RuneStart(out[cut]) {
		cut--
	}
	return out[:cut] + "..."
}
