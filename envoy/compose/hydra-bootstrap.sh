#!/bin/sh
# Creates the demo OAuth client in Hydra once (docker-compose.yaml's
# hydra-bootstrap service; the oryd/hydra image is Alpine, so this is POSIX sh).
# Same client as the local stack (envoy/local/run.sh).
set -eu
endpoint="${HYDRA_ADMIN_URL:-http://hydra:4445}"
if hydra get oauth2-client demo-client --endpoint "$endpoint" >/dev/null 2>&1; then
  echo "hydra-bootstrap: demo-client already exists"
  exit 0
fi
hydra create client --endpoint "$endpoint" \
  --id demo-client --secret demo-secret-0123456789 \
  --grant-type client_credentials --scope read,write --format json
echo "hydra-bootstrap: demo-client created"
