package e2e_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// staleNamespace holds the tenant of TestDecisionsFollowEtcdNotTheWatchCache.
const staleNamespace = "stale-cache"

// staleCache stands between a guard and the real kube-apiserver and plays
// a watch cache that stopped following etcd: while frozen, every read from
// the cache (a request with resourceVersion=0) is answered with the
// response the API server gave to the same request before the freeze; every
// other request (the quorum GETs, discovery) goes through untouched.
type staleCache struct {
	proxy *httputil.ReverseProxy

	mu       sync.Mutex
	frozen   bool
	thawed   chan struct{} // closed by thaw: held watch events flow again
	recorded map[string]recordedResponse
	served   int // cache reads answered from before the freeze
	missing  []string
	held     int // bytes of watch events held back since the freeze
}

type recordedResponse struct {
	contentType string
	body        []byte
}

func newStaleCache(t *testing.T, cfg *rest.Config) (kubeconfig string, s *staleCache) {
	t.Helper()
	target, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	transport, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s = &staleCache{recorded: map[string]recordedResponse{}, thawed: make(chan struct{})}
	s.proxy = &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport:     transport,
		FlushInterval: -1, // watches stream
		ModifyResponse: func(resp *http.Response) error {
			if isWatch(resp.Request) {
				// An informer's watch: what it streams after the freeze
				// is held back, as if the watch cache had stopped.
				resp.Body = &heldBody{ReadCloser: resp.Body, s: s}
				return nil
			}
			if !fromWatchCache(resp.Request) || resp.StatusCode != http.StatusOK {
				return nil
			}
			body, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err != nil {
				return err
			}
			resp.Body = io.NopCloser(bytes.NewReader(body))
			s.mu.Lock()
			if !s.frozen {
				s.recorded[cacheKey(resp.Request)] = recordedResponse{resp.Header.Get("Content-Type"), body}
			}
			s.mu.Unlock()
			return nil
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	t.Cleanup(s.thaw) // before the server closes: nothing stays held

	// The guard talks to the proxy without credentials; the proxy adds the
	// test's own (cfg) on the way to the API server.
	kc := clientcmdapi.NewConfig()
	kc.Clusters["stale"] = &clientcmdapi.Cluster{Server: "http://" + ln.Addr().String()}
	kc.AuthInfos["stale"] = &clientcmdapi.AuthInfo{}
	kc.Contexts["stale"] = &clientcmdapi.Context{Cluster: "stale", AuthInfo: "stale"}
	kc.CurrentContext = "stale"
	kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	return kubeconfig, s
}

// fromWatchCache tells a read the API server answers from its watch cache.
func fromWatchCache(r *http.Request) bool {
	return r.Method == http.MethodGet && r.URL.Query().Get("resourceVersion") == "0" && !isWatch(r)
}

func isWatch(r *http.Request) bool {
	w := r.URL.Query().Get("watch")
	return r.Method == http.MethodGet && (w == "true" || w == "1")
}

// heldBody streams a watch until the freeze, and holds what arrives after
// it until thaw.
type heldBody struct {
	io.ReadCloser
	s *staleCache
}

func (b *heldBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.s.mu.Lock()
	frozen := b.s.frozen
	if frozen {
		b.s.held += n
	}
	b.s.mu.Unlock()
	if frozen {
		<-b.s.thawed
	}
	return n, err
}

func (s *staleCache) thaw() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.frozen {
		s.frozen = false
		close(s.thawed)
	}
}

func cacheKey(r *http.Request) string {
	return r.URL.Path + "?" + r.URL.RawQuery + " accept=" + r.Header.Get("Accept")
}

func (s *staleCache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if fromWatchCache(r) {
		s.mu.Lock()
		rec, ok := s.recorded[cacheKey(r)]
		frozen := s.frozen
		if frozen && ok {
			s.served++
		} else if frozen {
			s.missing = append(s.missing, r.URL.Path+"?"+r.URL.RawQuery)
		}
		s.mu.Unlock()
		switch {
		case frozen && ok:
			w.Header().Set("Content-Type", rec.contentType)
			_, _ = w.Write(rec.body)
			return
		case frozen:
			// A frozen cache that has no answer fails the read loudly
			// rather than letting a fresh one through.
			http.Error(w, "stale cache: this read was not recorded before the freeze", http.StatusBadGateway)
			return
		}
	}
	s.proxy.ServeHTTP(w, r)
}

func (s *staleCache) freeze() (recorded int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frozen = true
	return len(s.recorded)
}

func (s *staleCache) servedStale() (served int, missing []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served, append([]string(nil), s.missing...)
}

func (s *staleCache) heldBytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

// TestDecisionsFollowEtcdNotTheWatchCache runs a second guard, reading the
// real API server through staleCache, and posts it the tutorial's cutover
// while what it finds objects with is frozen at a moment green was Ready:
// the API server's watch cache (--find-from=apiserver, the default: every
// read with resourceVersion=0 is answered from before the freeze) or the
// guard's own informers (--find-from=informers: their watches hold every
// event after the freeze). Every object a verdict rests on is read by a quorum GET, so the
// verdict follows etcd: a denial once green is held Pending (the frozen
// view still lists green's old ReplicaSet, pods and EndpointSlice), an
// allow once green serves again (it still lists the objects that are
// gone). The guard reads ahead (its slots are free): those reads follow the
// same rule. The two modes run one after the other on one tenant; each
// starts and ends with green serving.
func TestDecisionsFollowEtcdNotTheWatchCache(t *testing.T) {
	e := setup(t)
	kube := e.wideClient(t)
	e.createTenant(t, kube, staleNamespace)
	for _, mode := range []string{"apiserver", "informers"} {
		t.Run(mode, func(t *testing.T) { decisionsFollowEtcd(t, e, kube, mode) })
	}
}

func decisionsFollowEtcd(t *testing.T, e *env, kube client.Client, findFrom string) {
	ctx := t.Context()
	informers := findFrom == "informers"
	kubeconfig, cache := newStaleCache(t, e.cluster.Config)
	g, err := tutorial.StartGuard(ctx, tutorial.GuardOptions{
		Binary: filepath.Join(e.dir, "cutover-guard"), Kubeconfig: kubeconfig, Dir: t.TempDir(), DBTimeout: dbTimeout,
		Args: []string{"--zap-log-level=debug", "--find-from=" + findFrom},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Stop() })
	g.LogOnFailure(t, 60)
	finds := func(source string) float64 {
		t.Helper()
		page, err := g.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return tutorial.MetricSum(page, "cutover_guard_finds_total", map[string]string{"source": source})
	}
	if informers {
		// Finds go to the API server until the informers have synced.
		if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			page, err := g.Metrics(ctx)
			return err == nil && tutorial.MetricSum(page, "cutover_guard_find_cache_trusted", nil) == 1, nil
		}); err != nil {
			t.Fatalf("the find cache never became trusted: %v", err)
		}
	}

	var route gwv1.HTTPRoute
	if err := kube.Get(ctx, client.ObjectKey{Namespace: staleNamespace, Name: tutorial.Route}, &route); err != nil {
		t.Fatal(err)
	}
	post := newReviewPoster(t, g)

	// Green Ready: allowed, and every cache read the decision made is
	// recorded.
	if resp := post(t, &route, tutorial.Green); !resp.Allowed {
		t.Fatalf("cutover to a Ready green denied: %s", resp.Result.Message)
	}
	fromInformers, fromAPIServer := finds("informer"), finds("apiserver")
	n := cache.freeze()
	switch {
	case informers && fromInformers < 3:
		t.Fatalf("the informers answered %v finds; want at least 3 (EndpointSlices, ReplicaSets, pods)", fromInformers)
	case !informers && n < 3:
		t.Fatalf("the decision made %d reads from the watch cache; want at least 3 (EndpointSlices, ReplicaSets, pods)", n)
	}

	// Green held Pending: etcd says not Ready, the frozen view still lists
	// what it listed when green served.
	green := e.manifests.Deployment(tutorial.Green, tutorial.Replicas, true)
	green.Namespace = staleNamespace
	if err := tutorial.HoldPending(ctx, kube, green); err != nil {
		t.Fatal(err)
	}
	if informers {
		// The rollout's events reached the proxy and were held back: the
		// informers are behind etcd.
		if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) { return cache.heldBytes() > 0, nil }); err != nil {
			t.Fatal("no watch event was held back after the freeze: the informers are not stale")
		}
	}
	resp := post(t, &route, tutorial.Green)
	if resp.Allowed {
		t.Fatal("cutover to a Pending green allowed: the verdict rested on the frozen cache")
	}
	for _, want := range []string{"deployment app-green is not ready", "service app-green has no"} {
		if !strings.Contains(resp.Result.Message, want) {
			t.Errorf("denial does not say %q:\n%s", want, resp.Result.Message)
		}
	}
	stale, missing := cache.servedStale()
	if len(missing) > 0 {
		t.Fatalf("cache reads not recorded before the freeze: %v", missing)
	}
	switch {
	case informers && (finds("informer") < fromInformers+3 || finds("apiserver") != fromAPIServer):
		t.Fatalf("finds after the freeze: informer %v -> %v, apiserver %v -> %v; want 3 or more from the informers, none from the API server",
			fromInformers, finds("informer"), fromAPIServer, finds("apiserver"))
	case !informers && stale < 3:
		t.Fatalf("%d reads answered from the frozen cache; want at least 3", stale)
	}

	// Green serving again, with a new ReplicaSet and new pods the frozen
	// view has never seen: etcd says Ready, and so does the verdict.
	green = e.manifests.Deployment(tutorial.Green, tutorial.Replicas, false)
	green.Namespace = staleNamespace
	if err := tutorial.Serve(ctx, kube, green); err != nil {
		t.Fatal(err)
	}
	if resp := post(t, &route, tutorial.Green); !resp.Allowed {
		t.Fatalf("cutover to a Ready green denied while the cache lists only objects that are gone: %s", resp.Result.Message)
	}
	switch again, _ := cache.servedStale(); {
	case informers && finds("apiserver") != fromAPIServer:
		t.Fatalf("the last decision found objects through the API server (%v -> %v); want the frozen informers", fromAPIServer, finds("apiserver"))
	case !informers && again < 2*stale:
		t.Fatalf("the last decision read %d times from the frozen cache; want at least %d", again-stale, stale)
	}
}

// newReviewPoster returns a function that posts g an AdmissionReview of an
// UPDATE of route switching its first backendRef to backend, as the API
// server would, and returns the guard's answer.
func newReviewPoster(t *testing.T, g *tutorial.Guard) func(t *testing.T, route *gwv1.HTTPRoute, backend string) *admissionv1.AdmissionResponse {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(g.CABundle) {
		t.Fatal("guard's CA bundle holds no certificate")
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	t.Cleanup(hc.CloseIdleConnections)
	n := 0
	return func(t *testing.T, route *gwv1.HTTPRoute, backend string) *admissionv1.AdmissionResponse {
		t.Helper()
		n++
		old := route.DeepCopy()
		old.APIVersion, old.Kind = gwv1.GroupVersion.String(), "HTTPRoute"
		updated := old.DeepCopy()
		updated.Spec.Rules[0].BackendRefs[0].Name = gwv1.ObjectName(backend)
		oldRaw, err := json.Marshal(old)
		if err != nil {
			t.Fatal(err)
		}
		newRaw, err := json.Marshal(updated)
		if err != nil {
			t.Fatal(err)
		}
		review := admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request: &admissionv1.AdmissionRequest{
				UID:       types.UID(fmt.Sprintf("stale-cache-%d", n)),
				Kind:      metav1.GroupVersionKind{Group: gwv1.GroupName, Version: "v1", Kind: "HTTPRoute"},
				Resource:  metav1.GroupVersionResource{Group: gwv1.GroupName, Version: "v1", Resource: "httproutes"},
				Name:      route.Name,
				Namespace: route.Namespace,
				Operation: admissionv1.Update,
				UserInfo:  authenticationv1.UserInfo{Username: "release-engineer"},
				Object:    runtime.RawExtension{Raw: newRaw},
				OldObject: runtime.RawExtension{Raw: oldRaw},
			},
		}
		body, err := json.Marshal(review)
		if err != nil {
			t.Fatal(err)
		}
		url := fmt.Sprintf("https://127.0.0.1:%d/validate-httproute?timeout=10s", g.Port)
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = res.Body.Close() }()
		raw, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("guard answered %s (%v): %s", res.Status, err, raw)
		}
		var answer admissionv1.AdmissionReview
		if err := json.Unmarshal(raw, &answer); err != nil || answer.Response == nil {
			t.Fatalf("guard's answer is no AdmissionReview (%v): %s", err, raw)
		}
		if answer.Response.Result == nil {
			answer.Response.Result = &metav1.Status{}
		}
		return answer.Response
	}
}
