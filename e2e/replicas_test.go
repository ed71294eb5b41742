package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
)

// Scale-out: several phantom-authz replicas behind one Envoy cluster act as
// one when they share a Redis: one introspection per token, a DPoP proof
// used once across all of them, a revocation through one honoured by all;
// and with Redis gone they keep serving bearer tokens from their own
// caches while DPoP fails closed, until Redis returns.

// ---------------------------------------------------------------- introspection, counted

// introspectionCounter is an RFC 7662 endpoint in front of Hydra's that
// counts the introspection requests for each token. Tokens added to bound
// it answers itself, with their cnf (Hydra issues no sender-constrained
// tokens); every other request goes on to Hydra.
type introspectionCounter struct {
	url   string // the endpoint phantom-authz is configured with
	bound *boundTokens

	mu    sync.Mutex
	calls map[string]int // token → introspection requests
}

func newIntrospectionCounter(t *testing.T, h *hydra) *introspectionCounter {
	t.Helper()
	c := &introspectionCounter{bound: &boundTokens{tokens: map[string]map[string]any{}}, calls: map[string]int{}}
	target, err := url.Parse(h.adminURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		form, _ := url.ParseQuery(string(body))
		tok := form.Get("token")
		c.mu.Lock()
		c.calls[tok]++
		c.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		c.bound.mu.Lock()
		_, bound := c.bound.tokens[tok]
		c.bound.mu.Unlock()
		if bound {
			c.bound.ServeHTTP(w, r)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	c.url = srv.URL + "/admin/oauth2/introspect"
	return c
}

// count is how many introspection requests asked about tok.
func (c *introspectionCounter) count(tok string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[tok]
}

// total is how many introspection requests came in all.
func (c *introspectionCounter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.calls {
		n += v
	}
	return n
}

// ---------------------------------------------------------------- three replicas behind one Envoy

// replicaSet is Hydra (behind the introspection counter) → three
// phantom-authz replicas sharing Redis, a signing key and a DPoP nonce
// secret ← one Envoy whose ext_authz cluster balances round robin over
// them → demo API. The embedded stack's authz is the first replica.
type replicaSet struct {
	*stack
	replicas   []*authzServer
	grpc       []authv3.AuthorizationClient // straight to each replica, bypassing Envoy
	intro      *introspectionCounter
	redis      *redisServer
	adminToken string
}

// writeSecretFile writes a secret (remembered, so no log may show it) to a
// file of its own and returns the path.
func writeSecretFile(t *testing.T, name, secret string) string {
	t.Helper()
	secrets.add(secret)
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// randomSecret is 32 random bytes, base64url.
func randomSecret(t *testing.T) string {
	t.Helper()
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// newReplicaSet starts the whole set; n replicas (three in the tests).
func newReplicaSet(t *testing.T, n int) *replicaSet {
	t.Helper()
	needTools(t)
	needRedis(t)
	rs := &replicaSet{stack: &stack{hydra: startHydra(t)}, adminToken: randomSecret(t)}
	rs.intro = newIntrospectionCounter(t, rs.hydra)
	rs.redis = startRedis(t, "e2e-redis-"+randomSecret(t))

	// What every replica shares: the key JWTs are minted with, the DPoP
	// nonce secret, Redis and its password, the admin credential.
	dir := t.TempDir()
	der, err := x509.MarshalPKCS8PrivateKey(newECKey(t))
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "signing-key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	set := map[string]any{
		"mint.signing_key_file": keyFile,
		"dpop": map[string]any{"nonce": map[string]any{
			"enabled": true, "secret_file": writeSecretFile(t, "dpop-nonce-secret", randomSecret(t)),
		}},
		"redis": map[string]any{
			"url":           rs.redis.url(),
			"password_file": writeSecretFile(t, "redis-password", rs.redis.password),
			// Authenticates the shared token cache: every replica holds it.
			"cache_key_file": writeSecretFile(t, "redis-cache-key", randomSecret(t)),
			"key_prefix":     "phantom-authz-e2e:",
		},
		"admin": map[string]any{"token_file": writeSecretFile(t, "admin-token", rs.adminToken)},
	}
	for i := 0; i < n; i++ {
		a := startAuthz(t, rs.hydra, authzOptions{introspectionURL: rs.intro.url, set: set})
		a.name = fmt.Sprintf("phantom-authz-%d", i+1)
		rs.replicas = append(rs.replicas, a)
		rs.grpc = append(rs.grpc, dialAuthz(t, a.grpcAddr))
	}
	rs.authz = rs.replicas[0]
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, a := range rs.replicas {
			b, _ := os.ReadFile(a.logPath)
			var lines []string
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "redis") || strings.Contains(l, "admin:") {
					lines = append(lines, l)
				}
			}
			t.Logf("--- %s's lines about Redis ---\n%s", a.name, strings.Join(lines, "\n"))
		}
	})
	rs.envoy = startEnvoyRoundRobin(t, rs.replicas, startDemo(t))
	return rs
}

// startEnvoyRoundRobin runs envoy/envoy.yaml with its phantom_authz cluster
// holding every replica, balanced round robin.
func startEnvoyRoundRobin(t *testing.T, replicas []*authzServer, demoPort int) *envoyProxy {
	t.Helper()
	e, _ := startEnvoyEdited(t, replicas[0].grpcPort, demoPort, "envoy-replicas.yaml", func(cfg map[string]any) {
		var cluster map[string]any
		for _, c := range list(at(cfg, "static_resources", "clusters")) {
			if str(at(c, "name")) == "phantom_authz" {
				cluster = c.(map[string]any)
			}
		}
		locality, _ := at(cluster, "load_assignment", "endpoints", 0).(map[string]any)
		if got := str(at(locality, "lb_endpoints", 0, "endpoint", "address", "socket_address", "port_value")); got != fmt.Sprint(replicas[0].grpcPort) {
			t.Fatalf("envoy/envoy.yaml: the phantom_authz cluster's endpoint is on port %s, not phantom-authz's", got)
		}
		var endpoints []any
		for _, a := range replicas {
			endpoints = append(endpoints, map[string]any{"endpoint": map[string]any{"address": map[string]any{
				"socket_address": map[string]any{"address": "127.0.0.1", "port_value": a.grpcPort},
			}}})
		}
		locality["lb_endpoints"] = endpoints
		cluster["lb_policy"] = "ROUND_ROBIN"
	})
	return e
}

// checksSeen is the number of checks each replica has answered, from its
// /metrics.
func (rs *replicaSet) checksSeen(t *testing.T) []float64 {
	t.Helper()
	out := make([]float64, len(rs.replicas))
	for i, a := range rs.replicas {
		for name, v := range scrape(t, a.httpURL) {
			if strings.HasPrefix(name, "phantom_authz_checks_total{") {
				out[i] += v
			}
		}
	}
	return out
}

// eachReplicaSaw fails the test unless every replica answered at least one
// check between the two readings of checksSeen.
func eachReplicaSaw(t *testing.T, what string, before, after []float64) {
	t.Helper()
	for i := range before {
		if after[i] <= before[i] {
			t.Errorf("%s: replica %d answered no check (checks %v → %v): Envoy did not spread the requests", what, i+1, before, after)
		}
	}
}

// bearerRounds sends GET /api/accounts/1 with tok through Envoy n times,
// one after the other, and fails unless each is allowed with a JWT that
// verifies against the JWKS of the first replica (all replicas sign with
// one key).
func (rs *replicaSet) bearerRounds(t *testing.T, what, tok string, n int) {
	t.Helper()
	before := rs.checksSeen(t)
	for i := 0; i < n; i++ {
		r := rs.call(t, http.MethodGet, "/api/accounts/1", tok, nil)
		if r.status != http.StatusOK {
			t.Fatalf("%s: request %d: status %d, want 200: %s", what, i+1, r.status, r.body)
		}
		auth := r.upstream(t).Headers["authorization"]
		if len(auth) != 1 {
			t.Fatalf("%s: upstream authorization %q", what, auth)
		}
		verifyJWT(t, rs.replicas[0].httpURL, strings.TrimPrefix(auth[0], "Bearer "))
	}
	eachReplicaSaw(t, what, before, rs.checksSeen(t))
}

// dpopPath is the route the DPoP requests call.
const dpopPath = "/api/accounts/1"

// dpopCall sends a DPoP request through Envoy with proof.
func (rs *replicaSet) dpopCall(t *testing.T, tok, proof string) response {
	t.Helper()
	return rs.call(t, http.MethodGet, dpopPath, "", dpopHeaders(tok, proof))
}

// dpopProof is a fresh proof for the route (Envoy's listener over plain
// HTTP: the htu is the URL the client called), with the server nonce.
func (rs *replicaSet) dpopProof(t *testing.T, key *dpopKey, tok, nonce string) string {
	t.Helper()
	var extra map[string]any
	if nonce != "" {
		extra = map[string]any{"nonce": nonce}
	}
	return key.proof(t, http.MethodGet, rs.envoy.url+dpopPath, tok, extra)
}

// dpopNonce gets a server nonce: a proof without one is refused with
// use_dpop_nonce and a DPoP-Nonce to retry with. Every replica derives
// nonces from the same secret, so any replica accepts it.
func (rs *replicaSet) dpopNonce(t *testing.T, key *dpopKey, tok string) string {
	t.Helper()
	r := rs.dpopCall(t, tok, rs.dpopProof(t, key, tok, ""))
	if p := r.denial(t, http.StatusUnauthorized); p.Error != "use_dpop_nonce" {
		t.Fatalf("DPoP proof without a nonce: error %q, want use_dpop_nonce", p.Error)
	}
	nonce := r.header.Get("DPoP-Nonce")
	if nonce == "" {
		t.Fatal("no DPoP-Nonce on the use_dpop_nonce answer")
	}
	return nonce
}

// revoke posts token to a replica's POST /admin/revoke with the admin
// credential (none when admin is ""); it returns the status.
func revokeAt(t *testing.T, a *authzServer, admin, tok string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.httpURL+"/admin/revoke", strings.NewReader(url.Values{"token": {tok}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if admin != "" {
		req.Header.Set("Authorization", "Bearer "+admin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /admin/revoke: %v", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// checkStatus asks one replica straight over gRPC about GET
// /api/accounts/1 with the bearer token: 200 on an allow, else the denial's
// HTTP status and its WWW-Authenticate.
func checkStatus(ctx context.Context, client authv3.AuthorizationClient, tok string) (int, string, error) {
	resp, err := client.Check(ctx, checkRequest(http.MethodGet, "/api/accounts/1", "Bearer "+tok))
	if err != nil {
		return 0, "", err
	}
	if resp.GetStatus().GetCode() == int32(code.Code_OK) {
		return http.StatusOK, "", nil
	}
	denied := resp.GetDeniedResponse()
	challenge := ""
	for _, hv := range denied.GetHeaders() {
		if strings.EqualFold(hv.GetHeader().GetKey(), "www-authenticate") {
			challenge = hv.GetHeader().GetValue()
		}
	}
	return int(denied.GetStatus().GetCode()), challenge, nil
}

// revokeEverywhere revokes tok through replica via (0-based) and waits
// until every replica, asked straight over gRPC, refuses it with 401
// invalid_token; it fails the test if any takes longer than within, and
// returns how long the slowest took.
func (rs *replicaSet) revokeEverywhere(t *testing.T, via int, tok string, within time.Duration) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within+5*time.Second)
	defer cancel()
	for i, c := range rs.grpc {
		if st, _, err := checkStatus(ctx, c, tok); err != nil || st != http.StatusOK {
			t.Fatalf("before the revocation, replica %d answers %d (%v), want 200", i+1, st, err)
		}
	}

	remote := func() []float64 {
		out := make([]float64, len(rs.replicas))
		for i, a := range rs.replicas {
			out[i] = scrape(t, a.httpURL)["phantom_authz_revocations_total{source=remote}"]
		}
		return out
	}
	remoteBefore := remote()
	start := time.Now()
	if st := revokeAt(t, rs.replicas[via], rs.adminToken, tok); st != http.StatusOK {
		t.Fatalf("POST /admin/revoke to replica %d with the admin token: %d, want 200", via+1, st)
	}
	took := make([]time.Duration, len(rs.grpc))
	var wg sync.WaitGroup
	for i, c := range rs.grpc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				st, challenge, err := checkStatus(ctx, c, tok)
				if err == nil && st != http.StatusOK {
					took[i] = time.Since(start)
					if st != http.StatusUnauthorized || !strings.Contains(challenge, `error="invalid_token"`) {
						t.Errorf("replica %d refuses the revoked token with %d %q, want 401 invalid_token", i+1, st, challenge)
					}
					return
				}
				if ctx.Err() != nil {
					t.Errorf("replica %d still allows the revoked token %s after the revocation (last: %d %v)", i+1, time.Since(start), st, err)
					took[i] = time.Since(start)
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	var slowest time.Duration
	for i, d := range took {
		slowest = max(slowest, d)
		if d > within {
			t.Errorf("replica %d refused the revoked token %s after the revocation through replica %d, want within %s", i+1, d, via+1, within)
		}
	}
	// The others learnt it from the revocation channel.
	remoteAfter := remote()
	for i := range rs.replicas {
		if got := remoteAfter[i] - remoteBefore[i]; i != via && got != 1 {
			t.Errorf("replica %d: phantom_authz_revocations_total{source=remote} moved by %v, want 1", i+1, got)
		}
	}
	// And through Envoy, whichever replica answers.
	for i := 0; i < len(rs.replicas); i++ {
		if p := rs.call(t, http.MethodGet, "/api/accounts/1", tok, nil).denial(t, http.StatusUnauthorized); p.Error != "invalid_token" {
			t.Errorf("revoked token through Envoy: error %q, want invalid_token", p.Error)
		}
	}
	return slowest
}

// ---------------------------------------------------------------- the test

// Three replicas behind one Envoy cluster (round robin), sharing Redis.
func TestReplicasShareOneRedis(t *testing.T) {
	t.Parallel()
	rs := newReplicaSet(t, 3)

	rs.redisMetrics(t, "at start", true, false)

	// One introspection per token across the three replicas.
	tok := rs.hydra.token(t, "read")
	rs.bearerRounds(t, "a new token", tok, 6)
	if got := rs.intro.count(tok); got != 1 {
		t.Errorf("a new token used 6 times across 3 replicas made %d introspections, want exactly 1", got)
	}

	// A DPoP proof is used once across the three: the replay is refused by
	// every replica, while fresh proofs pass on each.
	key := newDPoPKey(t)
	const dpopTok = "dpop-bound-replicas-token"
	rs.intro.bound.add(dpopTok, map[string]any{"jkt": key.jkt})
	nonce := rs.dpopNonce(t, key, dpopTok)
	proof := rs.dpopProof(t, key, dpopTok, nonce)
	if r := rs.dpopCall(t, dpopTok, proof); r.status != http.StatusOK {
		t.Fatalf("DPoP: the first use of a proof: %d, want 200: %s", r.status, r.body)
	}
	before := rs.checksSeen(t)
	for i := 0; i < len(rs.replicas); i++ {
		r := rs.dpopCall(t, dpopTok, proof)
		p := r.denial(t, http.StatusUnauthorized)
		if p.Error != "invalid_dpop_proof" || !strings.Contains(p.Detail, "already been used") {
			t.Errorf("DPoP: replay %d: error %q (%s), want invalid_dpop_proof saying the proof has already been used", i+1, p.Error, p.Detail)
		}
		dpopChallenge(t, r, "invalid_dpop_proof")
	}
	eachReplicaSaw(t, "DPoP replays", before, rs.checksSeen(t))
	rs.dpopRounds(t, "DPoP with fresh proofs", key, dpopTok, nonce)

	// A revocation through one replica is honoured by all within 1 s.
	revoked := rs.hydra.token(t, "read")
	rs.bearerRounds(t, "the token to revoke", revoked, 3)
	if st := revokeAt(t, rs.replicas[0], "", revoked); st != http.StatusUnauthorized {
		t.Errorf("POST /admin/revoke without the admin token: %d, want 401", st)
	}
	if st := revokeAt(t, rs.replicas[0], "not-the-admin-token", revoked); st != http.StatusUnauthorized {
		t.Errorf("POST /admin/revoke with a wrong admin token: %d, want 401", st)
	}
	took := rs.revokeEverywhere(t, 0, revoked, time.Second)
	t.Logf("revocation through replica 1 honoured by all three within %s", took.Round(time.Millisecond))

	// Redis killed while a client calls: bearer tokens keep working from
	// each replica's own cache and introspection; DPoP fails closed (503).
	stopCalling := rs.background(t, "a cached token while Redis dies and returns", tok)
	time.Sleep(200 * time.Millisecond) // some requests before the kill
	rs.redis.kill(t)
	// While the client calls, Envoy's round robin no longer gives each
	// replica one request in three: each replica is also asked straight.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fresh := rs.hydra.token(t, "read")
	rs.bearerRounds(t, "a cached token, Redis down", tok, 6)
	rs.bearerRounds(t, "a new token, Redis down", fresh, 6)
	for i, c := range rs.grpc {
		for _, tk := range []string{tok, fresh} {
			if st, challenge, err := checkStatus(ctx, c, tk); err != nil || st != http.StatusOK {
				t.Errorf("Redis down: replica %d answers %d %q (%v) for a bearer token, want 200", i+1, st, challenge, err)
			}
		}
	}
	if got := rs.intro.count(fresh); got < 1 || got > len(rs.replicas) {
		t.Errorf("a new token with Redis down made %d introspections, want 1 to %d (one per replica at most)", got, len(rs.replicas))
	}
	for i := range rs.replicas {
		if st, err := rs.dpopCheck(ctx, i, dpopTok, rs.dpopProof(t, key, dpopTok, nonce)); err != nil || st != http.StatusServiceUnavailable {
			t.Errorf("DPoP, Redis down: replica %d answers %d (%v), want 503", i+1, st, err)
		}
		rs.dpopCall(t, dpopTok, rs.dpopProof(t, key, dpopTok, nonce)).denial(t, http.StatusServiceUnavailable)
	}
	rs.logged(t, "WARN", "redis: unreachable")
	rs.redisMetrics(t, "Redis down", false, true)
	// A revocation cannot reach the others now: the replica that got it
	// refuses the token and answers 503, for the caller to retry.
	if st := revokeAt(t, rs.replicas[2], rs.adminToken, fresh); st != http.StatusServiceUnavailable {
		t.Errorf("POST /admin/revoke with Redis down: %d, want 503 (revoked on this replica only)", st)
	}
	if st, challenge, err := checkStatus(ctx, rs.grpc[2], fresh); err != nil || st != http.StatusUnauthorized || !strings.Contains(challenge, "invalid_token") {
		t.Errorf("the replica that revoked the token with Redis down answers %d %q (%v), want 401 invalid_token", st, challenge, err)
	}

	// Redis back (empty, on the same port): DPoP passes again on every
	// replica within a few seconds (each tries Redis again a moment after
	// its last failure), new tokens are shared again, and revocations reach
	// everyone.
	rs.redis.restart(t)
	back := time.Now()
	for i := range rs.replicas {
		for {
			st, err := rs.dpopCheck(ctx, i, dpopTok, rs.dpopProof(t, key, dpopTok, nonce))
			if err == nil && st == http.StatusOK {
				break
			}
			if (err == nil && st != http.StatusServiceUnavailable) || time.Since(back) > 5*time.Second {
				t.Fatalf("DPoP, Redis back for %s: replica %d answers %d (%v), want 200", time.Since(back).Round(time.Millisecond), i+1, st, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("DPoP accepted by every replica again %s after Redis returned", time.Since(back).Round(time.Millisecond))
	stopCalling()
	rs.dpopRounds(t, "DPoP, Redis back", key, dpopTok, nonce)
	proof = rs.dpopProof(t, key, dpopTok, nonce)
	if r := rs.dpopCall(t, dpopTok, proof); r.status != http.StatusOK {
		t.Fatalf("DPoP, Redis back: first use of a proof: %d %s", r.status, r.body)
	}
	for i := 0; i < len(rs.replicas); i++ {
		if p := rs.dpopCall(t, dpopTok, proof).denial(t, http.StatusUnauthorized); p.Error != "invalid_dpop_proof" {
			t.Errorf("DPoP, Redis back: replay %d: error %q, want invalid_dpop_proof", i+1, p.Error)
		}
	}
	again := rs.hydra.token(t, "read")
	rs.bearerRounds(t, "a new token, Redis back", again, 6)
	if got := rs.intro.count(again); got != 1 {
		t.Errorf("a new token with Redis back made %d introspections across 3 replicas, want exactly 1", got)
	}
	took = rs.revokeEverywhere(t, 1, again, time.Second)
	t.Logf("after Redis returned, a revocation through replica 2 honoured by all three within %s", took.Round(time.Millisecond))
	rs.logged(t, "INFO", "redis: reachable again")
	rs.redisMetrics(t, "Redis back", true, true)
}

// redisMetrics checks what every replica's /metrics says of Redis: up
// (phantom_authz_redis_up), and whether failed operations were counted
// (phantom_authz_redis_errors_total, by operation).
func (rs *replicaSet) redisMetrics(t *testing.T, what string, up, errors bool) {
	t.Helper()
	for i, a := range rs.replicas {
		m := scrape(t, a.httpURL)
		u, ok := m["phantom_authz_redis_up{}"]
		if want := map[bool]float64{true: 1, false: 0}[up]; !ok || u != want {
			t.Errorf("%s: replica %d: phantom_authz_redis_up %v (present %v), want %v", what, i+1, u, ok, want)
		}
		failed := 0.0
		for name, v := range m {
			if strings.HasPrefix(name, "phantom_authz_redis_errors_total{operation=") {
				failed += v
			}
		}
		if (failed > 0) != errors {
			t.Errorf("%s: replica %d: phantom_authz_redis_errors_total adds up to %v", what, i+1, failed)
		}
	}
}

// dpopRounds sends one fresh DPoP proof per replica through Envoy (round
// robin: each replica gets one) and expects every one to reach the upstream.
func (rs *replicaSet) dpopRounds(t *testing.T, what string, key *dpopKey, tok, nonce string) {
	t.Helper()
	before := rs.checksSeen(t)
	for i := 0; i < len(rs.replicas); i++ {
		r := rs.dpopCall(t, tok, rs.dpopProof(t, key, tok, nonce))
		if r.status != http.StatusOK || !r.fromUpstream() {
			t.Errorf("%s: request %d: status %d, want 200 from the upstream: %s", what, i+1, r.status, r.body)
		}
	}
	eachReplicaSaw(t, what, before, rs.checksSeen(t))
}

// dpopCheck asks replica i straight over gRPC about the DPoP request Envoy
// would send for the route (the same :scheme and :authority, so the proof's
// htu matches): 200 on an allow, else the denial's HTTP status.
func (rs *replicaSet) dpopCheck(ctx context.Context, i int, tok, proof string) (int, error) {
	host := strings.TrimPrefix(rs.envoy.url, "http://")
	h := map[string]string{":method": http.MethodGet, ":path": dpopPath, ":authority": host, ":scheme": "http",
		"authorization": "DPoP " + tok, "dpop": proof}
	resp, err := rs.grpc[i].Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "e2e", Method: http.MethodGet, Path: dpopPath, Host: host, Scheme: "http", Protocol: "HTTP/1.1", Headers: h,
		}},
	}})
	if err != nil {
		return 0, err
	}
	if resp.GetStatus().GetCode() == int32(code.Code_OK) {
		return http.StatusOK, nil
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode()), nil
}

// logged waits (up to 5 s: a log line is written after the answer) until
// every replica's log has a line at level whose message starts with msg.
func (rs *replicaSet) logged(t *testing.T, level, msg string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for i, a := range rs.replicas {
		for !hasLogLine(t, a.process, level, msg) {
			if time.Now().After(deadline) {
				t.Errorf("replica %d logged no %s line %q", i+1, level, msg)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// hasLogLine reports whether p's output has a JSON log line at level whose
// msg starts with prefix.
func hasLogLine(t *testing.T, p *process, level, prefix string) bool {
	t.Helper()
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		var rec struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == level && strings.HasPrefix(rec.Msg, prefix) {
			return true
		}
	}
	return false
}

// background sends GET /api/accounts/1 with tok through Envoy back to back
// until the returned stop is called, which fails the test if any answer
// was not 200. (A test that ends first stops it too.)
func (rs *replicaSet) background(t *testing.T, what, tok string) (stop func()) {
	t.Helper()
	var (
		done    = make(chan struct{})
		once    sync.Once
		stopped = make(chan struct{})
		mu      sync.Mutex
		results []int  // statuses in order; -1 a transport error
		first   string // the first refusal
	)
	halt := func() {
		once.Do(func() { close(done) })
		<-stopped
	}
	t.Cleanup(halt)
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			default:
			}
			r, err := rs.try(http.MethodGet, "/api/accounts/1", tok, nil)
			st := r.status
			if err != nil {
				st = -1
			}
			mu.Lock()
			results = append(results, st)
			if st != http.StatusOK && first == "" {
				first = fmt.Sprintf("%s: %d %v %s", time.Now().Format("15:04:05.000"), st, err, r.body)
			}
			mu.Unlock()
		}
	}()
	return func() {
		t.Helper()
		halt()
		for _, st := range results {
			if st != http.StatusOK {
				t.Errorf("%s: a request was refused; statuses %s; the first: %s", what, summarize(results), first)
				return
			}
		}
		t.Logf("%s: %d requests, all allowed", what, len(results))
	}
}
