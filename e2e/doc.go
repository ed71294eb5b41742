// Package e2e holds the end-to-end tests of phantom-authz: they start real
// Ory Hydra, phantom-authz, the demo API, Envoy (with the shipped
// envoy/envoy.yaml) and Jaeger on free loopback ports and assert what a
// client sees, what Jaeger records and what /metrics counts. Every line
// phantom-authz writes (logs, decision logs) is checked for secrets.
// They also check the shipped docker-compose, Kubernetes and Istio files.
//
// The tools come from `make tools` (.tools/bin) or PATH. Missing tools fail
// the tests, unless PHANTOM_E2E_SKIP_MISSING_TOOLS=1 says to skip them.
//
//	make test                  (installs the tools, then runs everything)
//	go test ./e2e/...          (once the tools are installed)
package e2e
