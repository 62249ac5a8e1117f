package checks

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// CheckSmoke is the opt-in smoke gate (SmokeTested).
const CheckSmoke Check = "smoke"

// Reasons found by SmokeTested.
const (
	// ReasonSmokeAnnotationInvalid: a smoke annotation has a bad value.
	ReasonSmokeAnnotationInvalid Reason = "SmokeAnnotationInvalid"
	// ReasonSmokeAnnotationConflict: two workloads of the target configure
	// the gate differently.
	ReasonSmokeAnnotationConflict Reason = "SmokeAnnotationConflict"
	// ReasonSmokeNotChecked: the target opts in but the guard runs with
	// --smoke-checks=false (a warning).
	ReasonSmokeNotChecked Reason = "SmokeNotChecked"
	// ReasonSmokeStatus: an endpoint answered with a status not expected.
	ReasonSmokeStatus Reason = "SmokeStatus"
	// ReasonSmokeBody: an endpoint's answer lacks the smoke-body text.
	ReasonSmokeBody Reason = "SmokeBody"
	// ReasonSmokeTimeout: an endpoint did not answer in time.
	ReasonSmokeTimeout Reason = "SmokeTimeout"
	// ReasonSmokeRefused: nothing listens on the endpoint's port.
	ReasonSmokeRefused Reason = "SmokeRefused"
	// ReasonSmokeReset: the connection broke before a complete answer.
	ReasonSmokeReset Reason = "SmokeReset"
	// ReasonSmokeUnreachable: no route to the endpoint.
	ReasonSmokeUnreachable Reason = "SmokeUnreachable"
	// ReasonSmokeFailed: any other failure of the request.
	ReasonSmokeFailed Reason = "SmokeFailed"
	// ReasonSmokeAddressNotAllowed: the endpoint is not called because its
	// address is outside --private-cidrs, or is not the address of a pod
	// of the Service's namespace (a hand-written EndpointSlice).
	ReasonSmokeAddressNotAllowed Reason = "SmokeAddressNotAllowed"
	// ReasonSmokeMinReady: fewer endpoints are ready than smoke-min-ready
	// asks for.
	ReasonSmokeMinReady Reason = "SmokeMinReady"
	// ReasonSmokeNotAllProbed: more endpoints are ready than the guard
	// calls per target (a warning).
	ReasonSmokeNotAllProbed Reason = "SmokeNotAllProbed"
)

// maxSmokeFailuresShown bounds the failed endpoints named one by one.
const maxSmokeFailuresShown = 4

// smokeOptedIn reports whether in's target configures the gate.
func smokeOptedIn(in *Input) bool {
	for _, s := range smokeSources(in) {
		if _, ok := s.annotations[AnnotationSmokePath]; ok {
			return true
		}
	}
	return false
}

// smokeEndpoint is one ready endpoint of the target.
type smokeEndpoint struct {
	addr netip.AddrPort
	pod  *corev1.ObjectReference // the targetRef; nil if none
	// result of the call
	out      smokeOutcome
	observed *Observed
}

func (e *smokeEndpoint) podName() string {
	if e.pod == nil {
		return ""
	}
	return e.pod.Name
}

// SmokeTested is the smoke gate: when the target's workload (in.Workloads,
// set by WorkloadReady: any kind) or its Service has AnnotationSmokePath, it sends
// GET <path> to each ready, non-terminating endpoint of in.Service on the
// port the backendRef maps to (or smoke-port), at the pod's own address
// from the EndpointSlices, never the Service's, and judges each answer by
// smoke-expect and smoke-body.
//
// An endpoint is called only if its targetRef is a Pod of the Service's
// namespace whose status holds that address, not on the host network, and
// the address lies in the Smoker's private CIDRs: a hand-written
// EndpointSlice cannot point the guard at another address. At most the
// Smoker's MaxEndpoints are called, in pod name order; the rest count
// neither for nor against the target. The target passes when no more of
// the endpoints called fail than smoke-min-ready tolerates: with R
// required of T ready (all: T; a count; a percentage of T, rounded up),
// T−R may fail. A target with no ready endpoints is left to EndpointsReady.
func SmokeTested(ctx context.Context, in *Input) ([]Finding, error) {
	svc := in.Service
	find := func(sev Severity, obj string, reason Reason, msg, fix string) Finding {
		return Finding{Check: CheckSmoke, Severity: sev, Service: namespacedName(svc), Object: obj, Reason: reason, Message: msg, Fix: fix}
	}
	src, ok, conflict := smokeSettings(smokeSources(in))
	if conflict != "" {
		return []Finding{find(Deny, "service "+svc.Name, ReasonSmokeAnnotationConflict,
			fmt.Sprintf("%s set different cutover-guard.dev/smoke-* annotations", conflict),
			"set the same smoke annotations on every workload behind the service, or only on the service")}, nil
	}
	if !ok {
		return nil, nil
	}
	if in.Smoker == nil {
		return []Finding{find(Warn, src.name, ReasonSmokeNotChecked, "smoke test not run (the guard runs with --smoke-checks=false)", "")}, nil
	}
	spec, serr := parseSmoke(src)
	if serr != nil {
		return []Finding{find(Deny, src.name, ReasonSmokeAnnotationInvalid,
			fmt.Sprintf("%s of %s %s", serr.annotation, src.name, serr.problem), "set it to "+serr.accepted)}, nil
	}
	port := spec.portNumber
	if spec.portName != "" {
		if port = namedContainerPort(in, spec.portName); port == 0 {
			return []Finding{find(Deny, src.name, ReasonSmokeAnnotationInvalid,
				fmt.Sprintf("%s of %s names port %q, which no container of the target's workloads declares", AnnotationSmokePort, src.name, spec.portName),
				"name a containerPort of the pod template, or give the port's number")}, nil
		}
	}
	items, _, err := serviceSlices(ctx, in.Reader, svc)
	if err != nil {
		return nil, err
	}
	eps := smokeCandidates(items, in.Port.Name, port)
	if len(eps) == 0 {
		return nil, nil // EndpointsReady denies
	}
	total := len(eps)
	called := eps[:min(total, in.Smoker.maxEndpoints)]
	notCalled := total - len(called)

	eg, egCtx := errgroup.WithContext(ctx)
	eg.SetLimit(smokePerTarget)
	for i := range called {
		e := &called[i]
		eg.Go(func() error {
			ok, why, err := verifyPod(egCtx, in.Reader, svc.Namespace, e)
			if err != nil {
				return err
			}
			if !ok {
				e.out = smokeOutcome{reason: ReasonSmokeAddressNotAllowed, what: "not called: " + why}
				return nil
			}
			if !in.Smoker.allowed(e.addr.Addr()) {
				e.out = smokeOutcome{reason: ReasonSmokeAddressNotAllowed, what: "not called: the address is outside --private-cidrs"}
				return nil
			}
			e.out = in.Smoker.call(egCtx, svc.Namespace, e.addr, &spec)
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err() // the Guard reports the check as timed out
	}

	var failed []*smokeEndpoint
	for i := range called {
		if called[i].observed != nil {
			in.smokeObserved = append(in.smokeObserved, *called[i].observed)
		}
		if called[i].out.reason != "" {
			failed = append(failed, &called[i])
		}
	}
	required := spec.required(total)
	tolerated := total - required
	passed := len(called) - len(failed)
	log := logf.FromContext(ctx)
	log.V(1).Info("smoke test", "check", string(CheckSmoke), "service", namespacedName(svc).String(), "path", spec.path,
		"called", len(called), "passed", passed, "notCalled", notCalled, "required", required)
	for _, e := range failed {
		log.Info("smoke test failed", "check", string(CheckSmoke), "service", namespacedName(svc).String(), "pod", e.podName(),
			"address", e.addr.String(), "reason", string(e.out.reason), "detail", e.out.what)
	}
	var out []Finding
	count := func() string {
		s := fmt.Sprintf("%d of %d endpoints called passed", passed, len(called))
		if notCalled > 0 {
			s += fmt.Sprintf(", %d more not probed", notCalled)
		}
		return s + fmt.Sprintf("; smoke-min-ready %s needs %d of %d ready", spec.minReadyText(), required, total)
	}
	switch {
	case tolerated < 0 && len(failed) == 0:
		out = append(out, find(Deny, src.name, ReasonSmokeMinReady,
			fmt.Sprintf("smoke test: service %s has %d ready endpoints, fewer than %s %s of %s asks for", svc.Name, total, AnnotationSmokeMinReady, spec.minReadyText(), src.name),
			fmt.Sprintf("scale up, or lower %s", AnnotationSmokeMinReady)))
	case len(failed) > tolerated:
		for i, e := range failed {
			if i == maxSmokeFailuresShown {
				out = append(out, find(Deny, "service "+svc.Name, e.out.reason,
					fmt.Sprintf("and %d more endpoints failed the smoke test GET %s", len(failed)-i, spec.path),
					logsFix(svc)))
				break
			}
			msg := fmt.Sprintf("smoke test GET %s on %s failed: %s", spec.path, endpointName(e), e.out.what)
			if !spec.minAll || notCalled > 0 {
				msg += " (" + count() + ")"
			}
			out = append(out, find(Deny, objectName(e, svc), e.out.reason, msg, smokeFix(e, svc)))
		}
	case len(failed) > 0:
		// A warning is cut at 120 characters: the count here, each
		// failure in the log.
		e := failed[0]
		out = append(out, find(Warn, objectName(e, svc), e.out.reason,
			fmt.Sprintf("smoke test GET %s: %d of %d endpoints passed, enough for smoke-min-ready %s", spec.path, passed, len(called), spec.minReadyText()),
			smokeFix(e, svc)))
	}
	if notCalled > 0 && len(failed) <= tolerated && tolerated >= 0 {
		out = append(out, find(Warn, "service "+svc.Name, ReasonSmokeNotAllProbed,
			fmt.Sprintf("smoke test called %d of %d ready endpoints; %d more not probed", len(called), total, notCalled), ""))
	}
	return out, nil
}

// smokeCandidates returns the ready, non-terminating endpoints of the
// slices that carry the Service port portName, one per address, sorted by
// pod name then address. port, if not zero, replaces the slice's port.
func smokeCandidates(items []discoveryv1.EndpointSlice, portName string, port int32) []smokeEndpoint {
	seen := map[netip.Addr]bool{}
	var out []smokeEndpoint
	for _, s := range items {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN endpoints are not resolved
		}
		p := port
		if p == 0 {
			p = slicePortNumber(s.Ports, portName)
		}
		if p <= 0 || p > 65535 {
			continue
		}
		for _, e := range s.Endpoints {
			if !endpointReady(e.Conditions) || len(e.Addresses) == 0 {
				continue
			}
			ip, err := netip.ParseAddr(e.Addresses[0])
			if err != nil || seen[ip] {
				continue
			}
			seen[ip] = true
			out = append(out, smokeEndpoint{addr: netip.AddrPortFrom(ip, uint16(p)), pod: e.TargetRef})
		}
	}
	slices.SortFunc(out, func(a, b smokeEndpoint) int {
		if c := strings.Compare(a.podName(), b.podName()); c != 0 {
			return c
		}
		return a.addr.Compare(b.addr)
	})
	return out
}

// slicePortNumber is the number of the slice's port with this name; 0 if
// the slice has none.
func slicePortNumber(ports []discoveryv1.EndpointPort, name string) int32 {
	for _, p := range ports {
		n := ""
		if p.Name != nil {
			n = *p.Name
		}
		if n == name && p.Port != nil {
			return *p.Port
		}
	}
	return 0
}

// namedContainerPort resolves a container port name in the pod templates
// of in's workloads; 0 if none declares it.
func namedContainerPort(in *Input, name string) int32 {
	for _, w := range in.workloads() {
		if w.Template == nil {
			continue // a Rollout that refers to another's template
		}
		for _, c := range w.Template.Spec.Containers {
			for _, p := range c.Ports {
				if p.Name == name && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
					return p.ContainerPort
				}
			}
		}
	}
	return 0
}

// verifyPod reads the endpoint's pod (a quorum GET) and reports whether the
// endpoint may be called: its targetRef is a Pod of namespace ns that holds
// the address and is not on the host network. why says why not.
func verifyPod(ctx context.Context, r client.Reader, ns string, e *smokeEndpoint) (ok bool, why string, err error) {
	ref := e.pod
	if ref == nil || ref.Kind != "Pod" || (ref.Namespace != "" && ref.Namespace != ns) || ref.Name == "" {
		return false, "the endpoint is not a pod of namespace " + ns, nil
	}
	var pod corev1.Pod
	if err := r.Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.Name}, &pod); err != nil {
		if apierrors.IsNotFound(err) {
			return false, "the pod no longer exists", nil
		}
		return false, "", fmt.Errorf("reading pod %s/%s of an endpoint: %w", ns, ref.Name, err)
	}
	o := observedObject("Pod", &pod)
	e.observed = &o
	if pod.Spec.HostNetwork {
		return false, "the pod uses the host network", nil
	}
	for _, ip := range pod.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil && a == e.addr.Addr() {
			return true, "", nil
		}
	}
	return false, "the address is not the pod's", nil
}

// endpointName renders the endpoint as "pod app-green-1 (10.0.0.5:8080)".
func endpointName(e *smokeEndpoint) string {
	if n := e.podName(); n != "" {
		return fmt.Sprintf("pod %s (%s)", n, e.addr)
	}
	return "endpoint " + e.addr.String()
}

func objectName(e *smokeEndpoint, svc *corev1.Service) string {
	if n := e.podName(); n != "" {
		return "pod " + n
	}
	return "service " + svc.Name
}

func smokeFix(e *smokeEndpoint, svc *corev1.Service) string {
	if e.out.reason == ReasonSmokeAddressNotAllowed {
		return fmt.Sprintf("point the EndpointSlices of service %s at its own pods, or add their range to --private-cidrs", svc.Name)
	}
	if n := e.podName(); n != "" {
		return fmt.Sprintf("kubectl logs %s -n %s", n, svc.Namespace)
	}
	return logsFix(svc)
}

// logsFix is the fix for failures not all named: the logs of the
// Service's pods.
func logsFix(svc *corev1.Service) string {
	if len(svc.Spec.Selector) == 0 {
		return fmt.Sprintf("read the logs of the pods behind service %s: kubectl logs <pod> -n %s", svc.Name, svc.Namespace)
	}
	return fmt.Sprintf("kubectl logs -n %s -l %s", svc.Namespace, labels.SelectorFromSet(svc.Spec.Selector))
}
