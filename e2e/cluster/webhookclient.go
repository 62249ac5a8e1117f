package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/cutover-guard/cutover-guard/internal/testcert"
)

// WebhookClientCN is the Common Name of the client certificate
// kube-apiserver presents to webhooks with Options.WebhookClientCert.
const WebhookClientCN = "kube-apiserver"

// webhookClientFiles issues the API server's webhook client certificate
// from a throwaway CA into dir and writes the AdmissionConfiguration that
// makes it present the certificate to every webhook it calls. It returns
// the AdmissionConfiguration's path, for --admission-control-config-file.
//
// The kubeconfig's user is "*": a URL webhook's user name is its host and
// port (127.0.0.1:PORT), and the guard's port is chosen after the API
// server has read the file.
func (c *Cluster) webhookClientFiles(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	ca, err := testcert.NewAuthority()
	if err != nil {
		return "", err
	}
	b, err := ca.Client(WebhookClientCN)
	if err != nil {
		return "", err
	}
	if err := b.WriteKeyPair(dir); err != nil {
		return "", err
	}
	if c.WebhookClientCAFile, err = b.WriteCA(dir); err != nil {
		return "", err
	}
	c.WebhookClientCertFile, c.WebhookClientKeyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")

	kubeconfig := filepath.Join(dir, "webhook-kubeconfig.yaml")
	if err := os.WriteFile(kubeconfig, fmt.Appendf(nil, `apiVersion: v1
kind: Config
users:
- name: "*"
  user:
    client-certificate: %s
    client-key: %s
`, strconv.Quote(c.WebhookClientCertFile), strconv.Quote(c.WebhookClientKeyFile)), 0o600); err != nil {
		return "", err
	}
	admission := filepath.Join(dir, "admission-configuration.yaml")
	err = os.WriteFile(admission, fmt.Appendf(nil, `apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: ValidatingAdmissionWebhook
  configuration:
    apiVersion: apiserver.config.k8s.io/v1
    kind: WebhookAdmissionConfiguration
    kubeConfigFile: %s
`, strconv.Quote(kubeconfig)), 0o600)
	return admission, err
}
