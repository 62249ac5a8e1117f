package cutoverctl

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Rendering to text happens here, once, from the typed results; -o json
// encodes the same values.

func renderVerdict(w io.Writer, v *Verdict) {
	switch {
	case v.Allowed && v.Reviewed:
		fmt.Fprintln(w, "guard: allowed (the server-side dry run was reviewed by cutover-guard)")
	case !v.Allowed && v.Reviewed:
		fmt.Fprintf(w, "guard: DENIED by %s:\n", v.Webhook)
		for _, f := range v.Findings {
			fmt.Fprintf(w, "  - %s\n", f)
		}
	default:
		fmt.Fprintf(w, "guard: cannot decide: %s\n", v.Undecided)
		for _, f := range v.Findings {
			fmt.Fprintf(w, "  - %s\n", f)
		}
	}
	for _, s := range v.Warnings {
		fmt.Fprintf(w, "warning: %s\n", s)
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
	if r.Unchanged {
		fmt.Fprintf(w, "httproute %s/%s already sends its traffic to %s; nothing to check\n", r.Namespace, r.Route, strings.Join(r.To, ", "))
		return
	}
	fmt.Fprintf(w, "httproute %s/%s: check switch %s -> %s\n", r.Namespace, r.Route, strings.Join(r.From, ", "), strings.Join(r.To, ", "))
	renderVerdict(w, r.Verdict)
}

func renderStatus(w io.Writer, s *Status) {
	fmt.Fprintf(w, "HTTPRoute %s/%s (generation %d)\n", s.Namespace, s.Route, s.Generation)
	switch s.Guard.State {
	case GuardInstalled:
		fmt.Fprintf(w, "guard: installed (%s)\n", strings.Join(s.Guard.Webhooks, ", "))
	case GuardMissing:
		fmt.Fprintf(w, "guard: NOT INSTALLED: %s\n", s.Guard.Detail)
	default:
		fmt.Fprintf(w, "guard: unknown (%s); each verdict below says whether the guard reviewed it\n", s.Guard.Detail)
	}

	fmt.Fprintln(w, "\nTRAFFIC")
	for _, r := range s.Rules {
		var parts []string
		for _, b := range r.Backends {
			parts = append(parts, fmt.Sprintf("%s %d%% (weight %d)", b.Name, b.Share, b.Weight))
		}
		if len(parts) == 0 {
			parts = []string{"no backendRefs"}
		}
		fmt.Fprintf(w, "  rule %d: %s\n", r.Rule, strings.Join(parts, ", "))
	}

	fmt.Fprintln(w, "\nGATEWAYS")
	if len(s.Parents) == 0 {
		for _, p := range s.ParentRefs {
			fmt.Fprintf(w, "  %s: no status yet (no Gateway controller has written status on this route)\n", p)
		}
	}
	for _, p := range s.Parents {
		var cs []string
		for _, c := range p.Conditions {
			cond := c.Type + "=" + c.Status
			if c.Status != "True" && c.Reason != "" {
				cond += " (" + c.Reason + ")"
			}
			if !c.Current {
				cond += fmt.Sprintf(" [observed generation %d]", c.ObservedGeneration)
			}
			cs = append(cs, cond)
		}
		fmt.Fprintf(w, "  %s: %s\n", p.Gateway, strings.Join(cs, ", "))
	}

	fmt.Fprintln(w, "\nBACKENDS")
	for _, b := range s.Backends {
		role := "idle"
		if b.Live {
			role = fmt.Sprintf("live, %d%% of a rule's traffic", b.SharePercent)
		}
		fmt.Fprintf(w, "  %s (%s)\n", b.Service, role)
		if !b.Found {
			fmt.Fprintf(w, "    service %s/%s NOT FOUND\n", s.Namespace, b.Service)
			continue
		}
		if len(b.Workloads) == 0 {
			fmt.Fprintln(w, "    no Deployment's pods match the Service's selector")
		}
		for _, d := range b.Workloads {
			fmt.Fprintf(w, "    deployment %s: generation %d, observed %d; replicas %d: %d ready, %d updated, %d available\n",
				d.Name, d.Generation, d.ObservedGeneration, d.Replicas, d.ReadyReplicas, d.UpdatedReplicas, d.AvailableReplicas)
			for _, img := range d.Images {
				fmt.Fprintf(w, "      image %s\n", img)
			}
		}
		fmt.Fprintf(w, "    endpoints: %d ready\n", b.ReadyEndpoints)
		if b.ScaledDown {
			fmt.Fprintf(w, "    SCALED DOWN: no instant rollback to %s; scale it up first: %s\n", b.Service, b.ScaleCommand)
		}
		if v := b.Verdict; v != nil {
			switch {
			case v.Allowed && v.Reviewed:
				fmt.Fprintln(w, "    guard: a switch to it now would be allowed")
			case !v.Allowed && v.Reviewed:
				fmt.Fprintln(w, "    guard: a switch to it now would be DENIED:")
				for _, f := range v.Findings {
					fmt.Fprintf(w, "      - %s\n", f)
				}
			default:
				fmt.Fprintf(w, "    guard: cannot decide: %s\n", v.Undecided)
			}
		}
	}
	if s.LastSwitch != nil {
		fmt.Fprintln(w, "\nLAST SWITCH")
		fmt.Fprintf(w, "  %s\n", switchLine(*s.LastSwitch))
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
	if len(h) == 0 {
		fmt.Fprintf(w, "httproute %s/%s: no CutoverDenied or CutoverOverridden Events and no recorded switches\n", ns, route)
		return
	}
	fmt.Fprintf(w, "httproute %s/%s, newest first:\n", ns, route)
	for _, e := range h {
		if e.Source == "annotation" {
			fmt.Fprintf(w, "%s\n", switchLine(Switch{At: e.At, Action: e.What, By: e.By, From: e.From, To: e.To, Reason: e.Reason}))
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
		fmt.Fprintln(w, line)
		for _, f := range e.Findings {
			fmt.Fprintf(w, "    %s\n", f)
		}
	}
}
