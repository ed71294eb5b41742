// Command bench is phantom-authz's load harness: it builds phantom-authz and
// the no-op reference server (cmd/noop-authz), runs each scenario against
// the real binary under closed-loop gRPC load, and writes the results as a
// Markdown table (e2e/bench/RESULTS.md) that can be compared across commits.
//
//	make bench                      (all scenarios, then through Envoy, ~6 minutes)
//	go run ./e2e/bench -only a,b -window 5s
//	go run ./e2e/bench -only envoy -envoy-window 4s
//
// The load generator is a closed loop: N callers over a few HTTP/2
// connections, each sending a pre-built CheckRequest (pre-encoded, with only
// the token patched in per request) and waiting for the answer before the
// next. Every answer is checked against the expected decision.
//
// What is measured per scenario, over a fixed window after a warm-up:
// requests per second; latency p50, p99 and p99.9; RPC errors; wrong
// decisions; the server process's CPU time per check (utime + stime from
// /proc/PID/stat), which does not depend on how much CPU the client takes;
// and its resident memory (VmRSS from /proc/PID/status).
//
// Every scenario runs side by side with the no-op server (cmd/noop-authz),
// which answers OK with one pre-built header and does nothing else: the
// physical floor of an ext_authz server on the machine. Both servers are up
// at once and the load moves between them slice by slice, so a machine
// busy with something else weighs on both alike. Ratios to the no-op
// server are what the targets are written in.
//
// Scenarios: a, a cached opaque token with the default policy and the JWT
// injected; b, by-value ES256 JWTs (100, each verified once); b1, a new JWT
// every request; c, a new opaque token every request (introspection by the
// harness's own in-process IdP, JWT minted); e, a DPoP-bound token with a
// new proof every request; d, 1,000 tokens cycling for two minutes (RSS).
//
// Then the same job through real Envoy (envoy.go, scenario id "envoy"): the
// shipped envoy/envoy.yaml with one worker thread, in front of an upstream
// in the harness, with the ext_authz filter removed (Envoy alone), with the
// no-op server, and with phantom-authz (a cached opaque token; a new token
// every request). wrk drives a closed loop (requests/s, p50, p99); an
// open-loop generator sends a fixed rate (p99 at 1,000 requests/s); Envoy's
// and the authorizer's CPU per request come from /proc/PID/stat.
package main
