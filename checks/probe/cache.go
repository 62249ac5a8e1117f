package probe

import (
	"crypto/sha256"
	"fmt"
	"time"
)

// cacheEntry is a Result kept for the Prober's pass or failure TTL.
type cacheEntry struct {
	res     Result
	checked time.Time
	expires time.Time
}

// lookupCache returns the remembered Result for key, a denial saying how
// long ago it was checked.
func (p *Prober) lookupCache(key [sha256.Size]byte) (Result, bool) {
	if p.ttl <= 0 {
		return Result{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.cache[key]
	now := p.now()
	if !ok || !now.Before(e.expires) {
		return Result{}, false
	}
	r := e.res
	if !r.Passed() && r.Message != (Text{}) {
		r.Message.After += " " + checkedAgo(now.Sub(e.checked))
	}
	return r, true
}

// checkedAgo tells a requester that a denial is remembered, not fresh:
// "(checked 3s ago)".
func checkedAgo(age time.Duration) string {
	if age < time.Second {
		return "(checked under 1s ago)"
	}
	return fmt.Sprintf("(checked %ds ago)", int(age/time.Second))
}

func (p *Prober) storeCache(key [sha256.Size]byte, r Result) {
	ttl := p.ttl
	if r.Passed() {
		ttl = min(ttl, p.passTTL)
	}
	if ttl <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	if len(p.cache) >= 128 {
		for k, e := range p.cache {
			if !now.Before(e.expires) {
				delete(p.cache, k)
			}
		}
	}
	p.cache[key] = cacheEntry{res: r, checked: now, expires: now.Add(ttl)}
}
