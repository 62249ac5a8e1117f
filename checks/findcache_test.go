package checks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// listRecorder is the informer side of a FindCache under test: it answers
// a LIST with nothing (or err) and counts it. It stands in for
// controller-runtime's cache, whose reading is not what these tests test:
// they test which reads FindCache sends where.
type listRecorder struct {
	crcache.Cache
	mu    sync.Mutex
	lists int
	err   error
}

func (r *listRecorder) List(_ context.Context, _ client.ObjectList, _ ...client.ListOption) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lists++
	return r.err
}

func (r *listRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lists
}

// syncedInformer reports HasSynced as told.
type syncedInformer struct {
	crcache.Informer
	synced bool
}

func (i *syncedInformer) HasSynced() bool { return i.synced }

// findCacheUnderTest returns a FindCache over a fake API server (whose
// reads it counts) and a listRecorder, with every informer synced, and a
// clock the test moves.
func findCacheUnderTest(t *testing.T) (f *FindCache, informer *listRecorder, apiReads func() int, clock *time.Time) {
	t.Helper()
	var mu sync.Mutex
	reads := 0
	count := func() {
		mu.Lock()
		reads++
		mu.Unlock()
	}
	api := fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(greenService()).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			count()
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			count()
			return c.List(ctx, list, opts...)
		},
	}).Build()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	clock = &now
	informer = &listRecorder{}
	f = &FindCache{api: api, cache: informer, found: map[schema.GroupVersionKind]foundInformer{},
		untrusted: DefaultUntrustedAfterWatchError, now: func() time.Time { return *clock }}
	for list, resource := range foundKinds {
		f.found[list] = foundInformer{resource: resource, informer: &syncedInformer{synced: true}}
	}
	return f, informer, func() int { mu.Lock(); defer mu.Unlock(); return reads }, clock
}

// TestFindCacheAnswersFindsAndNothingElse: the three finding LISTs the
// checks make (metadata, by namespace and labels, from the watch cache) are
// answered by the informers; every GET, and every LIST that is not such a
// find, reaches the API server.
func TestFindCacheAnswersFindsAndNothingElse(t *testing.T) {
	f, informer, apiReads, _ := findCacheUnderTest(t)
	ctx := t.Context()
	selector := map[string]string{"app": "myapp"}
	var sources []string
	f.observe = func(resource, source string) { sources = append(sources, resource+"/"+source) }

	finds := []struct {
		name string
		list client.ObjectList
		opts []client.ListOption
	}{
		{"ReplicaSets by selector", selectedMetadataList(replicaSetListGVK), selectedListOptions("shop", selector)},
		{"pods by selector", selectedMetadataList(podListGVK), selectedListOptions("shop", selector)},
		{"a Service's EndpointSlices", sliceMetadataList(), serviceSliceListOptions("shop", "app-green")},
	}
	for _, tc := range finds {
		before := informer.count()
		if err := f.List(ctx, tc.list, tc.opts...); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if informer.count() != before+1 || apiReads() != 0 {
			t.Errorf("%s: informer LISTs %d -> %d, API reads %d; want the informer to answer it", tc.name, before, informer.count(), apiReads())
		}
	}
	if want := []string{"replicasets/informer", "pods/informer", "endpointslices/informer"}; !cmp.Equal(sources, want) {
		t.Errorf("observed %v, want %v", sources, want)
	}

	notFinds := []struct {
		name string
		list client.ObjectList
		opts []client.ListOption
	}{
		{"a consistent LIST (no resourceVersion)", selectedMetadataList(podListGVK), []client.ListOption{client.InNamespace("shop"), client.MatchingLabels(selector)}},
		{"a LIST with a limit", selectedMetadataList(podListGVK), append(selectedListOptions("shop", selector), client.Limit(10))},
		{"a LIST of every namespace", selectedMetadataList(podListGVK), []client.ListOption{client.MatchingLabels(selector), fromCache()}},
		{"whole pods (a selector switch judges them)", &corev1.PodList{}, []client.ListOption{client.InNamespace("shop"), client.MatchingLabels(selector), client.Limit(maxSelectedPods)}},
		{"ReferenceGrants", &gwv1beta1.ReferenceGrantList{}, []client.ListOption{client.InNamespace("shop"), fromCache()}},
		{"metadata of a kind the cache does not hold", selectedMetadataList(appsv1.SchemeGroupVersion.WithKind("DeploymentList")), selectedListOptions("shop", selector)},
	}
	for _, tc := range notFinds {
		before, api := informer.count(), apiReads()
		if err := f.List(ctx, tc.list, tc.opts...); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if informer.count() != before || apiReads() != api+1 {
			t.Errorf("%s: informer LISTs %d -> %d, API reads %d -> %d; want it sent to the API server", tc.name, before, informer.count(), api, apiReads())
		}
	}
	api := apiReads()
	var svc corev1.Service
	if err := f.Get(ctx, client.ObjectKeyFromObject(greenService()), &svc); err != nil || svc.Name != greenService().Name {
		t.Fatalf("get: %v %q", err, svc.Name)
	}
	if apiReads() != api+1 {
		t.Error("a GET was not sent to the API server")
	}
}

// TestFindCacheTrustsInformersOnlyWhileTheyKeepUp: a kind whose informer
// has not synced, and every kind for a minute after a watch error, is found
// by the API server; a watch that ended normally (EOF) changes nothing; an
// informer that fails to answer falls back to the API server.
func TestFindCacheTrustsInformersOnlyWhileTheyKeepUp(t *testing.T) {
	f, informer, apiReads, clock := findCacheUnderTest(t)
	ctx := t.Context()
	find := func() (informerAnswered bool) {
		t.Helper()
		before := informer.count()
		api := apiReads()
		if err := f.List(ctx, selectedMetadataList(podListGVK), selectedListOptions("shop", map[string]string{"app": "myapp"})...); err != nil {
			t.Fatal(err)
		}
		switch {
		case apiReads() == api+1:
			return false
		case informer.count() > before && apiReads() == api:
			return true
		}
		t.Fatalf("a find reached neither or both: informer %d -> %d, API %d -> %d", before, informer.count(), api, apiReads())
		return false
	}
	if !find() || !f.Trusted() {
		t.Fatal("a synced informer did not answer")
	}

	pods := f.found[podListGVK].informer.(*syncedInformer)
	pods.synced = false
	if find() || f.Trusted() {
		t.Error("an informer that has not synced answered")
	}
	pods.synced = true

	reflector := &toolscache.Reflector{}
	f.watchError(ctx, reflector, io.EOF)
	if !find() {
		t.Error("a watch that ended normally (EOF) made finds go to the API server")
	}
	f.watchError(ctx, reflector, fmt.Errorf("watching pods: %w", io.ErrUnexpectedEOF))
	if find() || f.Trusted() {
		t.Error("a find was answered by the informers just after a watch error")
	}
	*clock = clock.Add(DefaultUntrustedAfterWatchError - time.Second)
	if find() {
		t.Error("a find was answered by the informers within a minute of a watch error")
	}
	f.watchError(ctx, reflector, errors.New(`pods is forbidden: User "system:serviceaccount:cutover-guard:cutover-guard" cannot watch resource "pods"`))
	*clock = clock.Add(2 * time.Second)
	if find() {
		t.Error("a second watch error did not extend the distrust")
	}
	*clock = clock.Add(DefaultUntrustedAfterWatchError)
	if !find() || !f.Trusted() {
		t.Error("finds did not return to the informers a minute after the last watch error")
	}

	informer.err = errors.New("informer broke")
	if find() {
		t.Error("a failed informer LIST was not retried on the API server")
	}
}

// TestTrimFoundKeepsWhatFindsUse: a found object keeps its name,
// namespace, uid, resourceVersion, labels and controller reference, and
// loses annotations (up to 256 KiB each, a tenant's choice), managed
// fields, finalizers and other owner references; trimming twice is
// trimming once; other objects pass untouched.
func TestTrimFoundKeepsWhatFindsUse(t *testing.T) {
	in := &metav1.PartialObjectMetadata{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "app-green-5d8f9-abcde", Namespace: "shop", UID: "u1", ResourceVersion: "42", Generation: 3,
			Labels:        map[string]string{"app": "myapp", "version": "green"},
			Annotations:   map[string]string{"huge": string(make([]byte, 1<<16))},
			Finalizers:    []string{"example.com/x"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
			OwnerReferences: []metav1.OwnerReference{
				{APIVersion: "example.com/v1", Kind: "Thing", Name: "other", UID: "u2"},
				{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "app-green-5d8f9", UID: "u3", Controller: ptr.To(true)},
			},
		},
	}
	want := &metav1.PartialObjectMetadata{
		TypeMeta: in.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: in.Name, Namespace: in.Namespace, UID: in.UID, ResourceVersion: in.ResourceVersion, Labels: in.Labels,
			OwnerReferences: []metav1.OwnerReference{in.OwnerReferences[1]},
		},
	}
	out, err := trimFound(in)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("trimmed (-want +got):\n%s", diff)
	}
	again, err := trimFound(out)
	if err != nil || !cmp.Equal(again, out) {
		t.Errorf("trimming twice changed the object: %v\n%s", err, cmp.Diff(out, again))
	}
	orphan := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "bare", OwnerReferences: in.OwnerReferences[:1]}}
	if out, _ := trimFound(orphan); len(out.(*metav1.PartialObjectMetadata).OwnerReferences) != 0 {
		t.Error("a pod without a controller kept an owner reference")
	}
	tomb := toolscache.DeletedFinalStateUnknown{Key: "shop/x", Obj: in}
	if out, _ := trimFound(tomb); !cmp.Equal(out, tomb) {
		t.Error("a tombstone was changed")
	}
}

// BenchmarkFindCacheMemory reports what the find cache holds per pod: the
// metadata of a pod of the tutorial's Deployments (labels, a controller
// reference, an annotation and managed fields as the API server sends
// them) trimmed and stored in an informer's indexer.
func BenchmarkFindCacheMemory(b *testing.B) {
	const pods = 20000
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		store := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{toolscache.NamespaceIndex: toolscache.MetaNamespaceIndexFunc})
		for i := range pods {
			p := &metav1.PartialObjectMetadata{
				TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
				ObjectMeta: metav1.ObjectMeta{
					Name: fmt.Sprintf("app-green-5d8f9c7b4-%05d", i), Namespace: fmt.Sprintf("team-%03d", i%200),
					UID: "7c3e1f2a-0b4d-4e5f-8a9b-0c1d2e3f4a5b", ResourceVersion: "123456789",
					Labels:      map[string]string{"app": "myapp", "version": "green", "pod-template-hash": "5d8f9c7b4"},
					Annotations: map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-12-03T12:00:00Z"},
					ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: "Update", APIVersion: "v1",
						FieldsType: "FieldsV1", FieldsV1: metav1.NewFieldsV1(strings.Repeat("x", 600))}},
					OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "app-green-5d8f9c7b4",
						UID: "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
				},
			}
			obj, err := trimFound(p)
			if err != nil {
				b.Fatal(err)
			}
			if err := store.Add(obj); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/pods, "bytes/pod")
		runtime.KeepAlive(store)
	}
}
