package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
)

// The faults, with the real binary: what Envoy gets back (fail closed),
// what /metrics counts, what the log says, and recovery once the fault
// ends. The OAuth server is a stand-in in the test process, so it can go
// down and come back on the same address, or misbehave; each test is a
// few seconds.

// fakeIdP is an RFC 7662 introspection endpoint: every token is active
// with scope read (the default policy lets GET /api/accounts/… through).
type fakeIdP struct {
	addr  string
	mode  atomic.Value // "ok", "500", "hang"
	srv   *httptest.Server
	calls atomic.Int64
}

func startFakeIdP(t *testing.T) *fakeIdP {
	t.Helper()
	f := &fakeIdP{}
	f.mode.Store("ok")
	f.up(t)
	t.Cleanup(f.down)
	return f
}

func (f *fakeIdP) url() string { return "http://" + f.addr + "/introspect" }

// up serves on the address it had before (a restart), or a new one.
func (f *fakeIdP) up(t *testing.T) {
	t.Helper()
	addr := cmpOr(f.addr, "127.0.0.1:0")
	var lis net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if lis, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	f.addr = lis.Addr().String()
	f.srv = &httptest.Server{Listener: lis, Config: &http.Server{Handler: http.HandlerFunc(f.serve)}}
	f.srv.Start()
}

// down stops it: connections are refused until up.
func (f *fakeIdP) down() {
	if f.srv != nil {
		f.srv.CloseClientConnections()
		f.srv.Close()
		f.srv = nil
	}
}

func (f *fakeIdP) serve(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	switch f.mode.Load() {
	case "500":
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	case "hang": // accepts, never answers: the caller's timeout ends it
		// The body read, the server watches the connection and cancels
		// the request's context when phantom-authz gives up and closes it.
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"active": true, "scope": "read", "client_id": "web-app", "sub": "user-42",
		"exp": time.Now().Add(time.Hour).Unix()})
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// faultCheck sends one CheckRequest and returns the HTTP status Envoy
// would answer: 200 for OK, else the denial's.
func faultCheck(t *testing.T, client authv3.AuthorizationClient, req *authv3.CheckRequest) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := client.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if resp.GetStatus().GetCode() == int32(code.Code_OK) {
		return http.StatusOK
	}
	d := resp.GetDeniedResponse()
	var ct string
	for _, h := range d.GetHeaders() {
		if strings.EqualFold(h.GetHeader().GetKey(), "content-type") {
			ct = h.GetHeader().GetValue()
		}
	}
	if ct != "application/problem+json" {
		t.Errorf("denial content-type %q, want application/problem+json", ct)
	}
	return int(d.GetStatus().GetCode())
}

// logMsgCount counts phantom-authz's JSON log lines whose msg contains msg.
func logMsgCount(t *testing.T, p *process, msg string) int {
	t.Helper()
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		var rec struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && strings.Contains(rec.Msg, msg) {
			n++
		}
	}
	return n
}

// The OAuth server goes down: new tokens are denied 503 (cached ones still
// pass); after three failures the breaker opens and denies at once without
// calling; the server comes back on the same address and, after the
// cool-down, new tokens pass again. /metrics and the log follow each step.
func TestFaultsOAuthDownE2E(t *testing.T) {
	t.Parallel()
	needBinaries(t)
	idp := startFakeIdP(t)
	a := startAuthz(t, nil, authzOptions{introspectionURL: idp.url(), set: map[string]any{
		"introspection.timeout":         "500ms",
		"introspection.circuit_breaker": map[string]any{"failures": 3, "cooldown": "1s"},
	}})
	client := dialAuthz(t, a.grpcAddr)
	get := func(tok string) int {
		return faultCheck(t, client, checkRequest("GET", "/api/accounts/1", "Bearer "+tok))
	}
	if s := get("cached-token"); s != http.StatusOK {
		t.Fatalf("before the outage: %d", s)
	}
	before := scrape(t, a.httpURL)

	idp.down()
	for i := range 3 {
		if s := get(fmt.Sprintf("new-%d", i)); s != http.StatusServiceUnavailable {
			t.Fatalf("a new token with the OAuth server down: %d, want 503", s)
		}
	}
	start := time.Now()
	for i := range 10 {
		if s := get(fmt.Sprintf("open-%d", i)); s != http.StatusServiceUnavailable {
			t.Fatalf("a new token with the breaker open: %d, want 503", s)
		}
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("10 checks with the breaker open took %s; they should not wait", took)
	}
	if s := get("cached-token"); s != http.StatusOK {
		t.Errorf("the cached token during the outage: %d, want 200", s)
	}
	during := scrape(t, a.httpURL)
	moved := func(m map[string]float64, name string) float64 { return m[name] - before[name] }
	for name, want := range map[string]float64{
		`phantom_authz_checks_total{decision=deny,dry_run=false,status=503}`:              13,
		`phantom_authz_introspections_total{outcome=failed}`:                              3,
		`phantom_authz_introspection_rejected_total{reason=circuit_open}`:                 10,
		`phantom_authz_introspection_breaker_transitions_total{from=closed,to=open}`:      1,
		`phantom_authz_introspection_breaker_state{}`:                                     2,
		`phantom_authz_checks_total{decision=allow,dry_run=false,status=200}`:             1,
		`phantom_authz_introspection_in_flight{}`:                                         0,
		`phantom_authz_introspection_rejected_total{reason=saturated}`:                    0,
		`phantom_authz_introspection_breaker_transitions_total{from=half-open,to=open}`:   0,
		`phantom_authz_introspection_breaker_transitions_total{from=half-open,to=closed}`: 0,
	} {
		got := during[name]
		if strings.Contains(name, "_total") {
			got = moved(during, name)
		}
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if n := logMsgCount(t, a.process, "token: introspection failed"); n != 3 {
		t.Errorf("%d introspection-failed log lines, want 3 (refusals are not logged one by one)", n)
	}
	if n := logMsgCount(t, a.process, "circuit breaker open"); n != 1 {
		t.Errorf("%d breaker-open log lines, want 1", n)
	}

	idp.up(t)
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; get(fmt.Sprintf("back-%d", i)) != http.StatusOK; i++ {
		if time.Now().After(deadline) {
			t.Fatal("new tokens still denied 10s after the OAuth server came back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	after := scrape(t, a.httpURL)
	if got := moved(after, `phantom_authz_introspection_breaker_transitions_total{from=half-open,to=closed}`); got != 1 {
		t.Errorf("breaker half-open→closed moved by %v, want 1", got)
	}
	if got := after[`phantom_authz_introspection_breaker_state{}`]; got != 0 {
		t.Errorf("breaker state %v after recovery, want 0", got)
	}
	if n := logMsgCount(t, a.process, "circuit breaker closed"); n != 1 {
		t.Errorf("%d breaker-closed log lines, want 1", n)
	}
}

// slowPolicy allows active tokens; /slow evaluates for seconds first.
const slowPolicy = `package envoy.authz

default allow := false

allow if {
	input.token.active
	input.attributes.request.http.path != "/slow"
}

allow if {
	input.token.active
	input.attributes.request.http.path == "/slow"
	count([x | some a in numbers.range(1, 3000); some b in numbers.range(1, 3000); x := a * b]) > 0
}
`

func writePolicyFile(t *testing.T, dir, content string) {
	t.Helper()
	tmp := filepath.Join(dir, ".policy.rego.tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "policy.rego")); err != nil {
		t.Fatal(err)
	}
}

// waitMetric polls /metrics until name reaches at least want.
func waitMetric(t *testing.T, httpURL, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for scrape(t, httpURL)[name] < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not reach %v within 10s", name, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A policy that evaluates too long is stopped at policy.eval_timeout (503);
// a policy file replaced by a broken one is refused and the last good set
// keeps deciding; a body over policy.max_body_bytes is a 413. Each is
// counted on /metrics and logged; a fixed policy file is served again.
func TestFaultsPolicyE2E(t *testing.T) {
	t.Parallel()
	needBinaries(t)
	idp := startFakeIdP(t)
	dir := t.TempDir()
	writePolicyFile(t, dir, slowPolicy)
	a := startAuthz(t, nil, authzOptions{introspectionURL: idp.url(), policyDir: dir, set: map[string]any{
		"policy.eval_timeout":   "50ms",
		"policy.max_body_bytes": 1024,
		"policy.poll_interval":  "100ms",
	}})
	client := dialAuthz(t, a.grpcAddr)
	get := func(path string) int { return faultCheck(t, client, checkRequest("GET", path, "Bearer tok")) }

	if s := get("/api"); s != http.StatusOK {
		t.Fatalf("/api: %d", s)
	}
	start := time.Now()
	if s := get("/slow"); s != http.StatusServiceUnavailable {
		t.Fatalf("/slow: %d, want 503 (evaluation deadline)", s)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("/slow took %s with a 50ms deadline", took)
	}
	m := scrape(t, a.httpURL)
	if got := m[`phantom_authz_policy_eval_timeouts_total{}`]; got != 1 {
		t.Errorf("policy_eval_timeouts_total = %v, want 1", got)
	}
	if n := logMsgCount(t, a.process, "denied"); n < 1 || !strings.Contains(a.tail(200), "policy.eval_timeout") {
		t.Errorf("no denial log line naming policy.eval_timeout:\n%s", a.tail(20))
	}

	// An oversized body: 413 before anything else.
	req := checkRequest("POST", "/api", "Bearer tok")
	req.Attributes.Request.Http.Body = strings.Repeat("x", 2048)
	if s := faultCheck(t, client, req); s != http.StatusRequestEntityTooLarge {
		t.Errorf("a 2 KiB body with max_body_bytes 1024: %d, want 413", s)
	}

	// A broken file: refused, the last good set serves.
	writePolicyFile(t, dir, "package envoy.authz\n\nallow if {\n")
	waitMetric(t, a.httpURL, `phantom_authz_policy_reloads_total{outcome=failed}`, 1)
	if s := get("/api"); s != http.StatusOK {
		t.Errorf("/api with a broken policy file: %d, want 200 (last good set)", s)
	}
	if !strings.Contains(a.tail(200), "policy.rego:") {
		t.Errorf("the refused reload is not logged with file and line:\n%s", a.tail(20))
	}

	// Fixed: served.
	writePolicyFile(t, dir, "package envoy.authz\n\nallow if input.token.active\n")
	waitMetric(t, a.httpURL, `phantom_authz_policy_reloads_total{outcome=ok}`, 1)
	if s := get("/slow"); s != http.StatusOK {
		t.Errorf("/slow with the fixed policy: %d, want 200", s)
	}
}

// A signing key file that cannot be read stops `serve` at start: a
// non-zero exit and one line naming the configuration key and the file,
// no panic, no stack.
func TestServeSigningKeyUnreadable(t *testing.T) {
	t.Parallel()
	needBinaries(t)
	dir := t.TempDir()
	cases := map[string]string{
		"missing":   filepath.Join(dir, "missing.pem"),
		"directory": dir,
	}
	if os.Geteuid() != 0 { // root reads a file whatever its mode
		unreadable := filepath.Join(dir, "key.pem")
		if err := os.WriteFile(unreadable, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o000); err != nil {
			t.Fatal(err)
		}
		cases["mode 000"] = unreadable
	}
	for name, keyFile := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := writeAuthzConfig(t, freePort(t), freePort(t), "http://127.0.0.1:1/unused", authzOptions{
				set: map[string]any{"mint.signing_key_file": keyFile}})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bins.authz, "serve", "--config", cfg)
			var stderr bytes.Buffer
			cmd.Stderr, cmd.Stdout = &stderr, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 || ctx.Err() != nil {
				t.Fatalf("exit: %v, want a non-zero status at start; output:\n%s", err, stderr.String())
			}
			out := strings.TrimSpace(stderr.String())
			if strings.Count(out, "\n") != 0 {
				t.Errorf("output is %d lines, want one:\n%s", strings.Count(out, "\n")+1, out)
			}
			for _, want := range []string{"signing_key_file", keyFile} {
				if !strings.Contains(out, want) {
					t.Errorf("output %q does not name %s", out, want)
				}
			}
			for _, bad := range []string{"panic", "goroutine ", ".go:"} {
				if strings.Contains(out, bad) {
					t.Errorf("output %q has %q", out, bad)
				}
			}
		})
	}
}
