package authz_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	jwxjws "github.com/lestrrat-go/jwx/v3/jws"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/internal/logtest"
	"github.com/phantom-authz/phantom-authz/authz/internal/metrictest"
	"github.com/phantom-authz/phantom-authz/authz/policy"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// The fault tests run the real stages (resolver, policy engine) against
// real HTTP servers and real files, through the engine, and check what an
// operator and a client see for each fault: the answer (fail closed), a
// metric, a log line, and recovery once the fault ends.

// faultPolicy allows any active token; /slow iterates over 9 million pairs
// (seconds of evaluation) first.
const faultPolicy = `package envoy.authz

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

// faultStack is the engine with the real resolver and policy engine, one
// logger and one meter for all of them.
type faultStack struct {
	engine    *authz.Engine
	resolver  *token.Resolver
	policy    *policy.Engine
	policyDir string
	logs      *logtest.Buffer
	metrics   *metrictest.Reader
}

type faultOptions struct {
	introspection *token.IntrospectionConfig
	issuers       []token.IssuerConfig
	now           func() time.Time
	evalTimeout   time.Duration
	maxBodyBytes  int
}

func newFaultStack(t *testing.T, o faultOptions) *faultStack {
	t.Helper()
	s := &faultStack{policyDir: t.TempDir(), logs: &logtest.Buffer{}, metrics: metrictest.New(t)}
	writePolicy(t, s.policyDir, faultPolicy)
	log := slog.New(slog.NewJSONHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	s.policy, err = policy.New(policy.Config{Dir: s.policyDir, Logger: log, PollInterval: 20 * time.Millisecond, EvalTimeout: o.evalTimeout})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.policy.Watch(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	s.resolver, err = token.New(token.Config{
		Introspection: o.introspection,
		Issuers:       o.issuers,
		Prepare:       s.policy.PrepareToken,
		Logger:        log,
		Meter:         s.metrics.Meter(),
		Now:           o.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.resolver.Close)
	s.engine, err = authz.New(authz.Config{Resolver: s.resolver, Decider: s.policy, Logger: log, Meter: s.metrics.Meter(),
		MaxBodyBytes: o.maxBodyBytes})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writePolicy replaces policy.rego atomically, as a deployment does.
func writePolicy(t *testing.T, dir, content string) {
	t.Helper()
	tmp := filepath.Join(dir, ".policy.rego.tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "policy.rego")); err != nil {
		t.Fatal(err)
	}
}

func (s *faultStack) check(path, tok string) authz.Decision {
	return s.engine.Check(context.Background(), &authz.Request{Method: "GET", Path: path, Host: "api.example", Scheme: "https",
		Headers: map[string]string{"authorization": "Bearer " + tok}})
}

// metric is the value of the named int64 counter or gauge, or the count of
// the named histogram, over the data points whose attributes include attrs.
func (s *faultStack) metric(t *testing.T, name string, attrs ...string) int64 {
	t.Helper()
	return s.metrics.Value(t, name, attrs...)
}

// logLine returns the first JSON log line whose msg contains msg and
// whose text contains every one of want, or fails.
func (s *faultStack) logLine(t *testing.T, msg string, want ...string) map[string]any {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(s.logs.String()))
	sc.Buffer(nil, 1<<20)
next:
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue
		}
		if m, _ := rec["msg"].(string); !strings.Contains(m, msg) {
			continue
		}
		for _, w := range want {
			if !strings.Contains(sc.Text(), w) {
				continue next
			}
		}
		return rec
	}
	t.Fatalf("no log line %q with %q among:\n%s", msg, want, s.logs.String())
	return nil
}

// logCount counts the log lines whose msg contains msg.
func (s *faultStack) logCount(t *testing.T, msg string) int {
	t.Helper()
	n := 0
	for _, line := range strings.Split(s.logs.String(), "\n") {
		var rec struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && strings.Contains(rec.Msg, msg) {
			n++
		}
	}
	return n
}

// wantDenied checks a fail-closed denial: the status, the reason and the
// problem+json body a client gets.
func wantDenied(t *testing.T, d authz.Decision, status int, reason string) {
	t.Helper()
	if d.Allowed || d.Status != status || d.Reason != reason {
		t.Fatalf("decision allowed=%v status=%d reason=%q, want a %d %s denial", d.Allowed, d.Status, d.Reason, status, reason)
	}
	if header(d, "content-type") != "application/problem+json" {
		t.Errorf("content-type %q, want application/problem+json", header(d, "content-type"))
	}
	var p struct {
		Status int    `json:"status"`
		Title  string `json:"title"`
	}
	if err := json.Unmarshal([]byte(d.Body), &p); err != nil || p.Status != status || p.Title == "" {
		t.Errorf("body %q is not a problem+json of status %d", d.Body, status)
	}
}

func wantAllowed(t *testing.T, d authz.Decision, what string) {
	t.Helper()
	if !d.Allowed {
		t.Fatalf("%s: denied %d %s (%s), want allowed", what, d.Status, d.Reason, d.Detail)
	}
}

// ---------------------------------------------------------------- OAuth server faults

// fakeOAuth is an introspection endpoint on a fixed loopback address that
// can misbehave in each way, and go down and come back on the same
// address.
type fakeOAuth struct {
	addr  string
	mode  atomic.Value // "ok", "slow", "500", "html", "midbody"
	srv   *httptest.Server
	calls atomic.Int64
}

func startFakeOAuth(t *testing.T) *fakeOAuth {
	t.Helper()
	f := &fakeOAuth{}
	f.mode.Store("ok")
	f.up(t)
	t.Cleanup(f.down)
	return f
}

func (f *fakeOAuth) up(t *testing.T) {
	t.Helper()
	addr := f.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lis net.Listener
	var err error
	// The address was just freed: retry briefly should the kernel hold it.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
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

func (f *fakeOAuth) down() {
	if f.srv != nil {
		f.srv.CloseClientConnections()
		f.srv.Close()
		f.srv = nil
	}
}

func (f *fakeOAuth) serve(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	switch f.mode.Load() {
	case "slow":
		_, _ = io.Copy(io.Discard, r.Body) // so the server sees the client give up
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
		return
	case "500":
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	case "html":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<html><body>Maintenance</body></html>"))
		return
	case "midbody":
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"active\":tr")
		_ = buf.Flush()
		_ = conn.Close()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"active": true, "sub": "alice", "client_id": "web", "scope": "read",
		"exp": time.Now().Add(time.Hour).Unix()})
}

func (f *fakeOAuth) config() *token.IntrospectionConfig {
	return &token.IntrospectionConfig{Endpoint: "http://" + f.addr + "/introspect", ClientID: "gw", ClientSecret: "gw-secret",
		AllowInsecureHTTP: true, Timeout: 300 * time.Millisecond}
}

// Each way the OAuth server can fail denies new tokens with 503 (never
// allows), counts a failed introspection and a 503 check, logs the cause;
// once the server is well again, the next new token is allowed, and so is
// the token that failed (failures are not cached).
func TestFaultsOAuthServer(t *testing.T) {
	tests := []struct {
		fault string
		// cause is what the warning line says of the failure.
		cause string
	}{
		{"down", "connection refused"},
		{"slow", "deadline exceeded"},
		{"500", "unexpected status 500"},
		{"html", `unexpected content type \"text/html\"`},
		{"midbody", "unexpected EOF"},
	}
	for _, tc := range tests {
		t.Run(tc.fault, func(t *testing.T) {
			t.Parallel()
			f := startFakeOAuth(t)
			s := newFaultStack(t, faultOptions{introspection: f.config()})
			wantAllowed(t, s.check("/api", "before-"+tc.fault), "before the fault")

			if tc.fault == "down" {
				f.down()
			} else {
				f.mode.Store(tc.fault)
			}
			// Twice: a server gone down breaks the pooled connection first
			// (EOF), then refuses new ones.
			for i := range 2 {
				start := time.Now()
				wantDenied(t, s.check("/api", fmt.Sprintf("during-%s-%d", tc.fault, i)), 503, "unavailable")
				if took := time.Since(start); took > 2*time.Second {
					t.Errorf("the denial took %s; introspection.timeout is 300ms", took)
				}
			}
			if got := s.metric(t, "phantom_authz.checks", "decision", "deny", "status", "503"); got != 2 {
				t.Errorf("checks{deny,503} = %d, want 2", got)
			}
			if got := s.metric(t, "phantom_authz.introspection.duration", "outcome", "failed"); got != 2 {
				t.Errorf("introspection.duration{failed} count = %d, want 2", got)
			}
			s.logLine(t, "token: introspection failed", f.addr, tc.cause)
			if rec := s.logLine(t, "denied", `"status":503`); rec["level"] != "ERROR" {
				t.Errorf("the 503 denial is logged at %v, want ERROR", rec["level"])
			}
			if strings.Contains(s.logs.String(), "gw-secret") {
				t.Error("the client secret is in the logs")
			}

			if tc.fault == "down" {
				f.up(t)
			} else {
				f.mode.Store("ok")
			}
			wantAllowed(t, s.check("/api", "after-"+tc.fault), "the next new token after recovery")
			wantAllowed(t, s.check("/api", "during-"+tc.fault+"-0"), "the token that failed, after recovery")
			if got := s.metric(t, "phantom_authz.introspection.duration", "outcome", "active"); got != 3 {
				t.Errorf("introspection.duration{active} count = %d, want 3", got)
			}
		})
	}
}

// After introspection.circuit_breaker.failures failures in a row the
// breaker opens: new tokens are denied at once without calling the server;
// after the cool-down one probe closes it again and tokens are allowed.
func TestFaultsCircuitBreaker(t *testing.T) {
	t.Parallel()
	f := startFakeOAuth(t)
	cfg := f.config()
	cfg.Breaker = token.BreakerConfig{Failures: 3, Cooldown: 300 * time.Millisecond}
	s := newFaultStack(t, faultOptions{introspection: cfg})
	f.mode.Store("500")
	for i := range 3 {
		wantDenied(t, s.check("/api", fmt.Sprintf("fail-%d", i)), 503, "unavailable")
	}
	calls := f.calls.Load()
	start := time.Now()
	for i := range 20 {
		wantDenied(t, s.check("/api", fmt.Sprintf("open-%d", i)), 503, "unavailable")
	}
	if took := time.Since(start); took > 250*time.Millisecond {
		t.Errorf("20 denials with the breaker open took %s; they should not wait", took)
	}
	if got := f.calls.Load(); got != calls {
		t.Errorf("%d calls reached the OAuth server with the breaker open", got-calls)
	}
	if got := s.metric(t, "phantom_authz.introspection.rejected", "reason", "circuit_open"); got != 20 {
		t.Errorf("introspection.rejected{circuit_open} = %d, want 20", got)
	}
	s.logLine(t, "circuit breaker open", f.addr)
	if n := s.logCount(t, "circuit breaker open"); n != 1 {
		t.Errorf("%d log lines for one opening, want 1", n)
	}

	f.mode.Store("ok")
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; !s.check("/api", fmt.Sprintf("heal-%d", i)).Allowed; i++ {
		if time.Now().After(deadline) {
			t.Fatal("not allowed 5s after the OAuth server healed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.logLine(t, "circuit breaker closed", f.addr)
	if got := s.metric(t, "phantom_authz.introspection.breaker.state"); got != 0 {
		t.Errorf("breaker.state = %d, want 0 (closed)", got)
	}
}

// ---------------------------------------------------------------- JWKS faults

// issuerKey is a signing key of the test issuer.
type issuerKey struct {
	kid  string
	priv *ecdsa.PrivateKey
}

func newIssuerKey(t *testing.T, kid string) issuerKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return issuerKey{kid: kid, priv: k}
}

func jwksOf(t *testing.T, keys ...issuerKey) []byte {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		pub, err := jwk.Import(k.priv.Public())
		if err != nil {
			t.Fatal(err)
		}
		_ = pub.Set(jwk.KeyIDKey, k.kid)
		_ = pub.Set(jwk.AlgorithmKey, jwa.ES256())
		_ = set.AddKey(pub)
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const faultIssuer = "https://issuer.faults.test"

// issue signs an access token with k.
func (k issuerKey) issue(t *testing.T, now time.Time, jti string) string {
	t.Helper()
	payload, _ := json.Marshal(map[string]any{"iss": faultIssuer, "aud": "api", "sub": "svc", "scope": "read",
		"jti": jti, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
	hdr := jwxjws.NewHeaders()
	_ = hdr.Set(jwxjws.KeyIDKey, k.kid)
	_ = hdr.Set(jwxjws.TypeKey, "at+jwt") // RFC 9068
	signed, err := jwxjws.Sign(payload, jwxjws.WithKey(jwa.ES256(), k.priv, jwxjws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(signed)
}

// The JWKS endpoint down: tokens signed with a key already fetched still
// verify (the last keys are kept); a token with a new kid fails closed
// (401) and the failed fetch is counted and logged. The endpoint back
// with a rotated set: the new kid verifies after the refresh.
func TestFaultsJWKS(t *testing.T) {
	t.Parallel()
	k1, k2 := newIssuerKey(t, "k1"), newIssuerKey(t, "k2")
	var body atomic.Pointer[[]byte]
	var down atomic.Bool
	set1 := jwksOf(t, k1)
	body.Store(&set1)
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(*body.Load())
	}))
	t.Cleanup(jwks.Close)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	s := newFaultStack(t, faultOptions{now: clock, issuers: []token.IssuerConfig{{
		Issuer: faultIssuer, JWKSURI: jwks.URL, Audiences: []string{"api"}, AllowInsecureHTTP: true}}})

	wantAllowed(t, s.check("/api", k1.issue(t, clock(), "a")), "k1 with the JWKS up")
	if st := s.resolver.Stats(); st.JWKSRefreshes != 1 {
		t.Fatalf("JWKSRefreshes = %d, want 1", st.JWKSRefreshes)
	}

	down.Store(true)
	advance(31 * time.Second) // past the least interval between two refreshes
	wantDenied(t, s.check("/api", k2.issue(t, clock(), "b")), 401, "invalid_token")
	if st := s.resolver.Stats(); st.JWKSFailures != 1 {
		t.Errorf("JWKSFailures = %d, want 1 (the source of phantom_authz.jwks.refreshes{outcome=failed})", st.JWKSFailures)
	}
	s.logLine(t, "JWKS fetch failed; keeping the last good keys", jwks.URL, "status 503")
	wantAllowed(t, s.check("/api", k1.issue(t, clock(), "c")), "k1 with the JWKS down (last keys kept)")

	// Back, with the key rotated: k2 replaces k1.
	set2 := jwksOf(t, k2)
	body.Store(&set2)
	down.Store(false)
	advance(31 * time.Second)
	wantAllowed(t, s.check("/api", k2.issue(t, clock(), "d")), "k2 after the rotation")
	if st := s.resolver.Stats(); st.JWKSRefreshes != 2 {
		t.Errorf("JWKSRefreshes = %d, want 2", st.JWKSRefreshes)
	}
	// A k1 token not seen before: k1 left the set.
	wantDenied(t, s.check("/api", k1.issue(t, clock(), "e")), 401, "invalid_token")
}

// ---------------------------------------------------------------- policy faults

// A policy file replaced by one that does not compile: the last good set
// keeps deciding, the failed reload is counted and logged with file and
// line; a good file afterwards is served.
func TestFaultsBrokenPolicy(t *testing.T) {
	t.Parallel()
	f := startFakeOAuth(t)
	s := newFaultStack(t, faultOptions{introspection: f.config()})
	wantAllowed(t, s.check("/api", "tok"), "before")
	revision := s.policy.Revision()

	writePolicy(t, s.policyDir, "package envoy.authz\n\nallow if {\n  input.token.active ==\n")
	waitFor(t, "the broken policy to be refused", func() bool { _, failed := s.policy.Reloads(); return failed >= 1 })
	wantAllowed(t, s.check("/api", "tok"), "with the broken file (last good set)")
	wantAllowed(t, s.check("/api", "tok-2"), "a new token with the broken file")
	if s.policy.Revision() != revision || !s.engine.Ready() {
		t.Errorf("revision %s → %s, ready %v: the last good set must keep serving", revision, s.policy.Revision(), s.engine.Ready())
	}
	s.logLine(t, "", "policy.rego:")

	writePolicy(t, s.policyDir, "package envoy.authz\n\nallow if input.attributes.request.http.path == \"/open\"\n")
	waitFor(t, "the fixed policy to load", func() bool { ok, _ := s.policy.Reloads(); return ok >= 1 })
	wantDenied(t, s.check("/api", "tok"), 403, "policy_denied")
	wantAllowed(t, s.check("/open", "tok"), "the new policy")
}

// A policy that evaluates too long is stopped at policy.eval_timeout and
// the request denied with 503 (never allowed); the timeout is counted and
// logged; a fixed policy is served again.
func TestFaultsSlowPolicy(t *testing.T) {
	t.Parallel()
	f := startFakeOAuth(t)
	s := newFaultStack(t, faultOptions{introspection: f.config(), evalTimeout: 50 * time.Millisecond})
	start := time.Now()
	wantDenied(t, s.check("/slow", "tok"), 503, "policy_error")
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the denial took %s with a 50ms deadline", took)
	}
	if got := s.policy.EvalTimeouts(); got != 1 {
		t.Errorf("EvalTimeouts = %d, want 1 (the source of phantom_authz.policy.eval_timeouts)", got)
	}
	if got := s.metric(t, "phantom_authz.checks", "decision", "deny", "status", "503"); got != 1 {
		t.Errorf("checks{deny,503} = %d, want 1", got)
	}
	s.logLine(t, "denied", "policy.eval_timeout", "50ms")
	wantAllowed(t, s.check("/api", "tok"), "another path, same policy")

	writePolicy(t, s.policyDir, "package envoy.authz\n\nallow if input.token.active\n")
	waitFor(t, "the fixed policy to load", func() bool { ok, _ := s.policy.Reloads(); return ok >= 1 })
	wantAllowed(t, s.check("/slow", "tok"), "/slow with the fixed policy")
}

// ---------------------------------------------------------------- limits

// A body over policy.max_body_bytes is denied with 413 before anything
// else runs; a body at the limit goes to the policy.
func TestBodyLimit(t *testing.T) {
	t.Parallel()
	f := startFakeOAuth(t)
	s := newFaultStack(t, faultOptions{introspection: f.config(), maxBodyBytes: 1024})
	for _, tc := range []struct {
		name    string
		body    string
		raw     []byte
		allowed bool
	}{
		{"at the limit", strings.Repeat("a", 1024), nil, true},
		{"one byte over", strings.Repeat("a", 1025), nil, false},
		{"raw body over", "", make([]byte, 4096), false},
	} {
		r := &authz.Request{Method: "POST", Path: "/api", Host: "api.example", Scheme: "https", Body: tc.body, RawBody: tc.raw,
			Headers: map[string]string{"authorization": "Bearer tok"}}
		d := s.engine.Check(context.Background(), r)
		if tc.allowed {
			wantAllowed(t, d, tc.name)
			continue
		}
		wantDenied(t, d, 413, "body_too_large")
	}
	if got := f.calls.Load(); got != 1 {
		t.Errorf("%d introspections; an oversized request must not reach the OAuth server", got)
	}
	if got := s.metric(t, "phantom_authz.checks", "decision", "deny", "status", "413"); got != 2 {
		t.Errorf("checks{deny,413} = %d, want 2", got)
	}
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
