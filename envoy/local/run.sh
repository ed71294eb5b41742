#!/usr/bin/env bash
# The local stack behind `make run`: Hydra (in memory, with a demo client),
# phantom-authz, the demo API, Envoy and, when `make tools` built it, Jaeger
# (traces from Envoy and phantom-authz, one trace per request), on fixed
# loopback ports. Prints the
# two curl commands to try it, stays in the foreground until Ctrl-C (or until
# one of the processes dies; SIGTERM works too), and stops everything it
# started on the way out.
#
#   make run                  (builds first, then runs this)
#   bash envoy/local/run.sh   (expects bin/phantom-authz, bin/demo-api, .tools/bin/{envoy,hydra}; .tools/bin/jaeger optional)
#
# Ports: Envoy 10000 (admin 9901), phantom-authz 9191 gRPC / 9192 HTTP,
# Hydra 4444 public / 4445 admin, demo API 8080, Jaeger OTLP 4317 gRPC /
# 4318 HTTP, query API and UI 16686 (gRPC 16685), health 13133.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

BIN="${BIN:-$ROOT/bin}"
TOOLS="${TOOLS:-$ROOT/.tools/bin}"
CLIENT_ID="demo-client"
CLIENT_SECRET="demo-secret-0123456789"
HYDRA_PUBLIC=4444
HYDRA_ADMIN=4445
ENVOY_PORT=10000
ENVOY_ADMIN=9901
AUTHZ_GRPC=9191
AUTHZ_HTTP=9192
DEMO_PORT=8080
JAEGER_OTLP_GRPC=4317
JAEGER_OTLP_HTTP=4318
JAEGER_QUERY=16686
JAEGER_QUERY_GRPC=16685
JAEGER_HEALTH=13133

die() { echo "run.sh: $*" >&2; exit 1; }

for exe in "$BIN/phantom-authz" "$BIN/demo-api" "$TOOLS/envoy" "$TOOLS/hydra"; do
  [[ -x "$exe" ]] || die "$exe not found; run \`make run\` (it builds and installs them)"
done
JAEGER=""
[[ -x "$TOOLS/jaeger" ]] && JAEGER="$TOOLS/jaeger"
command -v curl >/dev/null || die "curl not found"
command -v setsid >/dev/null || die "setsid not found (util-linux)"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORTS=($HYDRA_PUBLIC $HYDRA_ADMIN $ENVOY_PORT $ENVOY_ADMIN $AUTHZ_GRPC $AUTHZ_HTTP $DEMO_PORT)
[[ -n "$JAEGER" ]] && PORTS+=($JAEGER_OTLP_GRPC $JAEGER_OTLP_HTTP $JAEGER_QUERY $JAEGER_QUERY_GRPC $JAEGER_HEALTH)
for p in "${PORTS[@]}"; do
  port_busy "$p" && die "port $p on 127.0.0.1 is already in use (another \`make run\`?)"
done

LOGS="$(mktemp -d "${TMPDIR:-/tmp}/phantom-authz-run.XXXXXX")"
# phantom-authz writes the signing key it generates under its TMPDIR: keep it
# here and delete it on the way out (the logs stay).
KEYS="$LOGS/tmp"
mkdir -m 700 "$KEYS"
declare -A PIDS=() # name -> pid (= process group id)
ORDER=()

cleanup() {
  local status=$?
  trap - EXIT INT TERM HUP
  if ((${#ORDER[@]})); then
    echo
    echo "stopping ..."
    local i name
    for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do # reverse start order: Envoy first
      name="${ORDER[i]}"
      kill -TERM -- "-${PIDS[$name]}" 2>/dev/null || true
    done
    for name in "${ORDER[@]}"; do
      for _ in $(seq 50); do kill -0 -- "-${PIDS[$name]}" 2>/dev/null || break; sleep 0.1; done
      kill -KILL -- "-${PIDS[$name]}" 2>/dev/null || true
      wait "${PIDS[$name]}" 2>/dev/null || true
    done
    echo "stopped; logs are in $LOGS"
  fi
  rm -rf "$KEYS"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# start NAME CMD...: runs CMD in the background in a session of its own (so
# Ctrl-C reaches only this script, which then stops it with all its children),
# output to $LOGS/NAME.log. A background child is not a group leader, so
# setsid does not fork: $! is the process and its group id.
start() {
  local name="$1"
  shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  PIDS[$name]=$!
  ORDER+=("$name")
}

# wait_http NAME URL: waits up to 30 s for URL to answer 2xx while NAME lives.
wait_http() {
  local name="$1" url="$2"
  for _ in $(seq 300); do
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    kill -0 "${PIDS[$name]}" 2>/dev/null || { tail -n 30 "$LOGS/$name.log" >&2; die "$name exited during start-up"; }
    sleep 0.1
  done
  tail -n 30 "$LOGS/$name.log" >&2
  die "$name not ready at $url after 30s"
}

echo "logs: $LOGS"

# Jaeger first, so the first requests' spans have somewhere to go. Without
# it, phantom-authz does not trace and Envoy's spans are dropped.
AUTHZ_ENV=()
if [[ -n "$JAEGER" ]]; then
  start jaeger env JAEGER_OTLP_GRPC_ADDR=127.0.0.1:$JAEGER_OTLP_GRPC JAEGER_OTLP_HTTP_ADDR=127.0.0.1:$JAEGER_OTLP_HTTP \
    JAEGER_QUERY_ADDR=127.0.0.1:$JAEGER_QUERY JAEGER_QUERY_GRPC_ADDR=127.0.0.1:$JAEGER_QUERY_GRPC \
    JAEGER_HEALTH_ADDR=127.0.0.1:$JAEGER_HEALTH \
    "$JAEGER" --config "file:$ROOT/envoy/local/jaeger.yaml"
  wait_http jaeger "http://127.0.0.1:$JAEGER_HEALTH/status"
  # The standard variables: OTLP over HTTP to Jaeger; setting the exporter
  # turns tracing on.
  AUTHZ_ENV=(OTEL_TRACES_EXPORTER=otlp OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$JAEGER_OTLP_HTTP")
fi

start hydra env DSN=memory \
  SECRETS_SYSTEM="local-stack-only-not-a-secret-0123456789" \
  URLS_SELF_ISSUER="http://127.0.0.1:$HYDRA_PUBLIC/" \
  SERVE_PUBLIC_HOST=127.0.0.1 SERVE_PUBLIC_PORT=$HYDRA_PUBLIC \
  SERVE_ADMIN_HOST=127.0.0.1 SERVE_ADMIN_PORT=$HYDRA_ADMIN \
  "$TOOLS/hydra" serve all --dev --sqa-opt-out
wait_http hydra "http://127.0.0.1:$HYDRA_ADMIN/health/ready"

# The demo client, created once (Hydra answers 409 to a second create).
if ! curl -fsS -o /dev/null "http://127.0.0.1:$HYDRA_ADMIN/admin/clients/$CLIENT_ID" 2>/dev/null; then
  "$TOOLS/hydra" create client --endpoint "http://127.0.0.1:$HYDRA_ADMIN" \
    --id "$CLIENT_ID" --secret "$CLIENT_SECRET" \
    --grant-type client_credentials --scope read,write --format json >/dev/null \
    || die "could not create the Hydra client $CLIENT_ID"
fi

start demo-api "$BIN/demo-api" -addr "127.0.0.1:$DEMO_PORT"
start phantom-authz env TMPDIR="$KEYS" "${AUTHZ_ENV[@]}" "$BIN/phantom-authz" serve --config envoy/local/phantom-authz.yaml
start envoy "$TOOLS/envoy" -c envoy/envoy.yaml --disable-hot-restart -l warning
wait_http demo-api "http://127.0.0.1:$DEMO_PORT/"
wait_http phantom-authz "http://127.0.0.1:$AUTHZ_HTTP/readyz"
wait_http envoy "http://127.0.0.1:$ENVOY_ADMIN/ready"

if [[ -n "$JAEGER" ]]; then
  TRACES="  Jaeger         http://127.0.0.1:$JAEGER_QUERY/api/traces?service=phantom-authz  (one trace per request, Envoy's and phantom-authz's spans)"
else
  TRACES="  Jaeger         not installed (\`make tools\` builds it): no traces"
fi

cat <<EOF

phantom-authz local stack is up:
  Envoy          http://127.0.0.1:$ENVOY_PORT   (admin http://127.0.0.1:$ENVOY_ADMIN)
  phantom-authz  grpc 127.0.0.1:$AUTHZ_GRPC, http://127.0.0.1:$AUTHZ_HTTP/.well-known/jwks.json
  Hydra          http://127.0.0.1:$HYDRA_PUBLIC (admin http://127.0.0.1:$HYDRA_ADMIN)
  demo API       http://127.0.0.1:$DEMO_PORT (echoes the headers it receives)
  metrics        http://127.0.0.1:$AUTHZ_HTTP/metrics
  decision log   $LOGS/phantom-authz.log (\`bin/phantom-authz audit $LOGS/phantom-authz.log\`)
$TRACES

1. Get an opaque access token from Hydra:

  TOKEN=\$(curl -s -u $CLIENT_ID:$CLIENT_SECRET -d grant_type=client_credentials -d scope=read http://127.0.0.1:$HYDRA_PUBLIC/oauth2/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')

2. Call the API through Envoy; the demo API shows the JWT it received instead:

  curl -s -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:$ENVOY_PORT/api/hello

Ctrl-C stops everything.
EOF

# Stay in the foreground until Ctrl-C, or until one of the processes dies.
set +e
wait -n "${PIDS[@]}"
status=$?
set -e
for name in "${ORDER[@]}"; do
  if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
    echo "run.sh: $name exited (status $status); last lines of $LOGS/$name.log:" >&2
    tail -n 20 "$LOGS/$name.log" >&2
  fi
done
exit 1
