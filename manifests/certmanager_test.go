package manifests_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
	"github.com/cutover-guard/cutover-guard/internal/tail"
	"github.com/cutover-guard/cutover-guard/internal/testcert"
)

// TestDisabledRotation runs the image's binary as the cert-manager overlay
// does (--cert-rotation=false, the certificate folder filled by someone
// else) and checks that it serves those files, and the new pair once they
// are replaced, as the kubelet does when cert-manager renews.
func TestDisabledRotation(t *testing.T) {
	c := sharedCluster(t)
	bin := guardBinary(t)
	applyForReal(t, c, ofKinds(build(t, "cert-manager"), "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"))

	ca := newCA(t)
	dir := t.TempDir()
	pair, first := ca.pair(t, "first")
	g := startGuards(t, tutorial.GuardOptions{
		Binary: bin, Kubeconfig: impersonatingKubeconfig(t, c, filepath.Join(dir, "kubeconfig"), serviceAccount), Dir: dir,
		// Served from --cert-dir with --cert-rotation=false, as the overlay runs it.
		Certificate: pair,
		Args:        []string{"--cert-rotation=false"},
	})[0]
	if served := servedCert(t, g.Port, ca.pool); !served.Equal(first) {
		t.Fatalf("serving %s, want the certificate in --cert-dir", served.Subject.CommonName)
	}

	renewed := ca.writePair(t, g.CertDir, "renewed")
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		if g.Exited() {
			return false, errors.New("the guard exited")
		}
		return servedCert(t, g.Port, ca.pool).Equal(renewed), nil
	})
	if err != nil {
		t.Fatalf("the replaced certificate was not served: %v", err)
	}
	if err := g.Stop(); err != nil {
		t.Errorf("stopping the guard: %v", err)
	} else if err := g.Wait(t.Context()); err != nil {
		t.Errorf("the guard exited after SIGTERM with %v, want status 0", err)
	}
}

// TestRotationNeedsItsSecret: with rotation on and no Secret, the guard
// stops at once and says what to do.
func TestRotationNeedsItsSecret(t *testing.T) {
	c := sharedCluster(t)
	bin := guardBinary(t)
	applyForReal(t, c, ofKinds(build(t, "default"), "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"))

	dir := t.TempDir()
	_, err := tutorial.StartGuard(t.Context(), tutorial.GuardOptions{
		Binary: bin, Kubeconfig: impersonatingKubeconfig(t, c, filepath.Join(dir, "kubeconfig"), serviceAccount), Dir: dir,
		RotateCertificate: true,
		Args:              []string{"--cert-secret-name=no-such-secret"},
	})
	var exit *exec.ExitError
	switch {
	case err == nil:
		t.Fatal("the guard became ready without its certificate Secret")
	case !errors.As(err, &exit):
		t.Fatalf("the guard did not exit without its certificate Secret: %v", err)
	}
	log, rerr := os.ReadFile(filepath.Join(dir, "cutover-guard.log"))
	if rerr != nil {
		t.Fatal(rerr)
	}
	if !strings.Contains(string(log), "cutover-guard/no-such-secret does not exist") || !strings.Contains(string(log), "--cert-rotation=false") {
		t.Errorf("the log does not say the Secret is missing and what to do:\n%s", tail.Lines(string(log), 10))
	}
}

// testCA issues serving certificates for localhost.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// pair issues a serving key pair for localhost.
func (ca *testCA) pair(t *testing.T, cn string) (*testcert.Bundle, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testcert.Bundle{
		CAPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}),
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, cert
}

// writePair writes a new serving key pair for localhost into dir (each file
// replaced atomically, the key first) and returns its certificate.
func (ca *testCA) writePair(t *testing.T, dir, cn string) *x509.Certificate {
	t.Helper()
	b, cert := ca.pair(t, cn)
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"tls.key", b.KeyPEM},
		{"tls.crt", b.CertPEM},
	} {
		tmp := filepath.Join(dir, "."+f.name+".tmp")
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, f.name)); err != nil {
			t.Fatal(err)
		}
	}
	return cert
}
