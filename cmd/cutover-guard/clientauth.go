package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// clientAuth is who may call the webhook: a client certificate signed by
// one of CAs and, when CommonName is set, issued to that name. A caller
// without one fails the TLS handshake, so its request is never read, let
// alone decided on.
type clientAuth struct {
	CAs        *x509.CertPool
	CommonName string
	// self is the readiness check's own client certificate (see
	// addSelfCheck); nil until then.
	self *selfCert
}

// selfCert is a client certificate only this process holds: its key is
// made at start and never leaves memory.
type selfCert struct {
	pair tls.Certificate
	leaf *x509.Certificate
}

// addSelfCheck makes the certificate with which the guard's readiness check
// completes the handshake the webhook port requires. Without one, every
// probe of /readyz would fail that handshake and the server would log it as
// an error ("http: TLS handshake error ... certificate required"), every
// five seconds on every replica, burying the failures that matter.
func (a *clientAuth) addSelfCheck() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("readiness client key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "cutover-guard readiness check"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		// Not a CA: it verifies only itself, and signs nothing.
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("readiness client certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	a.self = &selfCert{pair: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf: leaf}
	return nil
}

// readyChecker is the readiness check of a webhook server on port that
// requires client certificates: one HTTPS request with the process's own
// certificate, answered (with any status) once the server serves. It
// replaces controller-runtime's StartedChecker, whose handshake has no
// client certificate.
func (a *clientAuth) readyChecker(port int) func(*http.Request) error {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		// The guard talking to itself: what counts is that the port
		// serves, as in StartedChecker; the certificate is checked by
		// the certificate bootstrap.
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{a.self.pair}}, //nolint:gosec // see above
		DisableKeepAlives: true,
	}}
	url := fmt.Sprintf("https://%s/readyz", net.JoinHostPort("localhost", strconv.Itoa(port)))
	return func(r *http.Request) error {
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("webhook server is not reachable: %w", err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return resp.Body.Close()
	}
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
	var self *x509.Certificate
	if a.self != nil {
		c.ClientCAs = a.CAs.Clone()
		c.ClientCAs.AddCert(a.self.leaf)
		self = a.self.leaf
	}
	if a.CommonName == "" {
		return
	}
	want := a.CommonName
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		// RequireAndVerifyClientCert has verified the chain before this runs.
		if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
			return errors.New("no verified client certificate")
		}
		if self != nil && cs.VerifiedChains[0][0].Equal(self) {
			return nil // the readiness check
		}
		if cn := cs.VerifiedChains[0][0].Subject.CommonName; cn != want {
			return fmt.Errorf("client certificate common name %q is not the one --client-cn accepts", cn)
		}
		return nil
	}
}
