package flux

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// GreenNode is the node label green's pods need in Git: until it is on a
// node, green is 0/2 Ready, held Pending, as a release that cannot start
// yet is.
var GreenNode = map[string]string{"cutover-guard.dev/gitops": "green"}

// Release is what one commit of the tutorial's app holds.
type Release struct {
	GreenReplicas int32
	// Backends are the route's backendRefs, in order.
	Backends []Backend
	// Override is the cutover-guard.dev/override annotation on the route.
	Override string
	// ExtraParent, when set, is a second Gateway (in the same namespace)
	// the route attaches to: a re-parenting.
	ExtraParent string
}

// Backend is one backendRef: a Service and its weight, written only when
// the route has more than one (one backend is written as the tutorial
// writes it, with no weight).
type Backend struct {
	Name   string
	Weight int32
}

// Files renders r as a repository tree: the tutorial's objects in
// namespace (blue as it ships, green needing GreenNode, the route's
// parentRefs in namespace) and a kustomization.yaml naming them.
func (r Release) Files(namespace string) (map[string][]byte, error) {
	m, err := tutorial.Load()
	if err != nil {
		return nil, err
	}
	blue := m.Deployment(tutorial.Blue, tutorial.Replicas, false)
	green := m.Deployment(tutorial.Green, r.GreenReplicas, false)
	green.Spec.Template.Spec.NodeSelector = GreenNode
	route := m.Route.DeepCopy()
	for i := range route.Spec.ParentRefs {
		route.Spec.ParentRefs[i].Namespace = ptr.To(gwv1.Namespace(namespace))
	}
	if r.ExtraParent != "" {
		route.Spec.ParentRefs = append(route.Spec.ParentRefs, gwv1.ParentReference{
			Name: gwv1.ObjectName(r.ExtraParent), Namespace: ptr.To(gwv1.Namespace(namespace))})
	}
	template := m.Route.Spec.Rules[0].BackendRefs[0]
	route.Spec.Rules[0].BackendRefs = nil
	for _, b := range r.Backends {
		ref := template.DeepCopy()
		ref.Name = gwv1.ObjectName(b.Name)
		if len(r.Backends) > 1 {
			ref.Weight = ptr.To(b.Weight)
		}
		route.Spec.Rules[0].BackendRefs = append(route.Spec.Rules[0].BackendRefs, *ref)
	}
	if r.Override != "" {
		route.Annotations = map[string]string{"cutover-guard.dev/override": r.Override}
	}
	objs := map[string]client.Object{
		"app-blue.yaml": blue, "app-green.yaml": green,
		"service-blue.yaml": m.BlueService, "service-green.yaml": m.GreenService,
		"gateway.yaml": m.Gateway, "httproute.yaml": route,
	}
	files := map[string][]byte{}
	for name, o := range objs {
		o.SetNamespace(namespace)
		raw, err := yaml.Marshal(o)
		if err != nil {
			return nil, err
		}
		files[name] = raw
	}
	kust, err := yaml.Marshal(map[string]any{
		"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
		"resources": slices.Sorted(maps.Keys(objs)),
	})
	if err != nil {
		return nil, err
	}
	files["kustomization.yaml"] = kust
	return files, nil
}

// Prepare makes what Git does not hold: appNamespace with the tutorial's
// database Secret (connection string dsn), fluxNamespace, and there the
// ServiceAccount serviceAccount that kustomize-controller impersonates,
// bound to cluster-admin as Flux's own install binds kustomize-controller.
func Prepare(ctx context.Context, c client.Client, appNamespace, fluxNamespace, serviceAccount, dsn string) error {
	for _, ns := range []string{appNamespace, fluxNamespace} {
		if err := tutorial.EnsureNamespace(ctx, c, ns); err != nil {
			return err
		}
	}
	if err := tutorial.SetSecret(ctx, c, appNamespace, dsn); err != nil {
		return err
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: fluxNamespace, Name: serviceAccount}}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: fluxNamespace + "-" + serviceAccount},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: fluxNamespace, Name: serviceAccount}},
	}
	for _, o := range []client.Object{sa, crb} {
		if err := tutorial.CreateOrReplace(ctx, c, o); err != nil {
			return err
		}
	}
	return nil
}

// WaitKustomization polls Kustomization namespace/name until done says so,
// for at most timeout, and returns its last status.
func WaitKustomization(ctx context.Context, c client.Reader, namespace, name string, timeout time.Duration, done func(Status) bool) (Status, error) {
	var last Status
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		last, lastErr = ReadStatus(ctx, c, KustomizationGVK, namespace, name)
		return lastErr == nil && done(last), nil
	})
	if err != nil {
		src, _ := ReadStatus(ctx, c, GitRepositoryGVK, namespace, name)
		return last, fmt.Errorf("%w\nKustomization %s/%s: %s (%v)\nGitRepository %s/%s: %s", err, namespace, name, last, lastErr, namespace, name, src)
	}
	return last, nil
}

// LabelNode puts labels on node name.
func LabelNode(ctx context.Context, c client.Client, name string, labels map[string]string) error {
	var node corev1.Node
	if err := c.Get(ctx, client.ObjectKey{Name: name}, &node); err != nil {
		return err
	}
	patch := client.MergeFrom(node.DeepCopy())
	if node.Labels == nil {
		node.Labels = map[string]string{}
	}
	maps.Copy(node.Labels, labels)
	return c.Patch(ctx, &node, patch)
}
