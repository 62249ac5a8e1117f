package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestUnavailable runs a child test under both settings of RequiredEnv and
// checks that it skipped or failed accordingly.
func TestUnavailable(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") == "1" {
		Unavailable(t, "no widget here (install the widget)")
		t.Fatal("Unavailable returned")
	}
	cases := map[string]struct {
		required string
		wantFail bool
		wantOut  string
	}{
		"without the requirement the test is skipped": {required: "", wantOut: "--- SKIP"},
		"with the requirement the test fails":         {required: "1", wantFail: true, wantOut: "required: " + RequiredEnv + "=1"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestUnavailable$", "-test.v")
			cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", RequiredEnv+"="+tc.required)
			out, err := cmd.CombinedOutput()
			if failed := err != nil; failed != tc.wantFail {
				t.Fatalf("child failed = %v, want %v\n%s", failed, tc.wantFail, out)
			}
			if !strings.Contains(string(out), tc.wantOut) || !strings.Contains(string(out), "no widget here") {
				t.Errorf("child output lacks %q and the reason:\n%s", tc.wantOut, out)
			}
		})
	}
}
