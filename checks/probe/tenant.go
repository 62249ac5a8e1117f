package probe

import (
	"context"
	"sync"
)

type tenantKey struct{}

// WithTenant returns ctx carrying the tenant that a probe run under it is
// charged to (the guard passes the namespace of the workload whose
// connection string it is). Probes of one tenant hold at most
// ProberOptions.MaxInFlightPerTenant of the Prober's slots at once, so that
// one tenant's flood leaves slots for the others. A probe with no tenant is
// charged to the empty tenant.
func WithTenant(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenant)
}

func tenantOf(ctx context.Context) string {
	t, _ := ctx.Value(tenantKey{}).(string)
	return t
}

// tenantSlots is the share of the Prober's slots each tenant may hold. A
// tenant's semaphore exists only while one of its probes waits or runs, so
// memory follows the probes in flight, not the tenants ever seen.
type tenantSlots struct {
	limit int
	mu    sync.Mutex
	sems  map[string]*tenantSem
}

type tenantSem struct {
	slots chan struct{}
	users int // guarded by tenantSlots.mu: flights holding or waiting for a slot
}

func newTenantSlots(limit int) *tenantSlots {
	return &tenantSlots{limit: limit, sems: map[string]*tenantSem{}}
}

// acquire waits for one of tenant's slots until ctx ends; ok is false when
// ctx ended first. release must be called exactly once either way.
func (s *tenantSlots) acquire(ctx context.Context, tenant string) (ok bool, release func()) {
	s.mu.Lock()
	sem := s.sems[tenant]
	if sem == nil {
		sem = &tenantSem{slots: make(chan struct{}, s.limit)}
		s.sems[tenant] = sem
	}
	sem.users++
	s.mu.Unlock()
	leave := func() {
		s.mu.Lock()
		if sem.users--; sem.users == 0 {
			delete(s.sems, tenant)
		}
		s.mu.Unlock()
	}
	select {
	case sem.slots <- struct{}{}:
		return true, func() { <-sem.slots; leave() }
	case <-ctx.Done():
		return false, leave
	}
}
