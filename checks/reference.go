package checks

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// Reasons found by Reference.
const (
	ReasonServiceNotFound        Reason = "ServiceNotFound"
	ReasonPortNotFound           Reason = "PortNotFound"
	ReasonReferenceNotPermitted  Reason = "ReferenceNotPermitted"
	ReasonExternalNameNotChecked Reason = "ExternalNameNotChecked"
)

// Reference checks that the target Service exists, that the backendRef port
// is one of its ports, and that a cross-namespace reference is allowed by a
// ReferenceGrant in the Service's namespace. When the reference is usable it
// sets in.Service and in.Port, so later checks can build on them; an
// ExternalName Service gets a warning that its readiness is not checked.
// An error means the API server could not be read, not that the reference is bad.
func Reference(ctx context.Context, in *Input) ([]Finding, error) {
	r, t := in.Reader, in.Target
	deny := func(reason Reason, object, msg, fix string) []Finding {
		return []Finding{{Check: CheckReference, Severity: Deny, Service: t.Service, Object: object, Reason: reason, Message: msg, Fix: fix}}
	}

	if t.Proposed != nil {
		// A selector switch: the Service exists (this is its update) and
		// its ports are not a backendRef's to check.
		in.Service = t.Proposed.DeepCopy()
		if len(in.Service.Spec.Ports) > 0 {
			in.Port = in.Service.Spec.Ports[0]
		}
		if in.Service.Spec.Type == corev1.ServiceTypeExternalName {
			return []Finding{{Check: CheckReference, Severity: Warn, Service: t.Service, Object: "service " + t.Service.Name, Reason: ReasonExternalNameNotChecked,
				Message: fmt.Sprintf("service %s is of type ExternalName; its selector is not used, readiness not checked", t.Service.Name)}}, nil
		}
		return nil, nil
	}
	if t.Service.Namespace != t.Route.Namespace {
		ok, err := referenceGranted(ctx, r, t)
		if err != nil {
			return nil, err
		}
		if !ok {
			return deny(ReasonReferenceNotPermitted, "referencegrant",
				fmt.Sprintf("no referencegrant in namespace %s allows %s from namespace %s to reference service %s",
					t.Service.Namespace, t.RouteKind, t.Route.Namespace, t.Service.Name),
				fmt.Sprintf("create a ReferenceGrant in namespace %s with from {group: gateway.networking.k8s.io, kind: %s, namespace: %s} and to {kind: Service, name: %s}",
					t.Service.Namespace, t.RouteKind, t.Route.Namespace, t.Service.Name)), nil
		}
	}

	var svc corev1.Service
	if err := r.Get(ctx, t.Service, &svc); err != nil {
		if apierrors.IsNotFound(err) {
			return deny(ReasonServiceNotFound, "service "+t.Service.Name,
				fmt.Sprintf("service %s does not exist in namespace %s", t.Service.Name, t.Service.Namespace),
				fmt.Sprintf("create it before switching, or correct the backendRef name (kubectl get services -n %s)", t.Service.Namespace)), nil
		}
		return nil, fmt.Errorf("reading service %s: %w", t.Service, err)
	}

	ports := make([]string, 0, len(svc.Spec.Ports))
	for _, p := range svc.Spec.Ports {
		ports = append(ports, strconv.Itoa(int(p.Port)))
	}
	if t.Port == nil {
		if len(svc.Spec.Ports) != 1 {
			return deny(ReasonPortNotFound, "service "+t.Service.Name,
				fmt.Sprintf("backendRef names no port and service %s has %d ports", t.Service.Name, len(svc.Spec.Ports)),
				"set the backendRef port to one of: "+strings.Join(ports, ", ")), nil
		}
	} else if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == *t.Port }) {
		return deny(ReasonPortNotFound, "service "+t.Service.Name,
			fmt.Sprintf("service %s has no port %d (ports: %s)", t.Service.Name, *t.Port, strings.Join(ports, ", ")),
			"set the backendRef port to one of: "+strings.Join(ports, ", ")), nil
	}
	in.Service = &svc
	in.Port, _ = ServicePort(&svc, t.Port)
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return []Finding{{Check: CheckReference, Severity: Warn, Service: t.Service, Object: "service " + svc.Name, Reason: ReasonExternalNameNotChecked,
			Message: fmt.Sprintf("service %s is of type ExternalName; readiness not checked", svc.Name)}}, nil
	}
	return nil, nil
}

// ServicePort returns the Service port the target's backendRef maps to.
// Reference has already checked that it exists.
func ServicePort(svc *corev1.Service, port *int32) (corev1.ServicePort, bool) {
	for _, p := range svc.Spec.Ports {
		if port == nil || p.Port == *port {
			return p, true
		}
	}
	return corev1.ServicePort{}, false
}

// referenceGranted reports whether a ReferenceGrant in the Service's
// namespace lets t's route refer to the Service. The grants are found in the
// API server's watch cache and each that grants it is confirmed by a quorum
// GET (see reads.go): a grant deleted since the cache saw it does not count,
// and one the cache has not seen yet can only cause a denial.
func referenceGranted(ctx context.Context, r client.Reader, t Target) (bool, error) {
	ns := t.Service.Namespace
	var grants gwv1.ReferenceGrantList
	beta := false
	err := r.List(ctx, &grants, client.InNamespace(ns), fromCache())
	if meta.IsNoMatchError(err) {
		// Gateway API releases before v1.5 serve ReferenceGrant as v1beta1 only.
		beta = true
		var old gwv1beta1.ReferenceGrantList
		if err = r.List(ctx, &old, client.InNamespace(ns), fromCache()); err == nil {
			for _, g := range old.Items {
				grants.Items = append(grants.Items, gwv1.ReferenceGrant{ObjectMeta: g.ObjectMeta, Spec: gwv1.ReferenceGrantSpec(g.Spec)})
			}
		}
	}
	if err != nil {
		return false, fmt.Errorf("listing referencegrants in namespace %s: %w", ns, err)
	}
	for _, g := range grants.Items {
		if !grantsRoute(g.Spec, t) {
			continue
		}
		current, err := getReferenceGrant(ctx, r, ns, g.Name, beta)
		if err != nil {
			return false, err
		}
		if current != nil && grantsRoute(*current, t) {
			return true, nil
		}
	}
	return false, nil
}

// grantsRoute reports whether a grant's spec lets t's route refer to its Service.
func grantsRoute(spec gwv1.ReferenceGrantSpec, t Target) bool {
	from := slices.ContainsFunc(spec.From, func(f gwv1.ReferenceGrantFrom) bool {
		return string(f.Group) == gwv1.GroupName && string(f.Kind) == t.RouteKind && string(f.Namespace) == t.Route.Namespace
	})
	to := slices.ContainsFunc(spec.To, func(to gwv1.ReferenceGrantTo) bool {
		return to.Group == "" && to.Kind == "Service" && (to.Name == nil || string(*to.Name) == t.Service.Name)
	})
	return from && to
}

// getReferenceGrant reads one grant by name (v1beta1 when beta); nil when
// it no longer exists.
func getReferenceGrant(ctx context.Context, r client.Reader, ns, name string, beta bool) (*gwv1.ReferenceGrantSpec, error) {
	key := client.ObjectKey{Namespace: ns, Name: name}
	var spec gwv1.ReferenceGrantSpec
	var err error
	if beta {
		var g gwv1beta1.ReferenceGrant
		if err = r.Get(ctx, key, &g); err == nil {
			spec = gwv1.ReferenceGrantSpec(g.Spec)
		}
	} else {
		var g gwv1.ReferenceGrant
		if err = r.Get(ctx, key, &g); err == nil {
			spec = g.Spec
		}
	}
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading referencegrant %s/%s: %w", ns, name, err)
	}
	return &spec, nil
}
