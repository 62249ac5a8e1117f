package webhook

import (
	"maps"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cutover-guard/cutover-guard/checks"
)

// KindService is the kind a selector switch is decided for.
const KindService = "Service"

// PathService is where selector switches of core/v1 Services are validated.
const PathService = "/validate-service"

// ServiceTargets is the target of a Service update that changes
// spec.selector: the Service itself, as the update writes it, whose newly
// selected pods are checked like a route's new backend. Any other update
// (labels, annotations, ports, a create) has none. An ExternalName Service
// uses no selector; Reference warns about it.
func ServiceTargets(old, updated *corev1.Service) TargetSet {
	if old == nil || updated == nil || maps.Equal(old.Spec.Selector, updated.Spec.Selector) {
		return TargetSet{}
	}
	nn := types.NamespacedName{Namespace: updated.Namespace, Name: updated.Name}
	return TargetSet{Checked: []checks.Target{{Route: nn, RouteKind: KindService, Service: nn, Proposed: updated.DeepCopy()}}}
}
