# cutover-guard: `make demo` runs the tutorial's cutover against a local control
# plane; `make test` runs every test. Both need only Go and this repository
# (plus the local PostgreSQL and MariaDB servers for the database tests).

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c

GO        ?= go
BIN       ?= bin
IMAGE     ?= cutover-guard:dev
# `make fuzz` budgets each target in executions, about 10 s of fuzzing on a
# 2-core machine, not in seconds: with a duration, Go 1.26's fuzz coordinator
# can report its own deadline as a failure, "context deadline exceeded" with
# no crasher, when the time runs out while a worker is busy (go.dev/issue/75804,
# fixed in Go 1.27); a loaded machine then fails instead of fuzzing longer.
# FUZZTIME=30s (or 1000x) overrides every target's budget.
FUZZ_TARGETS_BUDGET   ?= 20000x
FUZZ_HANDLER_BUDGET   ?= 3000x
FUZZ_PARSEDSN_BUDGET  ?= 150000x
FUZZ_EXPANDENV_BUDGET ?= 30000x
FUZZ_SMOKE_BUDGET     ?= 30000x
FUZZ_SCHEMA_BUDGET    ?= 30000x
# No minimizing inside `make fuzz`: the fuzzer minimizes every input that
# finds new coverage (O(n^2) runs of the target for an n-byte input). A
# crasher is still written to testdata; minimize it by hand with
# -fuzzminimizetime if it is large.
FUZZFLAGS ?= -fuzzminimizetime=0
SOAK_DURATION ?= 5m
GOLANGCI_LINT_VERSION ?= v2.15.0

# The local control plane (kube-apiserver, kubectl, etcd, kwok, ...) is built
# from pinned Go modules into this folder once, then reused.
export CUTOVER_GUARD_TOOLS ?= $(CURDIR)/.cache/tools

.PHONY: all build plugin plugin-dist test unit fuzz check-fmt vet tools demo demo-gitops lint image manifests verify-manifests bench soak clean

all: build

build: plugin ## the guard binary, static, as the Dockerfile builds it (and the kubectl plugin)
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags="-s -w" -o $(BIN)/cutover-guard ./cmd/cutover-guard

plugin: ## the kubectl plugin: put bin/ on PATH and run `kubectl cutover`
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags="-s -w" -o $(BIN)/kubectl-cutover ./cmd/kubectl-cutover

# The four archives krew installs from, and the krew manifest
# (hack/krew/cutover.yaml) with VERSION and their sha256 filled in.
PLUGIN_PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64
VERSION ?= v0.0.0-dev
plugin-dist: ## kubectl plugin archives for krew and their manifest in bin/dist: make plugin-dist VERSION=v0.1.0
	rm -rf $(BIN)/dist && mkdir -p $(BIN)/dist
	subst='s|$${VERSION}|$(VERSION)|g'; \
	for p in $(PLUGIN_PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; dir=$(BIN)/dist/$$os-$$arch; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -buildvcs=false -ldflags="-s -w" -o $$dir/kubectl-cutover ./cmd/kubectl-cutover; \
	  tgz=$(BIN)/dist/kubectl-cutover_$(VERSION)_$${os}_$${arch}.tar.gz; \
	  cp LICENSE $$dir/LICENSE; \
	  tar -C $$dir -czf $$tgz kubectl-cutover LICENSE; \
	  subst="$$subst;s|\$${SHA256_$${os}_$${arch}}|$$(sha256sum $$tgz | cut -d' ' -f1)|g"; \
	done; \
	sed -e "$$subst" hack/krew/cutover.yaml > $(BIN)/dist/cutover.yaml
	@echo "krew manifest: $(BIN)/dist/cutover.yaml"

tools: ## pinned control-plane binaries for e2e and demo, promtool and helm for the install tests (10-20 minutes cold)
	hack/build-tools.sh

check-fmt:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

unit: ## tests that need no control plane (databases are started by the tests)
	$(GO) test -race -count=1 ./checks/... ./webhook/... ./cmd/... ./certs/... ./internal/...

fuzz: ## every fuzz target, briefly
	$(GO) test -run='^$$' -fuzz='^FuzzTargets$$' -fuzztime=$(or $(FUZZTIME),$(FUZZ_TARGETS_BUDGET)) $(FUZZFLAGS) ./webhook
	$(GO) test -run='^$$' -fuzz='^FuzzHandler$$' -fuzztime=$(or $(FUZZTIME),$(FUZZ_HANDLER_BUDGET)) $(FUZZFLAGS) ./webhook
	$(GO) test -run='^$$' -fuzz='^FuzzParseDSN$$' -fuzztime=$(or $(FUZZTIME),$(FUZZ_PARSEDSN_BUDGET)) $(FUZZFLAGS) ./checks/probe
	$(GO) test -run='^$$' -fuzz='^FuzzExpandEnv$$' -fuzztime=$(or $(FUZZTIME),$(FUZZ_EXPANDENV_BUDGET)) $(FUZZFLAGS) ./checks
	$(GO) test -run='^$$' -fuzz='^FuzzParseSmoke$$' -fuzztime=$(or $(FUZZTIME),$(FUZZ_SMOKE_BUDGET)) $(FUZZFLAGS) ./checks
	$(GO) test -run='^$$' -fuzz='^FuzzParseSchemaSpec$$' -fuzztime=$(or $(FUZZTIME),$(FUZZ_SCHEMA_BUDGET)) $(FUZZFLAGS) ./checks

# CUTOVER_GUARD_TEST_REQUIRED=1 (internal/testenv): a test that finds the
# tools or a database missing fails instead of skipping.
test: check-fmt vet lint tools build ## everything: format, vet, lint, unit, database, e2e and fuzz tests
	CUTOVER_GUARD_TEST_REQUIRED=1 $(GO) test -race -count=1 -timeout=40m ./...
	CUTOVER_GUARD_TEST_REQUIRED=1 $(MAKE) fuzz

demo: tools build ## the tutorial's cutover and rollback, guarded, on a local control plane
	$(GO) run ./e2e/demo

demo-gitops: tools build ## the same release through Flux (source- and kustomize-controller) syncing a Git repository on loopback, guarded
	$(GO) run ./e2e/demo-gitops

bench: build tools ## benchmarks, not part of `make test`: prints a table and updates BENCHMARKS.md; BENCH_QUICK=1 for a short run
	$(GO) run ./bench -guard=$(BIN)/cutover-guard -out=BENCHMARKS.md $(if $(filter-out 0,$(BENCH_QUICK)),-quick)

soak: build tools ## soak run, not part of `make test`: switches and edits while green flaps and its database path fails; exits 1 if an invariant breaks; SOAK_DURATION=10m for longer
	$(GO) run ./soak -guard=$(BIN)/cutover-guard -duration=$(SOAK_DURATION)

lint: ## golangci-lint over the whole repository (part of make test)
	$(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	"$$($(GO) env GOPATH)/bin/golangci-lint" run ./...

image: ## the container image (needs a Docker engine with BuildKit): make image IMAGE=registry.example.com/cutover-guard:v1.0.0
	docker build -t $(IMAGE) .

manifests: ## regenerate RBAC and the webhook configuration in manifests/ from the controller-gen markers
	manifests/generate.sh

verify-manifests: ## fail if manifests/ is stale (also a test in `make test`)
	$(GO) test -count=1 -run '^TestGeneratedManifestsUpToDate$$' ./manifests

clean:
	rm -rf $(BIN)
