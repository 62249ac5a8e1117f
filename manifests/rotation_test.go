package manifests_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/certs"
	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
	"github.com/cutover-guard/cutover-guard/internal/loopback"
)

// TestCertRotation runs the image's binary out of cluster with the default
// overlay's RBAC (impersonating its ServiceAccount), its empty Secret and its
// webhook configuration (called by URL on localhost instead of through the
// Service), and checks that the guard fills the Secret, injects the CA,
// becomes ready only then, renews a near-expiry certificate written into the
// Secret, and answers every request the API server sends it meanwhile.
func TestCertRotation(t *testing.T) {
	c := sharedCluster(t)
	bin := guardBinary(t)
	ctx := t.Context()
	cl := routeClient(t, c)

	objs := build(t, "default")
	applyForReal(t, c, ofKinds(objs, "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"))
	// A fresh, empty Secret, as installed.
	secretKey := client.ObjectKey{Namespace: namespace, Name: certs.DefaultSecretName}
	_ = cl.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: secretKey.Name}})
	waitGone(t, cl, secretKey, &corev1.Secret{})
	applyForReal(t, c, ofKinds(objs, "Secret"))

	// Two replicas, as installed, started together: they race to bootstrap
	// the one Secret. The API server calls the first one.
	ports := freePorts(t, 6)
	port := ports[0]
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	mustFind(t, objs, "ValidatingWebhookConfiguration", certs.DefaultWebhookConfigName, &vwc)
	for i, w := range vwc.Webhooks {
		if len(w.ClientConfig.CABundle) > 0 {
			t.Fatal("the webhook configuration ships a caBundle")
		}
		vwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{
			URL: ptr.To(fmt.Sprintf("https://localhost:%d%s", port, *w.ClientConfig.Service.Path)),
		}
	}
	_ = cl.Delete(ctx, vwc.DeepCopy())
	waitGone(t, cl, client.ObjectKeyFromObject(&vwc), &admissionregistrationv1.ValidatingWebhookConfiguration{})
	vwcApplied, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&vwc)
	if err != nil {
		t.Fatal(err)
	}
	applyVWC := func() { applyForReal(t, c, []*unstructured.Unstructured{{Object: vwcApplied}}) }
	applyVWC()
	t.Cleanup(func() { _ = cl.Delete(context.Background(), &vwc) })

	kubeconfig := impersonatingKubeconfig(t, c, filepath.Join(t.TempDir(), "kubeconfig"), serviceAccount)
	// Ready means: the Secret is filled, the CA injected, the certificate in
	// the folder and served.
	var opts []tutorial.GuardOptions
	for i := range 2 {
		opts = append(opts, tutorial.GuardOptions{
			Binary: bin, Kubeconfig: kubeconfig, Dir: t.TempDir(), RotateCertificate: true,
			Port: ports[3*i], MetricsPort: ports[3*i+1], HealthPort: ports[3*i+2],
			Args:         []string{"--cert-dns-names=localhost"},
			StartTimeout: 2 * time.Minute,
		})
	}
	replicas := startGuards(t, opts...)
	secret := &corev1.Secret{}
	if err := cl.Get(ctx, secretKey, secret); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ca.crt", "ca.key", "tls.crt", "tls.key"} {
		if len(secret.Data[k]) == 0 {
			t.Fatalf("ready, but the Secret has no %s", k)
		}
	}
	caPEM := secret.Data["ca.crt"]
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt is not a PEM certificate")
	}
	first := parseCert(t, secret.Data["tls.crt"])
	for _, dns := range []string{"cutover-guard.cutover-guard.svc", "localhost"} {
		if _, err := first.Verify(x509.VerifyOptions{DNSName: dns, Roots: roots}); err != nil {
			t.Errorf("the serving certificate is not valid for %s under ca.crt: %v", dns, err)
		}
	}
	injected := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := cl.Get(ctx, client.ObjectKeyFromObject(&vwc), injected); err != nil {
		t.Fatal(err)
	}
	for _, w := range injected.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, caPEM) {
			t.Errorf("ready, but webhook %s has caBundle %q, want the Secret's ca.crt", w.Name, w.ClientConfig.CABundle)
		}
	}
	// An upgrade applies the manifests again: the injected caBundle stays.
	applyVWC()
	if err := cl.Get(ctx, client.ObjectKeyFromObject(&vwc), injected); err != nil {
		t.Fatal(err)
	}
	for _, w := range injected.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, caPEM) {
			t.Errorf("applying the manifests again removed or changed the caBundle of %s", w.Name)
		}
	}
	for i, r := range replicas {
		if onDisk, err := os.ReadFile(filepath.Join(r.CertDir, "tls.crt")); err != nil || !bytes.Equal(onDisk, secret.Data["tls.crt"]) {
			t.Errorf("replica %d is ready, but its --cert-dir does not hold the Secret's tls.crt (%v)", i, err)
		}
		if served := servedCert(t, r.Port, roots); !served.Equal(first) {
			t.Errorf("replica %d serves serial %s, the Secret holds %s", i, served.SerialNumber, first.SerialNumber)
		}
	}

	// Route updates through the API server, all the while: each changes
	// the spec (so the guard is called) and switches no traffic (so it
	// allows at once): the route's one backend is at weight 0, so neither
	// its create nor a path edit gives any backend a share. Dry run:
	// nothing is stored, nothing conflicts.
	apps := createNamespace(t, cl, "rotation")
	route := createHTTPRoute(t, cl, apps, "app", "app-blue", 0)
	updates := startUpdates(ctx, cl, route)

	updates.waitFor(t, 5)
	nearExpiry := writeNearExpiryCert(t, cl, secretKey, first.DNSNames)

	// The guard renews it (same CA, so the caBundle stays valid) and serves the renewal.
	var renewed *x509.Certificate
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		s := &corev1.Secret{}
		if err := cl.Get(ctx, secretKey, s); err != nil {
			return false, err
		}
		cert := parseCert(t, s.Data["tls.crt"])
		if cert.Equal(nearExpiry) || cert.Equal(first) || !bytes.Equal(s.Data["ca.crt"], caPEM) {
			return false, nil
		}
		renewed = cert
		for i, r := range replicas {
			if r.Exited() {
				return false, fmt.Errorf("replica %d exited", i)
			}
			if !servedCert(t, r.Port, roots).Equal(cert) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("the near-expiry certificate was not renewed and served: %v\n%s", err, replicas[0].LogTail(30))
	}
	if left := time.Until(renewed.NotAfter); left < 300*24*time.Hour {
		t.Errorf("the renewed certificate expires in %s", left.Round(time.Hour))
	}
	updates.waitFor(t, updates.ok()+5)
	ok, failed := updates.stop()
	if len(failed) > 0 {
		t.Errorf("%d of %d route updates failed during the rotation; first: %v", len(failed), ok+len(failed), failed[0])
	}
	if decided := decisions(t, replicas[0]); decided < float64(ok) {
		t.Errorf("the guard decided %v requests, the API server got %d answers", decided, ok)
	}
	t.Logf("%d route updates answered through the rotation, none failed", ok)

	// Graceful shutdown: SIGTERM ends the guard cleanly.
	for i, r := range replicas {
		if err := r.Stop(); err != nil {
			t.Errorf("stopping replica %d: %v", i, err)
		} else if err := r.Wait(ctx); err != nil {
			t.Errorf("replica %d exited after SIGTERM with %v, want status 0", i, err)
		}
	}
	// No key material in the logs, old or new.
	final := &corev1.Secret{}
	if err := cl.Get(ctx, secretKey, final); err != nil {
		t.Fatal(err)
	}
	for i, r := range replicas {
		logText := r.Log()
		for _, key := range [][]byte{final.Data["ca.key"], final.Data["tls.key"], secret.Data["tls.key"]} {
			if body := pemBody(key); len(body) < 40 || strings.Contains(logText, body[:40]) {
				t.Errorf("the log of replica %d holds a private key of the Secret", i)
			}
		}
	}
}

// writeNearExpiryCert replaces the Secret's serving key pair with one from
// the same CA that expires in an hour, well inside the renewal window.
func writeNearExpiryCert(t *testing.T, cl client.Client, key client.ObjectKey, dnsNames []string) *x509.Certificate {
	t.Helper()
	var leaf *x509.Certificate
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s := &corev1.Secret{}
		if err := cl.Get(t.Context(), key, s); err != nil {
			return err
		}
		caCert := parseCert(t, s.Data["ca.crt"])
		block, _ := pem.Decode(s.Data["ca.key"])
		if block == nil {
			t.Fatal("ca.key is not PEM")
		}
		caKey, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			t.Fatalf("ca.key: %v", err)
		}
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(now.UnixNano()),
			Subject:      pkix.Name{CommonName: dnsNames[0]},
			DNSNames:     dnsNames,
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		s.Data["tls.crt"] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		s.Data["tls.key"] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
		if leaf, err = x509.ParseCertificate(der); err != nil {
			t.Fatal(err)
		}
		return cl.Update(t.Context(), s)
	})
	if err != nil {
		t.Fatalf("writing the near-expiry certificate: %v", err)
	}
	return leaf
}

// updates sends dry-run route updates that reach the guard until stopped.
type updates struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
	n      int
	failed []error
}

func startUpdates(ctx context.Context, cl client.Client, route *gwv1.HTTPRoute) *updates {
	ctx, cancel := context.WithCancel(ctx)
	u := &updates{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(u.done)
		tick := time.NewTicker(20 * time.Millisecond) // a steady, bounded load
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			r := route.DeepCopy()
			r.Spec.Rules[0].Matches[0].Path.Value = ptr.To(fmt.Sprintf("/v%d", i%2+1))
			err := cl.Update(ctx, r, client.DryRunAll)
			if ctx.Err() != nil {
				return
			}
			u.mu.Lock()
			if err != nil {
				u.failed = append(u.failed, err)
			} else {
				u.n++
			}
			u.mu.Unlock()
		}
	}()
	return u
}

func (u *updates) ok() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.n
}

// waitFor waits until n updates have been answered, failing on the first
// failed one.
func (u *updates) waitFor(t *testing.T, n int) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		u.mu.Lock()
		defer u.mu.Unlock()
		if len(u.failed) > 0 {
			return false, fmt.Errorf("a route update failed: %w", u.failed[0])
		}
		return u.n >= n, nil
	})
	if err != nil {
		t.Fatalf("waiting for %d answered route updates: %v", n, err)
	}
}

func (u *updates) stop() (int, []error) {
	u.cancel()
	<-u.done
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.n, u.failed
}

// startGuards starts the guard binary once per options, all at the same
// time, and returns once each is ready (tutorial.StartGuard). Each is
// stopped when the test ends, its log shown if the test failed.
func startGuards(t *testing.T, opts ...tutorial.GuardOptions) []*tutorial.Guard {
	t.Helper()
	guards := make([]*tutorial.Guard, len(opts))
	errs := make([]error, len(opts))
	var wg sync.WaitGroup
	for i, o := range opts {
		wg.Go(func() { guards[i], errs[i] = tutorial.StartGuard(t.Context(), o) })
	}
	wg.Wait()
	for _, g := range guards {
		if g == nil {
			continue
		}
		g.LogOnFailure(t, 60)
		t.Cleanup(func() { _ = g.Stop() })
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return guards
}

// servedCert returns the certificate the guard presents to a client that
// trusts roots and asks for localhost, as the API server does.
func servedCert(t *testing.T, port int, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	d := &tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("TLS to the guard: %v", err)
	}
	defer func() { _ = conn.Close() }()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
}

func parseCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("not a PEM certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pemBody is the base64 text of a PEM block, on one line.
func pemBody(data []byte) string {
	var b strings.Builder
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		if l := s.Text(); !strings.HasPrefix(l, "-----") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// decisions sums cutover_guard_decisions_total from the guard's /metrics.
func decisions(t *testing.T, g *tutorial.Guard) float64 {
	t.Helper()
	page, err := g.Metrics(t.Context())
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	return tutorial.MetricSum(page, "cutover_guard_decisions_total", nil)
}

// impersonatingKubeconfig writes a copy of c's admin kubeconfig that acts as
// user (a ServiceAccount), so the guard runs with exactly its RBAC.
func impersonatingKubeconfig(t *testing.T, c *cluster.Cluster, path, user string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	sa := strings.Split(user, ":")
	for _, a := range cfg.AuthInfos {
		a.Impersonate = user
		a.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + sa[2], "system:authenticated"}
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// freePorts returns n distinct free loopback ports.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports, err := loopback.FreePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// waitGone waits until the object no longer exists.
func waitGone(t *testing.T, cl client.Client, key client.ObjectKey, obj client.Object) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		err := cl.Get(ctx, key, obj)
		return client.IgnoreNotFound(err) == nil && err != nil, client.IgnoreNotFound(err)
	})
	if err != nil {
		t.Fatalf("%s still there: %v", key, err)
	}
}
