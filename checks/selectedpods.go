package checks

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Reasons found by SelectedPodsReady.
const (
	ReasonSelectorMatchesNoPods Reason = "SelectorMatchesNoPods"
	ReasonSelectorRemoved       Reason = "SelectorRemoved"
)

// maxSelectedPods bounds the pods SelectedPodsReady reads for one
// selector switch: one page of a label-selected LIST. A selector that
// selects more is judged on that page, which is enough to find a ready pod
// on each port (and a page of unready pods is a denial, never a false
// allow).
const maxSelectedPods = 500

// SelectedPodsReady judges the endpoints a Service will have once an
// update switches its selector (in.Target.Proposed): the EndpointSlices
// still hold the old selector's pods, so it reads the pods the new selector
// selects (one label-selected LIST, consistent, at most maxSelectedPods) and
// requires, on every port of the Service, at least one pod that the
// EndpointSlice controller would publish as a ready endpoint: Ready, not
// terminating, with an IP, and serving the port's targetPort (a named
// targetPort must be one of its container ports, with the port's protocol,
// as the controller resolves it; a number is served as is, as the controller
// does).
//
// A switch to no selector at all leaves the endpoints to be managed by hand:
// a warning, not checked.
func SelectedPodsReady(ctx context.Context, in *Input) ([]Finding, error) {
	svc := in.Service
	if len(svc.Spec.Selector) == 0 {
		return []Finding{{Check: CheckEndpoints, Severity: Warn, Service: namespacedName(svc), Object: "service " + svc.Name, Reason: ReasonSelectorRemoved,
			Message: fmt.Sprintf("service %s no longer has a selector: its endpoints are managed by hand and not checked", svc.Name)}}, nil
	}
	selector := labels.SelectorFromSet(svc.Spec.Selector)
	var pods corev1.PodList
	if err := in.Reader.List(ctx, &pods, client.InNamespace(svc.Namespace), client.MatchingLabels(svc.Spec.Selector), client.Limit(maxSelectedPods)); err != nil {
		return nil, fmt.Errorf("listing the pods that the new selector of service %s/%s selects: %w", svc.Namespace, svc.Name, err)
	}
	deny := func(reason Reason, msg string) Finding {
		return Finding{Check: CheckEndpoints, Severity: Deny, Service: namespacedName(svc), Object: "service " + svc.Name, Reason: reason, Message: msg,
			Fix: fmt.Sprintf("check its pods: kubectl get pods -n %s -l %s", svc.Namespace, selector)}
	}
	if len(pods.Items) == 0 {
		return []Finding{deny(ReasonSelectorMatchesNoPods,
			fmt.Sprintf("the new selector %s of service %s selects no pods", selector, svc.Name))}, nil
	}
	ready := make([]*corev1.Pod, 0, len(pods.Items))
	for i := range pods.Items {
		if p := &pods.Items[i]; p.DeletionTimestamp == nil && p.Status.PodIP != "" && podIsReady(p) {
			ready = append(ready, p)
		}
	}
	ports := svc.Spec.Ports
	if len(ports) == 0 {
		ports = []corev1.ServicePort{{}} // headless without ports: any ready pod serves
	}
	var out []Finding
	for _, sp := range ports {
		serving := 0
		for _, p := range ready {
			if podServes(p, sp) {
				serving++
			}
		}
		if serving > 0 {
			continue
		}
		msg := fmt.Sprintf("service %s would have no ready endpoints on port %s after the switch (0 of %d selected pods ready)", svc.Name, portName(sp), len(pods.Items))
		if len(ready) > 0 {
			msg = fmt.Sprintf("service %s would have no ready endpoints on port %s after the switch: %d selected pods are ready, none has container port %s",
				svc.Name, portName(sp), len(ready), sp.TargetPort.String())
		}
		out = append(out, deny(ReasonNoReadyEndpoints, msg))
	}
	return out, nil
}

// podServes reports whether the EndpointSlice controller would publish p on
// Service port sp: a named targetPort resolves to one of p's container
// ports of that name and protocol; a number (or none: the port itself) is
// published as is.
func podServes(p *corev1.Pod, sp corev1.ServicePort) bool {
	if sp.TargetPort.Type != intstr.String {
		return true
	}
	proto := sp.Protocol
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			cproto := cp.Protocol
			if cproto == "" {
				cproto = corev1.ProtocolTCP
			}
			if cp.Name == sp.TargetPort.StrVal && cproto == proto {
				return true
			}
		}
	}
	return false
}

// portName renders a Service port for messages: "80" or "80 (http)".
func portName(sp corev1.ServicePort) string {
	s := strconv.Itoa(int(sp.Port))
	if sp.Name != "" {
		s += " (" + sp.Name + ")"
	}
	return s
}
