package authz_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"maps"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/binding"
	"github.com/phantom-authz/phantom-authz/authz/mint"
	"github.com/phantom-authz/phantom-authz/authz/policy"
	"github.com/phantom-authz/phantom-authz/authz/server"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// The hostile-input suite: crafted credentials, tokens, DPoP proofs and
// headers, each through the whole pipeline as Envoy drives it — a
// CheckRequest (raw headers, as encode_raw_headers sends them) converted by
// authz/server, the credential parser, a real token.Resolver against an
// httptest introspection endpoint and an issuer's JWKS with real keys, the
// binder, the shipped policies/ and the response back to a CheckResponse.
// Every refusal is checked for its exact status and error code, for the
// absence of an upstream JWT and of the presented token in the answer.
// The positive controls prove the fixtures let a valid request through, so
// a refusal is the defence's doing and not a broken fixture's.

const (
	hostileIssuer = "https://issuer.hostile.test"
	hostileHost   = "api.example"
	hostilePath   = "/api/accounts/1"
	hostileHTU    = "https://" + hostileHost + hostilePath
)

// countingServer is an httptest server that counts the requests it gets.
type countingServer struct {
	*httptest.Server
	hits atomic.Int64
}

func newCountingServer(t *testing.T, h http.HandlerFunc) *countingServer {
	t.Helper()
	s := &countingServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// hostileFixture is the stack the suite runs through and the keys it signs
// with.
type hostileFixture struct {
	engine *authz.Engine

	intro, jwks, attacker *countingServer
	// answers are the introspection endpoint's raw JSON answers by token;
	// any other token is inactive.
	answers map[string]string

	esKey, attackerKey *ecdsa.PrivateKey // kid es-1; the attacker's own
	psKey, weakKey     *rsa.PrivateKey   // kid ps-1 (2048); kid rsa-weak (1024)
	alice, bob         *dpopClient

	cert, otherCert string // client certificates as Envoy forwards them
	x5t             string // cnf."x5t#S256" of cert

	freshN atomic.Int64
}

// fresh is a new opaque token the introspection endpoint answers active
// with scope read: a sure, uncached introspection.
func (f *hostileFixture) fresh() string {
	return "fresh-" + strconv.FormatInt(f.freshN.Add(1), 10)
}

func newHostileFixture(t *testing.T) *hostileFixture {
	t.Helper()
	f := &hostileFixture{answers: map[string]string{}}
	var err error
	f.esKey = ecKey(t)
	f.attackerKey = ecKey(t)
	if f.psKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if f.weakKey, err = rsa.GenerateKey(rand.Reader, 1024); err != nil {
		t.Fatal(err)
	}
	f.alice, f.bob = newDPoPClient(t), newDPoPClient(t)
	var der []byte
	f.cert, der = clientCertificate(t)
	f.otherCert, _ = clientCertificate(t)
	sum := sha256.Sum256(der)
	f.x5t = base64.RawURLEncoding.EncodeToString(sum[:])

	jwks := jwkSet(t, map[string]crypto.PublicKey{"es-1": &f.esKey.PublicKey, "ps-1": &f.psKey.PublicKey, "rsa-weak": &f.weakKey.PublicKey})
	f.jwks = newCountingServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(jwks)
	})
	evil := jwkSet(t, map[string]crypto.PublicKey{"evil": &f.attackerKey.PublicKey, "es-1": &f.attackerKey.PublicKey})
	f.attacker = newCountingServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(evil)
	})
	var mu sync.Mutex
	f.intro = newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.ParseForm() != nil || r.Method != http.MethodPost {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		tok := r.PostForm.Get("token")
		answer, ok := f.answers[tok]
		mu.Unlock()
		switch {
		case !ok && strings.HasPrefix(tok, "fresh-"):
			answer = f.answers["op-read"]
		case !ok:
			answer = `{"active":false}`
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(answer))
	})
	f.addAnswers(t)

	pol, err := policy.New(policy.Config{Dir: "../policies", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "mint.pem")
	pkcs8, err := x509.MarshalPKCS8PrivateKey(ecKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		t.Fatal(err)
	}
	minter, err := mint.New(mint.Config{Issuer: "https://phantom-authz.test", Audience: []string{"api"}, KeyFiles: []string{keyFile}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = minter.Close() })
	binder, err := binding.New(binding.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var eng *authz.Engine
	resolver, err := token.New(token.Config{
		Introspection: &token.IntrospectionConfig{Endpoint: f.intro.URL + "/introspect", ClientID: "gateway",
			ClientSecret: "gateway-secret", AllowInsecureHTTP: true},
		Issuers: []token.IssuerConfig{{Issuer: hostileIssuer, JWKSURI: f.jwks.URL, Audiences: []string{"api"},
			Type: "at+jwt", AllowInsecureHTTP: true}},
		Prepare: func(tok *token.Token) error { return eng.PrepareToken(tok) },
		Logger:  quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(resolver.Close)
	eng, err = authz.New(authz.Config{
		Resolver: resolver, Decider: pol, Minter: minter, Binder: binder, Logger: quiet,
		PublicPaths: []string{"/healthz"}, OwnedHeaders: []string{"x-jwt-*", "x-user-*"},
	})
	if err != nil {
		t.Fatal(err)
	}
	f.engine = eng
	return f
}

// addAnswers registers the introspection endpoint's opaque tokens.
func (f *hostileFixture) addAnswers(t *testing.T) {
	t.Helper()
	exp := time.Now().Add(time.Hour).Unix()
	active := func(extra map[string]any) string {
		a := map[string]any{"active": true, "scope": "read", "client_id": "web", "sub": "alice",
			"iss": "https://as.hostile.test", "exp": exp, "token_type": "Bearer"}
		for k, v := range extra {
			if v == nil {
				delete(a, k)
			} else {
				a[k] = v
			}
		}
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	var huge strings.Builder
	for i := 0; huge.Len() < 512<<10; i++ {
		huge.WriteString("scope-" + strconv.Itoa(i) + " ")
	}
	f.answers = map[string]string{
		"op-read":            active(nil),
		"op-admin-web":       active(map[string]any{"scope": "admin"}),
		"op-inactive-scoped": `{"active":false,"scope":"read","client_id":"web","sub":"alice"}`,
		"op-active-string":   active(map[string]any{"active": "true"}),
		"op-active-number":   active(map[string]any{"active": 1}),
		"op-no-active":       active(map[string]any{"active": nil}),
		"op-scope-ints":      active(map[string]any{"scope": []any{1, 2}}),
		"op-scope-object":    active(map[string]any{"scope": map[string]any{"read": true}}),
		"op-huge-scope":      active(map[string]any{"scope": huge.String()}),
		"op-sub-number":      active(map[string]any{"sub": 42}),
		"op-utf8":            strings.Replace(active(map[string]any{"sub": "alice-SUB"}), "-SUB", "\xff\xfe", 1),
		"op-nested":          strings.Replace(active(map[string]any{"deep": "DEEP"}), `"DEEP"`, nested(5000), 1),
		"op-trailing":        active(nil) + `{"active":true}`,
		"op-dpop":            active(map[string]any{"cnf": map[string]any{"jkt": f.alice.jkt}}),
		"op-dpop-2":          active(map[string]any{"cnf": map[string]any{"jkt": f.alice.jkt}}),
		"op-mtls":            active(map[string]any{"cnf": map[string]any{"x5t#S256": f.x5t}}),
		"op-cnf-string":      active(map[string]any{"cnf": "jkt"}),
		"op-cnf-jwk":         active(map[string]any{"cnf": map[string]any{"jwk": f.alice.jwk}}),
		"op-cnf-empty-jkt":   active(map[string]any{"cnf": map[string]any{"jkt": ""}}),
	}
}

// nested is a JSON array nested depth times.
func nested(depth int) string {
	return strings.Repeat("[", depth) + strings.Repeat("]", depth)
}

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// jwkSet is the JWK Set of the public keys, by kid.
func jwkSet(t *testing.T, keys map[string]crypto.PublicKey) []byte {
	t.Helper()
	var out []json.RawMessage
	for _, kid := range slices.Sorted(maps.Keys(keys)) {
		k, err := jwk.Import(keys[kid])
		if err != nil {
			t.Fatalf("jwk %s: %v", kid, err)
		}
		_ = k.Set(jwk.KeyIDKey, kid)
		_ = k.Set(jwk.KeyUsageKey, "sig")
		b, err := json.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	b, _ := json.Marshal(map[string]any{"keys": out})
	return b
}

// clientCertificate is a self-signed client certificate as Envoy forwards
// it (URL-encoded PEM), and its DER.
func clientCertificate(t *testing.T) (string, []byte) {
	t.Helper()
	key := ecKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return url.PathEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))), der
}

// ---------------------------------------------------------------- signing

var b64u = base64.RawURLEncoding

func segment(t *testing.T, v any) string {
	t.Helper()
	if s, ok := v.(string); ok { // already JSON text (possibly invalid on purpose)
		return b64u.EncodeToString([]byte(s))
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b64u.EncodeToString(b)
}

// sign signs input with alg: ES256 (raw r‖s), PS256, RS256 or HS256 (key
// []byte), whatever the key's size.
func sign(t *testing.T, alg string, key any, input string) []byte {
	t.Helper()
	sum := sha256.Sum256([]byte(input))
	switch alg {
	case "ES256":
		r, s, err := ecdsa.Sign(rand.Reader, key.(*ecdsa.PrivateKey), sum[:])
		if err != nil {
			t.Fatal(err)
		}
		out := make([]byte, 64)
		r.FillBytes(out[:32])
		s.FillBytes(out[32:])
		return out
	case "PS256":
		sig, err := rsa.SignPSS(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, sum[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		if err != nil {
			t.Fatal(err)
		}
		return sig
	case "RS256":
		sig, err := rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		return sig
	case "HS256":
		m := hmac.New(sha256.New, key.([]byte))
		m.Write([]byte(input))
		return m.Sum(nil)
	}
	t.Fatalf("sign: alg %s", alg)
	return nil
}

// jws assembles a compact JWS of header and payload (maps, or JSON text as
// a string) signed with alg by key.
func jws(t *testing.T, alg string, key any, header, payload any) string {
	t.Helper()
	input := segment(t, header) + "." + segment(t, payload)
	return input + "." + b64u.EncodeToString(sign(t, alg, key, input))
}

// edit returns a copy of m with kv applied: a nil value deletes the key.
func edit(m map[string]any, kv ...any) map[string]any {
	out := maps.Clone(m)
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// atClaims are valid access-token claims of the issuer at now.
func atClaims(now time.Time) map[string]any {
	return map[string]any{
		"iss": hostileIssuer, "sub": "alice", "aud": "api", "client_id": "web", "scope": "read",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(), "jti": "at-" + strconv.FormatInt(now.UnixNano(), 36),
	}
}

// proofParts are the header and claims of a valid ES256 DPoP proof by c
// for GET hostileHTU with tok.
func (c *dpopClient) proofParts(tok string) (map[string]any, map[string]any) {
	var jti [12]byte
	_, _ = rand.Read(jti[:])
	sum := sha256.Sum256([]byte(tok))
	return map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": c.jwk},
		map[string]any{"jti": b64u.EncodeToString(jti[:]), "htm": "GET", "htu": hostileHTU,
			"iat": time.Now().Unix(), "ath": b64u.EncodeToString(sum[:])}
}

// ---------------------------------------------------------------- requests

// hostileRequest is one request as Envoy describes it.
type hostileRequest struct {
	method, path string
	headers      [][2]string // in order, every occurrence
	ext          map[string]string
	cert         string
	noHTTP       bool // a CheckRequest without HTTP attributes
}

func authHeader(v string) hostileRequest {
	return hostileRequest{headers: [][2]string{{"authorization", v}}}
}

func bearerReq(tok string) hostileRequest { return authHeader("Bearer " + tok) }

func dpopReq(tok, proof string) hostileRequest {
	return hostileRequest{headers: [][2]string{{"authorization", "DPoP " + tok}, {"dpop", proof}}}
}

func (r hostileRequest) with(name, value string) hostileRequest {
	r.headers = append(slices.Clone(r.headers), [2]string{name, value})
	return r
}

func (r hostileRequest) at(method, path string) hostileRequest {
	r.method, r.path = method, path
	return r
}

func (r hostileRequest) withExt(k, v string) hostileRequest {
	r.ext = map[string]string{k: v}
	return r
}

func (r hostileRequest) withCert(c string) hostileRequest {
	r.cert = c
	return r
}

// checkRequest builds the CheckRequest Envoy sends for r (encode_raw_headers:
// each header occurrence apart, values as raw bytes).
func (r hostileRequest) checkRequest() *authv3.CheckRequest {
	if r.noHTTP {
		return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{}}
	}
	method, path := r.method, r.path
	if method == "" {
		method = "GET"
	}
	if path == "" {
		path = hostilePath
	}
	hm := &corev3.HeaderMap{}
	add := func(k, v string) {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	add(":authority", hostileHost)
	add(":path", path)
	add(":method", method)
	add(":scheme", "https")
	for _, h := range r.headers {
		add(h[0], h[1])
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Certificate: r.cert},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "hostile", Method: method, Path: path, Host: hostileHost, Scheme: "https", Protocol: "HTTP/1.1",
			Size: -1, HeaderMap: hm,
		}},
		ContextExtensions: r.ext,
	}}
}

func (r hostileRequest) header(name string) (string, bool) {
	for _, h := range r.headers {
		if h[0] == name {
			return h[1], true
		}
	}
	return "", false
}

// presentedToken is the token of r's Authorization header, for leak checks.
func (r hostileRequest) presentedToken() string {
	v, _ := r.header("authorization")
	_, tok, _ := strings.Cut(v, " ")
	return strings.TrimSpace(tok)
}

// ---------------------------------------------------------------- cases

// hostileCase is one request and what the client must see.
type hostileCase struct {
	name string
	req  hostileRequest
	// prime are sent first, each must be allowed (a proof's first use).
	prime []hostileRequest
	// status 0: allowed. Otherwise the denial's status, its error code
	// (WWW-Authenticate error= and the problem body's error; "" for none)
	// and its challenge scheme ("Bearer", "DPoP"; "" for no challenge).
	status          int
	code, challenge string
	// upstream, on allow: the JWT the upstream must get ("": one minted,
	// never the presented token).
	upstream string
	// removed, on allow: headers that must be taken off the request.
	removed []string
	// after checks what else the case must leave as it was.
	after func(t *testing.T)
}

func allow(name string, r hostileRequest) hostileCase { return hostileCase{name: name, req: r} }

func refuse(name string, r hostileRequest, status int, code, challenge string) hostileCase {
	return hostileCase{name: name, req: r, status: status, code: code, challenge: challenge}
}

func (f *hostileFixture) cases(t *testing.T) []hostileCase {
	now := time.Now()
	at := atClaims(now)
	es := func(hdr map[string]any, claims any) string {
		return jws(t, "ES256", f.esKey, hdr, claims)
	}
	esHdr := map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": "es-1"}
	good := es(esHdr, at)
	psGood := jws(t, "PS256", f.psKey, map[string]any{"alg": "PS256", "typ": "at+jwt", "kid": "ps-1"}, at)
	esPub, _ := x509.MarshalPKIXPublicKey(&f.esKey.PublicKey)
	esPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: esPub})
	psPub, _ := x509.MarshalPKIXPublicKey(&f.psKey.PublicKey)
	psPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: psPub})
	esJWK, _ := json.Marshal(jwkSetKey(t, &f.esKey.PublicKey))
	_, attackerDER := clientCertificate(t)
	parts := strings.Split(good, ".")
	withSig := func(sig []byte) string { return parts[0] + "." + parts[1] + "." + b64u.EncodeToString(sig) }
	derSig := func() []byte {
		sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
		s, err := ecdsa.SignASN1(rand.Reader, f.esKey, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	claimsJSON := func(c map[string]any) string {
		b, _ := json.Marshal(c)
		return string(b)
	}
	var hugeScope strings.Builder
	for i := 0; hugeScope.Len() < 5000; i++ {
		hugeScope.WriteString("s" + strconv.Itoa(i) + " ")
	}
	jwtDPoP := es(esHdr, edit(at, "cnf", map[string]any{"jkt": f.alice.jkt}))
	expiredInSkew := es(esHdr, edit(at, "exp", now.Add(-30*time.Second).Unix()))
	// badAnswer is a case whose introspection answer is broken (503): a
	// good introspection goes first, so the circuit breaker, which opens
	// after consecutive failures, never answers in the answer's place.
	badAnswer := func(name, tok string) hostileCase {
		c := refuse(name, bearerReq(tok), 503, "", "")
		c.prime = []hostileRequest{bearerReq(f.fresh())}
		return c
	}

	// DPoP proofs: alice's key binds op-dpop, op-dpop-2 and jwtDPoP.
	proof := func(c *dpopClient, tok string, hdrKV []any, claimKV ...any) string {
		h, cl := c.proofParts(tok)
		return jws(t, "ES256", c.key, edit(h, hdrKV...), edit(cl, claimKV...))
	}
	aliceProof := func(claimKV ...any) string { return proof(f.alice, "op-dpop", nil, claimKV...) }
	replayed := aliceProof()
	reusedJTI := aliceProof("jti", "the-same-jti")
	privateJWK := edit(f.alice.jwk, "d", b64u.EncodeToString(f.alice.key.D.FillBytes(make([]byte, 32))))
	weakJWK := jwkSetKey(t, &f.weakKey.PublicKey)
	weakProof := func() string {
		h, cl := f.alice.proofParts("op-dpop")
		return jws(t, "PS256", f.weakKey, edit(h, "alg", "PS256", "jwk", weakJWK), cl)
	}()
	unsignedProof := func(alg string) string {
		h, cl := f.alice.proofParts("op-dpop")
		return segment(t, edit(h, "alg", alg)) + "." + segment(t, cl) + "." + b64u.EncodeToString([]byte("sig"))
	}
	hsProof := func() string {
		h, cl := f.alice.proofParts("op-dpop")
		return jws(t, "HS256", []byte("a-shared-secret-of-32-bytes-long"), edit(h, "alg", "HS256"), cl)
	}()
	tamperedProof := func() string {
		p := strings.Split(aliceProof(), ".")
		_, cl := f.alice.proofParts("op-dpop")
		return p[0] + "." + segment(t, edit(cl, "htm", "GET", "jti", "forged")) + "." + p[2]
	}()
	d := func(proof string) hostileRequest { return dpopReq("op-dpop", proof) }
	b := bearerReq

	expectNoAttackerFetch := func(t *testing.T) {
		t.Helper()
		if n := f.attacker.hits.Load(); n != 0 {
			t.Errorf("the attacker's URL was fetched %d times", n)
		}
	}
	const (
		br  = "Bearer"
		dp  = "DPoP"
		ir  = "invalid_request"
		it  = "invalid_token"
		idp = "invalid_dpop_proof"
		is  = "insufficient_scope"
	)

	cases := []hostileCase{
		// ---- Positive controls: the fixtures let valid requests through.
		allow("control: opaque token, scope read", b("op-read")),
		allow("control: lower-case bearer scheme (RFC 7235 §2.1)", authHeader("bearer op-read")),
		allow("control: upper-case BEARER scheme", authHeader("BEARER op-read")),
		{name: "control: ES256 at+jwt by value", req: b(good), upstream: good},
		{name: "control: PS256 at+jwt by value", req: b(psGood), upstream: psGood},
		{name: "control: expired 30 s ago, within the 60 s skew", req: b(expiredInSkew), upstream: expiredInSkew},
		{name: "control: DPoP-bound opaque token with its proof", req: d(aliceProof()), removed: []string{"dpop"}},
		{name: "control: DPoP-bound JWT with its proof", req: dpopReq(jwtDPoP, proof(f.alice, jwtDPoP, nil)), upstream: jwtDPoP},
		allow("control: DPoP htu host in upper case (RFC 3986 §6.2.2.1)", d(aliceProof("htu", "https://API.EXAMPLE"+hostilePath))),
		allow("control: DPoP htu with the default port", d(aliceProof("htu", "https://api.example:443"+hostilePath))),
		allow("control: DPoP proof, request with a query", d(aliceProof()).at("GET", hostilePath+"?page=2")),
		allow("control: certificate-bound token with its certificate", b("op-mtls").withCert(f.cert)),
		{name: "control: spoofed owned headers are removed", req: b("op-read").with("x-user-id", "admin").with("x-jwt-claims", "{}"),
			removed: []string{"x-user-id", "x-jwt-claims"}},

		// ---- The Authorization header and its token.
		refuse("no Authorization header", hostileRequest{}, 401, "", br),
		refuse("empty Authorization header", authHeader(""), 400, ir, br),
		refuse("scheme alone", authHeader("Bearer"), 400, ir, br),
		refuse("scheme and a space, no token", authHeader("Bearer "), 400, ir, br),
		refuse("two Authorization headers", b("op-read").with("authorization", "Bearer op-read"), 400, ir, br),
		refuse("Bearer and DPoP Authorization headers", b("op-read").with("authorization", "DPoP op-dpop"), 400, ir, br),
		refuse("Bearer with two spaces", authHeader("Bearer  op-read"), 400, ir, br),
		refuse("Bearer with a tab", authHeader("Bearer\top-read"), 400, ir, br),
		refuse("token in the query string", b("op-read").at("GET", hostilePath+"?access_token=op-read"), 400, ir, br),
		refuse("token in the query string only", hostileRequest{}.at("GET", hostilePath+"?a=1&access_token=op-read"), 400, ir, br),
		refuse("token in the query string, name percent-encoded", b("op-read").at("GET", hostilePath+"?access%5Ftoken=x"), 400, ir, br),
		refuse("token in the query string after ;", b("op-read").at("GET", hostilePath+"?a=1;access_token=x"), 400, ir, br),
		refuse("CRLF in the Authorization header", authHeader("Bearer op-read\r\nx-user-id: admin"), 400, ir, br),
		refuse("LF in the Authorization header", authHeader("Bearer op-read\nx"), 400, ir, br),
		refuse("NUL in the Authorization header", authHeader("Bearer op-read\x00"), 400, ir, br),
		refuse("DEL in the Authorization header", authHeader("Bearer op\x7fread"), 400, ir, br),
		refuse("non-ASCII token characters", authHeader("Bearer tökén"), 400, ir, br),
		refuse("invalid UTF-8 in the token", authHeader("Bearer op-\xff\xfe"), 400, ir, br),
		refuse("space inside the token", authHeader("Bearer op read"), 400, ir, br),
		refuse("comma inside the token", authHeader("Bearer op,read"), 400, ir, br),
		refuse("= inside the token", authHeader("Bearer op=read"), 400, ir, br),
		refuse("JSON instead of a token", authHeader(`Bearer {"alg":"none","sub":"admin"}`), 400, ir, br),
		refuse("token of 9 KiB", b(strings.Repeat("a", 9<<10)), 400, ir, br),
		refuse("token of 1 MB", b(strings.Repeat("a", 1<<20)), 431, "", ""),
		refuse("Basic credentials", authHeader("Basic dXNlcjpwYXNz"), 401, "", br),
		refuse("scheme with a colon", authHeader("Bearer: op-read"), 401, "", br),
		refuse("token = null", b("null"), 401, it, br),
		refuse("token = undefined", b("undefined"), 401, it, br),
		// A network filter's check carries no credential (served as OPA-Envoy serves it otherwise).
		refuse("request without HTTP attributes", hostileRequest{noHTTP: true}, 401, "", br),
		refuse("headers over 64 KiB", b("op-read").with("x-filler", strings.Repeat("f", 65<<10)), 431, "", ""),
		refuse("public path prefix trick without a token", hostileRequest{}.at("GET", "/healthz/../api/accounts/1"), 401, "", br),

		// ---- Opaque tokens and the introspection answer.
		refuse("unknown opaque token", b("op-unknown"), 401, it, br),
		refuse("inactive token whose answer carries a scope", b("op-inactive-scoped"), 401, it, br),
		badAnswer("introspection: active as the string \"true\"", "op-active-string"),
		badAnswer("introspection: active as the number 1", "op-active-number"),
		badAnswer("introspection: no active member", "op-no-active"),
		badAnswer("introspection: scope as an array of numbers", "op-scope-ints"),
		badAnswer("introspection: scope as an object", "op-scope-object"),
		badAnswer("introspection: sub as a number", "op-sub-number"),
		badAnswer("introspection: invalid UTF-8 in a claim", "op-utf8"),
		refuse("introspection: claims nested 5000 deep", b("op-nested"), 401, it, br),
		badAnswer("introspection: data after the JSON object", "op-trailing"),
		refuse("introspection: 512 KiB scope without the one needed", b("op-huge-scope"), 403, is, br),
		refuse("token lacks the scope of the method", b("op-read").at("POST", hostilePath), 403, is, br),
		refuse("route not in the route table", b("op-read").at("GET", "/api/unknown/1"), 403, "", ""),
		refuse("route for other clients only", b("op-admin-web").at("GET", "/api/admin/1"), 403, "", ""),

		// ---- JWTs by value: algorithms and keys.
		refuse("alg none, no signature", b(segment(t, map[string]any{"alg": "none", "typ": "at+jwt"})+"."+segment(t, at)+"."), 401, it, br),
		refuse("alg none with a signature", b(segment(t, map[string]any{"alg": "none", "typ": "at+jwt", "kid": "es-1"})+"."+segment(t, at)+".c2ln"), 401, it, br),
		refuse("alg None (capitalised)", b(segment(t, map[string]any{"alg": "None", "typ": "at+jwt", "kid": "es-1"})+"."+segment(t, at)+".c2ln"), 401, it, br),
		refuse("HS256 keyed with the issuer's EC public key PEM", b(jws(t, "HS256", esPEM, map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": "es-1"}, at)), 401, it, br),
		refuse("HS256 keyed with the issuer's RSA public key PEM", b(jws(t, "HS256", psPEM, map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": "ps-1"}, at)), 401, it, br),
		refuse("HS256 keyed with the issuer's JWK", b(jws(t, "HS256", esJWK, map[string]any{"alg": "HS256", "typ": "at+jwt", "kid": "es-1"}, at)), 401, it, br),
		refuse("RS256, not in the allow-list", b(jws(t, "RS256", f.psKey, map[string]any{"alg": "RS256", "typ": "at+jwt", "kid": "ps-1"}, at)), 401, it, br),
		refuse("ES256 header over a PS256 signature", b(jws(t, "PS256", f.psKey, map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": "ps-1"}, at)), 401, it, br),
		refuse("kid with path text", b(es(edit(esHdr, "kid", "../../../../etc/passwd"), at)), 401, it, br),
		refuse("kid with SQL text", b(es(edit(esHdr, "kid", "es-1' OR '1'='1"), at)), 401, it, br),
		refuse("kid with a NUL", b(es(edit(esHdr, "kid", "es-1\x00"), at)), 401, it, br),
		{name: "jku pointing at the attacker's JWKS", req: b(jws(t, "ES256", f.attackerKey, edit(esHdr, "kid", "evil", "jku", f.attacker.URL), at)),
			status: 401, code: it, challenge: br, after: expectNoAttackerFetch},
		{name: "x5u pointing at the attacker", req: b(jws(t, "ES256", f.attackerKey, edit(esHdr, "kid", "evil", "x5u", f.attacker.URL+"/cert.pem"), at)),
			status: 401, code: it, challenge: br, after: expectNoAttackerFetch},
		{name: "jku with the issuer's kid, signed by the attacker", req: b(jws(t, "ES256", f.attackerKey, edit(esHdr, "jku", f.attacker.URL), at)),
			status: 401, code: it, challenge: br, after: expectNoAttackerFetch},
		refuse("embedded jwk of the attacker's key", b(jws(t, "ES256", f.attackerKey, edit(esHdr, "kid", nil, "jwk", jwkSetKey(t, &f.attackerKey.PublicKey)), at)), 401, it, br),
		refuse("embedded x5c of the attacker's certificate", b(jws(t, "ES256", f.attackerKey, edit(esHdr, "kid", nil, "x5c", []string{base64.StdEncoding.EncodeToString(attackerDER)}), at)), 401, it, br),
		refuse("crit header", b(es(edit(esHdr, "crit", []string{"exp"}, "exp", 1), at)), 401, it, br),
		refuse("crit naming an unknown extension", b(es(edit(esHdr, "crit", []string{"urn:x:ext"}, "urn:x:ext", true), at)), 401, it, br),
		refuse("b64 false (unencoded payload)", b(es(edit(esHdr, "b64", false), at)), 401, it, br),
		refuse("signature by another key with the same kid", b(jws(t, "ES256", f.attackerKey, esHdr, at)), 401, it, br),
		refuse("signature by another key, no kid", b(jws(t, "ES256", f.attackerKey, edit(esHdr, "kid", nil), at)), 401, it, br),
		refuse("RSA-1024 key in the JWKS", b(jws(t, "PS256", f.weakKey, map[string]any{"alg": "PS256", "typ": "at+jwt", "kid": "rsa-weak"}, at)), 401, it, br),
		refuse("payload swapped under a valid signature", b(parts[0]+"."+segment(t, edit(at, "sub", "admin"))+"."+strings.Split(good, ".")[2]), 401, it, br),
		refuse("ES256 signature of 63 bytes", b(withSig(sign(t, "ES256", f.esKey, parts[0]+"."+parts[1])[:63])), 401, it, br),
		refuse("ES256 signature of 65 bytes", b(withSig(append(sign(t, "ES256", f.esKey, parts[0]+"."+parts[1]), 0))), 401, it, br),
		refuse("ES256 signature DER-encoded", b(withSig(derSig)), 401, it, br),
		refuse("ES256 signature all zero", b(withSig(make([]byte, 64))), 401, it, br),

		// ---- JWTs by value: claims.
		refuse("expired 1 s beyond the skew", b(es(esHdr, edit(at, "exp", now.Add(-61*time.Second).Unix()))), 401, it, br),
		refuse("expired an hour ago", b(es(esHdr, edit(at, "exp", now.Add(-time.Hour).Unix()))), 401, it, br),
		refuse("nbf in the future beyond the skew", b(es(esHdr, edit(at, "nbf", now.Add(2*time.Minute).Unix()))), 401, it, br),
		refuse("iat in the future beyond the skew", b(es(esHdr, edit(at, "iat", now.Add(2*time.Minute).Unix()))), 401, it, br),
		refuse("no exp", b(es(esHdr, edit(at, "exp", nil))), 401, it, br),
		refuse("exp as a string", b(es(esHdr, edit(at, "exp", strconv.FormatInt(now.Add(time.Hour).Unix(), 10)))), 401, it, br),
		refuse("exp of 1e300", b(es(esHdr, strings.Replace(claimsJSON(edit(at, "exp", "EXP")), `"EXP"`, "1e300", 1))), 401, it, br),
		refuse("exp negative", b(es(esHdr, edit(at, "exp", -1))), 401, it, br),
		refuse("wrong iss (not a configured issuer)", b(es(esHdr, edit(at, "iss", "https://evil.test"))), 401, it, br),
		refuse("iss with a trailing slash", b(es(esHdr, edit(at, "iss", hostileIssuer+"/"))), 401, it, br),
		refuse("iss as an array", b(es(esHdr, edit(at, "iss", []string{hostileIssuer}))), 401, it, br),
		refuse("wrong aud", b(es(esHdr, edit(at, "aud", "other-api"))), 401, it, br),
		refuse("no aud", b(es(esHdr, edit(at, "aud", nil))), 401, it, br),
		refuse("aud as an array of numbers", b(es(esHdr, edit(at, "aud", []int{1, 2}))), 401, it, br),
		refuse("wrong typ (JWT)", b(es(edit(esHdr, "typ", "JWT"), at)), 401, it, br),
		refuse("typ dpop+jwt (a proof as an access token)", b(es(edit(esHdr, "typ", "dpop+jwt"), at)), 401, it, br),
		refuse("no typ", b(es(edit(esHdr, "typ", nil), at)), 401, it, br),
		refuse("scope as an array of numbers", b(es(esHdr, edit(at, "scope", []int{1, 2}))), 401, it, br),
		refuse("sub as a number", b(es(esHdr, edit(at, "sub", 7))), 401, it, br),
		refuse("client_id as an object", b(es(esHdr, edit(at, "client_id", map[string]any{"id": "web"}))), 401, it, br),
		refuse("invalid UTF-8 in a claim", b(es(esHdr, strings.Replace(claimsJSON(edit(at, "sub", "alice-SUB")), "-SUB", "\xff\xfe", 1))), 401, it, br),
		refuse("claims nested 2500 deep", b(es(esHdr, strings.Replace(claimsJSON(edit(at, "deep", "DEEP")), `"DEEP"`, nested(2500), 1))), 401, it, br),
		refuse("huge scope string without the one needed", b(es(esHdr, edit(at, "scope", hugeScope.String()))), 403, is, br),
		refuse("payload is a JSON array", b(es(esHdr, `[{"iss":"`+hostileIssuer+`"}]`)), 401, it, br),
		refuse("data after the payload object", b(es(esHdr, claimsJSON(at)+`{"sub":"admin"}`)), 401, it, br),

		// ---- JWTs by value: the compact form.
		refuse("truncated signature", b(good[:len(good)-10]), 401, it, br),
		refuse("signature cut off after the dot", b(parts[0]+"."+parts[1]+"."), 401, it, br),
		refuse("two segments", b(parts[0]+"."+parts[1]), 401, it, br),
		refuse("four segments", b(good+"."+parts[2]), 401, it, br),
		refuse("five segments (JWE shape)", b(parts[0]+".."+parts[1]+"."+parts[2]+".tag"), 401, it, br),
		refuse("empty header segment", b("."+parts[1]+"."+parts[2]), 401, it, br),
		refuse("padding on every segment", b(parts[0]+"=."+parts[1]+"=."+parts[2]+"="), 400, ir, br),
		refuse("padding on the signature", b(good+"=="), 401, it, br),
		refuse("standard base64 (+ and /) in the payload", b(parts[0]+"."+strings.NewReplacer("-", "+", "_", "/").Replace(segment(t, edit(at, "x", "\xfb\xff\xfe>>>???")))+"."+parts[2]), 401, it, br),
		refuse("non-base64url character", b(parts[0]+"."+parts[1]+"!."+parts[2]), 400, ir, br),
		refuse("header segment not JSON", b(b64u.EncodeToString([]byte("hello"))+"."+parts[1]+"."+parts[2]), 401, it, br),

		// ---- Sender constraints: the scheme and the token's cnf.
		refuse("Bearer scheme for a DPoP-bound token (downgrade)", b("op-dpop"), 401, it, dp),
		refuse("Bearer scheme and a proof for a DPoP-bound token", b("op-dpop").with("dpop", aliceProof()), 401, it, dp),
		refuse("Bearer scheme for a DPoP-bound JWT", b(jwtDPoP), 401, it, dp),
		refuse("DPoP proof for a token without cnf (upgrade)", dpopReq("op-read", proof(f.alice, "op-read", nil)), 401, it, dp),
		refuse("DPoP proof for a certificate-bound token", dpopReq("op-mtls", proof(f.alice, "op-mtls", nil)).withCert(f.cert), 401, it, dp),
		refuse("cnf as a string", b("op-cnf-string"), 401, it, br),
		refuse("cnf with a confirmation method not verified here", b("op-cnf-jwk"), 401, it, br),
		refuse("cnf with an empty jkt", b("op-cnf-empty-jkt"), 401, it, br),
		refuse("bearer token on a route that demands DPoP", b("op-read").withExt("sender_constrained", "dpop"), 401, it, dp),
		refuse("bearer token on a route that demands a bound token", b("op-read").withExt("sender_constrained", "required"), 401, it, br),
		refuse("DPoP token on a route that demands mTLS", d(aliceProof()).withExt("sender_constrained", "mtls"), 401, it, dp),
		refuse("certificate-bound token without a certificate", b("op-mtls"), 401, it, br),
		refuse("certificate-bound token with another certificate", b("op-mtls").withCert(f.otherCert), 401, it, br),
		refuse("certificate-bound token with a garbled certificate", b("op-mtls").withCert("-----BEGIN%20CERTIFICATE-----%0Agarbage"), 401, it, br),
		refuse("route with an unknown sender_constrained value", b("op-read").withExt("sender_constrained", "maybe"), 500, "", ""),

		// ---- DPoP proofs.
		{name: "DPoP proof replayed", prime: []hostileRequest{d(replayed)}, req: d(replayed), status: 401, code: idp, challenge: dp},
		{name: "DPoP jti reused in a new proof", prime: []hostileRequest{d(reusedJTI)}, req: d(aliceProof("jti", "the-same-jti")), status: 401, code: idp, challenge: dp},
		refuse("DPoP proof reused across tokens (ath of another)", dpopReq("op-dpop-2", aliceProof()), 401, idp, dp),
		refuse("DPoP proof by another key (cnf mismatch)", d(proof(f.bob, "op-dpop", nil)), 401, it, dp),
		refuse("DPoP jwk holding the private key (d)", d(proof(f.alice, "op-dpop", []any{"jwk", privateJWK})), 401, idp, dp),
		refuse("DPoP jwk symmetric (oct)", d(proof(f.alice, "op-dpop", []any{"jwk", map[string]any{"kty": "oct", "k": "c2VjcmV0"}})), 401, idp, dp),
		refuse("DPoP jwk missing", d(proof(f.alice, "op-dpop", []any{"jwk", nil})), 401, idp, dp),
		refuse("DPoP jwk RSA-1024", d(weakProof), 401, idp, dp),
		refuse("DPoP EC jwk with alg PS256", d(proof(f.alice, "op-dpop", []any{"alg", "PS256"})), 401, idp, dp),
		refuse("DPoP alg none", d(unsignedProof("none")), 401, idp, dp),
		refuse("DPoP alg HS256", d(hsProof), 401, idp, dp),
		refuse("DPoP typ JWT", d(proof(f.alice, "op-dpop", []any{"typ", "JWT"})), 401, idp, dp),
		refuse("DPoP typ missing", d(proof(f.alice, "op-dpop", []any{"typ", nil})), 401, idp, dp),
		refuse("DPoP htu path differing by case", d(aliceProof("htu", "https://api.example/API/accounts/1")), 401, idp, dp),
		refuse("DPoP htu with a trailing slash", d(aliceProof("htu", hostileHTU+"/")), 401, idp, dp),
		refuse("DPoP htu with a query", d(aliceProof("htu", hostileHTU+"?page=2")), 401, idp, dp),
		refuse("DPoP htu with a fragment", d(aliceProof("htu", hostileHTU+"#x")), 401, idp, dp),
		refuse("DPoP htu of another host", d(aliceProof("htu", "https://evil.example"+hostilePath)), 401, idp, dp),
		refuse("DPoP htu of another port", d(aliceProof("htu", "https://api.example:8443"+hostilePath)), 401, idp, dp),
		refuse("DPoP htu over http", d(aliceProof("htu", "http://api.example"+hostilePath)), 401, idp, dp),
		refuse("DPoP htu with userinfo", d(aliceProof("htu", "https://user@api.example"+hostilePath)), 401, idp, dp),
		refuse("DPoP htm of another method", d(aliceProof("htm", "POST")), 401, idp, dp),
		refuse("DPoP htm in lower case", d(aliceProof("htm", "get")), 401, idp, dp),
		refuse("DPoP iat ten minutes past", d(aliceProof("iat", now.Add(-10*time.Minute).Unix())), 401, idp, dp),
		refuse("DPoP iat ten minutes ahead", d(aliceProof("iat", now.Add(10*time.Minute).Unix())), 401, idp, dp),
		refuse("DPoP iat missing", d(aliceProof("iat", nil)), 401, idp, dp),
		refuse("DPoP iat as a string", d(aliceProof("iat", strconv.FormatInt(now.Unix(), 10))), 401, idp, dp),
		refuse("DPoP jti missing", d(aliceProof("jti", nil)), 401, idp, dp),
		refuse("DPoP jti of 300 bytes", d(aliceProof("jti", strings.Repeat("j", 300))), 401, idp, dp),
		refuse("DPoP ath missing", d(aliceProof("ath", nil)), 401, idp, dp),
		refuse("DPoP payload swapped under a valid signature", d(tamperedProof), 401, idp, dp),
		refuse("DPoP proof of two segments", d("eyJhbGciOiJFUzI1NiJ9.e30"), 401, idp, dp),
		refuse("DPoP proof over 8 KiB", d(aliceProof("pad", strings.Repeat("p", 9<<10))), 401, idp, dp),
		refuse("DPoP proof with a CR inside", d(aliceProof()+"\r"), 401, idp, dp),
		refuse("DPoP scheme without a DPoP header", authHeader("DPoP op-dpop"), 400, ir, dp),
		refuse("two DPoP headers", d(aliceProof()).with("dpop", aliceProof()), 400, ir, dp),
		refuse("empty DPoP header", d(""), 400, ir, dp),
	}
	return cases
}

// jwkSetKey is the public JWK of key as a JSON object.
func jwkSetKey(t *testing.T, key crypto.PublicKey) map[string]any {
	t.Helper()
	k, err := jwk.Import(key)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(k)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// minHostileCases is the least the suite must hold (issue 8).
const minHostileCases = 80

func TestHostileInput(t *testing.T) {
	f := newHostileFixture(t)
	cases := f.cases(t)
	names := map[string]bool{}
	denials := 0
	for _, c := range cases {
		if names[c.name] {
			t.Fatalf("two cases named %q", c.name)
		}
		names[c.name] = true
		if c.status != 0 {
			denials++
		}
	}
	t.Logf("hostile-input cases: %d (%d refusals, %d positive controls)", len(cases), denials, len(cases)-denials)
	if denials < minHostileCases {
		t.Fatalf("%d refusal cases, want at least %d", denials, minHostileCases)
	}
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for i, p := range c.prime {
				if resp := server.ToResponse(f.engine.Check(ctx, server.ToRequest(p.checkRequest()))); resp.GetOkResponse() == nil {
					t.Fatalf("priming request %d denied: %d %s", i, resp.GetDeniedResponse().GetStatus().GetCode(), resp.GetDeniedResponse().GetBody())
				}
			}
			introBefore, jwksBefore := f.intro.hits.Load(), f.jwks.hits.Load()
			resp := server.ToResponse(f.engine.Check(ctx, server.ToRequest(c.req.checkRequest())))
			if c.status == 0 {
				f.checkAllowed(t, c, resp)
			} else {
				f.checkDenied(t, c, resp)
				if c.status == 400 || c.status == 431 {
					// Refused as sent: nothing was asked of the OAuth server.
					if f.intro.hits.Load() != introBefore || f.jwks.hits.Load() != jwksBefore {
						t.Errorf("a request refused as malformed reached the introspection endpoint or the JWKS")
					}
				}
			}
			if c.after != nil {
				c.after(t)
			}
		})
	}
}

func (f *hostileFixture) checkAllowed(t *testing.T, c hostileCase, resp *authv3.CheckResponse) {
	t.Helper()
	ok := resp.GetOkResponse()
	if ok == nil {
		d := resp.GetDeniedResponse()
		t.Fatalf("denied %d: %s", d.GetStatus().GetCode(), d.GetBody())
	}
	var auth []string
	for _, h := range ok.GetHeaders() {
		if h.GetHeader().GetKey() == "authorization" {
			auth = append(auth, h.GetHeader().GetValue())
		}
	}
	if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") {
		t.Fatalf("upstream authorization %q, want one Bearer JWT", auth)
	}
	jwt := strings.TrimPrefix(auth[0], "Bearer ")
	if strings.Count(jwt, ".") != 2 {
		t.Errorf("upstream token is not a JWT")
	}
	if c.upstream != "" && jwt != c.upstream {
		t.Errorf("upstream JWT is not the presented one")
	}
	if c.upstream == "" && jwt == c.req.presentedToken() {
		t.Errorf("the presented opaque token goes upstream")
	}
	removed := ok.GetHeadersToRemove()
	for _, h := range c.removed {
		if !slices.Contains(removed, h) {
			t.Errorf("%s not removed (remove %v)", h, removed)
		}
	}
	if _, sent := c.req.header("dpop"); sent && !slices.Contains(removed, "dpop") {
		t.Errorf("the DPoP proof goes upstream (remove %v)", removed)
	}
}

func (f *hostileFixture) checkDenied(t *testing.T, c hostileCase, resp *authv3.CheckResponse) {
	t.Helper()
	if resp.GetOkResponse() != nil {
		t.Fatalf("allowed; want %d %s", c.status, c.code)
	}
	d := resp.GetDeniedResponse()
	if got := int(d.GetStatus().GetCode()); got != c.status {
		t.Fatalf("status %d, want %d; body %s", got, c.status, d.GetBody())
	}
	var challenge string
	for _, h := range d.GetHeaders() {
		switch h.GetHeader().GetKey() {
		case "www-authenticate":
			challenge = h.GetHeader().GetValue()
		case "authorization":
			t.Errorf("a denial carries an authorization header")
		}
	}
	switch {
	case c.challenge == "" && challenge != "":
		t.Errorf("WWW-Authenticate %q, want none", challenge)
	case c.challenge != "" && !strings.HasPrefix(challenge, c.challenge+` realm="phantom-authz"`):
		t.Errorf("WWW-Authenticate %q, want a %s challenge", challenge, c.challenge)
	}
	if got := errorParam(challenge); got != c.code {
		t.Errorf("WWW-Authenticate error %q, want %q (%s)", got, c.code, challenge)
	}
	var p struct {
		Status int    `json:"status"`
		Error  string `json:"error"`
	}
	body := d.GetBody()
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatalf("denial body is not JSON: %v", err)
	}
	if p.Status != c.status || p.Error != c.code {
		t.Errorf("problem status %d error %q, want %d %q", p.Status, p.Error, c.status, c.code)
	}
	if len(body) > 1024 || len(challenge) > 512 {
		t.Errorf("denial of %d bytes, challenge of %d: the request is echoed", len(body), len(challenge))
	}
	if tok := c.req.presentedToken(); len(tok) >= 8 && (strings.Contains(body, tok) || strings.Contains(challenge, tok)) {
		t.Errorf("the denial repeats the presented token")
	}
}
