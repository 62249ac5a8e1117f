package cutoverctl

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Rendering to text happens here, once, from the typed results; -o json
// encodes the same values.

// printer writes to a terminal or a pipe; a write error (a closed pipe)
// has nowhere to be reported.
type printer struct{ w io.Writer }

func (p printer) f(format string, args ...any) { _, _ = fmt.Fprintf(p.w, format, args...) }

func renderVerdict(w io.Writer, v *Verdict) {
	p := printer{w}
	switch {
	case v.Allowed && v.Reviewed:
		p.f("guard: allowed (the server-side dry run was reviewed by cutover-guard)\n")
	case !v.Allowed && v.Reviewed:
		p.f("guard: DENIED by %s:\n", v.Webhook)
		for _, f := range v.Findings {
			p.f("  - %s\n", f)
		}
	default:
		p.f("guard: cannot decide: %s\n", v.Undecided)
		for _, f := range v.Findings {
			p.f("  - %s\n", f)
		}
	}
	for _, s := range v.Warnings {
		p.f("warning: %s\n", s)
	}
}

// CheckResult is the outcome of check.
type CheckResult struct {
	Route     string   `json:"route"`
	Namespace string   `json:"namespace"`
	From      []string `json:"from"`
	To        []string `json:"to"`
	Unchanged bool     `json:"unchanged,omitempty"`
	Verdict   *Verdict `json:"verdict,omitempty"`
	// Patch is the JSON patch that was dry-run: the one switch sends.
	Patch string `json:"patch,omitempty"`
}

func renderCheck(w io.Writer, r *CheckResult) {
	p := printer{w}
	if r.Unchanged {
		p.f("httproute %s/%s already sends its traffic to %s; nothing to check\n", r.Namespace, r.Route, strings.Join(r.To, ", "))
		return
	}
	p.f("httproute %s/%s: check switch %s -> %s\n", r.Namespace, r.Route, strings.Join(r.From, ", "), strings.Join(r.To, ", "))
	renderVerdict(w, r.Verdict)
}

func renderStatus(w io.Writer, s *Status) {
	p := printer{w}
	p.f("HTTPRoute %s/%s (generation %d)\n", s.Namespace, s.Route, s.Generation)
	switch s.Guard.State {
	case GuardInstalled:
		p.f("guard: installed (%s)\n", strings.Join(s.Guard.Webhooks, ", "))
	case GuardMissing:
		p.f("guard: NOT INSTALLED: %s\n", s.Guard.Detail)
	default:
		p.f("guard: unknown (%s); each verdict below says whether the guard reviewed it\n", s.Guard.Detail)
	}

	p.f("\nTRAFFIC\n")
	for _, r := range s.Rules {
		var parts []string
		for _, b := range r.Backends {
			parts = append(parts, fmt.Sprintf("%s %d%% (weight %d)", b.Name, b.Share, b.Weight))
		}
		if len(parts) == 0 {
			parts = []string{"no backendRefs"}
		}
		p.f("  rule %d: %s\n", r.Rule, strings.Join(parts, ", "))
	}

	p.f("\nGATEWAYS\n")
	if len(s.Parents) == 0 {
		for _, ref := range s.ParentRefs {
			p.f("  %s: no status yet (no Gateway controller has written status on this route)\n", ref)
		}
	}
	for _, ps := range s.Parents {
		var cs []string
		for _, c := range ps.Conditions {
			cond := c.Type + "=" + c.Status
			if c.Status != "True" && c.Reason != "" {
				cond += " (" + c.Reason + ")"
			}
			if !c.Current {
				cond += fmt.Sprintf(" [observed generation %d]", c.ObservedGeneration)
			}
			cs = append(cs, cond)
		}
		p.f("  %s: %s\n", ps.Gateway, strings.Join(cs, ", "))
	}

	p.f("\nBACKENDS\n")
	for _, b := range s.Backends {
		role := "idle"
		if b.Live {
			role = fmt.Sprintf("live, %d%% of a rule's traffic", b.SharePercent)
		}
		p.f("  %s (%s)\n", b.Service, role)
		if !b.Found {
			p.f("    service %s/%s NOT FOUND\n", s.Namespace, b.Service)
			continue
		}
		if len(b.Workloads) == 0 {
			p.f("    no Deployment's pods match the Service's selector\n")
		}
		for _, d := range b.Workloads {
			p.f("    deployment %s: generation %d, observed %d; replicas %d: %d ready, %d updated, %d available\n",
				d.Name, d.Generation, d.ObservedGeneration, d.Replicas, d.ReadyReplicas, d.UpdatedReplicas, d.AvailableReplicas)
			for _, img := range d.Images {
				p.f("      image %s\n", img)
			}
		}
		p.f("    endpoints: %d ready\n", b.ReadyEndpoints)
		if b.ScaledDown {
			p.f("    SCALED DOWN: no instant rollback to %s; scale it up first: %s\n", b.Service, b.ScaleCommand)
		}
		if v := b.Verdict; v != nil {
			switch {
			case v.Allowed && v.Reviewed:
				p.f("    guard: a switch to it now would be allowed\n")
			case !v.Allowed && v.Reviewed:
				p.f("    guard: a switch to it now would be DENIED:\n")
				for _, f := range v.Findings {
					p.f("      - %s\n", f)
				}
			default:
				p.f("    guard: cannot decide: %s\n", v.Undecided)
			}
		}
	}
	if s.LastSwitch != nil {
		p.f("\nLAST SWITCH\n")
		p.f("  %s\n", switchLine(*s.LastSwitch))
	}
}

func switchLine(s Switch) string {
	line := fmt.Sprintf("%s %s %s -> %s", s.At.UTC().Format(time.RFC3339), s.Action, orDash(s.From), orDash(s.To))
	if s.By != "" {
		line += " by " + s.By
	}
	if s.Reason != "" {
		line += fmt.Sprintf(" (reason: %s)", s.Reason)
	}
	return line
}

func orDash(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ", ")
}

func renderHistory(w io.Writer, route, ns string, h []HistoryEntry) {
	p := printer{w}
	if len(h) == 0 {
		p.f("httproute %s/%s: no CutoverDenied or CutoverOverridden Events and no recorded switches\n", ns, route)
		return
	}
	p.f("httproute %s/%s, newest first:\n", ns, route)
	for _, e := range h {
		if e.Source == "annotation" {
			p.f("%s\n", switchLine(Switch{At: e.At, Action: e.What, By: e.By, From: e.From, To: e.To, Reason: e.Reason}))
			continue
		}
		what := e.What
		if e.Count > 1 {
			what += fmt.Sprintf(" (%d times)", e.Count)
		}
		line := fmt.Sprintf("%s %s", e.At.UTC().Format(time.RFC3339), what)
		if len(e.To) > 0 {
			line += " -> " + strings.Join(e.To, ", ")
		}
		if e.By != "" {
			line += " by " + e.By
		}
		if e.Reason != "" {
			line += fmt.Sprintf(" (reason: %s)", e.Reason)
		}
		p.f("%s\n", line)
		for _, f := range e.Findings {
			p.f("    %s\n", f)
		}
	}
}
