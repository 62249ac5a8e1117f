package certs

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
)

// ExpiryMetric is the name of the gauge NewExpiryCollector exports.
const ExpiryMetric = "cutover_guard_certificate_expiry_timestamp_seconds"

// expiryCollector reads the serving certificate in a folder at each scrape
// and exports its NotAfter: the file is what the webhook serves in both
// modes (the rotator writes it there, cert-manager or a person put it
// there), so an expiry alert sees a renewal the moment it lands.
type expiryCollector struct {
	dir  string
	desc *prometheus.Desc
}

// NewExpiryCollector exports the NotAfter of dir/tls.crt (its first
// certificate, the leaf) as Unix seconds; while the file is missing or
// unreadable the gauge is absent, which an alert on absent() can catch.
func NewExpiryCollector(dir string) prometheus.Collector {
	return &expiryCollector{dir: dir, desc: prometheus.NewDesc(ExpiryMetric,
		"When the serving certificate in --cert-dir expires, as a Unix timestamp; absent while there is none.", nil, nil)}
}

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	data, err := os.ReadFile(filepath.Join(c.dir, CertName))
	if err != nil {
		return
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(leaf.NotAfter.Unix()))
}
