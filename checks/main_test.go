package checks

import (
	"testing"

	"go.uber.org/goleak"
)

// The package must leave no goroutine behind: a check the Guard abandoned at
// the deadline, and a probe that outlived its caller, end by the time their
// tests' cleanups have run.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
