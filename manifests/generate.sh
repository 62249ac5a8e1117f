#!/usr/bin/env bash
# Generates the RBAC and webhook configuration from the controller-gen markers
# in cmd/cutover-guard (the guard) and certs (the certificate rotator), into
# the manifests folder or, given a folder, there (the staleness test compares
# the two). Needs only Go: controller-gen is run at a pinned version.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-${repo}/manifests}"
version="${CONTROLLER_TOOLS_VERSION:-v0.23.0}"
cd "${repo}"
gen() { go run "sigs.k8s.io/controller-tools/cmd/controller-gen@${version}" "$@"; }
gen rbac:roleName=cutover-guard webhook paths=./cmd/cutover-guard \
  output:rbac:dir="${out}/rbac" output:webhook:dir="${out}/webhook"
gen rbac:roleName=cutover-guard-cert-rotator paths=./certs output:rbac:dir="${out}/rotator"
