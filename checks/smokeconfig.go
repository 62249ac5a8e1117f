package checks

import (
	"fmt"
	"maps"
	"math"
	"net/url"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// The smoke gate's annotations, on the target's workload or its Service.
// Only AnnotationSmokePath turns the gate on; the others refine it.
const (
	// AnnotationSmokePath is the path (and optional query) the guard GETs
	// on every ready endpoint of the target, e.g. /ready or /version.
	AnnotationSmokePath = "cutover-guard.dev/smoke-path"
	// AnnotationSmokePort is the pod's port to call: a container port
	// number or name. Default: the port the Service maps the backendRef to.
	AnnotationSmokePort = "cutover-guard.dev/smoke-port"
	// AnnotationSmokeExpect lists the status codes that pass, e.g.
	// "200-299" (the default) or "200,204,301-302".
	AnnotationSmokeExpect = "cutover-guard.dev/smoke-expect"
	// AnnotationSmokeHost is the Host header sent; default the endpoint's
	// address and port.
	AnnotationSmokeHost = "cutover-guard.dev/smoke-host"
	// AnnotationSmokeBody is a text the first smokeBodyLimit bytes of the
	// answer must contain, e.g. the version being switched to.
	AnnotationSmokeBody = "cutover-guard.dev/smoke-body"
	// AnnotationSmokeMinReady is how many endpoints must pass: "all" (the
	// default), a count ("2") or a percentage of the ready endpoints
	// ("50%", rounded up).
	AnnotationSmokeMinReady = "cutover-guard.dev/smoke-min-ready"
)

// smokeAnnotations are every annotation of the gate, in the order their
// errors are reported.
var smokeAnnotations = []string{AnnotationSmokePath, AnnotationSmokePort, AnnotationSmokeExpect, AnnotationSmokeHost, AnnotationSmokeBody, AnnotationSmokeMinReady}

// Bounds on what an annotation may ask for.
const (
	maxSmokePathLen  = 512
	maxSmokeBodyLen  = 256
	maxSmokeExpected = 16 // codes and ranges in smoke-expect
)

// smokeSpec is a parsed, valid set of smoke annotations.
type smokeSpec struct {
	// source names the object the annotations are on, e.g. "deployment app-green".
	source string
	// path is the request URI: a path, with a query if one was given.
	path string
	// portName or portNumber is the smoke-port; both zero: the backendRef's.
	portName   string
	portNumber int32
	expect     []statusRange
	expectText string
	host       string
	body       string
	// minReady: minAll, or minCount > 0, or minPercent in 1..100.
	minAll     bool
	minCount   int
	minPercent int
}

type statusRange struct{ lo, hi int }

// annotated is an object whose annotations may configure the gate.
type annotated struct {
	// name is how messages name it, e.g. "deployment app-green".
	name        string
	annotations map[string]string
}

// smokeSources returns the objects whose annotations configure the smoke
// gate for in's target, in order of precedence: the workloads the
// workload check found (of any kind), then the Service. It is the one place that knows
// where the workloads are kept.
func smokeSources(in *Input) []annotated {
	var out []annotated
	for _, w := range in.workloads() {
		out = append(out, annotated{name: w.Ref(), annotations: w.Object.GetAnnotations()})
	}
	if in.Service != nil {
		out = append(out, annotated{name: "service " + in.Service.Name, annotations: in.Service.Annotations})
	}
	return out
}

// smokeSettings picks the object that configures the gate: the first
// workload with AnnotationSmokePath, else the Service if it has one. The
// gate's annotations are read from that object only, never mixed. Two
// workloads with different smoke annotations are a conflict (conflict
// names them); none with AnnotationSmokePath: ok is false.
func smokeSettings(sources []annotated) (src annotated, ok bool, conflict string) {
	var chosen *annotated
	for i := range sources {
		s := &sources[i]
		if _, has := s.annotations[AnnotationSmokePath]; !has {
			continue
		}
		if chosen == nil {
			chosen = s
			continue
		}
		if strings.HasPrefix(s.name, "service ") {
			break // a workload's annotations win over the Service's
		}
		if !maps.Equal(smokeOnly(chosen.annotations), smokeOnly(s.annotations)) {
			return annotated{}, false, fmt.Sprintf("%s and %s", chosen.name, s.name)
		}
	}
	if chosen == nil {
		return annotated{}, false, ""
	}
	return *chosen, true, ""
}

func smokeOnly(a map[string]string) map[string]string {
	out := map[string]string{}
	for _, k := range smokeAnnotations {
		if v, ok := a[k]; ok {
			out[k] = v
		}
	}
	return out
}

// smokeSyntaxError is a bad annotation value: which annotation, what is
// wrong, and the syntax it accepts.
type smokeSyntaxError struct {
	annotation, problem, accepted string
}

func (e *smokeSyntaxError) Error() string {
	return fmt.Sprintf("annotation %s %s", e.annotation, e.problem)
}

// parseSmoke parses the gate's annotations of src, strictly: the first bad
// value is an error naming it and what it accepts.
func parseSmoke(src annotated) (smokeSpec, *smokeSyntaxError) {
	a := src.annotations
	spec := smokeSpec{source: src.name, expect: []statusRange{{200, 299}}, expectText: "200-299", minAll: true}
	bad := func(name, problem, accepted string) (smokeSpec, *smokeSyntaxError) {
		return smokeSpec{}, &smokeSyntaxError{annotation: name, problem: problem, accepted: accepted}
	}
	var err error
	if spec.path, err = parseSmokePath(a[AnnotationSmokePath]); err != nil {
		return bad(AnnotationSmokePath, err.Error(), "a path beginning with one /, such as /ready or /version?full=1")
	}
	if v, ok := a[AnnotationSmokePort]; ok {
		if spec.portNumber, spec.portName, err = parseSmokePort(v); err != nil {
			return bad(AnnotationSmokePort, err.Error(), "a container port number (1-65535) or name, such as 8080 or http")
		}
	}
	if v, ok := a[AnnotationSmokeExpect]; ok {
		if spec.expect, err = parseStatusRanges(v); err != nil {
			return bad(AnnotationSmokeExpect, err.Error(), fmt.Sprintf("status codes or ranges (100-599), comma-separated, at most %d, such as 200-299 or 200,204,301-302", maxSmokeExpected))
		}
		spec.expectText = strings.Join(strings.Fields(strings.ReplaceAll(v, ",", " ")), ",")
	}
	if v, ok := a[AnnotationSmokeHost]; ok {
		if spec.host, err = parseSmokeHost(v); err != nil {
			return bad(AnnotationSmokeHost, err.Error(), "a DNS name, such as app-green.production.svc.cluster.local")
		}
	}
	if v, ok := a[AnnotationSmokeBody]; ok {
		if v == "" || len(v) > maxSmokeBodyLen || !printableASCII(v) {
			return bad(AnnotationSmokeBody, fmt.Sprintf("is %s", describeValue(v)), fmt.Sprintf("printable text of 1 to %d characters that the first %d bytes of the answer must contain, such as v1.1", maxSmokeBodyLen, smokeBodyLimit))
		}
		spec.body = v
	}
	if v, ok := a[AnnotationSmokeMinReady]; ok {
		if spec.minAll, spec.minCount, spec.minPercent, err = parseMinReady(v); err != nil {
			return bad(AnnotationSmokeMinReady, err.Error(), "all, a count of endpoints (such as 2) or a percentage of the ready endpoints (1%-100%, such as 50%)")
		}
	}
	return spec, nil
}

func parseSmokePath(v string) (string, error) {
	switch {
	case v == "":
		return "", fmt.Errorf("is empty")
	case len(v) > maxSmokePathLen:
		return "", fmt.Errorf("is longer than %d characters", maxSmokePathLen)
	case !printableASCII(v) || strings.Contains(v, " "):
		return "", fmt.Errorf("is %s: only printable ASCII without spaces (percent-encode the rest)", describeValue(v))
	case !strings.HasPrefix(v, "/") || strings.HasPrefix(v, "//"):
		return "", fmt.Errorf("is %s, not a path: only a path is configurable, never a host or URL", describeValue(v))
	case strings.Contains(v, "#"):
		return "", fmt.Errorf("is %s: a fragment is never sent", describeValue(v))
	}
	u, err := url.ParseRequestURI(v)
	if err != nil || u.Scheme != "" || u.Host != "" {
		return "", fmt.Errorf("is %s, not a valid path", describeValue(v))
	}
	return u.RequestURI(), nil
}

func parseSmokePort(v string) (int32, string, error) {
	if v != "" && v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			return 0, "", fmt.Errorf("is %s, not a port number", describeValue(v))
		}
		return int32(n), "", nil
	}
	if errs := validation.IsValidPortName(v); len(errs) > 0 {
		return 0, "", fmt.Errorf("is %s, neither a port number nor a port name", describeValue(v))
	}
	return 0, v, nil
}

func parseStatusRanges(v string) ([]statusRange, error) {
	parts := strings.Split(v, ",")
	if len(parts) > maxSmokeExpected {
		return nil, fmt.Errorf("lists %d codes or ranges", len(parts))
	}
	var out []statusRange
	for _, p := range parts {
		p = strings.TrimSpace(p)
		lo, hi, isRange := strings.Cut(p, "-")
		if !isRange {
			hi = lo
		}
		l, errL := statusCode(strings.TrimSpace(lo))
		h, errH := statusCode(strings.TrimSpace(hi))
		if errL != nil || errH != nil || l > h {
			return nil, fmt.Errorf("has %s, not a status code or range", describeValue(p))
		}
		out = append(out, statusRange{l, h})
	}
	return out, nil
}

func statusCode(s string) (int, error) {
	if len(s) != 3 {
		return 0, fmt.Errorf("not three digits")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 100 || n > 599 {
		return 0, fmt.Errorf("not a status code")
	}
	return n, nil
}

func parseSmokeHost(v string) (string, error) {
	h := strings.ToLower(strings.TrimSuffix(v, "."))
	if errs := validation.IsDNS1123Subdomain(h); len(errs) > 0 || h == "" {
		return "", fmt.Errorf("is %s, not a DNS name", describeValue(v))
	}
	return h, nil
}

func parseMinReady(v string) (all bool, count, percent int, err error) {
	switch {
	case v == "all":
		return true, 0, 0, nil
	case strings.HasSuffix(v, "%"):
		n, e := strconv.Atoi(strings.TrimSuffix(v, "%"))
		if e != nil || n < 1 || n > 100 || strings.HasPrefix(v, "+") {
			return false, 0, 0, fmt.Errorf("is %s, not a percentage from 1%% to 100%%", describeValue(v))
		}
		return false, 0, n, nil
	default:
		n, e := strconv.Atoi(v)
		if e != nil || n < 1 || strings.HasPrefix(v, "+") {
			return false, 0, 0, fmt.Errorf("is %s, neither all, a count nor a percentage", describeValue(v))
		}
		return false, n, 0, nil
	}
}

// required is how many of ready endpoints must pass.
func (s *smokeSpec) required(ready int) int {
	switch {
	case s.minAll:
		return ready
	case s.minPercent > 0:
		return int(math.Ceil(float64(s.minPercent) * float64(ready) / 100))
	default:
		return s.minCount
	}
}

// minReadyText renders smoke-min-ready for messages.
func (s *smokeSpec) minReadyText() string {
	switch {
	case s.minAll:
		return "all"
	case s.minPercent > 0:
		return strconv.Itoa(s.minPercent) + "%"
	default:
		return strconv.Itoa(s.minCount)
	}
}

func (s *smokeSpec) expected(code int) bool {
	for _, r := range s.expect {
		if code >= r.lo && code <= r.hi {
			return true
		}
	}
	return false
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// describeValue quotes an annotation value for a message, shortened and
// with anything unprintable escaped.
func describeValue(v string) string {
	if v == "" {
		return "empty"
	}
	if len(v) > 64 {
		v = v[:64] + "..."
	}
	return strconv.QuoteToASCII(v)
}
