package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"time"
)

// Authority is a throwaway CA that issues client certificates, for a
// server that authenticates its callers.
type Authority struct {
	// CAPEM is the CA certificate, for the server's client CA bundle.
	CAPEM []byte
	cert  *x509.Certificate
	key   *ecdsa.PrivateKey
}

// NewAuthority creates a CA valid for a week from an hour ago.
func NewAuthority() (*Authority, error) {
	der, cert, key, err := newCA("cutover-guard throwaway client CA")
	if err != nil {
		return nil, err
	}
	return &Authority{CAPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert: cert, key: key}, nil
}

// Client issues a client certificate (ExtKeyUsageClientAuth) for
// commonName; the Bundle's CAPEM is a's.
func (a *Authority) Client(commonName string) (*Bundle, error) {
	now := time.Now()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Bundle{
		CAPEM:   a.CAPEM,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// WriteCA writes the CA certificate to ca.crt in dir and returns its path.
func (b *Bundle) WriteCA(dir string) (string, error) {
	path := filepath.Join(dir, "ca.crt")
	return path, os.WriteFile(path, b.CAPEM, 0o644)
}
