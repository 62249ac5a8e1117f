package webhook

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Bounds on what one decision writes into a response, an audit event and an
// Event. A route of 256 backendRefs of which every one is broken yields 512
// findings, some 80 KiB of text: the requester needs the first few to act,
// the API server copies every byte into its audit log, and kubectl prints
// them all. Each bound keeps whole findings, in the order the checks report
// them (by target as the route names them, then by check), and says how
// many it left out.
const (
	// maxMessage bounds the message of a denial, in bytes.
	maxMessage = 4 << 10
	// maxAuditValue bounds each audit annotation's value, in bytes.
	maxAuditValue = 4 << 10
	// maxWarnings bounds the admission warnings of one response, the last
	// of which then counts the rest. The API server keeps 4096 characters
	// of warnings per response from all webhooks together and cuts each
	// past that to 256 (k8s.io/apiserver/pkg/endpoints/filters/warning.go):
	// 16 of at most maxWarning bytes take under half of that.
	maxWarnings = 16
)

// moreFindings is the last line of a denial that leaves n findings out.
func moreFindings(n int) string {
	return fmt.Sprintf("... and %d more %s (the guard's log lists every finding's check and reason)", n, plural(n, "finding", "findings"))
}

// moreWarnings is the last warning of a response that leaves n out.
func moreWarnings(n int) string {
	return fmt.Sprintf("... and %d more %s (the guard's log lists every finding's check and reason)", n, plural(n, "warning", "warnings"))
}

// moreItems ends an audit annotation that leaves n items out.
func moreItems(n int) string { return fmt.Sprintf("... and %d more", n) }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// joinCapped joins items with sep into at most limit bytes. When they do not
// all fit, it keeps the longest prefix of whole items that leaves room for
// sep and more(left out), and ends with that. An item is cut (on a rune
// boundary, with "...") only when the first alone does not fit: the result
// always names at least one.
func joinCapped(items []string, sep string, limit int, more func(int) string) string {
	total := 0
	for i, s := range items {
		if i > 0 {
			total += len(sep)
		}
		total += len(s)
	}
	if total <= limit {
		return strings.Join(items, sep)
	}
	// Room for the longest trailer this can end with.
	reserve := len(sep) + len(more(len(items)))
	var b strings.Builder
	kept := 0
	for _, s := range items {
		add := len(s)
		if kept > 0 {
			add += len(sep)
		}
		if b.Len()+add+reserve > limit {
			break
		}
		if kept > 0 {
			b.WriteString(sep)
		}
		b.WriteString(s)
		kept++
	}
	if kept == 0 {
		b.WriteString(truncate(items[0], max(limit-reserve, len("x..."))))
		kept = 1
	}
	if left := len(items) - kept; left > 0 {
		b.WriteString(sep)
		b.WriteString(more(left))
	}
	return b.String()
}

// capWarnings returns at most maxWarnings warnings, each at most maxWarning
// bytes: past the bound, the last one counts those left out.
func capWarnings(warnings []string) []string {
	n := len(warnings)
	if n > maxWarnings {
		n = maxWarnings - 1
	}
	out := make([]string, 0, min(len(warnings), maxWarnings))
	for _, w := range warnings[:n] {
		out = append(out, truncate(w, maxWarning))
	}
	if n < len(warnings) {
		out = append(out, truncate(moreWarnings(len(warnings)-n), maxWarning))
	}
	return out
}

// truncate cuts s to at most n bytes, on a rune boundary, ending "...".
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := max(n-len("..."), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
