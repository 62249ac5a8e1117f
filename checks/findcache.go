package checks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// FindCache answers the checks' finding LISTs (reads.go: the ReplicaSets
// and pods a Service's selector matches, a Service's EndpointSlices, all
// metadata only, all from the watch cache) from the guard's own metadata
// informers instead of one LIST request each per decision; every other read
// (each GET by name that judges, and any other LIST) goes to the API server
// as before.
//
// Why this changes no verdict: an informer is a copy of the API server's
// watch cache, fed by a watch from it, so it is the same cache one hop
// (milliseconds) further behind etcd. reads.go argues what a cache behind
// etcd can do to a decision (an object it still lists is skipped when the
// GET says NotFound, changed content is read by the GET, a missed slice
// only lowers the ready count, a missed ReplicaSet or pod is milliseconds
// old and cannot be Ready yet); the argument needs the lag to stay small,
// so the informers are trusted only while they keep up:
//
//   - until a kind's informer has listed once (HasSynced), its finds go to
//     the API server;
//   - after any watch error (the connection dropped, the watch was refused
//     or expired, RBAC without watch), every find goes to the API server
//     for UntrustedAfterWatchError, longer than the reflector's longest
//     backoff, so an informer that cannot watch is never trusted again
//     while it retries;
//   - a LIST with any other option than a namespace, a label selector and
//     resourceVersion "0" (a consistent LIST, a field selector, a limit)
//     is not a find and goes to the API server.
//
// What the informers cost: one watch per kind for the whole cluster, and
// the metadata of every ReplicaSet, pod and EndpointSlice, trimmed by
// trimFound to the name, namespace, uid, labels and controller reference
// (no annotations, no managed fields): about 0.9 KB of live heap per pod,
// measured by BenchmarkFindCacheMemory, and about 3 KiB of the guard's RSS
// per pod, ReplicaSet and EndpointSlice in the cluster (the bench's scale
// part: +28 MiB at 10,000 pods). That grows with the cluster, whoever
// makes the pods, which is why it is opt-in (--find-from=informers) and
// the API server's watch cache is the default. The reads per decision no
// longer grow with anything: a find filters the namespace's objects in
// memory.
type FindCache struct {
	api       client.Reader
	cache     crcache.Cache
	found     map[schema.GroupVersionKind]foundInformer // by list kind
	observe   func(resource, source string)
	untrusted time.Duration
	now       func() time.Time
	// distrustedUntil is the UnixNano before which no find is answered
	// from the informers.
	distrustedUntil atomic.Int64
}

// DefaultUntrustedAfterWatchError is how long FindCache sends every find to
// the API server after a watch error: longer than client-go's reflector
// backoff (at most 30s), so an informer failing again and again is never
// trusted in between.
const DefaultUntrustedAfterWatchError = time.Minute

// Find sources, the values FindCacheOptions.Observe receives.
const (
	FoundInInformer  = "informer"
	FoundInAPIServer = "apiserver"
)

// FindCacheOptions configure NewFindCache.
type FindCacheOptions struct {
	// Observe, if set, is called once per find with the resource
	// ("replicasets", "pods", "endpointslices") and where it was answered
	// (FoundInInformer or FoundInAPIServer).
	Observe func(resource, source string)
	// UntrustedAfterWatchError defaults to DefaultUntrustedAfterWatchError.
	UntrustedAfterWatchError time.Duration
	// HTTPClient is the cache's (nil: built from cfg).
	HTTPClient *http.Client
}

// foundKinds are the list kinds the checks find by a metadata LIST, and
// their resources (for Observe).
var foundKinds = map[schema.GroupVersionKind]string{
	replicaSetListGVK:    "replicasets",
	podListGVK:           "pods",
	endpointSliceListGVK: "endpointslices",
}

// foundInformer is the informer of one found kind.
type foundInformer struct {
	resource string
	informer crcache.Informer
}

// NewFindCache builds the informers (not started: Start runs them) and a
// reader that answers finds from them and everything else from api, which
// must read live state (the API server, never a cache).
func NewFindCache(cfg *rest.Config, api client.Reader, opts FindCacheOptions) (*FindCache, error) {
	f := &FindCache{
		api:       api,
		found:     map[schema.GroupVersionKind]foundInformer{},
		observe:   opts.Observe,
		untrusted: opts.UntrustedAfterWatchError,
		now:       time.Now,
	}
	if f.untrusted <= 0 {
		f.untrusted = DefaultUntrustedAfterWatchError
	}
	c, err := crcache.New(cfg, crcache.Options{
		HTTPClient:                  opts.HTTPClient,
		DefaultTransform:            trimFound,
		DefaultWatchErrorHandler:    f.watchError,
		ReaderFailOnMissingInformer: true,
	})
	if err != nil {
		return nil, fmt.Errorf("creating the find cache: %w", err)
	}
	f.cache = c
	for list, resource := range foundKinds {
		obj := &metav1.PartialObjectMetadata{}
		obj.SetGroupVersionKind(list.GroupVersion().WithKind(strings.TrimSuffix(list.Kind, "List")))
		inf, err := c.GetInformer(context.Background(), obj, crcache.BlockUntilSynced(false))
		if err != nil {
			return nil, fmt.Errorf("creating the %s informer of the find cache: %w", resource, err)
		}
		f.found[list] = foundInformer{resource: resource, informer: inf}
	}
	return f, nil
}

// Start runs the informers until ctx ends (a manager.Runnable).
func (f *FindCache) Start(ctx context.Context) error {
	log.FromContext(ctx).Info("find cache starting: ReplicaSets, pods and EndpointSlices are found in the guard's metadata informers once they have synced, and judged by a GET")
	return f.cache.Start(ctx)
}

// NeedLeaderElection is false: every replica decides.
func (f *FindCache) NeedLeaderElection() bool { return false }

// Get reads from the API server.
func (f *FindCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	return f.api.Get(ctx, key, obj, opts...)
}

// List answers a find from the informers when they are trusted, and every
// other LIST from the API server.
func (f *FindCache) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	found, find := f.foundFor(list, opts)
	if !find {
		return f.api.List(ctx, list, opts...)
	}
	if !f.distrusted() && found.informer.HasSynced() {
		if err := f.cache.List(ctx, list, opts...); err == nil {
			f.count(found.resource, FoundInInformer)
			return nil
		}
	}
	f.count(found.resource, FoundInAPIServer)
	return f.api.List(ctx, list, opts...)
}

// foundFor says whether a LIST is a find (a metadata LIST of a found kind,
// from the watch cache, by namespace and labels only) and returns its
// kind's informer.
func (f *FindCache) foundFor(list client.ObjectList, opts []client.ListOption) (foundInformer, bool) {
	if _, ok := list.(*metav1.PartialObjectMetadataList); !ok {
		return foundInformer{}, false
	}
	found, ok := f.found[list.GetObjectKind().GroupVersionKind()]
	if !ok {
		return foundInformer{}, false
	}
	o := client.ListOptions{}
	o.ApplyOptions(opts)
	if o.Raw == nil || o.Raw.ResourceVersion != "0" || o.Raw.ResourceVersionMatch != "" ||
		o.FieldSelector != nil || o.Raw.FieldSelector != "" || o.Limit != 0 || o.Continue != "" || o.Namespace == "" {
		return foundInformer{}, false
	}
	return found, true
}

// Trusted says whether every informer has synced and no watch error made
// finds go to the API server.
func (f *FindCache) Trusted() bool {
	if f.distrusted() {
		return false
	}
	for _, found := range f.found {
		if !found.informer.HasSynced() {
			return false
		}
	}
	return true
}

// distrusted says whether a recent watch error sends every find to the API
// server.
func (f *FindCache) distrusted() bool { return f.now().UnixNano() < f.distrustedUntil.Load() }

// watchError distrusts every informer for f.untrusted and logs the error as
// client-go would. A watch that ended normally (io.EOF: the API server's
// timeout) is resumed from where it stopped and changes nothing.
func (f *FindCache) watchError(ctx context.Context, r *toolscache.Reflector, err error) {
	toolscache.DefaultWatchErrorHandler(ctx, r, err)
	if errors.Is(err, io.EOF) {
		return
	}
	f.distrust()
}

// distrust sends every find to the API server for f.untrusted from now.
func (f *FindCache) distrust() {
	until := f.now().Add(f.untrusted).UnixNano()
	for {
		cur := f.distrustedUntil.Load()
		if cur >= until || f.distrustedUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

func (f *FindCache) count(resource, source string) {
	if f.observe != nil {
		f.observe(resource, source)
	}
}

// trimFound keeps of a found object only what a find uses: its name,
// namespace, uid and resourceVersion, its labels (the selector matches
// them; an EndpointSlice's service-name label) and its controller reference
// (the checks follow nothing else). It is idempotent, as client-go asks of
// a transform, and leaves any other object as it is.
func trimFound(in any) (any, error) {
	obj, ok := in.(*metav1.PartialObjectMetadata)
	if !ok {
		return in, nil
	}
	out := &metav1.PartialObjectMetadata{TypeMeta: obj.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: obj.Name, Namespace: obj.Namespace, UID: obj.UID, ResourceVersion: obj.ResourceVersion, Labels: obj.Labels,
	}}
	if ref := metav1.GetControllerOfNoCopy(obj); ref != nil {
		out.OwnerReferences = []metav1.OwnerReference{*ref}
	}
	return out, nil
}

var _ client.Reader = (*FindCache)(nil)
