package binding_test

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/phantom-authz/phantom-authz/authz/binding"
	"github.com/phantom-authz/phantom-authz/authz/credential"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

var now = time.Unix(1_800_000_000, 0)

func clock() time.Time { return now }

const (
	tok1 = "2YotnFZFEjr1zCsicMWpAA"
	tok2 = "tGzv3JOkF0XG5Qx2TlKWIA"
)

func boundToken(cnf map[string]any) *token.Token {
	return &token.Token{Active: true, Kind: token.KindOpaque, Claims: map[string]any{"sub": "u", "cnf": cnf}}
}

func dpopToken(jkt string) *token.Token { return boundToken(map[string]any{"jkt": jkt}) }

func certToken(x5t string) *token.Token { return boundToken(map[string]any{"x5t#S256": x5t}) }

func bearerToken() *token.Token {
	return &token.Token{Active: true, Kind: token.KindOpaque, Claims: map[string]any{"sub": "u"}}
}

// dpopInput is GET https://api.example.com/v1/accounts?page=2 with tok1 and
// the proof.
func dpopInput(proof string) binding.Input {
	return binding.Input{
		Scheme: credential.SchemeDPoP, Token: tok1, Proof: proof,
		Method: "GET", URLScheme: "https", Host: "api.example.com", Path: "/v1/accounts?page=2",
	}
}

// jktOfHeader is the thumbprint of the jwk in the proof's header, or "".
func jktOfHeader(t *testing.T, p *proof) string {
	t.Helper()
	b, _ := json.Marshal(p.header["jwk"])
	k, err := jwk.ParseKey(b)
	if err != nil {
		return ""
	}
	pub, err := k.PublicKey()
	if err != nil {
		return ""
	}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return ""
	}
	return encode(tp)
}

func newBinder(t *testing.T, cfg binding.Config) *binding.Binder {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = clock
	}
	b, err := binding.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkErr asserts err is of kind with a reason containing reason (nil kind:
// no error).
func checkErr(t *testing.T, err, kind error, reason string) {
	t.Helper()
	if kind == nil {
		if err != nil {
			t.Fatalf("Bind: %v, want success", err)
		}
		return
	}
	if !errors.Is(err, kind) {
		t.Fatalf("Bind: %v, want %v", err, kind)
	}
	var be *binding.Error
	if !errors.As(err, &be) {
		t.Fatalf("Bind: %T is not a *binding.Error", err)
	}
	if !strings.Contains(be.Reason, reason) {
		t.Errorf("reason %q, want it to say %q", be.Reason, reason)
	}
}

// Every check of a DPoP proof (RFC 9449 §4.3), each with a case that fails it.
func TestBindDPoPProof(t *testing.T) {
	k := keys()
	otherJKT := thumbprint(t, &k.es256b.PublicKey)
	es384 := binding.Config{Algorithms: []string{"ES256", "ES384"}}
	withRS := binding.Config{Algorithms: []string{"ES256", "RS256", "PS256"}}

	cases := []struct {
		name   string
		cfg    binding.Config
		proof  func(p *proof)          // changes the proof before it is signed
		in     func(in *binding.Input) // changes the request
		tok    *token.Token            // default: bound to the proof's jwk
		kind   error                   // nil: bound
		reason string
	}{
		{name: "valid ES256"},
		{name: "valid PS256", proof: func(p *proof) { p.signWith(t, k.rsa, "PS256") }},
		{name: "valid EdDSA", proof: func(p *proof) { p.signWith(t, k.ed, "EdDSA") }},
		{name: "htu with the default port", proof: func(p *proof) { p.claims["htu"] = "https://api.example.com:443/v1/accounts" }},
		{name: "request host with the default port", in: func(in *binding.Input) { in.Host = "api.example.com:443" }},
		{name: "host and scheme in another case", proof: func(p *proof) { p.claims["htu"] = "HTTPS://API.Example.COM/v1/accounts" }},
		{name: "fractional iat", proof: func(p *proof) { p.claims["iat"] = float64(now.Unix()) + 0.5 }},
		{name: "iat at the edge of the window", proof: func(p *proof) { p.claims["iat"] = now.Add(-60 * time.Second).Unix() }},

		// The proof as a JWS.
		{name: "not a JWS", in: func(in *binding.Input) { in.Proof = "a.b" }, kind: binding.ErrInvalidProof, reason: "not a compact JWS"},
		{name: "four segments", in: func(in *binding.Input) { in.Proof += ".x" }, kind: binding.ErrInvalidProof, reason: "not a compact JWS"},
		{name: "line break inside", in: func(in *binding.Input) { in.Proof += "\r\n" }, kind: binding.ErrInvalidProof, reason: "not a compact JWS"},
		{name: "empty signature", in: func(in *binding.Input) { in.Proof = in.Proof[:strings.LastIndexByte(in.Proof, '.')+1] }, kind: binding.ErrInvalidProof, reason: "not a compact JWS"},
		{name: "too large", in: func(in *binding.Input) { in.Proof = strings.Repeat("a", binding.MaxProofBytes+1) }, kind: binding.ErrInvalidProof, reason: "larger than"},
		{name: "header not JSON", in: func(in *binding.Input) { in.Proof = "bm90IGpzb24" + in.Proof[strings.IndexByte(in.Proof, '.'):] }, kind: binding.ErrInvalidProof, reason: "header is not valid JSON"},

		// typ.
		{name: "typ missing", proof: func(p *proof) { delete(p.header, "typ") }, kind: binding.ErrInvalidProof, reason: "typ"},
		{name: "typ JWT", proof: func(p *proof) { p.header["typ"] = "JWT" }, kind: binding.ErrInvalidProof, reason: "typ"},
		{name: "typ at+jwt", proof: func(p *proof) { p.header["typ"] = "at+jwt" }, kind: binding.ErrInvalidProof, reason: "typ"},

		// alg.
		{name: "alg none", proof: func(p *proof) { p.header["alg"], p.alg = "none", "none" }, kind: binding.ErrInvalidProof, reason: "alg"},
		{name: "alg HS256", proof: func(p *proof) {
			p.header["alg"], p.alg, p.key = "HS256", "HS256", []byte("0123456789abcdef0123456789abcdef")
			p.header["jwk"] = map[string]any{"kty": "oct", "k": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}
		}, kind: binding.ErrInvalidProof, reason: "alg"},
		{name: "alg not in the allow-list", proof: func(p *proof) { p.signWith(t, k.p384, "ES384") }, kind: binding.ErrInvalidProof, reason: "alg"},
		{name: "alg missing", proof: func(p *proof) { delete(p.header, "alg") }, kind: binding.ErrInvalidProof, reason: "alg"},
		{name: "allowed ES384", cfg: es384, proof: func(p *proof) { p.signWith(t, k.p384, "ES384") }},

		// jwk.
		{name: "no jwk", proof: func(p *proof) { delete(p.header, "jwk") }, kind: binding.ErrInvalidProof, reason: "no jwk"},
		{name: "jwk not an object", proof: func(p *proof) { p.header["jwk"] = "key" }, kind: binding.ErrInvalidProof, reason: "no jwk"},
		{name: "private EC key in jwk", proof: func(p *proof) { p.header["jwk"] = jwkOf(t, k.es256) }, kind: binding.ErrInvalidProof, reason: "private"},
		{name: "private RSA key in jwk", proof: func(p *proof) { p.signWith(t, k.rsa, "PS256"); p.header["jwk"] = jwkOf(t, k.rsa) }, kind: binding.ErrInvalidProof, reason: "private"},
		{name: "private Ed25519 key in jwk", proof: func(p *proof) { p.signWith(t, k.ed, "EdDSA"); p.header["jwk"] = jwkOf(t, k.ed) }, kind: binding.ErrInvalidProof, reason: "private"},
		{name: "symmetric jwk", proof: func(p *proof) {
			p.header["jwk"] = map[string]any{"kty": "oct", "k": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}
		}, kind: binding.ErrInvalidProof, reason: "private or symmetric"},
		{name: "jwk of unknown kty", proof: func(p *proof) { p.header["jwk"] = map[string]any{"kty": "XYZ", "x": "AA"} }, kind: binding.ErrInvalidProof, reason: "not a valid public key"},
		{name: "EC point missing", proof: func(p *proof) { p.header["jwk"] = map[string]any{"kty": "EC", "crv": "P-256"} }, kind: binding.ErrInvalidProof, reason: "not a valid public key"},
		{name: "ES256 with a P-384 key", proof: func(p *proof) { p.key = k.p384; p.header["jwk"] = jwkOf(t, &k.p384.PublicKey) }, kind: binding.ErrInvalidProof, reason: "does not match its alg"},
		{name: "ES256 with an RSA key", proof: func(p *proof) { p.header["jwk"] = jwkOf(t, &k.rsa.PublicKey) }, kind: binding.ErrInvalidProof, reason: "does not match its alg"},
		// jwx refuses to parse a short RSA key already; either refusal is right.
		{name: "RSA key under 2048 bits", cfg: withRS, proof: func(p *proof) {
			p.key, p.alg, p.header["alg"] = k.rsa1024, "RS256", "RS256"
			p.header["jwk"] = map[string]any{"kty": "RSA", "n": encode(k.rsa1024.N.Bytes()), "e": "AQAB"}
		}, kind: binding.ErrInvalidProof},
		{name: "allowed RS256", cfg: withRS, proof: func(p *proof) { p.signWith(t, k.rsa, "RS256") }},

		// Signature.
		{name: "signed by another key", proof: func(p *proof) { p.key = k.es256b }, kind: binding.ErrInvalidProof, reason: "signature"},
		{name: "signature altered", in: func(in *binding.Input) {
			i := strings.LastIndexByte(in.Proof, '.') + 3
			c := byte('A')
			if in.Proof[i] == 'A' {
				c = 'B'
			}
			in.Proof = in.Proof[:i] + string(c) + in.Proof[i+1:]
		}, kind: binding.ErrInvalidProof, reason: "signature"},

		// jti.
		{name: "jti missing", proof: func(p *proof) { delete(p.claims, "jti") }, kind: binding.ErrInvalidProof, reason: "jti"},
		{name: "jti not a string", proof: func(p *proof) { p.claims["jti"] = 42 }, kind: binding.ErrInvalidProof, reason: "claims are not valid JSON"},
		{name: "jti too long", proof: func(p *proof) { p.claims["jti"] = strings.Repeat("j", 257) }, kind: binding.ErrInvalidProof, reason: "jti"},

		// htm.
		{name: "htm for another method", proof: func(p *proof) { p.claims["htm"] = "POST" }, kind: binding.ErrInvalidProof, reason: "htm"},
		{name: "htm in lower case", proof: func(p *proof) { p.claims["htm"] = "get" }, kind: binding.ErrInvalidProof, reason: "htm"},
		{name: "request of another method", in: func(in *binding.Input) { in.Method = "DELETE" }, kind: binding.ErrInvalidProof, reason: "htm"},
		{name: "htm missing", proof: func(p *proof) { delete(p.claims, "htm") }, kind: binding.ErrInvalidProof, reason: "htm"},

		// htu.
		{name: "htu scheme http", proof: func(p *proof) { p.claims["htu"] = "http://api.example.com/v1/accounts" }, kind: binding.ErrInvalidProof, reason: "htu"},
		{name: "htu another host", proof: func(p *proof) { p.claims["htu"] = "https://evil.example.com/v1/accounts" }, kind: binding.ErrInvalidProof, reason: "htu"},
		{name: "htu another port", proof: func(p *proof) { p.claims["htu"] = "https://api.example.com:8443/v1/accounts" }, kind: binding.ErrInvalidProof, reason: "htu"},
		{name: "htu another path", proof: func(p *proof) { p.claims["htu"] = "https://api.example.com/v1/payments" }, kind: binding.ErrInvalidProof, reason: "htu"},
		{name: "htu trailing slash", proof: func(p *proof) { p.claims["htu"] = "https://api.example.com/v1/accounts/" }, kind: binding.ErrInvalidProof, reason: "htu"},
		{name: "htu path in another case", proof: func(p *proof) { p.claims["htu"] = "https://api.example.com/v1/Accounts" }, kind: binding.ErrInvalidProof, reason: "htu"},
		{name: "htu with a query", proof: func(p *proof) { p.claims["htu"] = "https://api.example.com/v1/accounts?page=2" }, kind: binding.ErrInvalidProof, reason: "htu"},
		{name: "htu with a fragment", proof: func(p *proof) { p.claims["htu"] = "https://api.example.com/v1/accounts#x" }, kind: binding.ErrInvalidProof, reason: "htu"},
		{name: "htu with userinfo", proof: func(p *proof) { p.claims["htu"] = "https://u@api.example.com/v1/accounts" }, kind: binding.ErrInvalidProof, reason: "htu"},
		{name: "htu relative", proof: func(p *proof) { p.claims["htu"] = "/v1/accounts" }, kind: binding.ErrInvalidProof, reason: "htu"},
		{name: "htu missing", proof: func(p *proof) { delete(p.claims, "htu") }, kind: binding.ErrInvalidProof, reason: "htu"},
		{name: "request over http", in: func(in *binding.Input) { in.URLScheme = "http" }, kind: binding.ErrInvalidProof, reason: "htu"},

		// iat.
		{name: "iat too old", proof: func(p *proof) { p.claims["iat"] = now.Add(-61 * time.Second).Unix() }, kind: binding.ErrInvalidProof, reason: "past"},
		{name: "iat too new", proof: func(p *proof) { p.claims["iat"] = now.Add(61 * time.Second).Unix() }, kind: binding.ErrInvalidProof, reason: "future"},
		{name: "iat missing", proof: func(p *proof) { delete(p.claims, "iat") }, kind: binding.ErrInvalidProof, reason: "no iat"},
		{name: "iat a string", proof: func(p *proof) { p.claims["iat"] = "1800000000" }, kind: binding.ErrInvalidProof, reason: "not valid JSON"},
		{name: "narrower window", cfg: binding.Config{IATWindow: 5 * time.Second}, proof: func(p *proof) { p.claims["iat"] = now.Add(-6 * time.Second).Unix() },
			kind: binding.ErrInvalidProof, reason: "past"},

		// ath.
		{name: "ath missing", proof: func(p *proof) { delete(p.claims, "ath") }, kind: binding.ErrInvalidProof, reason: "no ath"},
		{name: "ath of another token", proof: func(p *proof) { p.claims["ath"] = ath(tok2) }, kind: binding.ErrInvalidProof, reason: "ath"},
		{name: "ath not base64url", proof: func(p *proof) { p.claims["ath"] = strings.ReplaceAll(ath(tok1), "_", "/") + "=" }, kind: binding.ErrInvalidProof, reason: "ath"},

		// The token's binding.
		{name: "token bound to another key", tok: dpopToken(otherJKT), kind: binding.ErrInvalidToken, reason: "not bound to the DPoP proof key"},
		{name: "token not DPoP-bound", tok: bearerToken(), kind: binding.ErrInvalidToken, reason: "not DPoP-bound"},
		{name: "token certificate-bound only", tok: certToken("abc"), kind: binding.ErrInvalidToken, reason: "not DPoP-bound"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newProof(t, tok1, now)
			if tc.proof != nil {
				tc.proof(p)
			}
			in := dpopInput(p.sign(t))
			if tc.in != nil {
				tc.in(&in)
			}
			tok := tc.tok
			if tok == nil {
				jkt := jktOfHeader(t, p)
				if jkt == "" {
					jkt = thumbprint(t, &k.es256.PublicKey) // the jwk is broken: bind to the usual key
				}
				tok = dpopToken(jkt)
			}
			_, err := newBinder(t, tc.cfg).Bind(context.Background(), in, tok)
			checkErr(t, err, tc.kind, tc.reason)
			var be *binding.Error
			if errors.As(err, &be) && !be.DPoP {
				t.Errorf("a DPoP request's denial asks for a Bearer challenge: %v", err)
			}
		})
	}
}

// Each proof is accepted once while its iat is in the window, whatever
// token it comes with.
func TestBindDPoPReplay(t *testing.T) {
	k := keys()
	jkt := thumbprint(t, &k.es256.PublicKey)
	b := newBinder(t, binding.Config{})
	ctx := context.Background()

	p := newProof(t, tok1, now)
	proof := p.sign(t)
	if _, err := b.Bind(ctx, dpopInput(proof), dpopToken(jkt)); err != nil {
		t.Fatalf("first use: %v", err)
	}
	_, err := b.Bind(ctx, dpopInput(proof), dpopToken(jkt))
	checkErr(t, err, binding.ErrInvalidProof, "already been used")

	// The same key and jti, signed anew for another token: still a replay.
	p.claims["ath"] = ath(tok2)
	in := dpopInput(p.sign(t))
	in.Token = tok2
	_, err = b.Bind(ctx, in, dpopToken(jkt))
	checkErr(t, err, binding.ErrInvalidProof, "already been used")

	// The same jti from another key is another proof.
	q := newProof(t, tok1, now).signWith(t, k.es256b, "ES256")
	q.claims["jti"] = p.claims["jti"]
	if _, err := b.Bind(ctx, dpopInput(q.sign(t)), dpopToken(thumbprint(t, &k.es256b.PublicKey))); err != nil {
		t.Fatalf("same jti, other key: %v", err)
	}

	// A proof that failed another check does not use up its jti.
	r := newProof(t, tok1, now)
	r.claims["htm"] = "POST"
	bad := dpopInput(r.sign(t))
	if _, err := b.Bind(ctx, bad, dpopToken(jkt)); !errors.Is(err, binding.ErrInvalidProof) {
		t.Fatalf("bad proof: %v", err)
	}
	bad.Method = "POST"
	if _, err := b.Bind(ctx, bad, dpopToken(jkt)); err != nil {
		t.Fatalf("the jti of a refused proof was used up: %v", err)
	}
}

// failingStore is a replay store that cannot answer.
type failingStore struct{}

func (failingStore) Use(context.Context, string, time.Time) (bool, error) {
	return false, errors.New("redis: connection refused")
}

func TestBindReplayStoreDown(t *testing.T) {
	jkt := thumbprint(t, &keys().es256.PublicKey)
	b := newBinder(t, binding.Config{Replay: failingStore{}})
	_, err := b.Bind(context.Background(), dpopInput(newProof(t, tok1, now).sign(t)), dpopToken(jkt))
	checkErr(t, err, binding.ErrUnavailable, "unavailable")
	var be *binding.Error
	if errors.As(err, &be) && strings.Contains(be.Reason, "redis") {
		t.Errorf("the reason leaks the store's error: %q", be.Reason)
	}
}

// Server nonces (RFC 9449 §9): required when configured, bound to the key,
// accepted for their lifetime, refreshed in its second half.
func TestBindDPoPNonce(t *testing.T) {
	k := keys()
	jkt := thumbprint(t, &k.es256.PublicKey)
	secret := []byte("0123456789abcdef0123456789abcdef")
	clockAt := now
	cfg := binding.Config{Nonce: &binding.NonceConfig{Secret: secret, Lifetime: 4 * time.Minute}, Now: func() time.Time { return clockAt }}
	b := newBinder(t, cfg)
	ctx := context.Background()
	bind := func(nonce any, jwkKey *proof) (binding.Result, error) {
		p := newProof(t, tok1, clockAt)
		if jwkKey != nil {
			p = jwkKey
		}
		if nonce != nil {
			p.claims["nonce"] = nonce
		}
		return b.Bind(ctx, dpopInput(p.sign(t)), dpopToken(jktOfHeader(t, p)))
	}

	// No nonce: use_dpop_nonce, with the nonce to use.
	_, err := bind(nil, nil)
	checkErr(t, err, binding.ErrUseNonce, "requires a server nonce")
	var be *binding.Error
	if !errors.As(err, &be) || be.Nonce == "" || !be.DPoP {
		t.Fatalf("no nonce handed out: %+v", be)
	}
	nonce := be.Nonce

	// With it: bound, and no new nonce yet.
	res, err := bind(nonce, nil)
	if err != nil {
		t.Fatalf("with the nonce: %v", err)
	}
	if res.Nonce != "" {
		t.Errorf("a fresh nonce was replaced: %q", res.Nonce)
	}

	// Forged, empty, or issued to another key: refused, a nonce handed out.
	forged := []byte(nonce)
	forged[len(forged)-2] ^= 1
	other := newProof(t, tok1, clockAt).signWith(t, k.es256b, "ES256")
	for name, n := range map[string]any{"forged": string(forged), "empty": "", "junk": "not-a-nonce", "a number": nil} {
		t.Run(name, func(t *testing.T) {
			if n == nil {
				_, err = bind(nil, nil)
			} else {
				_, err = bind(n, nil)
			}
			checkErr(t, err, binding.ErrUseNonce, "nonce")
		})
	}
	_, err = bind(nonce, other)
	checkErr(t, err, binding.ErrUseNonce, "invalid or expired")

	// In the next half-lifetime: accepted, and a fresh one offered.
	clockAt = now.Add(2*time.Minute + time.Second)
	res, err = bind(nonce, nil)
	if err != nil {
		t.Fatalf("nonce in its second half-life: %v", err)
	}
	if res.Nonce == "" || res.Nonce == nonce {
		t.Errorf("no fresh nonce offered: %q", res.Nonce)
	}

	// After its lifetime: stale.
	clockAt = now.Add(4*time.Minute + time.Second)
	_, err = bind(nonce, nil)
	checkErr(t, err, binding.ErrUseNonce, "invalid or expired")

	// Another replica with the same secret accepts this replica's nonce.
	other2 := newBinder(t, cfg)
	_, err = bind(nil, nil)
	errors.As(err, &be)
	p := newProof(t, tok1, clockAt)
	p.claims["nonce"] = be.Nonce
	if _, err := other2.Bind(ctx, dpopInput(p.sign(t)), dpopToken(jkt)); err != nil {
		t.Fatalf("another replica refused the nonce: %v", err)
	}
}

// Certificate-bound tokens (RFC 8705): the client certificate's thumbprint
// must be the token's cnf."x5t#S256".
func TestBindCertificate(t *testing.T) {
	cert, x5t := certificate(t, "client-a")
	otherCert, _ := certificate(t, "client-b")
	in := func(scheme credential.Scheme, cert string) binding.Input {
		return binding.Input{Scheme: scheme, Token: tok1, Method: "GET", URLScheme: "https", Host: "api.example.com", Path: "/", Certificate: cert}
	}
	b := newBinder(t, binding.Config{})
	cases := []struct {
		name   string
		in     binding.Input
		kind   error
		reason string
		dpop   bool
	}{
		{name: "the bound certificate", in: in(credential.SchemeBearer, cert)},
		{name: "plain PEM", in: in(credential.SchemeBearer, strings.NewReplacer("%0A", "\n", "%20", " ", "%2B", "+", "%2F", "/", "%3D", "=").Replace(cert))},
		{name: "another certificate", in: in(credential.SchemeBearer, otherCert), kind: binding.ErrInvalidToken, reason: "not bound to this client certificate"},
		{name: "no certificate", in: in(credential.SchemeBearer, ""), kind: binding.ErrInvalidToken, reason: "came without one"},
		{name: "garbage", in: in(credential.SchemeBearer, "not%20a%20PEM"), kind: binding.ErrInvalidToken, reason: "could not be read"},
		{name: "bad escape", in: in(credential.SchemeBearer, "%zz"), kind: binding.ErrInvalidToken, reason: "could not be read"},
		{name: "a key, not a certificate", in: in(credential.SchemeBearer, envoyEscape("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")), kind: binding.ErrInvalidToken, reason: "could not be read"},
		{name: "truncated PEM", in: in(credential.SchemeBearer, cert[:len(cert)/2]), kind: binding.ErrInvalidToken, reason: "could not be read"},
		{name: "DPoP scheme without a DPoP binding", in: in(credential.SchemeDPoP, cert), kind: binding.ErrInvalidToken, reason: "not DPoP-bound", dpop: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.Bind(context.Background(), tc.in, certToken(x5t))
			checkErr(t, err, tc.kind, tc.reason)
			var be *binding.Error
			if errors.As(err, &be) && be.DPoP != tc.dpop {
				t.Errorf("DPoP challenge %v, want %v", be.DPoP, tc.dpop)
			}
		})
	}
}

// What a route requires, and what a token's binding requires of the way it
// is presented.
func TestBindRequirements(t *testing.T) {
	k := keys()
	jkt := thumbprint(t, &k.es256.PublicKey)
	cert, x5t := certificate(t, "client-a")
	bearer := func(req binding.Requirement) binding.Input {
		return binding.Input{Scheme: credential.SchemeBearer, Token: tok1, Method: "GET", URLScheme: "https",
			Host: "api.example.com", Path: "/v1/accounts", Certificate: cert, Require: req}
	}
	dpop := func(req binding.Requirement) binding.Input {
		in := dpopInput(newProof(t, tok1, now).sign(t))
		in.Require, in.Certificate = req, cert
		return in
	}
	both := boundToken(map[string]any{"jkt": jkt, "x5t#S256": x5t})
	fapi := binding.Config{RequireSenderConstrained: true}

	cases := []struct {
		name   string
		cfg    binding.Config
		in     binding.Input
		tok    *token.Token
		kind   error
		reason string
		dpop   bool // the denial asks for a DPoP challenge
	}{
		{name: "bearer token, optional route", in: bearer(binding.RequireNone), tok: bearerToken()},
		{name: "nil token", in: bearer(binding.RequireNone)},
		{name: "empty cnf is no binding", in: bearer(binding.RequireNone), tok: boundToken(map[string]any{})},
		{name: "downgrade: DPoP-bound token as Bearer", in: bearer(binding.RequireNone), tok: dpopToken(jkt),
			kind: binding.ErrInvalidToken, reason: "DPoP-bound", dpop: true},
		{name: "downgrade on a certificate", in: bearer(binding.RequireNone), tok: both,
			kind: binding.ErrInvalidToken, reason: "DPoP-bound", dpop: true},
		{name: "unbound token on a required route", in: bearer(binding.RequireAny), tok: bearerToken(),
			kind: binding.ErrInvalidToken, reason: "sender-constrained"},
		{name: "unbound token, required everywhere (FAPI)", cfg: fapi, in: bearer(binding.RequireNone), tok: bearerToken(),
			kind: binding.ErrInvalidToken, reason: "sender-constrained"},
		{name: "certificate-bound token on a required route", in: bearer(binding.RequireAny), tok: certToken(x5t)},
		{name: "DPoP-bound token on a required route", in: dpop(binding.RequireAny), tok: dpopToken(jkt)},
		{name: "FAPI with a DPoP-bound token", cfg: fapi, in: dpop(binding.RequireNone), tok: dpopToken(jkt)},
		{name: "certificate-bound token on a DPoP route", in: bearer(binding.RequireDPoP), tok: certToken(x5t),
			kind: binding.ErrInvalidToken, reason: "not DPoP-bound", dpop: true},
		{name: "DPoP-bound token on a certificate route", in: dpop(binding.RequireMTLS), tok: dpopToken(jkt),
			kind: binding.ErrInvalidToken, reason: "not bound to a client certificate", dpop: true},
		{name: "doubly bound token on a certificate route", in: dpop(binding.RequireMTLS), tok: both},
		{name: "doubly bound token, wrong certificate", in: func() binding.Input { in := dpop(binding.RequireNone); in.Certificate = ""; return in }(), tok: both,
			kind: binding.ErrInvalidToken, reason: "came without one", dpop: true},
		{name: "cnf not an object", in: bearer(binding.RequireNone), tok: &token.Token{Active: true, Claims: map[string]any{"cnf": "jkt"}},
			kind: binding.ErrInvalidToken, reason: "cannot be verified"},
		{name: "cnf with only a jwk", in: bearer(binding.RequireNone), tok: boundToken(map[string]any{"jwk": map[string]any{"kty": "EC"}}),
			kind: binding.ErrInvalidToken, reason: "cannot be verified"},
		{name: "cnf.jkt not a string", in: bearer(binding.RequireNone), tok: boundToken(map[string]any{"jkt": 42}),
			kind: binding.ErrInvalidToken, reason: "cannot be verified"},
		{name: "cnf.jkt empty", in: dpop(binding.RequireNone), tok: boundToken(map[string]any{"jkt": "", "x5t#S256": x5t}),
			kind: binding.ErrInvalidToken, reason: "cannot be verified", dpop: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newBinder(t, tc.cfg).Bind(context.Background(), tc.in, tc.tok)
			checkErr(t, err, tc.kind, tc.reason)
			var be *binding.Error
			if errors.As(err, &be) && be.DPoP != tc.dpop {
				t.Errorf("DPoP challenge %v, want %v", be.DPoP, tc.dpop)
			}
		})
	}
}

func TestParseRequirement(t *testing.T) {
	for s, want := range map[string]binding.Requirement{
		"": binding.RequireNone, "optional": binding.RequireNone, "required": binding.RequireAny,
		"dpop": binding.RequireDPoP, "mtls": binding.RequireMTLS,
	} {
		if got, err := binding.ParseRequirement(s); err != nil || got != want {
			t.Errorf("ParseRequirement(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"true", "Required", "yes"} {
		if _, err := binding.ParseRequirement(s); err == nil {
			t.Errorf("ParseRequirement(%q) accepted", s)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	cases := []struct {
		name string
		cfg  binding.Config
		want string
	}{
		{"alg none", binding.Config{Algorithms: []string{"ES256", "none"}}, `dpop.algorithms: "none" is not allowed`},
		{"alg HS256", binding.Config{Algorithms: []string{"HS256"}}, `dpop.algorithms: "HS256" is not allowed`},
		{"unknown alg", binding.Config{Algorithms: []string{"ES257"}}, "unknown algorithm"},
		{"negative window", binding.Config{IATWindow: -time.Second}, "dpop.iat_window"},
		{"short nonce secret", binding.Config{Nonce: &binding.NonceConfig{Secret: []byte("short")}}, "dpop.nonce.secret_file"},
		{"short nonce lifetime", binding.Config{Nonce: &binding.NonceConfig{Secret: make([]byte, 32), Lifetime: time.Second}}, "dpop.nonce.lifetime"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := binding.New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error saying %q", err, tc.want)
			}
		})
	}
	b, err := binding.New(binding.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(b.Algorithms(), " "); got != "ES256 PS256 EdDSA" {
		t.Errorf("default algorithms %q", got)
	}
}

// A header seen before skips its parsing, never its checks: the signature
// and the token's jkt are verified on every request.
func TestBindDPoPCachedHeader(t *testing.T) {
	k := keys()
	jkt := thumbprint(t, &k.es256.PublicKey)
	b := newBinder(t, binding.Config{})
	ctx := context.Background()
	if _, err := b.Bind(ctx, dpopInput(newProof(t, tok1, now).sign(t)), dpopToken(jkt)); err != nil {
		t.Fatal(err)
	}
	forged := newProof(t, tok1, now)
	forged.key = k.es256b // the same header, signed by another key
	_, err := b.Bind(ctx, dpopInput(forged.sign(t)), dpopToken(jkt))
	checkErr(t, err, binding.ErrInvalidProof, "signature")

	_, err = b.Bind(ctx, dpopInput(newProof(t, tok1, now).sign(t)), dpopToken(thumbprint(t, &k.es256b.PublicKey)))
	checkErr(t, err, binding.ErrInvalidToken, "not bound to the DPoP proof key")

	if _, err := b.Bind(ctx, dpopInput(newProof(t, tok1, now).sign(t)), dpopToken(jkt)); err != nil {
		t.Fatalf("the cached header no longer binds: %v", err)
	}
}
