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
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// TestDisabledRotation runs the image's binary as the cert-manager overlay
// does (--disable-cert-rotation, the certificate folder filled by someone
// else) and checks that it serves those files, and the new pair once they
// are replaced, as the kubelet does when cert-manager renews.
func TestDisabledRotation(t *testing.T) {
	c := sharedCluster(t)
	bin := guardBinary(t)
	applyForReal(t, c, ofKinds(build(t, "cert-manager"), "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"))

	ca := newCA(t)
	dir := t.TempDir()
	certDir := filepath.Join(dir, "certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		t.Fatal(err)
	}
	first := ca.writePair(t, certDir, "first")

	ports := freePorts(t, 3)
	g := startGuard(t, bin, filepath.Join(dir, "cutover-guard.log"),
		"--kubeconfig="+impersonatingKubeconfig(t, c, filepath.Join(dir, "kubeconfig"), serviceAccount),
		"--disable-cert-rotation",
		"--cert-dir="+certDir,
		"--port="+strconv.Itoa(ports[0]),
		"--metrics-bind-address=127.0.0.1:"+strconv.Itoa(ports[1]),
		"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(ports[2]),
	)
	g.waitReady(t, ports[2], time.Minute)
	if served := servedCert(t, ports[0], ca.pool); !served.Equal(first) {
		t.Fatalf("serving %s, want the certificate in --cert-dir", served.Subject.CommonName)
	}

	renewed := ca.writePair(t, certDir, "renewed")
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		if g.exited() {
			return false, errors.New("the guard exited")
		}
		return servedCert(t, ports[0], ca.pool).Equal(renewed), nil
	})
	if err != nil {
		t.Fatalf("the replaced certificate was not served: %v", err)
	}
	if err := g.stop(); err != nil {
		t.Errorf("stopping the guard: %v", err)
	}
}

// TestRotationNeedsItsSecret: with rotation on and no Secret, the guard
// stops at once and says what to do.
func TestRotationNeedsItsSecret(t *testing.T) {
	c := sharedCluster(t)
	bin := guardBinary(t)
	applyForReal(t, c, ofKinds(build(t, "default"), "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"))

	dir := t.TempDir()
	ports := freePorts(t, 3)
	g := startGuard(t, bin, filepath.Join(dir, "cutover-guard.log"),
		"--kubeconfig="+impersonatingKubeconfig(t, c, filepath.Join(dir, "kubeconfig"), serviceAccount),
		"--cert-secret-name=no-such-secret",
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--port="+strconv.Itoa(ports[0]),
		"--metrics-bind-address=127.0.0.1:"+strconv.Itoa(ports[1]),
		"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(ports[2]),
	)
	select {
	case <-g.done:
	case <-time.After(time.Minute):
		t.Fatal("the guard runs without its certificate Secret")
	}
	if g.err == nil {
		t.Error("the guard exited with status 0")
	}
	if log := g.tail(-1); !strings.Contains(log, "cutover-guard/no-such-secret does not exist") || !strings.Contains(log, "--disable-cert-rotation") {
		t.Errorf("the log does not say the Secret is missing and what to do:\n%s", g.tail(10))
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

// writePair writes a new serving key pair for localhost into dir (each file
// replaced atomically, the key first) and returns its certificate.
func (ca *testCA) writePair(t *testing.T, dir, cn string) *x509.Certificate {
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
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"tls.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})},
		{"tls.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})},
	} {
		tmp := filepath.Join(dir, "."+f.name+".tmp")
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, f.name)); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
