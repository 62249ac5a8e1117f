package tutorial

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/internal/testenv"
)

// Preflight returns the control-plane tools folder, or why an end-to-end
// suite cannot run here (skip is then non-empty): the tools are not built,
// or a database server in dbAddrs (host:port) does not accept connections.
func Preflight(dbAddrs ...string) (toolsDir, skip string) {
	toolsDir, err := cluster.ToolsDir()
	if err != nil {
		return "", err.Error()
	}
	if missing := cluster.MissingTools(toolsDir); len(missing) > 0 {
		return "", "control-plane tools not built (run hack/build-tools.sh or set " + cluster.ToolsEnv + "); missing: " + strings.Join(missing, ", ")
	}
	for _, addr := range dbAddrs {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return "", fmt.Sprintf("local database server %s not answering (.ci/run starts it): %v", addr, err)
		}
		_ = c.Close()
	}
	return toolsDir, ""
}

// Shared is what the tests of one end-to-end package share (a Stack and
// whatever the package keeps beside it): started once, by the first test
// that asks for it.
type Shared[T any] struct {
	once    sync.Once
	val     T
	skip    string
	err     error
	started bool
}

// Get returns the shared value, calling start on first use. When start says
// the suite cannot run here (skip non-empty) the test is skipped, or failed
// with testenv.RequiredEnv=1; when start failed, every test fails with its
// error.
func (s *Shared[T]) Get(t testing.TB, start func() (T, string, error)) T {
	t.Helper()
	s.once.Do(func() {
		s.val, s.skip, s.err = start()
		s.started = s.skip == "" && s.err == nil
	})
	if s.skip != "" {
		testenv.Unavailable(t, "e2e: %s", s.skip)
	}
	if s.err != nil {
		t.Fatalf("e2e: %v", s.err)
	}
	return s.val
}

// Main runs the package's tests and then, if one of them started the
// shared value, tears down its Stack (Stack.Teardown: the logs are shown
// and kept when a test failed). It returns the exit code, for TestMain's
// os.Exit.
func (s *Shared[T]) Main(m *testing.M, stack func(T) *Stack) int {
	code := m.Run()
	if s.started {
		if err := stack(s.val).Teardown(code != 0, os.Stderr); err != nil {
			_, _ = fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	return code
}
