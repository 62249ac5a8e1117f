package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
	"github.com/cutover-guard/cutover-guard/internal/testenv"
)

// The demo, as `make demo` runs it but with a freshly built guard: every
// step behaves as narrated, and nothing it started outlives it.
func TestDemoNarratesTheTutorial(t *testing.T) {
	toolsDir, err := cluster.ToolsDir()
	if err == nil {
		if missing := cluster.MissingTools(toolsDir); len(missing) > 0 {
			err = os.ErrNotExist
		}
	}
	if err != nil {
		testenv.Unavailable(t, "control-plane tools not built (run make tools): %v", err)
	}
	root, err := tutorial.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	binary := filepath.Join(t.TempDir(), "cutover-guard")
	if err := tutorial.BuildGuard(t.Context(), binary); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	d := &demo{root: root, out: &out, binary: binary}
	t.Cleanup(d.cleanup)
	code := d.run(t.Context())
	if code != 0 {
		t.Fatalf("demo exited %d:\n%s", code, out.String())
	}
	text := out.String()

	// The summary: one row per step, each got as expected.
	steps := d.steps()
	row := regexp.MustCompile(`(?m)^  (\d+) +.*$`)
	rows := row.FindAllString(text[strings.Index(text, "\nSummary\n"):], -1)
	if len(rows) != len(steps) {
		t.Errorf("summary has %d rows, want %d:\n%s", len(rows), len(steps), text)
	}
	if strings.Contains(text, "✗") {
		t.Errorf("a step did not behave as narrated:\n%s", text)
	}
	for want, n := range map[string]int{
		"→ denied by cutover-guard, as expected":  3,
		"→ allowed, as expected":                  2,
		"   $ " + tutorial.CutoverCommand + "\n":  3,
		"   $ " + tutorial.RollbackCommand + "\n": 2,
	} {
		if got := strings.Count(text, want); got != n {
			t.Errorf("%q appears %d times, want %d:\n%s", want, got, n, text)
		}
	}

	// Cleanup ends every process and removes the files.
	pids := append(d.cluster.PIDs(), d.guard.PID())
	work := d.work
	d.cleanup()
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil && !zombie(pid) {
			t.Errorf("pid %d still running after cleanup", pid)
		}
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("%s left behind (%v)", work, err)
	}
}

func zombie(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(stat, ')')
	return i > 0 && i+2 < len(stat) && (stat[i+2] == 'Z' || stat[i+2] == 'X')
}
