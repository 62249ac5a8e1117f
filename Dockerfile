# syntax=docker/dockerfile:1
# cutover-guard: a static binary on distroless, running as nonroot.
#   make image IMAGE=registry.example.com/cutover-guard:v1.0.0
# The `go build` line below is also run by `make test` (manifests package,
# TestImageBinary) in a copy of the build context, to prove the binary is
# static and starts; keep it on one line.

ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/cutover-guard ./cmd/cutover-guard

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cutover-guard /cutover-guard
USER 65532:65532
ENTRYPOINT ["/cutover-guard"]
