package cutoverctl

import (
	"cmp"
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The reasons of the guard's Events (webhook.ReasonCutoverDenied and
// webhook.ReasonCutoverOverridden; a test keeps them equal). The plugin does
// not link the guard's webhook package, which would bring its database
// drivers into a kubectl plugin.
const (
	ReasonCutoverDenied     = "CutoverDenied"
	ReasonCutoverOverridden = "CutoverOverridden"
)

// HistoryEntry is one line of `history`: a guard Event or a switch the
// plugin recorded.
type HistoryEntry struct {
	At time.Time `json:"at"`
	// What is the Event's reason, or the recorded switch's action.
	What   string   `json:"what"`
	Source string   `json:"source"` // "event" or "annotation"
	By     string   `json:"by,omitempty"`
	From   []string `json:"from,omitempty"`
	To     []string `json:"to,omitempty"`
	Reason string   `json:"reason,omitempty"`
	// Findings are the denial's lines (an Event).
	Findings []string `json:"findings,omitempty"`
	// Count is how many times the Event happened (the API server folds
	// repeats of the same denial into one Event).
	Count int32 `json:"count,omitempty"`
}

// maxFinding bounds one line of a denial as shown.
const maxFinding = 1024

// maxEvents bounds the Events history reads.
const maxEvents = 500

func (e *env) history(ctx context.Context, name string) ([]HistoryEntry, error) {
	route, err := e.getRoute(ctx, name)
	if err != nil {
		return nil, err
	}
	var events corev1.EventList
	if err := e.c.List(ctx, &events, client.InNamespace(route.Namespace), client.Limit(maxEvents),
		client.MatchingFields{"involvedObject.name": route.Name, "involvedObject.kind": "HTTPRoute"}); err != nil {
		return nil, fmt.Errorf("list events of httproute %s/%s: %w", route.Namespace, route.Name, err)
	}
	var out []HistoryEntry
	for _, ev := range events.Items {
		if ev.Reason != ReasonCutoverDenied && ev.Reason != ReasonCutoverOverridden {
			continue
		}
		out = append(out, entryOfEvent(&ev))
	}
	// Newest first already, so that the stable sort keeps that order for
	// records of the same instant.
	recorded := recordedHistory(route)
	slices.Reverse(recorded)
	for _, s := range recorded {
		out = append(out, HistoryEntry{At: s.At, What: s.Action, Source: "annotation", By: s.By, From: s.From, To: s.To, Reason: s.Reason})
	}
	sortNewestFirst(out)
	return out, nil
}

// sortNewestFirst orders h by time, newest first. An Event carries whole
// seconds (a core/v1 Event's timestamps have no fraction), so times are
// compared by the second; within one second a recorded switch counts as the
// newer, since a denial is usually what a switch follows (fix, then switch),
// and records keep their own order.
func sortNewestFirst(h []HistoryEntry) {
	slices.SortStableFunc(h, func(a, b HistoryEntry) int {
		if c := b.At.Truncate(time.Second).Compare(a.At.Truncate(time.Second)); c != 0 {
			return c
		}
		return cmp.Compare(rank(b), rank(a))
	})
}

func rank(e HistoryEntry) int {
	if e.Source == "annotation" {
		return 1
	}
	return 0
}

var (
	// serviceRE finds the Services a denial's findings name
	// ("service production/app-green: ...").
	serviceRE = regexp.MustCompile(`^service ([^/\s]+)/([^:\s]+):`)
	// overriddenRE reads the guard's override note.
	overriddenRE = regexp.MustCompile(`^cutover overridden by (.+?) with reason ("(?:[^"\\]|\\.)*"); the checks found:`)
)

func entryOfEvent(ev *corev1.Event) HistoryEntry {
	h := HistoryEntry{At: eventTime(ev), What: ev.Reason, Source: "event", Count: ev.Count}
	lines := strings.Split(ev.Message, "\n")
	if ev.Reason == ReasonCutoverOverridden && len(lines) > 0 {
		if m := overriddenRE.FindStringSubmatch(lines[0]); m != nil {
			h.By = oneLine(m[1], maxReason)
			if r, err := strconv.Unquote(m[2]); err == nil {
				h.Reason = oneLine(r, maxReason)
			}
			lines = lines[1:]
		}
	}
	// Anyone who may create Events in the namespace can write one: each
	// line is shown as one line of printable characters.
	for _, l := range lines {
		if l = oneLine(l, maxFinding); l == "" {
			continue
		}
		h.Findings = append(h.Findings, l)
		if m := serviceRE.FindStringSubmatch(l); m != nil {
			h.To = appendNew(h.To, m[2])
		}
	}
	return h
}

func eventTime(ev *corev1.Event) time.Time {
	switch {
	case !ev.LastTimestamp.IsZero():
		return ev.LastTimestamp.UTC()
	case !ev.EventTime.IsZero():
		return ev.EventTime.UTC()
	case !ev.FirstTimestamp.IsZero():
		return ev.FirstTimestamp.UTC()
	}
	return ev.CreationTimestamp.UTC()
}
