// Package certs keeps the webhook's serving certificate without cert-manager:
// it bootstraps a self-signed CA and a serving certificate into a Secret,
// injects the CA into the ValidatingWebhookConfiguration's caBundle, renews
// the serving certificate before it expires (all three with
// open-policy-agent/cert-controller's rotator), and serves the key pair the
// Secret holds, swapped in place when it changes. Readiness is held until the
// certificate is in the certificate folder and the CA is injected.
//
// It touches only its own Secret and webhook configuration, by name: every
// list and watch it makes carries a metadata.name field selector, so RBAC can
// grant it those two objects and nothing else. It never logs key material.
package certs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// The rotator's permissions, generated into manifests/rotator/role.yaml by
// `make manifests`. The names are the defaults of the Options below; a
// renamed Secret or webhook configuration needs the Role edited too.
//
// +kubebuilder:rbac:groups="",namespace=cutover-guard,resources=secrets,resourceNames=cutover-guard-cert,verbs=get;list;watch;update
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,resourceNames=cutover-guard,verbs=get;list;watch;update

// Defaults of the install (manifests/).
const (
	DefaultNamespace         = "cutover-guard"
	DefaultSecretName        = "cutover-guard-cert"
	DefaultServiceName       = "cutover-guard"
	DefaultWebhookConfigName = "cutover-guard"
)

// Key names in the Secret and files in the certificate folder.
const (
	CertName = "tls.crt"
	KeyName  = "tls.key"
)

// Options say where the certificate lives and whom it names.
type Options struct {
	// Namespace holds the Secret and the Service.
	Namespace string
	// SecretName is the Secret that keeps the CA and the serving key pair.
	// It must exist (the manifests create it empty); it is filled here.
	SecretName string
	// ServiceName is the Service the API server calls; the certificate names
	// <service>.<namespace>.svc and its shorter and longer forms.
	ServiceName string
	// WebhookConfigName is the ValidatingWebhookConfiguration whose webhooks
	// get the CA as caBundle.
	WebhookConfigName string
	// CertDir receives tls.crt and tls.key whenever the Secret changes.
	CertDir string
	// ExtraDNSNames are added to the certificate (e.g. localhost when the API
	// server calls the guard by URL).
	ExtraDNSNames []string
}

// DNSName is the name the API server checks when it calls the Service.
func (o Options) DNSName() string { return o.ServiceName + "." + o.Namespace + ".svc" }

// DNSNames are every name on the serving certificate.
func (o Options) DNSNames() []string {
	names := []string{
		o.DNSName(),
		o.ServiceName,
		o.ServiceName + "." + o.Namespace,
		o.DNSName() + ".cluster.local",
	}
	for _, n := range o.ExtraDNSNames {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names
}

// Validate reports every option that cannot work.
func (o Options) Validate() error {
	var errs []error
	for _, f := range []struct{ flag, value string }{
		{"namespace", o.Namespace},
		{"cert-secret-name", o.SecretName},
		{"service-name", o.ServiceName},
		{"webhook-config-name", o.WebhookConfigName},
	} {
		for _, msg := range validation.IsDNS1123Subdomain(f.value) {
			errs = append(errs, fmt.Errorf("--%s %q: %s", f.flag, f.value, msg))
		}
	}
	if o.CertDir == "" {
		errs = append(errs, errors.New("--cert-dir must name a folder"))
	}
	for _, n := range o.ExtraDNSNames {
		for _, msg := range validation.IsDNS1123Subdomain(n) {
			errs = append(errs, fmt.Errorf("--cert-dns-names %q: %s", n, msg))
		}
	}
	return errors.Join(errs...)
}

// Rotation bootstraps, injects, renews and serves the certificate. Create it
// with New, hand GetCertificate to the webhook server's TLS config, add it to
// the manager with AddToManager, and start serving once Ready is closed.
type Rotation struct {
	opts   Options
	ready  chan struct{}
	sync   *secretSync
	client kubernetes.Interface // set by AddToManager
}

// New checks o and returns a Rotation that is not running yet.
func New(o Options) (*Rotation, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return &Rotation{
		opts:  o,
		ready: make(chan struct{}),
		sync: &secretSync{
			key: types.NamespacedName{Namespace: o.Namespace, Name: o.SecretName},
			dir: o.CertDir,
		},
	}, nil
}

// Ready is closed once the serving certificate is in the certificate folder
// and the CA is in the webhook configuration.
func (r *Rotation) Ready() <-chan struct{} { return r.ready }

// GetCertificate returns the key pair the Secret holds now; use it as
// tls.Config.GetCertificate. Each handshake sees either the old or the new
// pair, never half of each.
func (r *Rotation) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.sync.certificate()
}

// TLSConfig sets GetCertificate on c (a webhook server TLSOpts function).
func (r *Rotation) TLSConfig(c *tls.Config) { c.GetCertificate = r.GetCertificate }

// AddToManager adds the rotator, its CA injection, and the Secret watch that
// feeds GetCertificate and the certificate folder to mgr.
func (r *Rotation) AddToManager(mgr manager.Manager) error {
	cs, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return fmt.Errorf("certificate rotation: %w", err)
	}
	r.client = cs
	r.sync.client = cs
	r.sync.log = ctrl.Log.WithName("certs")
	if err := mgr.Add(r.sync); err != nil {
		return err
	}

	// The rotator's own cache lists and watches Secrets in the namespace and
	// every webhook configuration; narrow both to our objects by name.
	cfg := rest.CopyConfig(mgr.GetConfig())
	cfg.Wrap(selectByName(map[string]string{
		"/api/v1/namespaces/" + r.opts.Namespace + "/secrets":                   r.opts.SecretName,
		"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations": r.opts.WebhookConfigName,
	}))
	names := r.opts.DNSNames()
	return rotator.AddRotator(narrowedManager{Manager: mgr, cfg: cfg}, &rotator.CertRotator{
		SecretKey:      types.NamespacedName{Namespace: r.opts.Namespace, Name: r.opts.SecretName},
		CertDir:        r.opts.CertDir,
		CAName:         "cutover-guard-ca",
		CAOrganization: "cutover-guard",
		DNSName:        names[0],
		ExtraDNSNames:  names[1:],
		IsReady:        r.ready,
		Webhooks:       []rotator.WebhookInfo{{Name: r.opts.WebhookConfigName, Type: rotator.Validating}},
		FieldOwner:     "cutover-guard",
		// Every replica renews; the Secret's resourceVersion settles races.
		RequireLeaderElection: false,
		// Inject the CA only once this replica has the certificate to serve.
		EnableReadinessCheck: true,
		CertName:             CertName,
		KeyName:              KeyName,
	})
}

// Preflight reads the certificate Secret once, so that a missing Secret or
// missing permission stops the guard at once with a message that says what
// to do, rather than after the rotator's retries. Call it after AddToManager.
func (r *Rotation) Preflight(ctx context.Context) error {
	if r.client == nil {
		return errors.New("certificate rotation: Preflight before AddToManager")
	}
	key := r.opts.Namespace + "/" + r.opts.SecretName
	_, err := r.client.CoreV1().Secrets(r.opts.Namespace).Get(ctx, r.opts.SecretName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("certificate Secret %s does not exist: create it empty (manifests/default does), "+
			"or pass --cert-rotation=false and put tls.crt and tls.key in --cert-dir yourself", key)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("certificate Secret %s: not allowed to read it; apply the rotator's Role (manifests/rotator): %w", key, err)
	case err != nil:
		return fmt.Errorf("certificate Secret %s: %w", key, err)
	}
	return nil
}

// narrowedManager hands the rotator a client config whose lists and watches
// select our objects by name.
type narrowedManager struct {
	manager.Manager
	cfg *rest.Config
}

func (m narrowedManager) GetConfig() *rest.Config { return m.cfg }
