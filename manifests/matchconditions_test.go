package manifests_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/certs"
	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/webhook"
)

// countingWebhook answers every AdmissionReview with allowed and counts
// the requests per path.
type countingWebhook struct {
	mu    sync.Mutex
	count map[string]int
}

func (h *countingWebhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.count[r.URL.Path]++
	h.mu.Unlock()
	review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	review.Request = nil
	_ = json.NewEncoder(w).Encode(&review)
}

func (h *countingWebhook) get(path string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count[path]
}

// TestMatchConditions installs the default overlay's webhook configuration,
// pointed at a counting webhook, and checks which route writes the API
// server sends: creates, and updates that change the spec (rules,
// parentRefs, hostnames), outside kube-system and the guard's namespace;
// never a label-, annotation- or status-only update, nor the status
// subresource.
func TestMatchConditions(t *testing.T) {
	c := sharedCluster(t)
	ctx := t.Context()
	cl := routeClient(t, c)

	counter := registerCounting(t, cl, "default", "cutover-guard-count-requests")

	apps := createNamespace(t, cl, "count-requests")
	createNamespace(t, cl, namespace)
	httpRoute := createHTTPRoute(t, cl, apps, "app", "app-blue")
	ownRoute := createHTTPRoute(t, cl, namespace, "own", "app-blue")
	systemRoute := createHTTPRoute(t, cl, "kube-system", "system", "app-blue")
	grpcRoute := &gwv1.GRPCRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: apps, Name: "grpc"},
		Spec: gwv1.GRPCRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gateway"}}},
			Rules:           []gwv1.GRPCRouteRule{{BackendRefs: []gwv1.GRPCBackendRef{{BackendRef: backendRef("grpc-blue")}}}},
		},
	}
	recreate(t, cl, grpcRoute)

	// The API server picks up a new webhook configuration asynchronously:
	// wait until a backendRef change (dry run) reaches the webhook.
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		r := httpRoute.DeepCopy()
		r.Spec.Rules[0].BackendRefs[0].Name = "app-probe"
		if err := cl.Update(ctx, r, client.DryRunAll); err != nil {
			return false, err
		}
		return counter.get(webhook.PathHTTPRoute) > 0, nil
	})
	if err != nil {
		t.Fatalf("the webhook configuration never took effect: %v", err)
	}

	for _, tc := range []struct {
		name   string
		path   string
		update func(context.Context) error
		want   int
	}{
		{"a label-only update", webhook.PathHTTPRoute, func(ctx context.Context) error {
			return patchRoute(ctx, cl, httpRoute, `{"metadata":{"labels":{"release":"green"}}}`)
		}, 0},
		{"an annotation-only update", webhook.PathHTTPRoute, func(ctx context.Context) error {
			return patchRoute(ctx, cl, httpRoute, `{"metadata":{"annotations":{"note":"cutover at noon"}}}`)
		}, 0},
		{"a label and an annotation at once", webhook.PathHTTPRoute, func(ctx context.Context) error {
			return patchRoute(ctx, cl, httpRoute, `{"metadata":{"labels":{"release":"blue"},"annotations":{"note":"rolled back"}}}`)
		}, 0},
		{"a parentRefs update", webhook.PathHTTPRoute, func(ctx context.Context) error {
			return patchRoute(ctx, cl, httpRoute, `{"spec":{"parentRefs":[{"name":"other-gateway"}]}}`)
		}, 1},
		{"a parentRef's sectionName added", webhook.PathHTTPRoute, func(ctx context.Context) error {
			return patchRoute(ctx, cl, httpRoute, `{"spec":{"parentRefs":[{"name":"other-gateway","sectionName":"https"}]}}`)
		}, 1},
		{"hostnames set", webhook.PathHTTPRoute, func(ctx context.Context) error {
			return patchRoute(ctx, cl, httpRoute, `{"spec":{"hostnames":["shop.example.com"]}}`)
		}, 1},
		{"a hostname changed", webhook.PathHTTPRoute, func(ctx context.Context) error {
			return patchRoute(ctx, cl, httpRoute, `{"spec":{"hostnames":["www.example.com"]}}`)
		}, 1},
		{"hostnames removed", webhook.PathHTTPRoute, func(ctx context.Context) error {
			return patchRoute(ctx, cl, httpRoute, `{"spec":{"hostnames":null}}`)
		}, 1},
		{"a RequestMirror filter added", webhook.PathHTTPRoute, func(ctx context.Context) error {
			return patchRoute(ctx, cl, httpRoute, `{"spec":{"rules":[{"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"app-shadow","port":80}}}],"backendRefs":[{"name":"app-blue","port":80}]}]}}`)
		}, 1},
		{"a create", webhook.PathHTTPRoute, func(ctx context.Context) error {
			r := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: apps, Name: "created"}, Spec: httpRoute.Spec}
			return cl.Create(ctx, r, client.DryRunAll)
		}, 1},
		{"a GRPCRoute create", webhook.PathGRPCRoute, func(ctx context.Context) error {
			r := &gwv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: apps, Name: "created"}, Spec: grpcRoute.Spec}
			return cl.Create(ctx, r, client.DryRunAll)
		}, 1},
		{"a create in kube-system", webhook.PathHTTPRoute, func(ctx context.Context) error {
			r := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "created"}, Spec: httpRoute.Spec}
			return cl.Create(ctx, r, client.DryRunAll)
		}, 0},
		{"a status update", webhook.PathHTTPRoute, func(ctx context.Context) error {
			r := &gwv1.HTTPRoute{}
			if err := cl.Get(ctx, client.ObjectKeyFromObject(httpRoute), r); err != nil {
				return err
			}
			r.Status.Parents = []gwv1.RouteParentStatus{{
				ParentRef:      gwv1.ParentReference{Name: "gateway"},
				ControllerName: "example.com/gateway-controller",
				Conditions: []metav1.Condition{{
					Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted",
					LastTransitionTime: metav1.Now(), ObservedGeneration: r.Generation,
				}},
			}}
			return cl.Status().Update(ctx, r)
		}, 0},
		{"a backendRef change", webhook.PathHTTPRoute, func(ctx context.Context) error {
			return patchRoute(ctx, cl, httpRoute, `{"spec":{"rules":[{"backendRefs":[{"name":"app-green","port":80}]}]}}`)
		}, 1},
		{"a weight change", webhook.PathHTTPRoute, func(ctx context.Context) error {
			return patchRoute(ctx, cl, httpRoute, `{"spec":{"rules":[{"backendRefs":[{"name":"app-green","port":80,"weight":5}]}]}}`)
		}, 1},
		{"a backendRef change in the guard's namespace", webhook.PathHTTPRoute, func(ctx context.Context) error {
			return patchRoute(ctx, cl, ownRoute, `{"spec":{"rules":[{"backendRefs":[{"name":"app-green","port":80}]}]}}`)
		}, 0},
		{"a backendRef change in kube-system", webhook.PathHTTPRoute, func(ctx context.Context) error {
			return patchRoute(ctx, cl, systemRoute, `{"spec":{"rules":[{"backendRefs":[{"name":"app-green","port":80}]}]}}`)
		}, 0},
		{"a GRPCRoute label-only update", webhook.PathGRPCRoute, func(ctx context.Context) error {
			return cl.Patch(ctx, grpcRoute, client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"labels":{"release":"green"}}}`)))
		}, 0},
		{"a GRPCRoute backendRef change", webhook.PathGRPCRoute, func(ctx context.Context) error {
			return cl.Patch(ctx, grpcRoute, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"rules":[{"backendRefs":[{"name":"grpc-green","port":80}]}]}}`)))
		}, 1},
		{"a GRPCRoute parentRefs update", webhook.PathGRPCRoute, func(ctx context.Context) error {
			return cl.Patch(ctx, grpcRoute, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"parentRefs":[{"name":"other-gateway"}]}}`)))
		}, 1},
		{"a GRPCRoute hostnames update", webhook.PathGRPCRoute, func(ctx context.Context) error {
			return cl.Patch(ctx, grpcRoute, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"hostnames":["rpc.example.com"]}}`)))
		}, 1},
		{"a GRPCRoute annotation-only update", webhook.PathGRPCRoute, func(ctx context.Context) error {
			return cl.Patch(ctx, grpcRoute, client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"annotations":{"note":"x"}}}`)))
		}, 0},
	} {
		// Admission is synchronous: once the update returns, every call
		// the API server made to the webhook has been counted. An update
		// that reaches the webhook may reach it more than once: when the
		// API server's cached copy of the route is older than etcd's (the
		// previous case's write), it retries the update, admission included.
		before := counter.get(tc.path)
		if err := tc.update(ctx); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := counter.get(tc.path) - before; (got > 0) != (tc.want > 0) {
			t.Errorf("%s reached the webhook %d times, want %s", tc.name, got, map[bool]string{true: "at least once", false: "never"}[tc.want > 0])
		}
	}
}

func patchRoute(ctx context.Context, cl client.Client, r *gwv1.HTTPRoute, merge string) error {
	return cl.Patch(ctx, r.DeepCopy(), client.RawPatch("application/merge-patch+json", []byte(merge)))
}

func routeClient(t *testing.T, c *cluster.Cluster) client.Client {
	t.Helper()
	cl, err := client.New(c.Config, client.Options{Scheme: webhook.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// createNamespace creates a namespace unless it exists, and returns its name.
func createNamespace(t *testing.T, cl client.Client, name string) string {
	t.Helper()
	err := cl.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return name
}

func backendRef(service string) gwv1.BackendRef {
	return gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
		Name: gwv1.ObjectName(service), Port: ptr.To(gwv1.PortNumber(80)),
	}}
}

// createHTTPRoute creates (or replaces) a route with one rule: path / to
// service, at the given weights (none: the default 1).
func createHTTPRoute(t *testing.T, cl client.Client, namespace, name, service string, weight ...int32) *gwv1.HTTPRoute {
	t.Helper()
	r := &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gateway"}}},
			Rules: []gwv1.HTTPRouteRule{{
				Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{
					Type: ptr.To(gwv1.PathMatchPathPrefix), Value: ptr.To("/"),
				}}},
				BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: backendRef(service)}},
			}},
		},
	}
	for _, w := range weight {
		r.Spec.Rules[0].BackendRefs[0].Weight = ptr.To(w)
	}
	recreate(t, cl, r)
	return r
}

// recreate deletes obj if it exists (left by an earlier run) and creates it.
func recreate(t *testing.T, cl client.Client, obj client.Object) {
	t.Helper()
	_ = cl.Delete(t.Context(), obj.DeepCopyObject().(client.Object))
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		err := cl.Create(ctx, obj)
		return !apierrors.IsAlreadyExists(err), client.IgnoreAlreadyExists(err)
	})
	if err != nil {
		t.Fatalf("create %T %s: %v", obj, client.ObjectKeyFromObject(obj), err)
	}
}

// registerCounting installs the ValidatingWebhookConfiguration of overlay
// under name, every webhook pointed at a new counting webhook on loopback,
// and removes it when the test ends.
func registerCounting(t *testing.T, cl client.Client, overlay, name string) *countingWebhook {
	t.Helper()
	counter := &countingWebhook{count: map[string]int{}}
	srv := httptest.NewTLSServer(counter) // its certificate names 127.0.0.1
	t.Cleanup(srv.Close)
	caBundle := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})

	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	mustFind(t, build(t, overlay), "ValidatingWebhookConfiguration", certs.DefaultWebhookConfigName, &vwc)
	vwc.Name = name
	for i, w := range vwc.Webhooks {
		vwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{
			URL:      ptr.To(srv.URL + *w.ClientConfig.Service.Path),
			CABundle: caBundle,
		}
	}
	if err := cl.Create(t.Context(), &vwc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Delete(context.Background(), &vwc) })
	return counter
}
