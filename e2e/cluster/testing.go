package cluster

import (
	"strings"
	"testing"

	"github.com/cutover-guard/cutover-guard/internal/testenv"
)

// StartT starts a cluster for a test. When the tools are not built the test
// is skipped, or failed with testenv.RequiredEnv=1 (`make test` builds them
// and sets it, so CI never skips). The cluster
// stops when the test and its subtests end; if the test failed, the tail of
// every component log is printed and the log folder is kept.
func StartT(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.ToolsDir == "" {
		d, err := ToolsDir()
		if err != nil {
			testenv.Unavailable(t, "e2e cluster: %v; build the tools with hack/build-tools.sh", err)
		}
		opts.ToolsDir = d
	}
	if missing := MissingTools(opts.ToolsDir); len(missing) > 0 {
		testenv.Unavailable(t, "e2e cluster: control-plane tools not built (run hack/build-tools.sh or set %s); missing: %s",
			ToolsEnv, strings.Join(missing, ", "))
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	c, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("e2e cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.opts.KeepLogs = true
			var b strings.Builder
			c.DumpLogs(&b, 40)
			t.Logf("e2e cluster logs kept in %s\n%s", c.LogDir, b.String())
		}
		if err := c.Stop(); err != nil {
			t.Errorf("e2e cluster stop: %v", err)
		}
	})
	return c
}
