package checks

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"sync"

	"golang.org/x/sync/semaphore"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/lru"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Reading ahead: the checks of one target form a chain (the Service, then
// what its selector selects, then the Secrets in the workloads' pod
// templates), and each link is a round trip to the API server. Some reads
// further down the chain can be guessed from the target's name alone, so
// Guard starts them while the Service is still being read:
//
//   - the Deployment named like the Service (SelectWorkloads reads it
//     whatever the selector says), and, as soon as it is read, the Secrets
//     and ConfigMaps that its containers' connection-string env entries
//     name (DatabaseReachable reads them if the Deployment is selected);
//     those it named when a decision last read it are read beside the
//     Deployment itself, so the decision's longest chain (Deployment, then
//     Secret) is one round trip, not two, while the env stays as it was;
//   - the LIST of the Service's EndpointSlices (by the service-name label,
//     from the watch cache) and, as soon as it answers, the GET of each
//     slice it names (EndpointsReady reads them);
//   - the LISTs of the ReplicaSets and pods that the Service's selector
//     selects (SelectWorkloads makes them once the Service is read), with
//     the selector the Service had when a decision last read it: a
//     selector rarely changes, and back-to-back switches between blue and
//     green read the same two Services again and again. The selector is
//     only the key of a LIST from the watch cache, never a fact a verdict
//     rests on: the check asks with the selector of the Service it has just
//     read, and a LIST read ahead with another selector answers nothing.
//
// A check that then asks for the same object, or for the same LIST with the
// same options, gets the answer of the read already made (waiting for it
// if it is still on its way); every other read goes to the API server as
// before. A guess that turns out wrong (the Service has no selector, the
// named Deployment is not selected, the Service does not exist) costs a
// read whose answer is dropped when the decision ends; it never changes
// what a check sees.
//
// Freshness is what reads.go argues, unchanged: a read ahead is the same
// read the check would make (a quorum GET, or a LIST from the watch cache
// only where the check LISTs from it), started after the request arrived
// and only earlier than the check would have started it. The object it
// returns is therefore no older than the request, and at most as old as the
// decision.
//
// Bounds: the remembered selectors are at most maxRememberedSelectors,
// least recently used first out, each at most maxRememberedSelectorBytes
// (a larger one is not remembered), and as many Services' remembered
// Secrets, at most maxReadAheadSources names each; reads ahead run only on the slots of MaxConcurrentTargets that
// the update's targets leave free (a route with as many targets as slots
// reads nothing ahead, so they never delay a target's own checks nor raise
// the reads in flight past the bound), at most maxReadAheadSources Secrets
// and ConfigMaps and maxReadAheadSlices EndpointSlices per target, and each
// ends with the decision: its context is cancelled when the target's
// checks return.

// maxReadAheadSources bounds the Secrets and ConfigMaps read ahead for one
// target: a pod template can name many, and one is the common case.
const maxReadAheadSources = 4

// maxReadAheadSlices bounds the EndpointSlices read ahead for one target
// (a Service with up to 100 endpoints per slice rarely has more than one).
const maxReadAheadSlices = 4

// maxRememberedSelectors and maxRememberedSelectorBytes bound the Service
// selectors Guard remembers for reading ahead: about 2 MiB at most.
const (
	maxRememberedSelectors     = 4096
	maxRememberedSelectorBytes = 512
)

// remembered holds, per Service, a V a decision read for it (the Service's
// selector, the Secrets its Deployment's env named): a key for the next
// decision's reads ahead, never a fact a verdict rests on. At most
// maxRememberedSelectors Services, least recently used first out.
type remembered[V any] struct {
	cache *lru.Cache
}

func newRemembered[V any]() *remembered[V] {
	return &remembered[V]{cache: lru.New(maxRememberedSelectors)}
}

func (r *remembered[V]) put(key types.NamespacedName, v V) { r.cache.Add(key, v) }

func (r *remembered[V]) forget(key types.NamespacedName) { r.cache.Remove(key) }

// get is the V remembered for Service key; it is shared and must not be
// changed.
func (r *remembered[V]) get(key types.NamespacedName) (V, bool) {
	v, ok := r.cache.Get(key)
	if !ok {
		var zero V
		return zero, false
	}
	return v.(V), true
}

// rememberedSelectors holds, per Service, the selector it had when a
// decision last read it.
type rememberedSelectors struct {
	*remembered[map[string]string]
}

func newRememberedSelectors() *rememberedSelectors {
	return &rememberedSelectors{newRemembered[map[string]string]()}
}

// remember keeps svc's selector, or forgets it when it has none or one
// larger than maxRememberedSelectorBytes.
func (r *rememberedSelectors) remember(svc *corev1.Service) {
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	size := 0
	for k, v := range svc.Spec.Selector {
		size += len(k) + len(v)
	}
	if len(svc.Spec.Selector) == 0 || size > maxRememberedSelectorBytes {
		r.forget(key)
		return
	}
	r.put(key, maps.Clone(svc.Spec.Selector))
}

// selector is the selector remembered for Service key; the map is shared
// and must not be changed.
func (r *rememberedSelectors) selector(key types.NamespacedName) (map[string]string, bool) {
	return r.get(key)
}

// rememberedSources holds, per Service, the Secrets and ConfigMaps (at most
// maxReadAheadSources) that the connection-string env of the Deployment
// named like it named when a decision last read that Deployment. The next
// decision reads them beside the Deployment rather than after it: one round
// trip fewer on the decision's longest chain (Deployment, then Secret).
type rememberedSources struct {
	*remembered[[]objectKey]
}

func newRememberedSources() *rememberedSources {
	return &rememberedSources{newRemembered[[]objectKey]()}
}

// remember keeps srcs for Service key, or forgets what was kept when there
// are none. Names are at most 253 bytes, so a Service costs at most about
// 1 KiB.
func (r *rememberedSources) remember(key types.NamespacedName, srcs []objectKey) {
	if len(srcs) == 0 {
		r.forget(key)
		return
	}
	r.put(key, slices.Clone(srcs[:min(len(srcs), maxReadAheadSources)]))
}

// readAhead is the Reader of one target's checks: a client.Reader that
// answers the reads started ahead from their results and passes every
// other read on.
type readAhead struct {
	client.Reader
	ctx    context.Context
	cancel context.CancelFunc
	// slots are the reads ahead this target may have in flight.
	slots   *semaphore.Weighted
	mu      sync.Mutex
	reads   map[string]*aheadRead
	stopped bool
}

// aheadRead is one read started ahead: done is closed when obj (a
// client.Object or client.ObjectList) and err are set.
type aheadRead struct {
	done chan struct{}
	obj  runtime.Object
	err  error
}

// newReadAhead reads through r for one target, ahead only on slots. stop
// ends every read it started.
func newReadAhead(ctx context.Context, r client.Reader, slots *semaphore.Weighted) *readAhead {
	ctx, cancel := context.WithCancel(ctx)
	return &readAhead{Reader: r, ctx: ctx, cancel: cancel, slots: slots, reads: map[string]*aheadRead{}}
}

// stop cancels every read ahead still in flight; their answers are dropped.
// A read ahead still in flight then ends as its HTTP request does when its
// context is cancelled; none starts after stop.
func (ra *readAhead) stop() {
	ra.mu.Lock()
	defer ra.mu.Unlock()
	ra.stopped = true
	ra.cancel()
}

func getKey(key client.ObjectKey, obj client.Object) string {
	return fmt.Sprintf("get %T %s %s", obj, obj.GetObjectKind().GroupVersionKind(), key)
}

func listKey(list client.ObjectList, opts []client.ListOption) string {
	var o client.ListOptions
	o.ApplyOptions(opts)
	labels, fields, rv := "", "", ""
	if o.LabelSelector != nil {
		labels = o.LabelSelector.String()
	}
	if o.FieldSelector != nil {
		fields = o.FieldSelector.String()
	}
	if o.Raw != nil {
		rv = o.Raw.ResourceVersion + "/" + string(o.Raw.ResourceVersionMatch)
	}
	return fmt.Sprintf("list %T %s ns=%q labels=%q fields=%q rv=%q limit=%d continue=%q",
		list, list.GetObjectKind().GroupVersionKind(), o.Namespace, labels, fields, rv, o.Limit, o.Continue)
}

// Get answers from a read ahead of the same object, if there is one.
func (ra *readAhead) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if len(opts) == 0 {
		if found, err := ra.answer(ctx, getKey(key, obj), obj); found {
			return err
		}
	}
	return ra.Reader.Get(ctx, key, obj, opts...)
}

// List answers from a read ahead of the same LIST, if there is one.
func (ra *readAhead) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if found, err := ra.answer(ctx, listKey(list, opts), list); found {
		return err
	}
	return ra.Reader.List(ctx, list, opts...)
}

// answer copies the result of the read ahead under key into into, waiting
// for it no longer than ctx allows; found is false when there is none.
func (ra *readAhead) answer(ctx context.Context, key string, into runtime.Object) (found bool, err error) {
	ra.mu.Lock()
	a := ra.reads[key]
	ra.mu.Unlock()
	if a == nil {
		return false, nil
	}
	select {
	case <-a.done:
	case <-ctx.Done():
		return true, ctx.Err()
	}
	if a.err != nil {
		return true, a.err
	}
	// The key holds the Go type, so the types match; each answer is a
	// copy, as a read of its own would be.
	reflect.ValueOf(into).Elem().Set(reflect.ValueOf(a.obj.DeepCopyObject()).Elem())
	return true, nil
}

// start reads key ahead with read, on a free slot, unless it is already
// being read; then runs with the object read, if the read succeeded.
func (ra *readAhead) start(key string, obj runtime.Object, read func(ctx context.Context) error, then func()) {
	if !ra.slots.TryAcquire(1) {
		return
	}
	ra.mu.Lock()
	if ra.stopped || ra.reads[key] != nil {
		ra.mu.Unlock()
		ra.slots.Release(1)
		return
	}
	a := &aheadRead{done: make(chan struct{}), obj: obj}
	ra.reads[key] = a
	ra.mu.Unlock()
	go func() {
		a.err = read(ra.ctx)
		ra.slots.Release(1)
		// The reads that follow from this answer are registered before
		// the answer is handed out: a check that gets it and asks for one
		// of them at once finds it read ahead, rather than reading it
		// beside the read ahead (then only registers and starts reads).
		if a.err == nil && then != nil && ra.ctx.Err() == nil {
			then()
		}
		close(a.done)
	}()
}

func (ra *readAhead) startGet(key client.ObjectKey, obj client.Object, then func()) {
	ra.start(getKey(key, obj), obj, func(ctx context.Context) error { return ra.Reader.Get(ctx, key, obj) }, then)
}

func (ra *readAhead) startList(list client.ObjectList, then func(), opts ...client.ListOption) {
	ra.start(listKey(list, opts), list, func(ctx context.Context) error { return ra.Reader.List(ctx, list, opts...) }, then)
}

// readAheadFor starts the reads the checks of target t can be expected to
// make that need only t's name (see the top of this file).
func (g *Guard) readAheadFor(ra *readAhead, t Target) {
	ns := t.Service.Namespace
	readSources := func(srcs []objectKey) {
		for _, src := range srcs {
			key := client.ObjectKey{Namespace: ns, Name: src.name}
			if src.kind == "secret" {
				ra.startGet(key, &corev1.Secret{}, nil)
			} else {
				ra.startGet(key, &corev1.ConfigMap{}, nil)
			}
		}
	}
	if g.Prober != nil {
		// The Secrets the named Deployment's env named last time, beside
		// the Deployment itself; what it names now is read once it is read
		// (a source already on its way is not read twice).
		if srcs, ok := g.sources.get(t.Service); ok {
			readSources(srcs)
		}
	}
	named := &appsv1.Deployment{}
	ra.start(getKey(t.Service, named), named, func(ctx context.Context) error {
		err := ra.Reader.Get(ctx, t.Service, named)
		if apierrors.IsNotFound(err) {
			g.sources.forget(t.Service) // nothing to read beside it next time
		}
		return err
	}, func() {
		if g.Prober == nil {
			return
		}
		w := deploymentWorkload(named)
		srcs := connectionStringSources(w, lookedUpNames([]Workload{w}, databaseEnvNames(g.DatabaseEnv)), maxReadAheadSources)
		g.sources.remember(t.Service, srcs)
		readSources(srcs)
	})
	if selector, ok := g.selectors.selector(t.Service); ok {
		opts := selectedListOptions(ns, selector)
		ra.startList(selectedMetadataList(replicaSetListGVK), nil, opts...)
		ra.startList(selectedMetadataList(podListGVK), nil, opts...)
	}
	sliceList := sliceMetadataList()
	ra.startList(sliceList, func() {
		names := make([]string, 0, len(sliceList.Items))
		for i := range sliceList.Items {
			names = append(names, sliceList.Items[i].Name)
		}
		sort.Strings(names) // serviceSlices reads them in this order
		for _, name := range names[:min(len(names), maxReadAheadSlices)] {
			ra.startGet(client.ObjectKey{Namespace: ns, Name: name}, &discoveryv1.EndpointSlice{}, nil)
		}
	}, serviceSliceListOptions(ns, t.Service.Name)...)
}

// connectionStringSources are the Secrets and ConfigMaps (at most limit, in
// order of appearance) that the env entries named names of w's containers
// take their value from by secretKeyRef or configMapKeyRef: what the
// database check reads first for w. It is a guess, not a rule: the check
// resolves each variable as the kubelet does, and reads what it needs.
func connectionStringSources(w Workload, names []string, limit int) []objectKey {
	if w.Template == nil {
		return nil
	}
	var out []objectKey
	spec := &w.Template.Spec
	for _, cs := range [][]corev1.Container{spec.Containers, spec.InitContainers} {
		for ci := range cs {
			for _, ev := range cs[ci].Env {
				if ev.ValueFrom == nil || !slices.Contains(names, ev.Name) {
					continue
				}
				var k objectKey
				switch {
				case ev.ValueFrom.SecretKeyRef != nil:
					k = objectKey{"secret", ev.ValueFrom.SecretKeyRef.Name}
				case ev.ValueFrom.ConfigMapKeyRef != nil:
					k = objectKey{"configmap", ev.ValueFrom.ConfigMapKeyRef.Name}
				default:
					continue
				}
				if !slices.Contains(out, k) {
					if len(out) == limit {
						return out
					}
					out = append(out, k)
				}
			}
		}
	}
	return out
}
