package webhook

import (
	"context"
	"sync"
)

// audit collects the auditAnnotations of one request.
type audit struct {
	mu sync.Mutex
	m  map[string]string
}

type auditKey struct{}

func withAudit(ctx context.Context, a *audit) context.Context {
	return context.WithValue(ctx, auditKey{}, a)
}

// auditFromContext returns the request's audit record; a nil record ignores sets.
func auditFromContext(ctx context.Context) *audit {
	a, _ := ctx.Value(auditKey{}).(*audit)
	return a
}

func (a *audit) set(k, v string) {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[string]string{}
	}
	a.m[k] = v
}

func (a *audit) annotations() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.m
}
