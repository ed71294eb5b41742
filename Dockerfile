# syntax=docker/dockerfile:1
# phantom-authz: a static binary on distroless, running as non-root.
#
#   docker build -t phantom-authz .                      (the server; the default target)
#   docker build --target demo-api -t demo-api .         (the echo upstream of docker-compose.yaml)
#
# The image carries the default policies at /etc/phantom-authz/policies; mount
# the configuration at /etc/phantom-authz/config.yaml (docker-compose.yaml and
# envoy/kubernetes/ do).

ARG GO_VERSION=1.26

# ---------------------------------------------------------------- build
FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so a code change does not re-download them.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
# CGO off: a fully static binary that runs on distroless/static (no libc).
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/phantom-authz ./cmd/phantom-authz && \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" \
      -o /out/demo-api ./cmd/demo-api

# ---------------------------------------------------------------- demo-api
FROM gcr.io/distroless/static-debian12:nonroot AS demo-api
COPY --from=build /out/demo-api /demo-api
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/demo-api"]
CMD ["-addr", "0.0.0.0:8080"]

# ---------------------------------------------------------------- phantom-authz (default target: last)
FROM gcr.io/distroless/static-debian12:nonroot AS phantom-authz
COPY --from=build /out/phantom-authz /phantom-authz
COPY policies/ /etc/phantom-authz/policies/
# 65532 is distroless's nonroot user; the process never needs root (ports
# 9191/9192 are above 1024).
USER nonroot:nonroot
# 9191 ext_authz gRPC, 9192 health/readiness/JWKS HTTP.
EXPOSE 9191 9192
ENTRYPOINT ["/phantom-authz"]
CMD ["serve", "--config", "/etc/phantom-authz/config.yaml"]
