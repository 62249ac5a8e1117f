// Package testenv holds the one rule every test of this repository follows
// when something it needs is missing on the machine (a database binary, a
// local database server, the control-plane tools): skip, unless the run
// requires everything, in which case fail.
//
// `make test` (and so CI) sets RequiredEnv=1: a machine without PostgreSQL,
// MariaDB or the tools then fails loudly instead of passing with tests
// skipped. A developer running `go test ./checks` without them gets skips.
package testenv

import (
	"fmt"
	"os"
	"testing"
)

// RequiredEnv names the environment variable that, set to 1, turns every
// Unavailable skip into a failure.
const RequiredEnv = "CUTOVER_GUARD_TEST_REQUIRED"

// Required reports whether the run requires every test to run.
func Required() bool { return os.Getenv(RequiredEnv) == "1" }

// Unavailable ends the test because something it needs is missing: a skip,
// or with RequiredEnv=1 a failure. The message should say what is missing
// and how to provide it.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("%s (required: %s=1)", msg, RequiredEnv)
	}
	t.Skip(msg)
}
