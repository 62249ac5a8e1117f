package checks

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// CheckCapacity names the findings of the guard's per-namespace bounds:
// not a property of a target, but why its checks did not run.
const CheckCapacity Check = "capacity"

// Reasons of the per-namespace bounds.
const (
	// ReasonNamespaceBusy denies, at once, a decision from a namespace that
	// already has MaxDecisionsPerNamespace decisions being checked.
	ReasonNamespaceBusy Reason = "NamespaceBusy"
	// ReasonDatabaseBudgetExceeded denies, without a probe, a connection
	// string past the namespace's DatabaseURLsPerNamespacePerMinute.
	ReasonDatabaseBudgetExceeded Reason = "DatabaseBudgetExceeded"
)

const (
	// DefaultMaxDecisionsPerNamespace is the default of
	// Guard.MaxDecisionsPerNamespace (--max-checks-per-namespace).
	DefaultMaxDecisionsPerNamespace = 4
	// DefaultDatabaseURLsPerNamespacePerMinute is the default of
	// Guard.DatabaseURLsPerNamespacePerMinute
	// (--db-probes-per-namespace-per-minute): a real application has one
	// or two connection strings, a scanner needs thousands.
	DefaultDatabaseURLsPerNamespacePerMinute = 30
	// urlWindow is the window of DatabaseURLsPerNamespacePerMinute.
	urlWindow = time.Minute
	// maxTrackedNamespaces caps the namespaces whose connection strings
	// are remembered; past it the one idle longest is forgotten.
	maxTrackedNamespaces = 4096
)

// busyNamespaces counts the decisions being checked per namespace. A
// namespace has an entry only while one of its decisions runs.
type busyNamespaces struct {
	mu    sync.Mutex
	limit int
	n     map[string]int
}

// acquire reports whether ns may start one more decision; release must
// follow a true.
func (b *busyNamespaces) acquire(ns string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n[ns] >= b.limit {
		return false
	}
	b.n[ns]++
	return true
}

func (b *busyNamespaces) release(ns string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.n[ns]--; b.n[ns] <= 0 {
		delete(b.n, ns)
	}
}

// namespaceBusy is the denial of a decision from ns, which already has
// limit decisions in flight: one finding per target, so each says so.
func namespaceBusy(ns string, limit int, targets []Target) Result {
	var res Result
	for _, t := range targets {
		res.Findings = append(res.Findings, Finding{Check: CheckCapacity, Severity: Deny, Service: t.Service, Reason: ReasonNamespaceBusy,
			Message: fmt.Sprintf("namespace %s has %d cutover checks in flight; the guard checks at most %d at once per namespace", ns, limit, limit),
			Fix:     "retry in a few seconds"})
	}
	return res
}

// namespaceURLs is each namespace's budget of distinct connection strings
// probed in a sliding window: a string seen in the window again costs
// nothing (a retry, another target naming it, a cached result). Only
// SHA-256 hashes are kept, never a string; at most limit per namespace and
// maxNamespaces namespaces.
type namespaceURLs struct {
	mu            sync.Mutex
	limit         int
	window        time.Duration
	maxNamespaces int
	now           func() time.Time
	ns            map[string]*seenURLs
}

type seenURLs struct {
	at   map[[sha256.Size]byte]time.Time // when each string was counted
	used time.Time                       // the namespace's last take
}

func newNamespaceURLs(limit int, now func() time.Time) *namespaceURLs {
	return &namespaceURLs{limit: limit, window: urlWindow, maxNamespaces: maxTrackedNamespaces, now: now, ns: map[string]*seenURLs{}}
}

// take reports whether ns may have dsn probed now; when not, retry is how
// long until the oldest string counted leaves the window.
func (u *namespaceURLs) take(ns, dsn string) (ok bool, retry time.Duration) {
	if u == nil {
		return true, 0
	}
	k := sha256.Sum256([]byte(dsn))
	u.mu.Lock()
	defer u.mu.Unlock()
	now := u.now()
	s := u.ns[ns]
	if s == nil {
		u.makeRoom(now)
		s = &seenURLs{at: map[[sha256.Size]byte]time.Time{}}
		u.ns[ns] = s
	}
	s.used = now
	s.expire(now, u.window)
	if _, seen := s.at[k]; seen {
		return true, 0
	}
	if len(s.at) < u.limit {
		s.at[k] = now
		return true, 0
	}
	oldest := now
	for _, t := range s.at {
		if t.Before(oldest) {
			oldest = t
		}
	}
	return false, oldest.Add(u.window).Sub(now)
}

// expire forgets the strings counted a window or more before now.
func (s *seenURLs) expire(now time.Time, window time.Duration) {
	for k, t := range s.at {
		if !now.Before(t.Add(window)) {
			delete(s.at, k)
		}
	}
}

// makeRoom, at the cap of namespaces, forgets those with nothing in the
// window and, if none, the one idle longest.
func (u *namespaceURLs) makeRoom(now time.Time) {
	if len(u.ns) < u.maxNamespaces {
		return
	}
	var idlest string
	var idleSince time.Time
	for name, s := range u.ns {
		if s.expire(now, u.window); len(s.at) == 0 {
			delete(u.ns, name)
			continue
		}
		if idlest == "" || s.used.Before(idleSince) {
			idlest, idleSince = name, s.used
		}
	}
	if len(u.ns) >= u.maxNamespaces {
		delete(u.ns, idlest)
	}
}

// budgetExceeded is the Deny finding of the strings of svc left unprobed
// because namespace ns used its budget; retry comes from take.
func budgetExceeded(svc types.NamespacedName, ns string, limit, left int, retry time.Duration) Finding {
	return Finding{Check: CheckDatabase, Severity: Deny, Service: svc, Reason: ReasonDatabaseBudgetExceeded,
		Message: fmt.Sprintf("namespace %s has had %d distinct connection strings checked in the last minute; the guard checks at most %d per namespace per minute, so %s not checked",
			ns, limit, limit, uncheckedStrings(left, svc)),
		Fix: fmt.Sprintf("retry in %s", max(retry, time.Second).Round(time.Second))}
}
