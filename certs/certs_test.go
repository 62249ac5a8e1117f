package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestOptions(t *testing.T) {
	valid := Options{Namespace: "cutover-guard", SecretName: "cutover-guard-cert", ServiceName: "cutover-guard",
		WebhookConfigName: "cutover-guard", CertDir: "/certs", ExtraDNSNames: []string{"localhost", "cutover-guard"}}
	if err := valid.Validate(); err != nil {
		t.Fatalf("valid options: %v", err)
	}
	want := []string{"cutover-guard.cutover-guard.svc", "cutover-guard", "cutover-guard.cutover-guard",
		"cutover-guard.cutover-guard.svc.cluster.local", "localhost"}
	if diff := cmp.Diff(want, valid.DNSNames()); diff != "" {
		t.Errorf("DNSNames (-want +got):\n%s", diff)
	}

	for name, tc := range map[string]struct {
		change func(*Options)
		flag   string
	}{
		"an empty namespace":           {func(o *Options) { o.Namespace = "" }, "--namespace"},
		"an upper-case Secret name":    {func(o *Options) { o.SecretName = "Cert" }, "--cert-secret-name"},
		"a Service name with a slash":  {func(o *Options) { o.ServiceName = "a/b" }, "--service-name"},
		"an empty webhook config name": {func(o *Options) { o.WebhookConfigName = "" }, "--webhook-config-name"},
		"no certificate folder":        {func(o *Options) { o.CertDir = "" }, "--cert-dir"},
		"a DNS name with a space":      {func(o *Options) { o.ExtraDNSNames = []string{"a b"} }, "--cert-dns-names"},
	} {
		t.Run(name, func(t *testing.T) {
			o := valid
			tc.change(&o)
			err := o.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.flag) {
				t.Errorf("Validate() = %v, want an error naming %s", err, tc.flag)
			}
		})
	}
}

func TestSelectByName(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.Path+" "+r.URL.Query().Get("fieldSelector"))
	}))
	defer srv.Close()
	c := &http.Client{Transport: selectByName(map[string]string{"/api/v1/namespaces/ns/secrets": "cert"})(http.DefaultTransport)}

	for _, req := range []struct{ method, target string }{
		{http.MethodGet, "/api/v1/namespaces/ns/secrets?limit=500"},
		{http.MethodGet, "/api/v1/namespaces/ns/secrets?watch=true&fieldSelector=type%3DOpaque"},
		{http.MethodGet, "/api/v1/namespaces/ns/secrets/cert"},
		{http.MethodPut, "/api/v1/namespaces/ns/secrets"},
		{http.MethodGet, "/api/v1/namespaces/other/secrets"},
	} {
		r, err := http.NewRequestWithContext(t.Context(), req.method, srv.URL+req.target, nil)
		if err != nil {
			t.Fatal(err)
		}
		before := r.URL.String()
		resp, err := c.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := resp.Body.Close(); err != nil {
			t.Fatal(err)
		}
		if r.URL.String() != before {
			t.Errorf("the caller's request was modified: %s became %s", before, r.URL)
		}
	}
	want := []string{
		"GET /api/v1/namespaces/ns/secrets metadata.name=cert",
		"GET /api/v1/namespaces/ns/secrets type=Opaque,metadata.name=cert",
		"GET /api/v1/namespaces/ns/secrets/cert ",
		"PUT /api/v1/namespaces/ns/secrets ",
		"GET /api/v1/namespaces/other/secrets ",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("requests the API server saw (-want +got):\n%s", diff)
	}
}

func TestSecretSyncLoad(t *testing.T) {
	dir := t.TempDir()
	s := &secretSync{dir: dir, log: logr.Discard()}
	if _, err := s.certificate(); err == nil {
		t.Error("a certificate before any was loaded")
	}
	cert1, key1 := keyPair(t, "one")
	cert2, key2 := keyPair(t, "two")

	for _, step := range []struct {
		name      string
		cert, key []byte
		wantErr   bool
		serving   string // CommonName served after the step
	}{
		{"an empty Secret", nil, nil, true, ""},
		{"a key pair", cert1, key1, false, "one"},
		{"a certificate with another key", cert2, key1, true, "one"},
		{"garbage", []byte("not pem"), []byte("not pem"), true, "one"},
		{"a new key pair", cert2, key2, false, "two"},
		{"the same pair again", cert2, key2, false, "two"},
	} {
		err := s.load(step.cert, step.key)
		if (err != nil) != step.wantErr {
			t.Errorf("%s: load() = %v, want error %v", step.name, err, step.wantErr)
		}
		if err != nil && (strings.Contains(err.Error(), string(key1)) || strings.Contains(err.Error(), "PRIVATE KEY")) {
			t.Errorf("%s: the error quotes the key", step.name)
		}
		if step.serving == "" {
			continue
		}
		c, err := s.certificate()
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if c.Leaf.Subject.CommonName != step.serving {
			t.Errorf("%s: serving %s, want %s", step.name, c.Leaf.Subject.CommonName, step.serving)
		}
		onDisk, err := tls.LoadX509KeyPair(filepath.Join(dir, CertName), filepath.Join(dir, KeyName))
		if err != nil {
			t.Fatalf("%s: the folder holds no key pair: %v", step.name, err)
		}
		if leaf, _ := x509.ParseCertificate(onDisk.Certificate[0]); leaf.Subject.CommonName != step.serving {
			t.Errorf("%s: the folder holds %s, want %s", step.name, leaf.Subject.CommonName, step.serving)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, KeyName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", KeyName, fi.Mode().Perm())
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*")); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func TestServeWhenReady(t *testing.T) {
	ready := make(chan struct{})
	started := make(chan struct{})
	server := runnableFunc(func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		return nil
	})
	check := ReadyWhen(ready, func(*http.Request) error { return nil })
	if err := check(nil); err == nil {
		t.Error("ready before the certificate is")
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- ServeWhenReady(ready, server).Start(ctx) }()
	select {
	case <-started:
		t.Fatal("the server started before the certificate was ready")
	default:
	}
	close(ready)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not start once the certificate was ready")
	}
	if err := check(nil); err != nil {
		t.Errorf("not ready after the certificate is: %v", err)
	}
	failing := ReadyWhen(ready, func(*http.Request) error { return errors.New("not listening") })
	if err := failing(nil); err == nil {
		t.Error("ready while the server is not")
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}

	// Stopped before ready: returns without starting.
	ctx2, cancel2 := context.WithCancel(t.Context())
	cancel2()
	if err := ServeWhenReady(make(chan struct{}), runnableFunc(func(context.Context) error {
		return errors.New("started")
	})).Start(ctx2); err != nil {
		t.Errorf("stopped before ready: %v", err)
	}
}

type runnableFunc func(context.Context) error

func (f runnableFunc) Start(ctx context.Context) error { return f(ctx) }

// keyPair returns a self-signed certificate and its key, PEM-encoded.
func keyPair(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func TestPreflight(t *testing.T) {
	o := Options{Namespace: "cutover-guard", SecretName: "cutover-guard-cert", ServiceName: "cutover-guard",
		WebhookConfigName: "cutover-guard", CertDir: t.TempDir()}
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Preflight(t.Context()); err == nil {
		t.Error("Preflight before AddToManager succeeded")
	}

	r.client = fake.NewClientset()
	err = r.Preflight(t.Context())
	if err == nil || !strings.Contains(err.Error(), "cutover-guard/cutover-guard-cert does not exist") ||
		!strings.Contains(err.Error(), "--cert-rotation=false") {
		t.Errorf("no Secret: %v, want the Secret named and --cert-rotation=false offered", err)
	}

	r.client = fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: o.SecretName}})
	if err := r.Preflight(t.Context()); err != nil {
		t.Errorf("an empty Secret: %v", err)
	}
}
