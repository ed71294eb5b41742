package authz_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/binding"
	"github.com/phantom-authz/phantom-authz/authz/credential"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// dpopClient is a client's DPoP key and what it signs.
type dpopClient struct {
	key *ecdsa.PrivateKey
	jwk map[string]any
	jkt string
}

func newDPoPClient(t testing.TB) *dpopClient {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.Import(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(k)
	c := &dpopClient{key: key, jkt: base64.RawURLEncoding.EncodeToString(tp)}
	_ = json.Unmarshal(b, &c.jwk)
	return c
}

// proof signs a DPoP proof for method and URL with the access token;
// extra claims are added or, when nil, removed.
func (c *dpopClient) proof(t testing.TB, method, url, accessToken string, extra map[string]any) string {
	t.Helper()
	var jti [12]byte
	_, _ = rand.Read(jti[:])
	sum := sha256.Sum256([]byte(accessToken))
	claims := map[string]any{
		"jti": base64.RawURLEncoding.EncodeToString(jti[:]), "htm": method, "htu": url,
		"iat": time.Now().Unix(), "ath": base64.RawURLEncoding.EncodeToString(sum[:]),
	}
	for k, v := range extra {
		if v == nil {
			delete(claims, k)
		} else {
			claims[k] = v
		}
	}
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": c.jwk})
	p, _ := json.Marshal(claims)
	input := enc.EncodeToString(h) + "." + enc.EncodeToString(p)
	sig, err := jwsbb.Sign(c.key, "ES256", []byte(input), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + enc.EncodeToString(sig)
}

// boundResolver knows tokens by value, each with its claims.
type boundResolver map[string]map[string]any

func (f boundResolver) Resolve(_ context.Context, c credential.Credential) (*token.Token, error) {
	claims, ok := f[c.Token]
	if !ok {
		return nil, token.ErrInactive
	}
	scopes := []string{"read"}
	if s, ok := claims["scope"].(string); ok {
		scopes = strings.Fields(s)
	}
	return &token.Token{Active: true, Kind: token.KindOpaque, Scopes: scopes, Claims: claims, JWT: "upstream.jwt.sig"}, nil
}

// scopeDecider allows a token with scope read, and asks for it otherwise.
type scopeDecider struct{}

func (scopeDecider) Ready() bool { return true }

func (scopeDecider) Decide(_ context.Context, _ *authz.Request, tok *token.Token) (authz.Decision, error) {
	if tok != nil && slices.Contains(tok.Scopes, "read") {
		return authz.Decision{Allowed: true, Reason: "allowed"}, nil
	}
	return authz.Decision{Status: 403, Error: "insufficient_scope", Scope: "read", Detail: "Scope read is required."}, nil
}

// failingReplay is a replay store that cannot answer.
type failingReplay struct{}

func (failingReplay) Use(context.Context, string, time.Time) (bool, error) {
	return false, errors.New("store down")
}

func headerOf(hs []authz.Header, name string) string {
	for _, h := range hs {
		if h.Key == name {
			return h.Value
		}
	}
	return ""
}

const apiURL = "https://api.example/api/x"

var quiet = slog.New(slog.DiscardHandler)

// What a client sees of the bind stage: status, challenge (scheme, algs,
// error), the DPoP-Nonce, and the problem body's error code.
func TestCheckSenderConstrained(t *testing.T) {
	alice, mallory := newDPoPClient(t), newDPoPClient(t)
	cert, x5t := "-----BEGIN%20CERTIFICATE-----%0AMIIBAA%3D%3D%0A-----END%20CERTIFICATE-----%0A", ""
	{
		sum := sha256.Sum256([]byte{0x30, 0x82, 0x01, 0x00})
		x5t = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	resolver := boundResolver{
		"tok-dpop":    {"sub": "alice", "cnf": map[string]any{"jkt": alice.jkt}},
		"tok-dpop-2":  {"sub": "alice", "cnf": map[string]any{"jkt": alice.jkt}},
		"tok-noscope": {"sub": "alice", "scope": "write", "cnf": map[string]any{"jkt": alice.jkt}},
		"tok-mtls":    {"sub": "bob", "cnf": map[string]any{"x5t#S256": x5t}},
		"tok-bearer":  {"sub": "carol"},
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	const dpopAlgs = `algs="ES256 PS256 EdDSA"`

	replayed := alice.proof(t, "GET", apiURL, "tok-dpop", nil)
	cases := []struct {
		name      string
		headers   map[string]string
		ext       map[string]string
		cert      string
		binder    binding.Config
		noBinder  bool // leave authz.Config.Binder nil: the engine's default
		status    int  // 0: allowed
		challenge string
		nonce     bool // a dpop-nonce header comes back
	}{
		{name: "DPoP proof", headers: map[string]string{"authorization": "DPoP tok-dpop", "dpop": alice.proof(t, "GET", apiURL, "tok-dpop", nil)}},
		{name: "DPoP proof, default binder", noBinder: true, headers: map[string]string{"authorization": "DPoP tok-dpop", "dpop": alice.proof(t, "GET", apiURL, "tok-dpop", nil)}},
		{name: "proof for another method", headers: map[string]string{"authorization": "DPoP tok-dpop", "dpop": alice.proof(t, "POST", apiURL, "tok-dpop", nil)},
			status: 401, challenge: `DPoP realm="test", ` + dpopAlgs + `, error="invalid_dpop_proof", error_description="The DPoP proof htm does not match the request method."`},
		{name: "proof for another URL", headers: map[string]string{"authorization": "DPoP tok-dpop", "dpop": alice.proof(t, "GET", "https://api.example/api/y", "tok-dpop", nil)},
			status: 401, challenge: `DPoP realm="test", ` + dpopAlgs + `, error="invalid_dpop_proof", error_description="The DPoP proof htu does not match the request URI."`},
		{name: "proof for another token", headers: map[string]string{"authorization": "DPoP tok-dpop", "dpop": alice.proof(t, "GET", apiURL, "tok-dpop-2", nil)},
			status: 401, challenge: `DPoP realm="test", ` + dpopAlgs + `, error="invalid_dpop_proof", error_description="The DPoP proof ath does not match the access token."`},
		{name: "proof by another key", headers: map[string]string{"authorization": "DPoP tok-dpop", "dpop": mallory.proof(t, "GET", apiURL, "tok-dpop", nil)},
			status: 401, challenge: `DPoP realm="test", ` + dpopAlgs + `, error="invalid_token", error_description="The access token is not bound to the DPoP proof key."`},
		{name: "downgrade to Bearer", headers: map[string]string{"authorization": "Bearer tok-dpop"},
			status: 401, challenge: `DPoP realm="test", ` + dpopAlgs + `, error="invalid_token", error_description="The access token is DPoP-bound and must be presented with the DPoP scheme and a proof."`},
		{name: "downgrade refused by the default binder", noBinder: true, headers: map[string]string{"authorization": "Bearer tok-dpop"},
			status: 401, challenge: `DPoP realm="test", ` + dpopAlgs + `, error="invalid_token", error_description="The access token is DPoP-bound and must be presented with the DPoP scheme and a proof."`},
		{name: "DPoP scheme without a proof", headers: map[string]string{"authorization": "DPoP tok-dpop"},
			status: 400, challenge: `DPoP realm="test", ` + dpopAlgs + `, error="invalid_request", error_description="The DPoP scheme requires one DPoP header."`},
		{name: "inactive token with DPoP", headers: map[string]string{"authorization": "DPoP junk", "dpop": alice.proof(t, "GET", apiURL, "junk", nil)},
			status: 401, challenge: `DPoP realm="test", ` + dpopAlgs + `, error="invalid_token", error_description="The access token is not active."`},
		{name: "policy denial of a DPoP request", headers: map[string]string{"authorization": "DPoP tok-noscope", "dpop": alice.proof(t, "GET", apiURL, "tok-noscope", nil)},
			status: 403, challenge: `DPoP realm="test", ` + dpopAlgs + `, error="insufficient_scope", error_description="Scope read is required.", scope="read"`},
		{name: "certificate-bound token, its certificate", headers: map[string]string{"authorization": "Bearer tok-mtls"}, cert: cert},
		{name: "certificate-bound token, no certificate", headers: map[string]string{"authorization": "Bearer tok-mtls"},
			status: 401, challenge: `Bearer realm="test", error="invalid_token", error_description="The access token is bound to a client certificate and the request came without one."`},
		{name: "certificate-bound token, another certificate", headers: map[string]string{"authorization": "Bearer tok-mtls"}, cert: strings.Replace(cert, "MIIBAA", "MIIBAQ", 1),
			status: 401, challenge: `Bearer realm="test", error="invalid_token", error_description="The access token is not bound to this client certificate."`},
		{name: "bearer token on an optional route", headers: map[string]string{"authorization": "Bearer tok-bearer"}},
		{name: "bearer token on a required route", headers: map[string]string{"authorization": "Bearer tok-bearer"}, ext: map[string]string{"sender_constrained": "required"},
			status: 401, challenge: `Bearer realm="test", error="invalid_token", error_description="This API requires a sender-constrained (DPoP- or certificate-bound) access token."`},
		{name: "bearer token, required everywhere", binder: binding.Config{RequireSenderConstrained: true}, headers: map[string]string{"authorization": "Bearer tok-bearer"},
			status: 401, challenge: `Bearer realm="test", error="invalid_token", error_description="This API requires a sender-constrained (DPoP- or certificate-bound) access token."`},
		{name: "no token on a DPoP route", headers: map[string]string{}, ext: map[string]string{"sender_constrained": "dpop"},
			status: 401, challenge: `DPoP realm="test", ` + dpopAlgs},
		{name: "misconfigured route", headers: map[string]string{"authorization": "Bearer tok-bearer"}, ext: map[string]string{"sender_constrained": "yes"}, status: 500},
		{name: "nonce required", binder: binding.Config{Nonce: &binding.NonceConfig{Secret: secret}},
			headers: map[string]string{"authorization": "DPoP tok-dpop", "dpop": alice.proof(t, "GET", apiURL, "tok-dpop", nil)},
			status:  401, nonce: true,
			challenge: `DPoP realm="test", ` + dpopAlgs + `, error="use_dpop_nonce", error_description="This API requires a server nonce in the DPoP proof; use the one in DPoP-Nonce."`},
		{name: "replay store down", binder: binding.Config{Replay: failingReplay{}},
			headers: map[string]string{"authorization": "DPoP tok-dpop", "dpop": alice.proof(t, "GET", apiURL, "tok-dpop", nil)}, status: 503},
		{name: "first use", headers: map[string]string{"authorization": "DPoP tok-dpop", "dpop": replayed}},
	}
	shared, err := binding.New(binding.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := authz.Config{Logger: quiet, Decider: scopeDecider{}, Resolver: resolver, Realm: "test", Binder: shared}
			if tc.noBinder {
				cfg.Binder = nil
			} else if tc.binder.Nonce != nil || tc.binder.Replay != nil || tc.binder.RequireSenderConstrained {
				b, err := binding.New(tc.binder)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Binder = b
			}
			e, err := authz.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			r := request(tc.headers)
			r.Path, r.ContextExtensions, r.Source.Certificate = "/api/x?page=2", tc.ext, tc.cert
			d := e.Check(context.Background(), r)
			if tc.status == 0 {
				if !d.Allowed {
					t.Fatalf("denied: %d %s", d.Status, headerOf(d.Headers, "www-authenticate"))
				}
				if got := headerOf(d.Headers, "authorization"); got != "Bearer upstream.jwt.sig" {
					t.Errorf("upstream authorization %q", got)
				}
				if _, sent := tc.headers["dpop"]; sent && !slices.Contains(d.RemoveHeaders, "dpop") {
					t.Errorf("the DPoP proof goes upstream: remove %v", d.RemoveHeaders)
				}
				return
			}
			if d.Allowed || d.Status != tc.status {
				t.Fatalf("allowed=%v status=%d, want %d (%s)", d.Allowed, d.Status, tc.status, d.Body)
			}
			ch := headerOf(d.Headers, "www-authenticate")
			if tc.challenge != "" && ch != tc.challenge {
				t.Errorf("www-authenticate\n got %s\nwant %s", ch, tc.challenge)
			}
			if tc.status >= 500 && ch != "" {
				t.Errorf("a %d carries a challenge: %s", tc.status, ch)
			}
			if n := headerOf(d.Headers, "dpop-nonce"); (n != "") != tc.nonce {
				t.Errorf("dpop-nonce %q", n)
			}
			var p struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal([]byte(d.Body), &p); err != nil {
				t.Fatalf("body: %v", err)
			}
			if want := errorParam(tc.challenge); p.Error != want {
				t.Errorf("problem error %q, want %q", p.Error, want)
			}
		})
	}

	// The proof used in "first use" is refused the second time.
	e, _ := authz.New(authz.Config{Logger: quiet, Decider: scopeDecider{}, Resolver: resolver, Realm: "test", Binder: shared})
	r := request(map[string]string{"authorization": "DPoP tok-dpop", "dpop": replayed})
	r.Path = "/api/x"
	d := e.Check(context.Background(), r)
	if d.Allowed || d.Status != 401 || !strings.Contains(headerOf(d.Headers, "www-authenticate"), `error="invalid_dpop_proof", error_description="The DPoP proof has already been used."`) {
		t.Errorf("replayed proof: %d %s", d.Status, headerOf(d.Headers, "www-authenticate"))
	}
}

func errorParam(challenge string) string {
	_, rest, ok := strings.Cut(challenge, `error="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// A nonce handed out in a denial lets the retry through; a nonce from the
// second half of its life is replaced in DPoP-Nonce on the allow.
func TestCheckDPoPNonceRoundTrip(t *testing.T) {
	alice := newDPoPClient(t)
	// Nonces live in Lifetime/2 slices aligned to the epoch: start one
	// minute into a slice, so that 31 minutes later is the next slice (the
	// nonce's second half) whatever the time of day.
	at := time.Now().Truncate(30 * time.Minute).Add(time.Minute)
	b, err := binding.New(binding.Config{
		Nonce: &binding.NonceConfig{Secret: []byte("0123456789abcdef0123456789abcdef"), Lifetime: time.Hour},
		Now:   func() time.Time { return at },
	})
	if err != nil {
		t.Fatal(err)
	}
	e, err := authz.New(authz.Config{Logger: quiet, Decider: scopeDecider{}, Realm: "test", Binder: b,
		Resolver: boundResolver{"tok": {"sub": "alice", "cnf": map[string]any{"jkt": alice.jkt}}}})
	if err != nil {
		t.Fatal(err)
	}
	check := func(nonce string) authz.Decision {
		extra := map[string]any{"iat": at.Unix()}
		if nonce != "" {
			extra["nonce"] = nonce
		}
		r := request(map[string]string{"authorization": "DPoP tok", "dpop": alice.proof(t, "GET", apiURL, "tok", extra)})
		r.Path = "/api/x"
		return e.Check(context.Background(), r)
	}
	d := check("")
	nonce := headerOf(d.Headers, "dpop-nonce")
	if d.Status != 401 || nonce == "" {
		t.Fatalf("no nonce asked for: %d %v", d.Status, d.Headers)
	}
	if d = check(nonce); !d.Allowed {
		t.Fatalf("retry with the nonce: %d %s", d.Status, headerOf(d.Headers, "www-authenticate"))
	}
	if n := headerOf(d.ResponseHeaders, "dpop-nonce"); n != "" {
		t.Errorf("a fresh nonce replaced at once: %q", n)
	}
	at = at.Add(31 * time.Minute)
	if d = check(nonce); !d.Allowed {
		t.Fatalf("nonce in its second half: %d", d.Status)
	}
	if n := headerOf(d.ResponseHeaders, "dpop-nonce"); n == "" || n == nonce {
		t.Errorf("no fresh nonce on the response: %q", n)
	}
}

// The DPoP header is the bind stage's only when it runs: with credentials
// off, the policy alone decides and the headers are its business.
func TestCheckDPoPHeaderUpstream(t *testing.T) {
	withCreds, err := authz.New(authz.Config{Logger: quiet, Decider: scopeDecider{}, Realm: "test",
		Resolver: boundResolver{"tok": {"sub": "carol"}}})
	if err != nil {
		t.Fatal(err)
	}
	r := request(map[string]string{"authorization": "Bearer tok", "dpop": "stray.proof.value"})
	if d := withCreds.Check(context.Background(), r); !d.Allowed || !slices.Contains(d.RemoveHeaders, "dpop") {
		t.Errorf("a stray DPoP header next to a bearer token: allowed=%v remove=%v", d.Allowed, d.RemoveHeaders)
	}

	policyOnly, err := authz.New(authz.Config{Logger: quiet, Decider: allowAll{}})
	if err != nil {
		t.Fatal(err)
	}
	if d := policyOnly.Check(context.Background(), r); !d.Allowed || slices.Contains(d.RemoveHeaders, "dpop") {
		t.Errorf("policy-only mode: allowed=%v remove=%v, want the DPoP header left alone", d.Allowed, d.RemoveHeaders)
	}
}

type allowAll struct{}

func (allowAll) Ready() bool { return true }

func (allowAll) Decide(context.Context, *authz.Request, *token.Token) (authz.Decision, error) {
	return authz.Decision{Allowed: true}, nil
}

// x-forwarded-client-cert is believed only from the proxies binding.xfcc
// names: from anyone else the upstream must not get it either, or it would
// take the client's word for a certificate. Public routes and dry-run allows
// strip it too.
func TestCheckStripsUntrustedXFCC(t *testing.T) {
	const gw = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
	b, err := binding.New(binding.Config{XFCC: &binding.XFCCConfig{TrustedPrincipals: []string{gw}}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := authz.New(authz.Config{Logger: quiet, Decider: allowAll{}, Realm: "test", Binder: b,
		PublicPaths: []string{"/public"}, Resolver: boundResolver{"tok": {"sub": "carol"}}})
	if err != nil {
		t.Fatal(err)
	}
	const forged = "Hash=0000000000000000000000000000000000000000000000000000000000000000"
	cases := []struct {
		name, path, principal string
		strip                 bool
	}{
		{"client-sent, no principal", "/api/x", "", true},
		{"client-sent, another principal", "/api/x", "spiffe://cluster.local/ns/default/sa/attacker", true},
		{"client-sent, public route", "/public", "", true},
		{"from the trusted gateway", "/api/x", gw, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := request(map[string]string{"authorization": "Bearer tok", "x-forwarded-client-cert": forged})
			r.Path = tc.path
			r.Source.Principal = tc.principal
			d := e.Check(context.Background(), r)
			if !d.Allowed {
				t.Fatalf("denied: %d %s", d.Status, d.Reason)
			}
			if got := slices.Contains(d.RemoveHeaders, "x-forwarded-client-cert"); got != tc.strip {
				t.Errorf("x-forwarded-client-cert removed = %v, want %v (remove %v)", got, tc.strip, d.RemoveHeaders)
			}
		})
	}
}
