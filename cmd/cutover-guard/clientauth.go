package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// clientAuth is who may call the webhook: a client certificate signed by
// one of CAs and, when CommonName is set, issued to that name. A caller
// without one fails the TLS handshake, so its request is never read, let
// alone decided on.
type clientAuth struct {
	CAs        *x509.CertPool
	CommonName string
}

// loadClientCAs reads the PEM CA bundle at path once, at start.
func loadClientCAs(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// TLSConfig requires and verifies the caller's certificate. It applies to
// the webhook server only: /healthz, /readyz and /metrics have their own
// listeners.
func (a *clientAuth) TLSConfig(c *tls.Config) {
	c.ClientCAs = a.CAs
	c.ClientAuth = tls.RequireAndVerifyClientCert
	if a.CommonName == "" {
		return
	}
	want := a.CommonName
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		// RequireAndVerifyClientCert has verified the chain before this runs.
		if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
			return errors.New("no verified client certificate")
		}
		if cn := cs.VerifiedChains[0][0].Subject.CommonName; cn != want {
			return fmt.Errorf("client certificate common name %q is not the one --client-cn accepts", cn)
		}
		return nil
	}
}
