package checks

import (
	"context"
	"fmt"
	"sort"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	items, listed, err := serviceSlices(ctx, r, svc)
	if err != nil {
		return nil, err
	}
	fix := fmt.Sprintf("check its pods: kubectl get pods -n %s -l %s", svc.Namespace, labels.SelectorFromSet(svc.Spec.Selector))
	if len(svc.Spec.Selector) == 0 {
		fix = fmt.Sprintf("service %s has no selector: create EndpointSlices for it", svc.Name)
	}
	unread := ""
	if listed > len(items) {
		unread = fmt.Sprintf(", in the %d of its %d EndpointSlices read", len(items), listed)
	}

	total, ready := 0, 0
	for _, s := range items {
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
	case len(items) == 0 || total == 0:
		return deny(ReasonNoEndpointSlices,
			fmt.Sprintf("service %s has no endpoints on port %d: its selector matches no running pods%s", svc.Name, port.Port, unread), fix), nil
	default:
		return deny(ReasonNoReadyEndpoints,
			fmt.Sprintf("service %s has no ready endpoints on port %d (0 of %d ready%s)", svc.Name, port.Port, total, unread), fix), nil
	}
}

// MaxEndpointSlicesRead bounds the EndpointSlices one check reads by GET:
// the endpoint slice controller puts up to 100 endpoints in a slice, so
// this is thousands of endpoints, and a tenant's selectorless Service with
// a flood of hand-made slices costs the guard no more than that.
const MaxEndpointSlicesRead = 64

// serviceSlices finds svc's EndpointSlices in the API server's watch cache
// (a label-selected LIST of their metadata, resourceVersion "0") and reads
// each by a quorum GET, MaxEndpointSlicesRead at most, in name order. It
// returns the slices read and how many the cache listed. See reads.go for
// why a cache behind etcd can only lower the count of ready endpoints.
func serviceSlices(ctx context.Context, r client.Reader, svc *corev1.Service) ([]discoveryv1.EndpointSlice, int, error) {
	list := sliceMetadataList()
	if err := r.List(ctx, list, serviceSliceListOptions(svc.Namespace, svc.Name)...); err != nil {
		return nil, 0, fmt.Errorf("listing endpointslices of service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	names := make([]string, 0, len(list.Items))
	for i := range list.Items {
		names = append(names, list.Items[i].Name)
	}
	sort.Strings(names)
	if len(names) > MaxEndpointSlicesRead {
		names = names[:MaxEndpointSlicesRead]
	}
	read := make([]*discoveryv1.EndpointSlice, len(names))
	eg, egCtx := errgroup.WithContext(ctx)
	eg.SetLimit(8)
	for i, name := range names {
		eg.Go(func() error {
			var s discoveryv1.EndpointSlice
			err := r.Get(egCtx, client.ObjectKey{Namespace: svc.Namespace, Name: name}, &s)
			switch {
			case apierrors.IsNotFound(err):
				return nil // deleted since the cache listed it
			case err != nil:
				return fmt.Errorf("reading endpointslice %s/%s of service %s: %w", svc.Namespace, name, svc.Name, err)
			}
			read[i] = &s
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, 0, err
	}
	out := make([]discoveryv1.EndpointSlice, 0, len(read))
	for _, s := range read {
		// A slice re-labelled for another Service since the cache listed
		// it is not this Service's.
		if s != nil && s.Labels[discoveryv1.LabelServiceName] == svc.Name {
			out = append(out, *s)
		}
	}
	return out, len(list.Items), nil
}

// endpointSliceListGVK is the list kind serviceSlices lists.
var endpointSliceListGVK = discoveryv1.SchemeGroupVersion.WithKind("EndpointSliceList")

// sliceMetadataList is what serviceSlices lists EndpointSlices into: their
// metadata only.
func sliceMetadataList() *metav1.PartialObjectMetadataList {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(endpointSliceListGVK)
	return list
}

// serviceSliceListOptions select Service ns/name's EndpointSlices from the
// watch cache: what serviceSlices lists, and what Guard reads ahead.
func serviceSliceListOptions(ns, name string) []client.ListOption {
	return []client.ListOption{client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: name}, fromCache()}
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
