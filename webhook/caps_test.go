package webhook

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"k8s.io/utils/ptr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestJoinCapped(t *testing.T) {
	more := func(n int) string { return fmt.Sprintf("+%d", n) }
	tests := map[string]struct {
		items []string
		limit int
		want  string
	}{
		"everything fits":                                {items: []string{"aa", "bb", "cc"}, limit: 8, want: "aa\nbb\ncc"},
		"whole items and the exact count":                {items: []string{"aa", "bb", "cc", "dd"}, limit: 8, want: "aa\nbb\n+2"},
		"room kept for the longest count":                {items: []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}, limit: 12, want: "a\nb\nc\nd\n+6"},
		"a first item too long is cut, the rest counted": {items: []string{"abcdefghijklmnop", "q"}, limit: 10, want: "abcd...\n+1"},
		"a cut never splits a rune":                      {items: []string{"ééééééé", "x"}, limit: 10, want: "éé...\n+1"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := joinCapped(tc.items, "\n", tc.limit, more)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("joinCapped (-want +got):\n%s", diff)
			}
			if len(got) > tc.limit {
				t.Errorf("%d bytes, want at most %d", len(got), tc.limit)
			}
			if !utf8.ValidString(got) {
				t.Errorf("%q is not valid UTF-8", got)
			}
		})
	}
}

func TestTruncateKeepsRunesWhole(t *testing.T) {
	s := strings.Repeat("日本", 50)
	for n := 3; n < len(s); n++ {
		got := truncate(s, n)
		if len(got) > n || !utf8.ValidString(got) || !strings.HasSuffix(got, "...") {
			t.Fatalf("truncate(%d) = %q (%d bytes)", n, got, len(got))
		}
	}
}

func TestCapWarnings(t *testing.T) {
	var in []string
	for i := range 40 {
		in = append(in, fmt.Sprintf("warning %02d %s", i, strings.Repeat("x", 200)))
	}
	got := capWarnings(in)
	if len(got) != maxWarnings {
		t.Fatalf("%d warnings, want %d", len(got), maxWarnings)
	}
	for i, w := range got[:maxWarnings-1] {
		if !strings.HasPrefix(w, fmt.Sprintf("warning %02d ", i)) || len(w) > maxWarning {
			t.Errorf("warning %d = %q (%d bytes), want the %dth, at most %d bytes", i, w, len(w), i, maxWarning)
		}
	}
	if diff := cmp.Diff(moreWarnings(40-(maxWarnings-1)), got[maxWarnings-1]); diff != "" {
		t.Errorf("last warning (-want +got):\n%s", diff)
	}
	if few := capWarnings(in[:3]); len(few) != 3 {
		t.Errorf("3 warnings became %d", len(few))
	}
}

// A route of 256 backendRefs to kinds the guard does not check gets one
// warning each from Targets: the response carries maxWarnings of them, the
// last counting the rest, however long the names.
func TestHostileManyWarnings(t *testing.T) {
	const rules, perRule = 16, 16
	h := newHarness(t, tutorialNamespace(true)...)
	old := wideRoute("production", 1, 1, func(int) string { return "app-blue" }, func(int) int32 { return 1 })
	updated := wideRoute("production", rules, perRule, func(k int) string { return fmt.Sprintf("bucket-%03d-%s", k, strings.Repeat("n", 200)) }, func(int) int32 { return 1 })
	for i := range updated.Spec.Rules {
		for j := range updated.Spec.Rules[i].BackendRefs {
			updated.Spec.Rules[i].BackendRefs[j].Kind = ptr.To(gwv1.Kind("Bucket"))
			updated.Spec.Rules[i].BackendRefs[j].Group = ptr.To(gwv1.Group("storage.example.com"))
		}
	}
	status, resp := h.postBody(t, PathHTTPRoute, updateReview(t, old, updated))
	if status != http.StatusOK || !resp.Allowed {
		t.Fatalf("HTTP %d, response %+v; want allowed", status, resp.Result)
	}
	if len(resp.Warnings) != maxWarnings {
		t.Fatalf("%d warnings, want %d", len(resp.Warnings), maxWarnings)
	}
	for i, w := range resp.Warnings[:maxWarnings-1] {
		if !strings.Contains(w, fmt.Sprintf("bucket-%03d-", i)) || len(w) > maxWarning {
			t.Errorf("warning %d = %q (%d bytes); want bucket-%03d's, at most %d bytes", i, w, len(w), i, maxWarning)
		}
	}
	if diff := cmp.Diff(moreWarnings(rules*perRule-(maxWarnings-1)), resp.Warnings[maxWarnings-1]); diff != "" {
		t.Errorf("last warning (-want +got):\n%s", diff)
	}
}
