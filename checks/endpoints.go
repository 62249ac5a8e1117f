package checks

import (
	"context"
	"fmt"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Reasons found by EndpointsReady.
const (
	ReasonNoEndpointSlices Reason = "NoEndpointSlices"
	ReasonNoReadyEndpoints Reason = "NoReadyEndpoints"
)

// EndpointsReady checks that the EndpointSlices of in.Service hold at least
// one endpoint that is ready and not terminating on the port that in.Port
// (the backendRef's Service port) maps to.
func EndpointsReady(ctx context.Context, in *Input) ([]Finding, error) {
	r, svc, port := in.Reader, in.Service, in.Port
	deny := func(reason Reason, msg, fix string) []Finding {
		return []Finding{{Check: CheckEndpoints, Severity: Deny, Service: namespacedName(svc), Object: "service " + svc.Name, Reason: reason, Message: msg, Fix: fix}}
	}
	var slices discoveryv1.EndpointSliceList
	if err := r.List(ctx, &slices, client.InNamespace(svc.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name}); err != nil {
		return nil, fmt.Errorf("listing endpointslices of service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	fix := fmt.Sprintf("check its pods: kubectl get pods -n %s -l %s", svc.Namespace, labels.SelectorFromSet(svc.Spec.Selector))
	if len(svc.Spec.Selector) == 0 {
		fix = fmt.Sprintf("service %s has no selector: create EndpointSlices for it", svc.Name)
	}

	total, ready := 0, 0
	for _, s := range slices.Items {
		if !slicePort(s.Ports, port.Name) {
			continue
		}
		for _, e := range s.Endpoints {
			total++
			if endpointReady(e.Conditions) {
				ready++
			}
		}
	}
	switch {
	case ready > 0:
		return nil, nil
	case len(slices.Items) == 0 || total == 0:
		return deny(ReasonNoEndpointSlices,
			fmt.Sprintf("service %s has no endpoints on port %d: its selector matches no running pods", svc.Name, port.Port), fix), nil
	default:
		return deny(ReasonNoReadyEndpoints,
			fmt.Sprintf("service %s has no ready endpoints on port %d (0 of %d ready)", svc.Name, port.Port, total), fix), nil
	}
}

// slicePort reports whether a slice carries the Service port with this name
// (unnamed Service ports appear with an empty or nil name).
func slicePort(ports []discoveryv1.EndpointPort, name string) bool {
	for _, p := range ports {
		n := ""
		if p.Name != nil {
			n = *p.Name
		}
		if n == name {
			return true
		}
	}
	return false
}

// endpointReady follows the EndpointSlice API: a nil Ready means ready, a nil
// Terminating means not terminating.
func endpointReady(c discoveryv1.EndpointConditions) bool {
	if c.Ready != nil && !*c.Ready {
		return false
	}
	return c.Terminating == nil || !*c.Terminating
}

func namespacedName(obj client.Object) types.NamespacedName {
	return types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()}
}
