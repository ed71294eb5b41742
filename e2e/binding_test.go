package e2e

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
)

// Sender-constrained tokens through real Envoy, with TLS and client
// certificates on its listener. Hydra issues neither DPoP- nor
// certificate-bound tokens in its default configuration, so a small OAuth
// introspection endpoint (RFC 7662, JSON) stands in for it here: it knows a
// few opaque tokens and the cnf each is bound to.

// ---------------------------------------------------------------- PKI

// pki is a test CA with a server certificate for Envoy's listener and two
// client certificates, generated for each test.
type pki struct {
	ca               *testCA
	server           *leafCert
	clientA, clientB tls.Certificate
	x5tA             string // cnf."x5t#S256" of client A's certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{ca: newTestCA(t, "phantom-authz e2e CA")}
	p.server = p.ca.server(t, "localhost", "localhost", "127.0.0.1")
	a := p.ca.client(t, "client-a")
	p.clientA, p.clientB = a.tls, p.ca.client(t, "client-b").tls
	sum := sha256.Sum256(a.der)
	p.x5tA = base64.RawURLEncoding.EncodeToString(sum[:])
	return p
}

// client is an HTTPS client trusting the test CA, presenting cert (none
// when nil).
func (p *pki) client(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: p.ca.pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
}

// ---------------------------------------------------------------- OAuth server

// boundTokens is an RFC 7662 introspection endpoint that knows a few opaque
// tokens, each with its cnf.
type boundTokens struct {
	mu     sync.Mutex
	tokens map[string]map[string]any // token → cnf
}

func (b *boundTokens) add(tok string, cnf map[string]any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens[tok] = cnf
}

func (b *boundTokens) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || r.Method != http.MethodPost {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	b.mu.Lock()
	cnf, ok := b.tokens[r.PostForm.Get("token")]
	b.mu.Unlock()
	answer := map[string]any{"active": false}
	if ok {
		answer = map[string]any{
			"active": true, "scope": "read write", "client_id": "fapi-client", "sub": "alice",
			"iss": "https://as.e2e.local", "exp": time.Now().Add(time.Hour).Unix(), "token_type": "Bearer",
		}
		if cnf != nil {
			answer["cnf"] = cnf
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(answer)
}

// ---------------------------------------------------------------- Envoy over TLS

// startEnvoyTLS runs envoy/envoy.yaml, its ports swapped as startEnvoy does,
// with TLS on the listener requiring a client certificate from the test CA,
// and then the extra edits. It returns the listener's https:// URL.
func startEnvoyTLS(t *testing.T, authzPort, demoPort int, p *pki, extra ...func(cfg map[string]any)) string {
	t.Helper()
	_, lis := startEnvoyEdited(t, authzPort, demoPort, "envoy-tls.yaml", func(cfg map[string]any) {
		for _, edit := range extra {
			defer edit(cfg)
		}
		chain := at(cfg, "static_resources", "listeners", 0, "filter_chains", 0).(map[string]any)
		// The two settings sender-constrained tokens need from the shipped
		// ext_authz filter: the client certificate, and every header occurrence.
		authz := at(chain, "filters", 0, "typed_config", "http_filters", 0, "typed_config")
		for _, key := range []string{"include_peer_certificate", "encode_raw_headers"} {
			if at(authz, key) != true {
				t.Fatalf("envoy/envoy.yaml: ext_authz %s is not true", key)
			}
		}
		socket := envoyTLSSocket("DownstreamTlsContext", p.server, p.ca)
		at(socket, "typed_config").(map[string]any)["require_client_certificate"] = true
		chain["transport_socket"] = socket
	})
	return fmt.Sprintf("https://localhost:%d", lis)
}

// tlsStack is the test OAuth server → phantom-authz ← Envoy (TLS, client
// certificates) → demo API.
type tlsStack struct {
	pki    *pki
	tokens *boundTokens
	authz  *authzServer
	url    string // https://localhost:port, as clients call it
}

func newTLSStack(t *testing.T, set map[string]any) *tlsStack {
	t.Helper()
	needTools(t)
	s := &tlsStack{pki: newPKI(t), tokens: &boundTokens{tokens: map[string]map[string]any{}}}
	as := httptest.NewServer(s.tokens)
	t.Cleanup(as.Close)
	s.authz = startAuthz(t, nil, authzOptions{introspectionURL: as.URL + "/introspect", set: set})
	s.url = startEnvoyTLS(t, s.authz.grpcPort, startDemo(t), s.pki)
	return s
}

// call sends method path through Envoy over TLS with the client
// certificate (none when nil) and the headers.
func (s *tlsStack) call(t *testing.T, cert *tls.Certificate, method, path string, hdr http.Header) response {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := s.pki.client(cert).Do(req)
	if err != nil {
		t.Fatalf("%s %s through Envoy: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// upstreamClaims checks the upstream got a Bearer JWT phantom-authz signed,
// and nothing of the client's credential; it returns the JWT's claims.
func (s *tlsStack) upstreamClaims(t *testing.T, r response, opaque string) map[string]any {
	t.Helper()
	return verifyJWT(t, s.authz.httpURL, upstreamBearer(t, r, opaque))
}

// upstreamBearer checks the upstream got one Bearer token, no DPoP proof
// and nothing of the client's token; it returns the Bearer token.
func upstreamBearer(t *testing.T, r response, opaque string) string {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", r.status, r.body)
	}
	up := r.upstream(t)
	auth := up.Headers["authorization"]
	if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") {
		t.Fatalf("upstream authorization = %q, want one Bearer JWT", auth)
	}
	if up.Headers["dpop"] != nil {
		t.Errorf("the DPoP proof reached the upstream: %q", up.Headers["dpop"])
	}
	for name, values := range up.Headers {
		for _, v := range values {
			if strings.Contains(v, opaque) {
				t.Errorf("the opaque token reached the upstream in %s", name)
			}
		}
	}
	return strings.TrimPrefix(auth[0], "Bearer ")
}

// ---------------------------------------------------------------- DPoP client

// dpopKey is a client's DPoP key pair.
type dpopKey struct {
	key *ecdsa.PrivateKey
	jwk map[string]any
	jkt string
}

func newDPoPKey(t *testing.T) *dpopKey {
	t.Helper()
	d := &dpopKey{key: newECKey(t)}
	k, err := jwk.Import(&d.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	d.jkt = base64.RawURLEncoding.EncodeToString(tp)
	b, _ := json.Marshal(k)
	_ = json.Unmarshal(b, &d.jwk)
	return d
}

// proof is an ES256 DPoP proof (RFC 9449 §4.2) for method and htu with the
// access token, plus the extra claims.
func (d *dpopKey) proof(t *testing.T, method, htu, accessToken string, extra map[string]any) string {
	t.Helper()
	var jti [16]byte
	_, _ = rand.Read(jti[:])
	sum := sha256.Sum256([]byte(accessToken))
	claims := map[string]any{
		"jti": base64.RawURLEncoding.EncodeToString(jti[:]), "htm": method, "htu": htu,
		"iat": time.Now().Unix(), "ath": base64.RawURLEncoding.EncodeToString(sum[:]),
	}
	for k, v := range extra {
		claims[k] = v
	}
	return d.signed(t, map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": d.jwk}, claims)
}

// signed is a compact JWS of header and claims, signed ES256 with the key.
func (d *dpopKey) signed(t *testing.T, header, claims map[string]any) string {
	t.Helper()
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	input := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	sig, err := jwsbb.Sign(d.key, "ES256", []byte(input), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + enc.EncodeToString(sig)
}

func dpopHeaders(tok, proof string) http.Header {
	return http.Header{"Authorization": {"DPoP " + tok}, "Dpop": {proof}}
}

// dpopChallenge checks a DPoP challenge with the error code.
func dpopChallenge(t *testing.T, r response, code string) {
	t.Helper()
	ch := r.header.Get("WWW-Authenticate")
	if !strings.HasPrefix(ch, `DPoP realm="phantom-authz", algs="ES256 PS256 EdDSA"`) || !strings.Contains(ch, `error="`+code+`"`) {
		t.Errorf("WWW-Authenticate %q, want a DPoP challenge with algs and error=%q", ch, code)
	}
}

// ---------------------------------------------------------------- the tests

// RFC 8705: a certificate-bound token passes with the certificate it is
// bound to, and is refused with another.
func TestEnvoyCertificateBoundToken(t *testing.T) {
	t.Parallel()
	s := newTLSStack(t, nil)
	const tok = "mtls-bound-token-a"
	s.tokens.add(tok, map[string]any{"x5t#S256": s.pki.x5tA})
	bearer := http.Header{"Authorization": {"Bearer " + tok}}

	// The right certificate: through, and the upstream JWT keeps the binding.
	claims := s.upstreamClaims(t, s.call(t, &s.pki.clientA, "GET", "/api/accounts/1", bearer), tok)
	if cnf, _ := claims["cnf"].(map[string]any); cnf["x5t#S256"] != s.pki.x5tA {
		t.Errorf("upstream JWT cnf = %v, want the certificate thumbprint", claims["cnf"])
	}

	// Another certificate of the same CA: the TLS handshake succeeds, the
	// token does not.
	r := s.call(t, &s.pki.clientB, "GET", "/api/accounts/1", bearer)
	if p := r.denial(t, http.StatusUnauthorized); p.Error != "invalid_token" {
		t.Errorf("wrong certificate: error %q, want invalid_token", p.Error)
	}
	if ch := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, `Bearer realm="phantom-authz", error="invalid_token"`) {
		t.Errorf("wrong certificate: WWW-Authenticate %q", ch)
	}

	// An unbound token on a route marked sender_constrained: required would
	// be refused too; here the route is optional, so it passes.
	s.tokens.add("unbound-token", nil)
	if r := s.call(t, &s.pki.clientB, "GET", "/api/accounts/1", http.Header{"Authorization": {"Bearer unbound-token"}}); r.status != http.StatusOK {
		t.Errorf("unbound token on an optional route: %d %s", r.status, r.body)
	}
}

// Every route demands sender-constrained tokens (binding.require_sender_constrained).
func TestEnvoyRequireSenderConstrained(t *testing.T) {
	t.Parallel()
	s := newTLSStack(t, map[string]any{"binding": map[string]any{"require_sender_constrained": true}})
	s.tokens.add("unbound-token", nil)
	s.tokens.add("bound-token", map[string]any{"x5t#S256": s.pki.x5tA})

	r := s.call(t, &s.pki.clientA, "GET", "/api/accounts/1", http.Header{"Authorization": {"Bearer unbound-token"}})
	if p := r.denial(t, http.StatusUnauthorized); p.Error != "invalid_token" {
		t.Errorf("unbound token: error %q, want invalid_token", p.Error)
	}
	s.upstreamClaims(t, s.call(t, &s.pki.clientA, "GET", "/api/accounts/1", http.Header{"Authorization": {"Bearer bound-token"}}), "bound-token")
}

// RFC 9449 through Envoy: a correct proof passes once; a replay, a proof
// for another URL, method or token, a downgrade to Bearer and two DPoP
// headers are refused.
func TestEnvoyDPoP(t *testing.T) {
	t.Parallel()
	s := newTLSStack(t, nil)
	key := newDPoPKey(t)
	const tok, other = "dpop-bound-token", "dpop-bound-token-2"
	s.tokens.add(tok, map[string]any{"jkt": key.jkt})
	s.tokens.add(other, map[string]any{"jkt": key.jkt})
	// The URI the client called, as Envoy hands it on: https and the
	// :authority the client sent (localhost:port).
	htu := s.url + "/api/accounts/1"

	proof := key.proof(t, "GET", htu, tok, nil)
	claims := s.upstreamClaims(t, s.call(t, &s.pki.clientA, "GET", "/api/accounts/1?page=2", dpopHeaders(tok, proof)), tok)
	if cnf, _ := claims["cnf"].(map[string]any); cnf["jkt"] != key.jkt {
		t.Errorf("upstream JWT cnf = %v, want the DPoP key's thumbprint", claims["cnf"])
	}

	refusals := []struct {
		name, method, path string
		hdr                http.Header
		status             int
		code, detail       string
	}{
		{"replayed proof", "GET", "/api/accounts/1", dpopHeaders(tok, proof), 401, "invalid_dpop_proof", "already been used"},
		{"proof for another URL", "GET", "/api/accounts/2", dpopHeaders(tok, key.proof(t, "GET", htu, tok, nil)), 401, "invalid_dpop_proof", "htu"},
		{"proof for another method", "POST", "/api/accounts/1", dpopHeaders(tok, key.proof(t, "GET", htu, tok, nil)), 401, "invalid_dpop_proof", "htm"},
		{"proof over http for https", "GET", "/api/accounts/1", dpopHeaders(tok, key.proof(t, "GET", strings.Replace(htu, "https:", "http:", 1), tok, nil)), 401, "invalid_dpop_proof", "htu"},
		{"ath for another token", "GET", "/api/accounts/1", dpopHeaders(tok, key.proof(t, "GET", htu, other, nil)), 401, "invalid_dpop_proof", "ath"},
		{"proof by another key", "GET", "/api/accounts/1", dpopHeaders(tok, newDPoPKey(t).proof(t, "GET", htu, tok, nil)), 401, "invalid_token", "not bound to the DPoP proof key"},
		{"downgrade to Bearer", "GET", "/api/accounts/1", http.Header{"Authorization": {"Bearer " + tok}}, 401, "invalid_token", "DPoP-bound"},
		{"two DPoP headers", "GET", "/api/accounts/1", http.Header{"Authorization": {"DPoP " + tok},
			"Dpop": {key.proof(t, "GET", htu, tok, nil), key.proof(t, "GET", htu, tok, nil)}}, 400, "invalid_request", "more than one DPoP header"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			r := s.call(t, &s.pki.clientA, tc.method, tc.path, tc.hdr)
			p := r.denial(t, tc.status)
			if p.Error != tc.code || !strings.Contains(strings.ToLower(p.Detail), strings.ToLower(tc.detail)) {
				t.Errorf("error %q (%s), want %q saying %q", p.Error, p.Detail, tc.code, tc.detail)
			}
			dpopChallenge(t, r, tc.code)
		})
	}

	// The other token, with its own proof: through.
	s.upstreamClaims(t, s.call(t, &s.pki.clientA, "GET", "/api/accounts/1", dpopHeaders(other, key.proof(t, "GET", htu, other, nil))), other)
}

// Server nonces (RFC 9449 §9): the first proof is answered with
// use_dpop_nonce and a DPoP-Nonce; the retry with it passes.
func TestEnvoyDPoPNonce(t *testing.T) {
	t.Parallel()
	secret := filepath.Join(t.TempDir(), "dpop-nonce-secret")
	if err := os.WriteFile(secret, []byte(strings.Repeat("e2e-nonce-secret-", 3)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newTLSStack(t, map[string]any{"dpop": map[string]any{"nonce": map[string]any{"enabled": true, "secret_file": secret}}})
	key := newDPoPKey(t)
	const tok = "dpop-bound-token"
	s.tokens.add(tok, map[string]any{"jkt": key.jkt})
	htu := s.url + "/api/accounts/1"

	r := s.call(t, &s.pki.clientA, "GET", "/api/accounts/1", dpopHeaders(tok, key.proof(t, "GET", htu, tok, nil)))
	if p := r.denial(t, http.StatusUnauthorized); p.Error != "use_dpop_nonce" {
		t.Fatalf("without a nonce: error %q, want use_dpop_nonce", p.Error)
	}
	dpopChallenge(t, r, "use_dpop_nonce")
	nonce := r.header.Get("DPoP-Nonce")
	if nonce == "" {
		t.Fatal("no DPoP-Nonce on the use_dpop_nonce answer")
	}
	s.upstreamClaims(t, s.call(t, &s.pki.clientA, "GET", "/api/accounts/1",
		dpopHeaders(tok, key.proof(t, "GET", htu, tok, map[string]any{"nonce": nonce}))), tok)
}
