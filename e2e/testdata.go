// Package e2e holds the end-to-end tests of cutover-guard: the tutorial's
// blue-green workflow run with the real kubectl against a local control plane
// (package cluster) and the real guard binary (package tutorial).
//
// This file only embeds the tutorial's manifests, which the tests and the
// demo (e2e/demo) share; the tests are in package e2e_test.
package e2e

import "embed"

// Tutorial holds the manifests of the blue-green tutorial, as the tutorial
// prints them, under testdata/tutorial: app-blue.yaml, app-green.yaml,
// services.yaml, gateway.yaml and httproute.yaml.
//
//go:embed testdata/tutorial/*.yaml
var Tutorial embed.FS

// TutorialDir is the folder of the manifests inside Tutorial.
const TutorialDir = "testdata/tutorial"
