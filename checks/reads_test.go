package checks

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// staleCache is a reader whose LISTs with resourceVersion "0" are answered
// from cache (what the API server's watch cache held some milliseconds ago)
// and every other read from etcd (the current state). It counts the
// consistent LISTs, which the checks must not issue.
type staleCache struct {
	client.Reader
	mu         sync.Mutex
	consistent []string
}

func newStaleCache(t *testing.T, cache, etcd []client.Object) *staleCache {
	t.Helper()
	cached := fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(cache...).Build()
	s := &staleCache{}
	s.Reader = fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(etcd...).WithInterceptorFuncs(interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			var o client.ListOptions
			o.ApplyOptions(opts)
			if o.Raw != nil && o.Raw.ResourceVersion == "0" {
				return cached.List(ctx, list, opts...)
			}
			s.mu.Lock()
			s.consistent = append(s.consistent, list.GetObjectKind().GroupVersionKind().Kind)
			s.mu.Unlock()
			return c.List(ctx, list, opts...)
		},
	}).Build()
	return s
}

// A decision uses the cache to find objects and etcd to judge them: a cache
// that is behind etcd can make it deny, never allow, and it never waits for
// the cache with a consistent LIST.
func TestReadsJudgeByQuorumGetNotByTheCache(t *testing.T) {
	ready := readyDeployment("app-green", 2)
	rs := replicaSetOf(ready, "abc", 2)
	readySlice := slice("app-green", ptr.To(true), ptr.To(true))
	unreadySlice := slice("app-green", ptr.To(false), ptr.To(false))
	newSlice := slice("app-green", ptr.To(true))
	newSlice.Name = "app-green-fghij"

	tests := map[string]struct {
		cache, etcd []client.Object
		want        []Reason
	}{
		"current state in both: allowed": {
			cache: []client.Object{greenService(), ready, rs, readySlice},
			etcd:  []client.Object{greenService(), ready, rs, readySlice},
		},
		"the cache still has the slice ready, etcd has it unready: denied": {
			cache: []client.Object{greenService(), ready, rs, readySlice},
			etcd:  []client.Object{greenService(), ready, rs, unreadySlice},
			want:  []Reason{ReasonNoReadyEndpoints},
		},
		"the cache lists a slice etcd deleted, and misses the new one: denied": {
			cache: []client.Object{greenService(), ready, rs, readySlice},
			etcd:  []client.Object{greenService(), ready, rs, newSlice},
			want:  []Reason{ReasonNoEndpointSlices},
		},
		"the cache has the deployment's replicaset, etcd has it scaled to zero: denied": {
			cache: []client.Object{greenService(), renamed("web", "green", 2), replicaSetOf(renamed("web", "green", 2), "abc", 2), readySlice},
			etcd:  []client.Object{greenService(), scaledToZero(renamed("web", "green", 2)), replicaSetOf(renamed("web", "green", 2), "abc", 0), readySlice},
			want:  []Reason{ReasonScaledToZero},
		},
		"a cache that has seen nothing yet: denied, never allowed": {
			etcd: []client.Object{greenService(), ready, rs, readySlice},
			want: []Reason{ReasonNoEndpointSlices},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := newStaleCache(t, tc.cache, tc.etcd)
			res, err := (&Guard{Reader: r}).Evaluate(t.Context(), []Target{greenTarget()})
			if err != nil {
				t.Fatal(err)
			}
			var got []Reason
			for _, f := range res.Findings {
				if f.Severity == Deny {
					got = append(got, f.Reason)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("denials (-want +got):\n%s\nfindings: %v", diff, res.Findings)
			}
			if len(r.consistent) > 0 {
				t.Errorf("consistent LISTs %v: every LIST of a decision must come from the cache (resourceVersion 0)", r.consistent)
			}
		})
	}
}

// The EndpointSlices read by GET are bounded, whatever a tenant labels as a
// Service's slices.
func TestEndpointSlicesReadAreBounded(t *testing.T) {
	objs := []client.Object{greenService(), readyDeployment("app-green", 2), replicaSetOf(readyDeployment("app-green", 2), "abc", 2)}
	for i := range MaxEndpointSlicesRead + 40 {
		s := slice("app-green", ptr.To(false))
		s.Name = "app-green-" + string(rune('a'+i/26)) + string(rune('a'+i%26))
		objs = append(objs, s)
	}
	var mu sync.Mutex
	gets := 0
	r := fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*discoveryv1.EndpointSlice); ok {
				mu.Lock()
				gets++
				mu.Unlock()
			}
			return c.Get(ctx, key, obj, opts...)
		},
	}).Build()
	in := &Input{Reader: r, Target: greenTarget()}
	if _, err := Reference(t.Context(), in); err != nil {
		t.Fatal(err)
	}
	f, err := EndpointsReady(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	if gets != MaxEndpointSlicesRead {
		t.Errorf("read %d EndpointSlices by GET, want the bound %d", gets, MaxEndpointSlicesRead)
	}
	if len(f) != 1 || f[0].Reason != ReasonNoReadyEndpoints {
		t.Fatalf("findings = %v, want one NoReadyEndpoints", f)
	}
	if want := "0 of 64 ready, in the 64 of its 104 EndpointSlices read"; !strings.Contains(f[0].Message, want) {
		t.Errorf("message %q does not say %q", f[0].Message, want)
	}
}
