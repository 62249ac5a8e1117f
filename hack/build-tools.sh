#!/usr/bin/env bash
# Builds the pinned local control plane used by the e2e tests:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (k8s.io/kubernetes)
#   etcd (go.etcd.io/etcd/server/v3), kwok (sigs.k8s.io/kwok)
# from the versions pinned in e2e/tools/go.mod, and the install's test tools
#   promtool (github.com/prometheus/prometheus), helm (helm.sh/helm/v4)
# at the versions pinned below, Flux's source-controller and
# kustomize-controller from the wrapper modules in hack/flux, into
#   ${CUTOVER_GUARD_TOOLS:-<repo>/.cache/tools}/bin
# and copies the data files the harness needs next to them:
#   kwok/stages/*.yaml       kwok node and pod stages (from the kwok module)
#   crds/gateway-api/*.yaml  Gateway API standard CRDs (version from the root go.mod)
#   crds/flux/<controller>/*.yaml  Flux's CRDs (from each controller's module)
#
# A binary is rebuilt only when its stamp (pinned versions, go.mod/go.sum of the
# tools module, Go version, flags) changed, so a second run is a no-op.
# Only the Go module proxy is needed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_mod="${repo}/e2e/tools"
tools_dir="${CUTOVER_GUARD_TOOLS:-${repo}/.cache/tools}"
bin_dir="${tools_dir}/bin"
mkdir -p "${bin_dir}"

# One build at a time per tools dir (e.g. `make test` and a developer's shell).
exec 9>"${tools_dir}/.build.lock"
if ! flock -n 9; then
  echo "build-tools: waiting for another build of ${tools_dir} to finish..."
  flock 9
fi

export CGO_ENABLED=0
export GOFLAGS="-buildvcs=false -mod=readonly"

modversion() { (cd "$1" && go list -m -f '{{.Version}}' "$2"); }
moddir() { (cd "$1" && go mod download "$2" && go list -m -f '{{.Dir}}' "$2"); }

k8s_version="$(modversion "${tools_mod}" k8s.io/kubernetes)"
etcd_version="$(modversion "${tools_mod}" go.etcd.io/etcd/server/v3)"
kwok_version="$(modversion "${tools_mod}" sigs.k8s.io/kwok)"
gwapi_version="$(modversion "${repo}" sigs.k8s.io/gateway-api)"
k8s_time="$(cd "${tools_mod}" && go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
go_version="$(go env GOVERSION)"

# v1.36.3 -> major 1, minor 36
k8s_semver="${k8s_version#v}"
k8s_major="${k8s_semver%%.*}"
k8s_minor="${k8s_semver#*.}"
k8s_minor="${k8s_minor%%.*}"

k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X ${pkg}.gitVersion=${k8s_version}"
  k8s_ldflags+=" -X ${pkg}.gitMajor=${k8s_major}"
  k8s_ldflags+=" -X ${pkg}.gitMinor=${k8s_minor}"
  k8s_ldflags+=" -X ${pkg}.gitTreeState=clean"
  k8s_ldflags+=" -X ${pkg}.buildDate=${k8s_time:-1970-01-01T00:00:00Z}"
done
kwok_ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${kwok_version#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${k8s_semver}"
etcd_ldflags="-s -w"

mod_hash="$(cat "${tools_mod}/go.mod" "${tools_mod}/go.sum" | sha256sum | cut -d' ' -f1)"

echo "build-tools: kubernetes ${k8s_version}, etcd ${etcd_version}, kwok ${kwok_version}, gateway-api ${gwapi_version}, ${go_version}"
echo "build-tools: output ${bin_dir}"

total_start=$(date +%s)

# build NAME PACKAGE VERSION LDFLAGS
build() {
  local name="$1" pkg="$2" version="$3" ldflags="$4"
  local out="${bin_dir}/${name}" stamp="${bin_dir}/.${name}.stamp"
  local want="${name} ${pkg} ${version} ${go_version} $(go env GOOS)/$(go env GOARCH) cgo=${CGO_ENABLED} mod=${mod_hash} ldflags=${ldflags}"
  if [[ -x "${out}" && -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
    echo "build-tools: ${name} ${version} up to date"
    return
  fi
  echo "build-tools: building ${name} ${version} (${pkg}) ..."
  local start end
  start=$(date +%s)
  rm -f "${stamp}"
  (cd "${tools_mod}" && go build -trimpath -ldflags "${ldflags}" -o "${out}.tmp" "${pkg}")
  mv -f "${out}.tmp" "${out}"
  printf '%s\n' "${want}" >"${stamp}"
  end=$(date +%s)
  echo "build-tools: built ${name} in $((end - start))s"
}

build etcd ./cmd/etcd "${etcd_version}" "${etcd_ldflags}"
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "${k8s_version}" "${k8s_ldflags}"
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "${k8s_version}" "${k8s_ldflags}"
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "${k8s_version}" "${k8s_ldflags}"
build kubectl k8s.io/kubernetes/cmd/kubectl "${k8s_version}" "${k8s_ldflags}"
build kwok sigs.k8s.io/kwok/cmd/kwok "${kwok_version}" "${kwok_ldflags}"

# The install's test tools (manifests/: the alerts with promtool, the chart
# with helm). Each is built in its own module with `go install PKG@VERSION`,
# not in the tools module: their dependencies would move the control
# plane's. Both modules build with this Go and have no replace directives.
promtool_version=v0.316.0
helm_version=v4.3.1

# install_tool NAME PACKAGE VERSION
install_tool() {
  local name="$1" pkg="$2" version="$3"
  local out="${bin_dir}/${name}" stamp="${bin_dir}/.${name}.stamp"
  local want="${name} ${pkg}@${version} ${go_version} $(go env GOOS)/$(go env GOARCH) cgo=${CGO_ENABLED} ldflags=-s -w"
  if [[ -x "${out}" && -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
    echo "build-tools: ${name} ${version} up to date"
    return
  fi
  echo "build-tools: building ${name} ${version} (${pkg}) ..."
  local start gobin
  start=$(date +%s)
  rm -f "${stamp}"
  gobin="$(mktemp -d "${bin_dir}/.${name}.XXXXXX")"
  # -mod applies to a main module; go install PKG@VERSION has none of ours.
  GOFLAGS=-buildvcs=false GOBIN="${gobin}" go install -trimpath -ldflags "-s -w" "${pkg}@${version}"
  mv -f "${gobin}/${name}" "${out}"
  rm -rf "${gobin}"
  printf '%s\n' "${want}" >"${stamp}"
  echo "build-tools: built ${name} in $(($(date +%s) - start))s"
}

install_tool promtool github.com/prometheus/prometheus/cmd/promtool "${promtool_version}"
install_tool helm helm.sh/helm/v4/cmd/helm "${helm_version}"

# Flux's source-controller and kustomize-controller (e2e/gitops). Each is
# built in a wrapper module of its own, hack/flux/<name>, which pins it and
# carries the replace directives of its go.mod (go install PKG@VERSION
# refuses a module that has them), so that Flux's dependencies move neither
# the control plane's nor the guard's.
flux_build() { # NAME
  local name="$1" mod="${repo}/hack/flux/$1" pkg="github.com/fluxcd/$1"
  local version hash out stamp want start
  version="$(modversion "${mod}" "${pkg}")"
  hash="$(cat "${mod}/go.mod" "${mod}/go.sum" | sha256sum | cut -d' ' -f1)"
  out="${bin_dir}/${name}" stamp="${bin_dir}/.${name}.stamp"
  want="${name} ${pkg} ${version} ${go_version} $(go env GOOS)/$(go env GOARCH) cgo=${CGO_ENABLED} mod=${hash} ldflags=-s -w"
  if [[ -x "${out}" && -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
    echo "build-tools: ${name} ${version} up to date"
  else
    echo "build-tools: building ${name} ${version} (${pkg}, hack/flux/${name}) ..."
    start=$(date +%s)
    rm -f "${stamp}"
    (cd "${mod}" && go build -trimpath -ldflags "-s -w" -o "${out}.tmp" "${pkg}")
    mv -f "${out}.tmp" "${out}"
    printf '%s\n' "${want}" >"${stamp}"
    echo "build-tools: built ${name} in $(($(date +%s) - start))s"
  fi
  copy_files "${tools_dir}/crds/flux/${name}" "$(moddir "${mod}" "${pkg}")"/config/crd/bases/*.yaml
  printf '%s\n' "${version}" >"${tools_dir}/crds/flux/${name}/VERSION"
}

# Data files: cheap, so always refreshed (a version change in a go.mod shows up at once).
copy_files() { # DEST SRC...
  local dest="$1"; shift
  rm -rf "${dest}.tmp"
  mkdir -p "${dest}.tmp"
  cp "$@" "${dest}.tmp/"
  chmod -R u+w "${dest}.tmp"
  rm -rf "${dest}"
  mv "${dest}.tmp" "${dest}"
}

kwok_dir="$(moddir "${tools_mod}" sigs.k8s.io/kwok)"
stage="${kwok_dir}/kustomize/stage"
copy_files "${tools_dir}/kwok/stages" \
  "${stage}/node/fast/node-initialize.yaml" \
  "${stage}/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
  "${stage}/pod/fast/pod-ready.yaml" \
  "${stage}/pod/fast/pod-complete.yaml" \
  "${stage}/pod/fast/pod-delete.yaml"

gwapi_dir="$(moddir "${repo}" sigs.k8s.io/gateway-api)"
copy_files "${tools_dir}/crds/gateway-api" "${gwapi_dir}"/config/crd/standard/gateway.networking.k8s.io_*.yaml
# Not a CRD (a ValidatingAdmissionPolicy guarding CRD upgrades); the harness installs CRDs only.
rm -f "${tools_dir}/crds/gateway-api/gateway.networking.k8s.io_vap_safeupgrades.yaml"
printf '%s\n' "${gwapi_version}" >"${tools_dir}/crds/gateway-api/VERSION"

flux_build source-controller
flux_build kustomize-controller

echo "build-tools: done in $(($(date +%s) - total_start))s"
"${bin_dir}/kubectl" version --client 2>/dev/null | head -n 2 || true
