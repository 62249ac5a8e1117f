package main

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cutover-guard/cutover-guard/internal/testcert"
)

func TestClientCAFlags(t *testing.T) {
	dir := t.TempDir()
	ca, err := testcert.NewAuthority()
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.crt")
	notPEM := filepath.Join(dir, "garbage.crt")
	for path, b := range map[string][]byte{caFile: ca.CAPEM, notPEM: []byte("not a certificate")} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for name, tc := range map[string]struct {
		args     []string
		wantAuth bool
		wantCN   string
		wantErr  string
	}{
		"callers are not authenticated by default": {},
		"a CA file turns client authentication on": {args: []string{"--client-ca-file=" + caFile}, wantAuth: true},
		"a common name narrows it":                 {args: []string{"--client-ca-file=" + caFile, "--client-cn=kube-apiserver"}, wantAuth: true, wantCN: "kube-apiserver"},
		"a missing CA file names the flag": {
			args: []string{"--client-ca-file=" + filepath.Join(dir, "missing.crt")}, wantErr: "--client-ca-file: open " + filepath.Join(dir, "missing.crt"),
		},
		"a CA file without a certificate names the flag": {
			args: []string{"--client-ca-file=" + notPEM}, wantErr: "--client-ca-file: " + notPEM + " holds no PEM certificate",
		},
		"a common name without a CA is refused": {
			args: []string{"--client-cn=kube-apiserver"}, wantErr: "--client-cn needs --client-ca-file",
		},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := parseFlags("cutover-guard", tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseFlags() = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.ClientAuth != nil; got != tc.wantAuth {
				t.Fatalf("client authentication = %v, want %v", got, tc.wantAuth)
			}
			if cfg.ClientAuth != nil && cfg.ClientAuth.CommonName != tc.wantCN {
				t.Errorf("common name = %q, want %q", cfg.ClientAuth.CommonName, tc.wantCN)
			}
		})
	}
}

// The TLS configuration the webhook server gets admits a caller whose
// certificate the CA signed (with the accepted name) and fails the
// handshake of every other, before a request is read.
func TestClientAuthHandshake(t *testing.T) {
	ca, err := testcert.NewAuthority()
	if err != nil {
		t.Fatal(err)
	}
	other, err := testcert.NewAuthority()
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CAPEM)
	serving, err := testcert.Issue()
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(serving.CertPEM, serving.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(serving.CAPEM)

	issue := func(a *testcert.Authority, cn string) []tls.Certificate {
		b, err := a.Client(cn)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(b.CertPEM, b.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{c}
	}
	for name, tc := range map[string]struct {
		acceptCN string
		client   []tls.Certificate
		wantOK   bool
	}{
		"a certificate the CA signed is admitted":             {client: issue(ca, "anyone"), wantOK: true},
		"the accepted common name is admitted":                {acceptCN: "kube-apiserver", client: issue(ca, "kube-apiserver"), wantOK: true},
		"no certificate fails the handshake":                  {},
		"a certificate from another CA fails the handshake":   {client: issue(other, "kube-apiserver")},
		"another common name from the CA fails the handshake": {acceptCN: "kube-apiserver", client: issue(ca, "system:anonymous")},
		"no certificate fails even when a name is accepted":   {acceptCN: "kube-apiserver"},
		"another CA fails even with the accepted common name": {acceptCN: "kube-apiserver", client: issue(other, "kube-apiserver")},
	} {
		t.Run(name, func(t *testing.T) {
			reached := false
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }))
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
			(&clientAuth{CAs: pool, CommonName: tc.acceptCN}).TLSConfig(srv.TLS)
			srv.StartTLS()
			defer srv.Close()
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: tc.client}}}
			resp, err := c.Post(srv.URL+"/validate-httproute", "application/json", strings.NewReader("{}"))
			if err == nil {
				_ = resp.Body.Close()
			}
			if tc.wantOK && err != nil {
				t.Fatalf("request failed: %v", err)
			}
			if !tc.wantOK {
				// The alert, or (TLS 1.3, the request already written) a broken pipe.
				if err == nil {
					t.Fatal("request answered, want the handshake to fail")
				}
				if reached {
					t.Error("the handler ran for a caller without a valid certificate")
				}
			}
		})
	}
}
