package tail

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestOf(t *testing.T) {
	items := []int{1, 2, 3, 4}
	tests := map[string]struct {
		n    int
		want []int
	}{
		"fewer than there are": {n: 2, want: []int{3, 4}},
		"as many as there are": {n: 4, want: []int{1, 2, 3, 4}},
		"more than there are":  {n: 9, want: []int{1, 2, 3, 4}},
		"none":                 {n: 0, want: []int{}},
		"a negative n: all":    {n: -1, want: []int{1, 2, 3, 4}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Of(items, tc.n)); diff != "" {
				t.Errorf("Of(%v, %d) (-want +got):\n%s", items, tc.n, diff)
			}
		})
	}
}

func TestLines(t *testing.T) {
	tests := map[string]struct {
		text string
		n    int
		want string
	}{
		"the last lines":                  {text: "a\nb\nc\n", n: 2, want: "b\nc"},
		"all of a short text":             {text: "a\nb", n: 5, want: "a\nb"},
		"trailing newlines are not lines": {text: "a\nb\n\n\n", n: 1, want: "b"},
		"a negative n: all of it":         {text: "a\nb\nc\n", n: -1, want: "a\nb\nc"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Lines(tc.text, tc.n); got != tc.want {
				t.Errorf("Lines(%q, %d) = %q, want %q", tc.text, tc.n, got, tc.want)
			}
		})
	}
}

func TestFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	if err := os.WriteFile(path, []byte("one\ntwo\nthree\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := File(path, 2); got != "two\nthree" {
		t.Errorf("File = %q, want the last two lines", got)
	}
	if got := File(filepath.Join(t.TempDir(), "missing.log"), 2); got == "" {
		t.Error("File of a missing file is empty; want why it cannot be read")
	}
}
