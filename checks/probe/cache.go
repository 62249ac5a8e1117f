package probe

import (
	"crypto/sha256"
	"time"
)

// cacheEntry is a Result kept for the Prober's TTL.
type cacheEntry struct {
	res     Result
	expires time.Time
}

func (p *Prober) lookupCache(key [sha256.Size]byte) (Result, bool) {
	if p.ttl <= 0 {
		return Result{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.cache[key]
	if !ok || !p.now().Before(e.expires) {
		return Result{}, false
	}
	return e.res, true
}

func (p *Prober) storeCache(key [sha256.Size]byte, r Result) {
	if p.ttl <= 0 {
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
	p.cache[key] = cacheEntry{res: r, expires: now.Add(p.ttl)}
}
