// Package manifests is the install (kustomize folders: RBAC, Deployment,
// Service, PodDisruptionBudget, webhook configuration) and, for Go, the
// webhook configuration in it, so that the end-to-end tests, the demo and
// the soak register exactly what users install.
package manifests

import (
	_ "embed"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"
)

// webhookYAML is webhook/manifests.yaml, generated from the markers in
// cmd/cutover-guard (make manifests). The overlays add labels and, for
// cert-manager, the CA injection annotation; they leave the webhooks as
// they are (TestEmbeddedWebhookConfigurationIsInstalled).
//
//go:embed webhook/manifests.yaml
var webhookYAML []byte

// WebhookConfiguration returns the ValidatingWebhookConfiguration users
// install: its rules, matchConditions, namespaceSelector, failurePolicy and
// timeoutSeconds, calling the in-cluster Service. Each call decodes a fresh
// copy.
func WebhookConfiguration() (*admissionregistrationv1.ValidatingWebhookConfiguration, error) {
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	if err := yaml.UnmarshalStrict(webhookYAML, &vwc); err != nil {
		return nil, fmt.Errorf("manifests/webhook/manifests.yaml: %w", err)
	}
	if vwc.Kind != "ValidatingWebhookConfiguration" || len(vwc.Webhooks) == 0 {
		return nil, fmt.Errorf("manifests/webhook/manifests.yaml: want a ValidatingWebhookConfiguration with webhooks, got kind %q with %d", vwc.Kind, len(vwc.Webhooks))
	}
	return &vwc, nil
}
