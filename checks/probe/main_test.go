package probe

import (
	"net/netip"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// The whole package must leave no goroutine behind: the throwaway servers'
// waiters, the proxies, DNS servers and drivers all end by the time their
// tests' cleanups have run.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// verifyNoLeaks checks, after every other cleanup of t has run, that t left
// no goroutine behind, so that a leak is blamed on the fault that caused it.
// Goroutines that were running when it was called (the test runner's, those
// of earlier tests still winding down) are ignored.
func verifyNoLeaks(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// loopback is the only private range of the probers that reach the test
// servers: 127.0.0.2 then stands for a public address.
var loopback = mustPrefixes("127.0.0.1/32")

// secretSource stands for where a connection string came from: the
// tutorial's Secret, as the database check names it.
const secretSource = "secret production/db-credentials key url"

// outcome is what a test compares of a Result: its reason and its texts
// with secretSource in the place of the source.
type outcome struct {
	Reason           Reason
	Message, Fix     string
	ChainNotVerified bool
}

func (o *outcome) String() string {
	if o == nil {
		return "passed"
	}
	return string(o.Reason) + ": " + o.Message + "; " + o.Fix
}

func rendered(r Result) *outcome {
	return &outcome{Reason: r.Reason, Message: r.Message.Render(secretSource), Fix: r.Fix.Render(secretSource), ChainNotVerified: r.ChainNotVerified}
}

// denial is the outcome of a probe that failed.
func denial(reason Reason, message, fix string) *outcome {
	return &outcome{Reason: reason, Message: message, Fix: fix}
}

// probeOutcome probes dsn as if found in secretSource: nil when the probe
// passed with nothing to say.
func probeOutcome(t testing.TB, p *Prober, dsn string) *outcome {
	t.Helper()
	res, err := p.Probe(t.Context(), dsn)
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	if res.Passed() && !res.ChainNotVerified {
		return nil
	}
	return rendered(res)
}

// assertNoSecret fails if the outcome contains one of secrets.
func assertNoSecret(t *testing.T, o *outcome, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(o.String(), s) {
			t.Errorf("outcome shows the password %q: %q", s, o)
		}
	}
}
