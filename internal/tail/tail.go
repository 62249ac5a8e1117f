// Package tail cuts what a failure message shows of a log or a history to
// its last entries: the end of a process's log, the last attempts of a
// load generator. It is the one rule for that in the tests, the demo, the
// benchmarks and the soak.
package tail

import (
	"os"
	"strings"
)

// Of returns the last n items: all of them when there are fewer, or when n
// is negative.
func Of[T any](items []T, n int) []T {
	if n < 0 || len(items) <= n {
		return items
	}
	return items[len(items)-n:]
}

// Lines returns the last n lines of text (all of it for n < 0), without a
// trailing newline.
func Lines(text string, n int) string {
	return strings.Join(Of(strings.Split(strings.TrimRight(text, "\n"), "\n"), n), "\n")
}

// File returns the last n lines of the file at path, or why it cannot be
// read: a failure message shows that instead.
func File(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return Lines(string(b), n)
}
