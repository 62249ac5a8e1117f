package webhook

import (
	"context"
	"net/http"
	"time"
)

// withDeadline gives each request a deadline before the API server's own:
// the timeout query parameter it sends, less a margin, or fallback.
func withDeadline(next http.Handler, fallback time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), Budget(r.URL.Query().Get("timeout"), fallback))
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// Budget is the time a decision may take, given the API server's timeout
// query parameter (e.g. "10s"): the timeout less a margin of a tenth (at
// least 250ms, at most 1s), or fallback when the parameter is missing or
// malformed.
func Budget(timeout string, fallback time.Duration) time.Duration {
	t, err := time.ParseDuration(timeout)
	if err != nil || t <= 0 {
		return fallback
	}
	margin := min(max(t/10, 250*time.Millisecond), time.Second)
	if t-margin < t/2 {
		return t / 2
	}
	return t - margin
}
