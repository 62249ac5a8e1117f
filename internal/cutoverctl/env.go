package cutoverctl

import (
	"context"
	"fmt"
	"sync"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// env is what every command works with: a client for the cluster the
// kubeconfig flags name (impersonation included) and the namespace.
type env struct {
	c         client.Client
	namespace string
	warnings  *warningCollector
}

func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(gwv1.Install(s))
	return s
}

func newEnv(flags *genericclioptions.ConfigFlags) (*env, error) {
	cfg, err := flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	ns, _, err := flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	w := &warningCollector{}
	cfg.WarningHandlerWithContext = w
	cfg.WarningHandler = nil
	c, err := client.New(cfg, client.Options{Scheme: scheme()})
	if err != nil {
		return nil, fmt.Errorf("connect to the cluster: %w", err)
	}
	return &env{c: c, namespace: ns, warnings: w}, nil
}

// getRoute reads the route, or says clearly that it does not exist.
func (e *env) getRoute(ctx context.Context, name string) (*gwv1.HTTPRoute, error) {
	var r gwv1.HTTPRoute
	err := e.c.Get(ctx, client.ObjectKey{Namespace: e.namespace, Name: name}, &r)
	switch {
	case apierrors.IsNotFound(err):
		return nil, errRouteNotFound(e.namespace, name)
	case err != nil:
		return nil, fmt.Errorf("get httproute %s/%s: %w", e.namespace, name, err)
	}
	return &r, nil
}

func errRouteNotFound(ns, name string) error {
	return fmt.Errorf("httproute %s/%s not found; list the routes with: kubectl get httproutes -n %s (or pass -n NAMESPACE)", ns, name, ns)
}

// whoAmI is the user the API server sees (impersonation included), from a
// SelfSubjectReview; empty when the server does not say.
func (e *env) whoAmI(ctx context.Context) string {
	r := &authenticationv1.SelfSubjectReview{}
	if err := e.c.Create(ctx, r); err != nil {
		return ""
	}
	return r.Status.UserInfo.Username
}

// warningCollector keeps the API server's warnings of the last request, so
// they are shown with the verdict instead of logged.
type warningCollector struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningCollector) HandleWarningHeaderWithContext(_ context.Context, code int, _ string, text string) {
	if code != 299 || text == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warningCollector) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = nil
}

func (w *warningCollector) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}
