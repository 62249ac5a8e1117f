package checks

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// How the checks read, and why a decision never rests on an object older
// than the request although some reads come from the API server's cache.
//
// A LIST with no resourceVersion is a consistent read: since Kubernetes 1.31
// the API server serves it from its watch cache only once the cache has
// caught up with etcd's current revision, which, while other writes go on
// (node leases, Events, status updates, the route update itself), waits for
// a progress notification: tens of milliseconds, up to about 100, per LIST.
// A GET by name with no resourceVersion is a quorum read from etcd and never
// waits for the cache.
//
// So the checks use the cache to find objects and etcd to judge them:
//
//   - to find which objects exist (the ReplicaSets and pods whose labels
//     match a Service's selector, a Service's EndpointSlices, the
//     ReferenceGrants of a namespace), they LIST with resourceVersion "0",
//     served by the watch cache at once, however far behind etcd it is (in
//     practice milliseconds); FindCache (findcache.go) answers the first
//     three from the guard's own informers, a copy of the same watch cache
//     one watch further behind, trusted only while it keeps up;
//   - every object the verdict depends on (the Service, each workload, each
//     pod without a controller, each EndpointSlice, each ReferenceGrant that
//     grants, each Secret and ConfigMap) is then read by name with a quorum
//     GET, so its content is the latest.
//
// What a cache a few milliseconds behind can do to a decision:
//
//   - It lists an object that etcd no longer has: the GET says NotFound and
//     the object is skipped, as if the LIST had been fresh.
//   - It lists an object whose content has changed since (a slice whose
//     endpoints went unready, a Deployment scaled down): the GET reads the
//     change. Content is never taken from the LIST.
//   - It misses an object created in those milliseconds. A missed
//     EndpointSlice can only lower the count of ready endpoints: a denial,
//     never a false allow. A missed ReplicaSet belongs to a Deployment made
//     or rolled out in those milliseconds, whose new pods cannot be Ready
//     yet: the Deployment is still found through its older ReplicaSet or its
//     name, and its status (read by GET) shows the rollout; a Deployment
//     with no other way to be found has no Ready pods, which the endpoints
//     check denies. A missed pod is one made in those milliseconds: not
//     Ready, so not serving; its controller (a StatefulSet mid-rollout, say)
//     is found through its older pods and judged by its status.
//
// One read judges by LIST, on purpose: a Service selector switch
// (SelectedPodsReady) judges the pods the new selector picks from their
// content, so it LISTs them consistently (up to 500) rather than GET each.
//
// TestReadsJudgeByQuorumGetNotByTheCache (fake client whose LISTs return a
// stale cache) and e2e's TestDecisionsFollowEtcdNotTheWatchCache (the real
// API server, behind a proxy that answers every cache read from before a
// freeze) hold this.
func fromCache() client.ListOption {
	return &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: "0"}}
}
