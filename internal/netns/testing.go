package netns

import (
	"testing"

	"github.com/cutover-guard/cutover-guard/internal/testenv"
)

// NewT makes a namespace for a test and removes it when the test and its
// subtests end, passed or failed. Where the machine cannot make one the
// test is skipped, or failed with testenv.RequiredEnv=1.
func NewT(t testing.TB) *Namespace {
	t.Helper()
	if err := Available(); err != nil {
		testenv.Unavailable(t, "netns: %v", err)
	}
	n, err := New(t.Context())
	if err != nil {
		testenv.Unavailable(t, "netns: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("netns: %v", err)
		}
	})
	return n
}
