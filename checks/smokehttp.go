package checks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cutover-guard/cutover-guard/checks/probe"
)

// Defaults of the smoke gate.
const (
	// DefaultSmokeChecks is the default of --smoke-checks: the gate runs
	// for every target that opts in with AnnotationSmokePath.
	DefaultSmokeChecks = true
	// DefaultSmokeTimeout bounds each smoke request, connect to last byte
	// read; a decision's deadline may cut it shorter.
	DefaultSmokeTimeout = 2 * time.Second
	// DefaultMaxSmokeEndpoints is the most endpoints of one target the
	// gate calls; the rest are counted as not probed.
	DefaultMaxSmokeEndpoints = 16
	// DefaultSmokeMaxInFlight bounds the smoke requests running at once,
	// for all decisions; the pods of one namespace hold at most half.
	DefaultSmokeMaxInFlight = 64
)

const (
	// smokeBodyLimit is the most bytes of an answer read.
	smokeBodyLimit = 4 << 10
	// smokeHeaderLimit is the most bytes of response headers read.
	smokeHeaderLimit = 16 << 10
	// smokePerTarget bounds one target's requests in flight.
	smokePerTarget = 8
	// smokeLineLimit bounds the body line quoted in a message.
	smokeLineLimit = 120
)

// SmokeOptions configure NewSmoker.
type SmokeOptions struct {
	// PrivateCIDRs are the only ranges an endpoint address may lie in
	// (the --private-cidrs of the database prober); default
	// probe.DefaultPrivateCIDRs.
	PrivateCIDRs []netip.Prefix
	// Timeout bounds each request; default and most DefaultSmokeTimeout.
	Timeout time.Duration
	// MaxEndpoints bounds the endpoints called per target; default
	// DefaultMaxSmokeEndpoints.
	MaxEndpoints int
	// MaxInFlight bounds the requests running at once; default
	// DefaultSmokeMaxInFlight. Requests to one namespace's pods hold at
	// most half of them (at least one), so a namespace whose pods hang
	// leaves the rest to the others.
	MaxInFlight int
	// Version goes into the User-Agent, cutover-guard-smoke/<Version>.
	Version string
}

// Smoker sends the smoke gate's requests. Its zero value is not usable;
// make one with NewSmoker. Safe for concurrent use.
type Smoker struct {
	private      []netip.Prefix
	timeout      time.Duration
	maxEndpoints int
	slots        chan struct{}
	perNamespace *namespaceSlots
	userAgent    string
	client       *http.Client
}

// NewSmoker returns a Smoker. Its HTTP client never uses a proxy, never
// follows a redirect and never reuses a connection: each request dials the
// endpoint afresh, and the dialer refuses any address outside PrivateCIDRs.
func NewSmoker(o SmokeOptions) *Smoker {
	if len(o.PrivateCIDRs) == 0 {
		o.PrivateCIDRs = probe.DefaultPrivateCIDRs()
	}
	if o.Timeout <= 0 || o.Timeout > DefaultSmokeTimeout {
		o.Timeout = DefaultSmokeTimeout
	}
	if o.MaxEndpoints <= 0 {
		o.MaxEndpoints = DefaultMaxSmokeEndpoints
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultSmokeMaxInFlight
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	s := &Smoker{private: o.PrivateCIDRs, timeout: o.Timeout, maxEndpoints: o.MaxEndpoints,
		slots: make(chan struct{}, o.MaxInFlight), perNamespace: &namespaceSlots{limit: max(1, o.MaxInFlight/2), sems: map[string]*namespaceSem{}}, userAgent: "cutover-guard-smoke/" + o.Version}
	dialer := &net.Dialer{Timeout: o.Timeout, KeepAlive: -1, Control: s.control}
	s.client = &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            dialer.DialContext,
			DisableKeepAlives:      true,
			DisableCompression:     true,
			MaxResponseHeaderBytes: smokeHeaderLimit,
			ResponseHeaderTimeout:  o.Timeout,
			ForceAttemptHTTP2:      false,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return s
}

// errNotPrivate is the dialer's refusal of an address outside the CIDRs.
var errNotPrivate = errors.New("address outside --private-cidrs")

// control runs before each connect: the last word on where a request goes.
func (s *Smoker) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !s.allowed(ap.Addr()) {
		return errNotPrivate
	}
	return nil
}

func (s *Smoker) allowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range s.private {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// smokeOutcome is what one request found.
type smokeOutcome struct {
	reason Reason // empty: passed
	// what says what came back or went wrong, e.g. `status 503, body "unavailable"`.
	what string
}

// call sends one GET to addr, a pod of namespace ns, and judges the
// answer against spec.
func (s *Smoker) call(ctx context.Context, ns string, addr netip.AddrPort, spec *smokeSpec) smokeOutcome {
	timeout := s.timeout
	if dl, ok := ctx.Deadline(); ok {
		// Leave the check time to report before the decision's deadline.
		if left := time.Until(dl) - 50*time.Millisecond; left < timeout {
			timeout = max(left, time.Millisecond)
		}
	}
	busy := smokeOutcome{reason: ReasonSmokeTimeout, what: "not called: the guard's smoke requests were all busy until the deadline"}
	ok, release := s.perNamespace.acquire(ctx, ns)
	defer release()
	if !ok {
		return busy
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-ctx.Done():
		return busy
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr.String()+spec.path, nil)
	if err != nil {
		return smokeOutcome{reason: ReasonSmokeFailed, what: "the request could not be built"}
	}
	req.Header.Set("User-Agent", s.userAgent)
	req.Header.Set("Accept", "*/*")
	if spec.host != "" {
		req.Host = spec.host
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return classifySmokeError(err, timeout)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, smokeBodyLimit))
	if err != nil {
		o := classifySmokeError(err, timeout)
		o.what = fmt.Sprintf("status %d, then %s reading the body", resp.StatusCode, o.what)
		return o
	}
	got := fmt.Sprintf("status %d", resp.StatusCode)
	if line := firstLine(body); line != "" {
		got += fmt.Sprintf(", body %q", line)
	}
	switch {
	case !spec.expected(resp.StatusCode):
		return smokeOutcome{reason: ReasonSmokeStatus, what: got + "; expected " + spec.expectText}
	case spec.body != "" && !strings.Contains(string(body), spec.body):
		return smokeOutcome{reason: ReasonSmokeBody, what: fmt.Sprintf("%s; expected the body to contain %q (in its first %d bytes)", got, spec.body, smokeBodyLimit)}
	}
	return smokeOutcome{}
}

// classifySmokeError names what went wrong in our words: the error text of
// the network stack is never shown.
func classifySmokeError(err error, timeout time.Duration) smokeOutcome {
	var ne net.Error
	switch {
	case errors.Is(err, errNotPrivate):
		return smokeOutcome{reason: ReasonSmokeAddressNotAllowed, what: "not called: the address is outside --private-cidrs"}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return smokeOutcome{reason: ReasonSmokeTimeout, what: "no answer within " + timeout.Round(time.Millisecond).String()}
	case errors.Is(err, syscall.ECONNREFUSED):
		return smokeOutcome{reason: ReasonSmokeRefused, what: "connection refused: nothing listens on the port"}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.EPIPE):
		return smokeOutcome{reason: ReasonSmokeReset, what: "connection reset or closed before a complete answer"}
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return smokeOutcome{reason: ReasonSmokeUnreachable, what: "no route to the pod"}
	}
	return smokeOutcome{reason: ReasonSmokeFailed, what: "the request failed (not HTTP/1.x, or the connection broke)"}
}

// firstLine returns the body's first non-empty line, every byte outside
// printable ASCII replaced by '?', at most smokeLineLimit characters.
func firstLine(body []byte) string {
	s := strings.TrimLeft(string(body), " \t\r\n")
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimSpace(s)
	cut := len(s) > smokeLineLimit
	if cut {
		s = s[:smokeLineLimit-3]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if cut {
		return string(b) + "..."
	}
	return string(b)
}

// namespaceSlots is the share of the Smoker's slots the pods of each
// namespace may hold. A namespace's semaphore exists only while one of its
// requests waits or runs.
type namespaceSlots struct {
	limit int
	mu    sync.Mutex
	sems  map[string]*namespaceSem
}

type namespaceSem struct {
	slots chan struct{}
	users int // guarded by namespaceSlots.mu
}

// acquire waits for one of ns's slots until ctx ends; ok is false when ctx
// ended first. release must be called once either way.
func (n *namespaceSlots) acquire(ctx context.Context, ns string) (ok bool, release func()) {
	n.mu.Lock()
	sem := n.sems[ns]
	if sem == nil {
		sem = &namespaceSem{slots: make(chan struct{}, n.limit)}
		n.sems[ns] = sem
	}
	sem.users++
	n.mu.Unlock()
	leave := func() {
		n.mu.Lock()
		if sem.users--; sem.users == 0 {
			delete(n.sems, ns)
		}
		n.mu.Unlock()
	}
	select {
	case sem.slots <- struct{}{}:
		return true, func() { <-sem.slots; leave() }
	case <-ctx.Done():
		return false, leave
	}
}
