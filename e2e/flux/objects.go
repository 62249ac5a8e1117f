package flux

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The Flux kinds the tests use, read and written as unstructured objects
// so that the guard's module does not depend on Flux's.
var (
	GitRepositoryGVK = schema.GroupVersionKind{Group: "source.toolkit.fluxcd.io", Version: "v1", Kind: "GitRepository"}
	KustomizationGVK = schema.GroupVersionKind{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "Kustomization"}
)

// GitRepository polls url's Branch every interval.
func GitRepository(namespace, name, url string, interval time.Duration) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"namespace": namespace, "name": name},
		"spec": map[string]any{
			"interval": interval.String(),
			"url":      url,
			"ref":      map[string]any{"branch": Branch},
			"timeout":  "20s",
		},
	}}
	u.SetGroupVersionKind(GitRepositoryGVK)
	return u
}

// KustomizationOptions are the Kustomization's spec fields the tests set.
type KustomizationOptions struct {
	// Interval and RetryInterval: how often it reconciles, and retries
	// after a failure.
	Interval, RetryInterval time.Duration
	// ServiceAccountName, when set, is impersonated for every apply.
	ServiceAccountName string
}

// Kustomization applies the root of GitRepository source, pruning what
// leaves Git.
func Kustomization(namespace, name, source string, o KustomizationOptions) *unstructured.Unstructured {
	spec := map[string]any{
		"interval":      o.Interval.String(),
		"retryInterval": o.RetryInterval.String(),
		"path":          "./",
		"prune":         true,
		"timeout":       "30s",
		"sourceRef":     map[string]any{"kind": GitRepositoryGVK.Kind, "name": source},
	}
	if o.ServiceAccountName != "" {
		spec["serviceAccountName"] = o.ServiceAccountName
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"namespace": namespace, "name": name},
		"spec":     spec,
	}}
	u.SetGroupVersionKind(KustomizationGVK)
	return u
}

// Status is what a Flux object reports: its Ready condition and, for a
// Kustomization, the revisions it last applied and last attempted.
type Status struct {
	Ready         metav1.ConditionStatus
	Reason        string
	Message       string
	LastApplied   string
	LastAttempted string
	// Artifact is a GitRepository's artifact revision.
	Artifact string
}

func (s Status) String() string {
	return fmt.Sprintf("Ready=%s reason=%s applied=%q attempted=%q artifact=%q message=%q",
		s.Ready, s.Reason, s.LastApplied, s.LastAttempted, s.Artifact, s.Message)
}

// ReadStatus reads the status of the Flux object gvk namespace/name.
func ReadStatus(ctx context.Context, c client.Reader, gvk schema.GroupVersionKind, namespace, name string) (Status, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, u); err != nil {
		return Status{}, err
	}
	var s Status
	s.LastApplied, _, _ = unstructured.NestedString(u.Object, "status", "lastAppliedRevision")
	s.LastAttempted, _, _ = unstructured.NestedString(u.Object, "status", "lastAttemptedRevision")
	s.Artifact, _, _ = unstructured.NestedString(u.Object, "status", "artifact", "revision")
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	s.Ready = metav1.ConditionUnknown
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok || m["type"] != "Ready" {
			continue
		}
		st, _ := m["status"].(string)
		s.Ready = metav1.ConditionStatus(st)
		s.Reason, _ = m["reason"].(string)
		s.Message, _ = m["message"].(string)
	}
	return s, nil
}
