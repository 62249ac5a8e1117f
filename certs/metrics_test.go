package certs

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cutover-guard/cutover-guard/internal/testcert"
)

func TestExpiryCollector(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewExpiryCollector(dir))
	if n, err := testutil.GatherAndCount(reg, ExpiryMetric); err != nil || n != 0 {
		t.Errorf("no certificate: %d samples, %v; want none", n, err)
	}

	b, err := testcert.Issue()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.WriteKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b.CertPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.NewReader("# HELP " + ExpiryMetric + " When the serving certificate in --cert-dir expires, as a Unix timestamp; absent while there is none.\n" +
		"# TYPE " + ExpiryMetric + " gauge\n" + ExpiryMetric + " " + strconv.FormatInt(leaf.NotAfter.Unix(), 10) + "\n")
	if err := testutil.GatherAndCompare(reg, want, ExpiryMetric); err != nil {
		t.Error(err)
	}

	if err := os.WriteFile(filepath.Join(dir, CertName), []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, ExpiryMetric); err != nil || n != 0 {
		t.Errorf("garbage in tls.crt: %d samples, %v; want none", n, err)
	}
}
