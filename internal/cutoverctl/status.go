package cutoverctl

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Status is what `status` shows of a route and its backends.
type Status struct {
	Route      string          `json:"route"`
	Namespace  string          `json:"namespace"`
	Generation int64           `json:"generation"`
	Guard      GuardInstall    `json:"guard"`
	Rules      []RuleStatus    `json:"rules"`
	ParentRefs []string        `json:"parentRefs"`
	Parents    []ParentStatus  `json:"parents"`
	Backends   []BackendStatus `json:"backends"`
	LastSwitch *Switch         `json:"lastSwitch,omitempty"`
}

// RuleStatus is where one rule sends its traffic.
type RuleStatus struct {
	Rule     int            `json:"rule"`
	Backends []BackendShare `json:"backends"`
}

// BackendShare is one backendRef's weight and share of its rule's traffic.
type BackendShare struct {
	Name   string `json:"name"`
	Weight int32  `json:"weight"`
	Share  int    `json:"sharePercent"`
}

// ParentStatus is what a Gateway's controller reported on the route.
type ParentStatus struct {
	Gateway    string      `json:"gateway"`
	Controller string      `json:"controller,omitempty"`
	Conditions []Condition `json:"conditions"`
}

// Condition is one of a parent's conditions; Current is false when it was
// observed for an older generation of the route.
type Condition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	Reason             string `json:"reason,omitempty"`
	Message            string `json:"message,omitempty"`
	ObservedGeneration int64  `json:"observedGeneration"`
	Current            bool   `json:"current"`
}

// BackendStatus is one color: a Service the route sends traffic to, sent it
// to before, or that looks like its sibling (same selector keys, one value
// different, e.g. version: blue and version: green).
type BackendStatus struct {
	Service        string     `json:"service"`
	Live           bool       `json:"live"`
	SharePercent   int        `json:"sharePercent"`
	Found          bool       `json:"found"`
	Workloads      []Workload `json:"workloads"`
	ReadyEndpoints int        `json:"readyEndpoints"`
	// ScaledDown: an idle color whose workloads have zero replicas; a
	// switch back to it is no instant rollback.
	ScaledDown   bool   `json:"scaledDown"`
	ScaleCommand string `json:"scaleCommand,omitempty"`
	// Verdict is the guard's answer, right now, to a dry run of a switch to
	// this color; none for a live color (the guard checks a backend when
	// traffic moves to it).
	Verdict *Verdict `json:"verdict,omitempty"`
}

// Workload is a Deployment whose pods a color's Service selects.
type Workload struct {
	Kind               string   `json:"kind"`
	Name               string   `json:"name"`
	Generation         int64    `json:"generation"`
	ObservedGeneration int64    `json:"observedGeneration"`
	Replicas           int32    `json:"replicas"`
	ReadyReplicas      int32    `json:"readyReplicas"`
	UpdatedReplicas    int32    `json:"updatedReplicas"`
	AvailableReplicas  int32    `json:"availableReplicas"`
	Images             []string `json:"images"`
}

// maxColors bounds the Services status examines (each costs a few reads and
// a dry run).
const maxColors = 8

func (e *env) status(ctx context.Context, name string) (*Status, error) {
	route, err := e.getRoute(ctx, name)
	if err != nil {
		return nil, err
	}
	s := &Status{Route: route.Name, Namespace: route.Namespace, Generation: route.Generation, Guard: findGuard(ctx, e.c)}
	rules := rulesOf(route)
	for _, r := range rules {
		rs := RuleStatus{Rule: r.Rule, Backends: []BackendShare{}}
		for i, b := range r.Backends {
			rs.Backends = append(rs.Backends, BackendShare{Name: b.label(), Weight: b.weight(), Share: share(r, i)})
		}
		s.Rules = append(s.Rules, rs)
	}
	s.ParentRefs, s.Parents = parentRefs(route), parentsOf(route)
	if h := recordedHistory(route); len(h) > 0 {
		s.LastSwitch = &h[len(h)-1]
	}

	colors, shares := colorsOf(rules)
	var prev []RuleBackends
	if raw, ok := route.Annotations[AnnotationPreviousBackends]; ok && json.Unmarshal([]byte(raw), &prev) == nil {
		for _, name := range serviceNames(prev) {
			colors = appendNew(colors, name)
		}
	}
	services := map[string]*corev1.Service{}
	for _, c := range colors {
		var svc corev1.Service
		if err := e.c.Get(ctx, client.ObjectKey{Namespace: route.Namespace, Name: c}, &svc); err == nil {
			services[c] = &svc
		} else if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("get service %s/%s: %w", route.Namespace, c, err)
		}
	}
	siblings, err := e.siblings(ctx, route.Namespace, colors, services)
	if err != nil {
		return nil, err
	}
	for _, svc := range siblings {
		colors = appendNew(colors, svc.Name)
		services[svc.Name] = svc
	}
	if len(colors) > maxColors {
		colors = colors[:maxColors]
	}

	var liveReplicas int32
	for _, c := range colors {
		b := BackendStatus{Service: c, SharePercent: shares[c], Live: shares[c] > 0, Workloads: []Workload{}}
		if svc := services[c]; svc != nil {
			b.Found = true
			if b.Workloads, err = e.workloads(ctx, svc); err != nil {
				return nil, err
			}
			if b.ReadyEndpoints, err = e.readyEndpoints(ctx, svc); err != nil {
				return nil, err
			}
		}
		if b.Live && liveReplicas == 0 && len(b.Workloads) > 0 {
			liveReplicas = b.Workloads[0].Replicas
		}
		s.Backends = append(s.Backends, b)
	}
	for i := range s.Backends {
		b := &s.Backends[i]
		if b.Live {
			continue
		}
		b.ScaledDown, b.ScaleCommand = scaledDown(route.Namespace, b.Workloads, liveReplicas)
		if b.Verdict, err = e.verdictFor(ctx, route, b.Service, s.Guard); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// verdictFor dry-runs a switch of route to svc.
func (e *env) verdictFor(ctx context.Context, route *gwv1.HTTPRoute, svc string, g GuardInstall) (*Verdict, error) {
	if g.State == GuardMissing {
		return &Verdict{Undecided: "no guard installed"}, nil
	}
	p, err := planSwitch(route, svc, -1)
	if err != nil {
		return &Verdict{Undecided: err.Error()}, nil
	}
	if !p.changed() {
		return nil, nil
	}
	patch, err := buildPatch(route, p, newSwitch(p, ActionSwitch, "", "", time.Now()))
	if err != nil {
		return nil, err
	}
	_, v, err := e.decide(ctx, route, patch)
	if err == errStale {
		return &Verdict{Undecided: err.Error()}, nil
	}
	return &v, err
}

// colorsOf returns the Services the rules name (same namespace, core
// Service kind) and each one's largest share of a rule's traffic.
func colorsOf(rules []RuleBackends) ([]string, map[string]int) {
	var names []string
	shares := map[string]int{}
	for _, r := range rules {
		for i, b := range r.Backends {
			if !b.isService() || b.Namespace != "" {
				continue
			}
			names = appendNew(names, b.Name)
			shares[b.Name] = max(shares[b.Name], share(r, i))
		}
	}
	return names, shares
}

func serviceNames(rules []RuleBackends) []string {
	var out []string
	for _, r := range rules {
		for _, b := range r.Backends {
			if b.isService() && b.Namespace == "" {
				out = appendNew(out, b.Name)
			}
		}
	}
	return out
}

func appendNew(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// siblings are the Services of namespace ns, not among known, whose
// selector has the same keys as a known Service's and differs in exactly
// one value: the other colors of a blue-green pair.
func (e *env) siblings(ctx context.Context, ns string, known []string, services map[string]*corev1.Service) ([]*corev1.Service, error) {
	var list corev1.ServiceList
	if err := e.c.List(ctx, &list, client.InNamespace(ns), client.Limit(500)); err != nil {
		return nil, fmt.Errorf("list services in %s: %w", ns, err)
	}
	var out []*corev1.Service
	for i := range list.Items {
		cand := &list.Items[i]
		if slices.Contains(known, cand.Name) {
			continue
		}
		for _, k := range known {
			if svc := services[k]; svc != nil && sibling(svc.Spec.Selector, cand.Spec.Selector) {
				out = append(out, cand)
				break
			}
		}
	}
	return out, nil
}

func sibling(a, b map[string]string) bool {
	if len(a) == 0 || len(a) != len(b) {
		return false
	}
	diff := 0
	for k, v := range a {
		w, ok := b[k]
		if !ok {
			return false
		}
		if v != w {
			diff++
		}
	}
	return diff == 1
}

// workloads are the Deployments whose pod template the Service selects.
func (e *env) workloads(ctx context.Context, svc *corev1.Service) ([]Workload, error) {
	out := []Workload{}
	if len(svc.Spec.Selector) == 0 {
		return out, nil
	}
	var list appsv1.DeploymentList
	if err := e.c.List(ctx, &list, client.InNamespace(svc.Namespace), client.Limit(500)); err != nil {
		return nil, fmt.Errorf("list deployments in %s: %w", svc.Namespace, err)
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	for _, d := range list.Items {
		if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			continue
		}
		w := Workload{
			Kind: "Deployment", Name: d.Name, Generation: d.Generation, ObservedGeneration: d.Status.ObservedGeneration,
			Replicas: 1, ReadyReplicas: d.Status.ReadyReplicas, UpdatedReplicas: d.Status.UpdatedReplicas, AvailableReplicas: d.Status.AvailableReplicas,
			Images: []string{},
		}
		if d.Spec.Replicas != nil {
			w.Replicas = *d.Spec.Replicas
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			w.Images = append(w.Images, c.Image)
		}
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b Workload) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// readyEndpoints counts the Service's ready, not terminating endpoints.
func (e *env) readyEndpoints(ctx context.Context, svc *corev1.Service) (int, error) {
	var list discoveryv1.EndpointSliceList
	if err := e.c.List(ctx, &list, client.InNamespace(svc.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name}); err != nil {
		return 0, fmt.Errorf("list endpointslices of service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	seen := map[string]bool{}
	for _, sl := range list.Items {
		for _, ep := range sl.Endpoints {
			c := ep.Conditions
			if (c.Ready != nil && !*c.Ready) || (c.Terminating != nil && *c.Terminating) || len(ep.Addresses) == 0 {
				continue
			}
			seen[ep.Addresses[0]] = true
		}
	}
	return len(seen), nil
}

// scaledDown reports an idle color whose every workload has zero replicas,
// and the command that scales it back (to the live color's replicas).
func scaledDown(ns string, ws []Workload, liveReplicas int32) (bool, string) {
	if len(ws) == 0 {
		return false, ""
	}
	for _, w := range ws {
		if w.Replicas > 0 {
			return false, ""
		}
	}
	if liveReplicas < 1 {
		liveReplicas = 1
	}
	return true, fmt.Sprintf("kubectl scale deployment %s -n %s --replicas=%d", ws[0].Name, ns, liveReplicas)
}

func parentsOf(route *gwv1.HTTPRoute) []ParentStatus {
	out := []ParentStatus{}
	for _, p := range route.Status.Parents {
		ns := route.Namespace
		if p.ParentRef.Namespace != nil {
			ns = string(*p.ParentRef.Namespace)
		}
		ps := ParentStatus{Gateway: ns + "/" + string(p.ParentRef.Name), Controller: string(p.ControllerName), Conditions: []Condition{}}
		for _, c := range p.Conditions {
			ps.Conditions = append(ps.Conditions, Condition{
				Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: oneLine(c.Message, 200),
				ObservedGeneration: c.ObservedGeneration, Current: c.ObservedGeneration >= route.Generation,
			})
		}
		out = append(out, ps)
	}
	return out
}

// parentRefs names the route's parents, for "no status yet".
func parentRefs(route *gwv1.HTTPRoute) []string {
	var out []string
	for _, p := range route.Spec.ParentRefs {
		ns := route.Namespace
		if p.Namespace != nil {
			ns = string(*p.Namespace)
		}
		out = append(out, ns+"/"+string(p.Name))
	}
	return out
}
