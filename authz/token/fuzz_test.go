package token

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
)

// The fuzz targets of the token stage: by-value JWT verification and the
// parsing of introspection answers. Their oracle is the set of signing
// inputs (header.payload) the test itself signed with a key of the JWKS and
// means to be accepted: whatever the fuzzer builds, a token is accepted only
// when its header and payload are byte for byte one of those (the signature
// may differ only as ECDSA allows), and everything else fails with a known
// error that does not repeat the token.
//
// The ES256 and EdDSA keys are derived from fixed seeds, so the corpus in
// testdata/fuzz holds tokens that verify; PHANTOM_WRITE_FUZZ_SEEDS=1 go test
// -run TestWriteFuzzSeeds ./authz/token/ rewrites it from fuzzSeeds.

// fuzzKeys are the issuer's keys: fixed ES256 and EdDSA keys, and the
// package's random RSA key (its tokens are seeded at run time only).
type fuzzKeys struct {
	es *ecdsa.PrivateKey
	ed ed25519.PrivateKey
	ps *rsa.PrivateKey
}

func newFuzzKeys(t testing.TB) fuzzKeys {
	t.Helper()
	testKeys(t)
	d := sha256.Sum256([]byte("phantom-authz fuzz ES256"))
	es, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	seed := sha256.Sum256([]byte("phantom-authz fuzz EdDSA"))
	return fuzzKeys{es: es, ed: ed25519.NewKeyFromSeed(seed[:]), ps: rsaKey}
}

func (k fuzzKeys) signers() []signingKey {
	return []signingKey{
		{"fz-es", jwa.ES256(), k.es},
		{"fz-ed", jwa.EdDSA(), k.ed},
		{"fz-ps", jwa.PS256(), k.ps},
	}
}

// compactSign builds a compact JWS by hand (no JOSE library: the test's
// signer must not share the verifier's bugs). alg names the key to use;
// signer nil leaves the signature empty.
func compactSign(t testing.TB, alg string, signer crypto.Signer, hdr, claims any) string {
	t.Helper()
	enc := func(v any) string {
		if raw, ok := v.(string); ok { // JSON written out, duplicates and all
			return base64.RawURLEncoding.EncodeToString([]byte(raw))
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(hdr) + "." + enc(claims)
	if signer == nil {
		return input + "."
	}
	digest := sha256.Sum256([]byte(input))
	var sig []byte
	var err error
	switch k := signer.(type) {
	case *ecdsa.PrivateKey:
		var der []byte
		if der, err = ecdsa.SignASN1(rand.Reader, k, digest[:]); err == nil {
			sig, err = ecdsaRaw(der)
		}
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, []byte(input))
	case *rsa.PrivateKey:
		sig, err = rsa.SignPSS(rand.Reader, k, crypto.SHA256, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	default:
		err = fmt.Errorf("key type %T", signer)
	}
	if err != nil {
		t.Fatalf("signing %s: %v", alg, err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// ecdsaRaw converts an ASN.1 P-256 signature to JWS's r||s.
func ecdsaRaw(der []byte) ([]byte, error) {
	var sig struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &sig); err != nil {
		return nil, err
	}
	out := make([]byte, 64)
	sig.R.FillBytes(out[:32])
	sig.S.FillBytes(out[32:])
	return out, nil
}

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

// jwtSeed is one token of the corpus; accept says whether the verifier may
// accept it (a token signed by the issuer with valid claims).
type jwtSeed struct {
	name   string
	token  string
	accept bool
}

// fuzzSeeds are realistic and hostile tokens. runtimeOnly adds those signed
// with the random RSA key.
func fuzzSeeds(t testing.TB, k fuzzKeys, now time.Time, runtimeOnly bool) []jwtSeed {
	t.Helper()
	good := claimsAt(now)
	es := func(hdr map[string]any, claims any) string {
		h := map[string]any{"alg": "ES256", "kid": "fz-es", "typ": "at+jwt"}
		for n, v := range hdr {
			if v == nil {
				delete(h, n)
			} else {
				h[n] = v
			}
		}
		return compactSign(t, "ES256", k.es, h, claims)
	}
	ed := compactSign(t, "EdDSA", k.ed, map[string]any{"alg": "EdDSA", "kid": "fz-ed", "typ": "at+jwt"}, good)
	valid := es(nil, good)
	parts := strings.Split(valid, ".")
	attacker, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pubDER, _ := x509.MarshalPKIXPublicKey(&k.es.PublicKey)
	nested := any("deep")
	for range 200 {
		nested = map[string]any{"a": []any{nested}}
	}
	seeds := []jwtSeed{
		{"valid_es256", valid, true},
		{"valid_eddsa", ed, true},
		{"valid_typ_media_type", es(map[string]any{"typ": "application/AT+JWT"}, good), true},
		{"valid_aud_list", es(nil, with(good, "aud", []string{"x", "other-api"})), true},
		{"valid_scope_array", es(nil, with(good, "scope", []string{"read", "write"})), true},
		{"valid_nested_claim", es(nil, with(good, "ext", nested)), true},
		{"valid_huge_scope", es(nil, with(good, "scope", strings.Repeat("read ", 4000))), true},
		{"valid_unicode_claims", es(nil, with(good, "sub", "älice\u202e\u0000", "name", "\U0001F600")), true},
		{"valid_no_kid", es(map[string]any{"kid": nil}, good), true},
		{"valid_exp_float", es(nil, with(good, "exp", float64(now.Unix())+600.5)), true},
		{"valid_within_skew", es(nil, with(good, "exp", now.Add(-59*time.Second).Unix())), true},

		// Signed by the issuer, refused for their claims or headers.
		{"expired_by_1s_beyond_skew", es(nil, with(good, "exp", now.Add(-61*time.Second).Unix())), false},
		{"expired_at_skew_edge", es(nil, with(good, "exp", now.Add(-60*time.Second).Unix())), false},
		{"nbf_future", es(nil, with(good, "nbf", now.Add(61*time.Second).Unix())), false},
		{"iat_future", es(nil, with(good, "iat", now.Add(61*time.Second).Unix())), false},
		{"wrong_aud", es(nil, with(good, "aud", "someone-else")), false},
		{"aud_object", es(nil, with(good, "aud", map[string]any{"api": true})), false},
		{"no_exp", es(nil, with(good, "exp", nil)), false},
		{"exp_string", es(nil, with(good, "exp", fmt.Sprint(now.Add(time.Hour).Unix()))), false},
		{"exp_huge", compactSign(t, "ES256", k.es, map[string]any{"alg": "ES256", "kid": "fz-es", "typ": "at+jwt"},
			`{"iss":"`+testIssuer+`","aud":"api","exp":1e309}`), false},
		{"exp_negative", es(nil, with(good, "exp", -1)), false},
		{"typ_jwt", es(map[string]any{"typ": "JWT"}, good), false},
		{"typ_missing", es(map[string]any{"typ": nil}, good), false},
		{"crit", es(map[string]any{"crit": []string{"exp"}, "exp": 1}, good), false},
		{"b64_false", es(map[string]any{"b64": false}, good), false},
		{"scope_number", es(nil, with(good, "scope", 42)), false},
		{"sub_number", es(nil, with(good, "sub", 42)), false},
		// RFC 7515 §4 allows refusing duplicate header names; jwx does.
		{"duplicate_alg_signed", compactSign(t, "ES256", k.es, `{"alg":"none","alg":"ES256","kid":"fz-es","typ":"at+jwt"}`, good), false},
		{"kid_path", es(map[string]any{"kid": "../../../../etc/passwd"}, good), false},
		{"kid_sql", es(map[string]any{"kid": "' OR '1'='1' --"}, good), false},
		{"alg_rs256_for_es_key", es(map[string]any{"alg": "RS256"}, good), false},

		// Not signed by the issuer.
		{"alg_none", compactSign(t, "none", nil, map[string]any{"alg": "none", "typ": "at+jwt"}, good), false},
		{"alg_none_signature", strings.Join([]string{strings.Split(compactSign(t, "none", nil, map[string]any{"alg": "none"}, good), ".")[0], parts[1], parts[2]}, "."), false},
		{"alg_NONE", compactSign(t, "none", nil, map[string]any{"alg": "NONE"}, good) + "c2ln", false},
		{"hs256_public_key", hs256Token(t, pubDER, good), false},
		{"alg_switched_eddsa", reheaderRaw(t, valid, map[string]any{"alg": "EdDSA", "kid": "fz-ed", "typ": "at+jwt"}), false},
		{"jku_elsewhere", compactSign(t, "ES256", attacker, map[string]any{"alg": "ES256", "kid": "fz-es", "typ": "at+jwt", "jku": "https://attacker.example/jwks"}, good), false},
		{"x5u_elsewhere", compactSign(t, "ES256", attacker, map[string]any{"alg": "ES256", "typ": "at+jwt", "x5u": "https://attacker.example/cert.pem"}, good), false},
		{"embedded_jwk", compactSign(t, "ES256", attacker, map[string]any{"alg": "ES256", "typ": "at+jwt",
			"jwk": map[string]any{"kty": "EC", "crv": "P-256", "x": b64Coord(attacker.X.Bytes()), "y": b64Coord(attacker.Y.Bytes())}}, good), false},
		{"tampered_payload", parts[0] + "." + strings.Split(es(nil, with(good, "sub", "admin")), ".")[1] + "." + parts[2], false},
		{"truncated_signature", valid[:len(valid)-4], false},
		{"padded", parts[0] + "==." + parts[1] + "==." + parts[2] + "==", false},
		{"standard_base64_signature", parts[0] + "." + parts[1] + "." + stdBase64(parts[2]), false},
		{"signature_flipped", parts[0] + "." + parts[1] + "." + flipLast(parts[2]), false},
		{"four_segments", valid + ".x", false},
		{"jwe_five_segments", "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d", false},
		{"empty_segments", "..", false},
		{"empty", "", false},
		{"whitespace", " " + valid + "\n", false},
		{"nul_inside", parts[0] + ".\x00" + parts[1] + "." + parts[2], false},
		{"header_array", base64.RawURLEncoding.EncodeToString([]byte(`["ES256"]`)) + "." + parts[1] + "." + parts[2], false},
		{"payload_null", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte("null")) + "." + parts[2], false},
		{"invalid_utf8_claims", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"`+testIssuer+"\",\"sub\":\"\xff\xfe\",\"exp\":1}")) + "." + parts[2], false},
		{"deep_json", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"`+testIssuer+`","x":`+strings.Repeat("[", 20000)+strings.Repeat("]", 20000)+`}`)) + "." + parts[2], false},
		{"large_64k", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"`+testIssuer+`","x":"`+strings.Repeat("A", 64<<10)+`"}`)) + "." + parts[2], false},
		{"other_issuer", es(nil, with(good, "iss", "https://evil.example")), false},
		{"issuer_trailing_slash", es(nil, with(good, "iss", testIssuer+"/")), false},
	}
	if runtimeOnly {
		seeds = append(seeds,
			jwtSeed{"valid_ps256", compactSign(t, "PS256", k.ps, map[string]any{"alg": "PS256", "kid": "fz-ps", "typ": "at+jwt"}, good), true},
			jwtSeed{"ps256_as_rs256", compactSign(t, "PS256", k.ps, map[string]any{"alg": "RS256", "kid": "fz-ps", "typ": "at+jwt"}, good), false},
		)
	}
	return seeds
}

func b64Coord(b []byte) string {
	out := make([]byte, 32)
	copy(out[32-len(b):], b)
	return base64.RawURLEncoding.EncodeToString(out)
}

// stdBase64 re-encodes a base64url segment as padded standard base64,
// which always differs from it (a 64-byte signature gets "==").
func stdBase64(seg string) string {
	b, _ := base64.RawURLEncoding.DecodeString(seg)
	return base64.StdEncoding.EncodeToString(b)
}

func flipLast(seg string) string {
	b := []byte(seg)
	if b[len(b)-2] == 'A' {
		b[len(b)-2] = 'B'
	} else {
		b[len(b)-2] = 'A'
	}
	return string(b)
}

// hs256Token is the algorithm-confusion token: HS256 keyed with the
// issuer's public key.
func hs256Token(t testing.TB, key []byte, claims any) string {
	t.Helper()
	input := strings.TrimSuffix(compactSign(t, "HS256", nil, map[string]any{"alg": "HS256", "kid": "fz-es", "typ": "at+jwt"}, claims), ".")
	return input + "." + base64.RawURLEncoding.EncodeToString(hmacSHA256(key, []byte(input)))
}

// reheaderRaw replaces the protected header of a compact JWS.
func reheaderRaw(t testing.TB, tok string, hdr map[string]any) string {
	parts := strings.Split(tok, ".")
	return strings.Split(compactSign(t, "", nil, hdr, map[string]any{}), ".")[0] + "." + parts[1] + "." + parts[2]
}

// signingInput is header.payload of a compact JWS.
func signingInput(raw string) string {
	if i := strings.LastIndexByte(raw, '.'); i >= 0 {
		return raw[:i]
	}
	return raw
}

// fuzzVerifier is a Resolver for one issuer whose JWKS holds the fuzz keys,
// on a clock that stands still, and the signing inputs it may accept.
type fuzzVerifier struct {
	r          *Resolver
	is         *issuer
	acceptable map[string]bool
}

func newFuzzVerifier(f *testing.F) *fuzzVerifier {
	k := newFuzzKeys(f)
	clk := newClock()
	jwks := newJWKSServer(f, k.signers()...)
	ic := issuerConfig(jwks)
	ic.Type = "at+jwt"
	r := mustNew(f, Config{Issuers: []IssuerConfig{ic}, Now: clk.Now, Logger: slog.New(slog.DiscardHandler)})
	v := &fuzzVerifier{r: r, is: r.issuers[testIssuer], acceptable: map[string]bool{}}
	for _, s := range fuzzSeeds(f, k, clk.Now(), true) {
		if s.accept {
			v.acceptable[signingInput(s.token)] = true
		}
		f.Add(s.token)
	}
	// The oracle is not vacuous: what it accepts does verify.
	for _, s := range fuzzSeeds(f, k, clk.Now(), true) {
		if _, err := v.is.verify(context.Background(), s.token, nil); (err == nil) != s.accept {
			f.Fatalf("seed %s: err = %v, accept = %v", s.name, err, s.accept)
		}
	}
	return v
}

// FuzzVerifyJWT feeds arbitrary compact JWTs to the by-value verifier of a
// configured issuer with a real JWKS (served over HTTP), directly and through
// the Resolver (routing by iss, the cache): no panic, no token accepted that
// the test did not sign as acceptable, every refusal ErrInvalid and free of
// the token.
func FuzzVerifyJWT(f *testing.F) {
	v := newFuzzVerifier(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, raw string) {
		tok, err := v.is.verify(ctx, raw, nil)
		v.check(t, "verify", raw, tok, err)
		tok, err = v.r.Resolve(ctx, bearer(raw))
		v.check(t, "Resolve", raw, tok, err)
	})
}

func (v *fuzzVerifier) check(t *testing.T, via, raw string, tok *Token, err error) {
	t.Helper()
	if err != nil {
		if tok != nil {
			t.Fatalf("%s: a token returned with error %v", via, err)
		}
		// ErrUnavailable would mean the JWKS (which is up) could not be
		// used, or a panic recovered by the resolver.
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("%s: error %v is not ErrInvalid", via, err)
		}
		if len(raw) >= 16 && strings.Contains(err.Error(), raw) {
			t.Fatalf("%s: the error repeats the token", via)
		}
		return
	}
	if !v.acceptable[signingInput(raw)] {
		t.Fatalf("%s: accepted a token the test did not sign as acceptable: %q", via, raw)
	}
	if tok == nil || !tok.Active || tok.Kind != KindJWT || tok.JWT != raw || tok.Expiry.IsZero() {
		t.Fatalf("%s: accepted token = %+v", via, tok)
	}
}

// FuzzIntrospectionAnswer feeds arbitrary answers to the parsers of the
// three introspection modes: json (RFC 7662), jwt (the phantom-token
// Accept: application/jwt answer, and the JSON an inactive token gets) and
// rfc9701 (a signed answer, verified against fixed keys). No panic; an
// active token only from an answer that says so; in rfc9701 only from an
// answer the test signed; no error repeats the answer.
func FuzzIntrospectionAnswer(f *testing.F) {
	k := newFuzzKeys(f)
	clk := newClock()
	now := clk.Now()
	ks := &keySet{
		uri: "https://as.invalid/jwks", timeout: time.Second, now: clk.Now,
		log: slog.New(slog.DiscardHandler), stats: &counters{},
		client: &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
			return nil, errors.New("no network in the fuzz test")
		})},
	}
	ks.keys.store(&publicKeys{fetched: now, keys: []publicKey{
		{kid: "fz-es", key: &k.es.PublicKey}, {kid: "fz-ed", key: k.ed.Public()},
	}})
	in := &introspector{
		cfg:   IntrospectionConfig{Issuer: "https://as.example", Audience: "gateway"},
		now:   clk.Now,
		log:   slog.New(slog.DiscardHandler),
		stats: &counters{}, shared: &interner{}, keys: ks,
	}
	acceptable := map[string]bool{}
	for _, s := range introspectionSeeds(f, k, now) {
		if s.accept {
			acceptable[signingInput(s.token)] = true
		}
		for mode := range uint8(3) {
			f.Add([]byte(s.token), mode)
		}
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, body []byte, mode uint8) {
		var tok *Token
		var err error
		switch mode % 3 {
		case 0:
			tok, err = in.fromJSON(body, true)
			if err == nil {
				var answer struct {
					Active *bool `json:"active"`
				}
				if json.Unmarshal(body, &answer) != nil || answer.Active == nil || !*answer.Active {
					t.Fatalf("json: active token from an answer that does not say active: %q", body)
				}
			}
		case 1:
			if tok, err = in.fromJSON(body, false); err == nil {
				t.Fatalf("jwt mode: an active token accepted in JSON: %q", body)
			}
			tok, err = in.fromJWT(body)
			if err == nil {
				jwt := strings.TrimSpace(string(body))
				if tok.JWT != jwt || strings.Count(jwt, ".") != 2 {
					t.Fatalf("jwt mode: forwards %q for the answer %q", tok.JWT, body)
				}
				c, perr := parseCompact(jwt)
				if perr != nil || c.header.Alg == "none" {
					t.Fatalf("jwt mode: accepted %q (%v)", body, perr)
				}
			}
		case 2:
			tok, err = in.fromRFC9701(ctx, body)
			if err == nil && !acceptable[signingInput(strings.TrimSpace(string(body)))] {
				t.Fatalf("rfc9701: accepted an answer the test did not sign as acceptable: %q", body)
			}
		}
		switch {
		case err == nil && (tok == nil || !tok.Active):
			t.Fatalf("mode %d: no error and token %+v", mode%3, tok)
		case err != nil && tok != nil:
			t.Fatalf("mode %d: a token returned with error %v", mode%3, err)
		case err != nil && len(body) >= 16 && strings.Contains(err.Error(), string(body)):
			t.Fatalf("mode %d: the error repeats the answer", mode%3)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// introspectionSeeds are answers of all three modes.
func introspectionSeeds(t testing.TB, k fuzzKeys, now time.Time) []jwtSeed {
	t.Helper()
	exp := now.Add(time.Hour).Unix()
	answer := map[string]any{"active": true, "sub": "alice", "client_id": "web", "scope": "read write", "exp": exp, "cnf": map[string]any{"jkt": "abc"}}
	signed := func(hdr map[string]any, claims map[string]any) string {
		h := map[string]any{"alg": "ES256", "kid": "fz-es", "typ": "token-introspection+jwt"}
		for n, v := range hdr {
			if v == nil {
				delete(h, n)
			} else {
				h[n] = v
			}
		}
		return compactSign(t, "ES256", k.es, h, claims)
	}
	wrapped := map[string]any{"iss": "https://as.example", "aud": "gateway", "iat": now.Unix(), "token_introspection": answer}
	jwt := compactSign(t, "ES256", k.es, map[string]any{"alg": "ES256", "typ": "at+jwt"}, claimsAt(now))
	return []jwtSeed{
		{"json_active", mustJSON(t, answer), false},
		{"json_inactive", `{"active":false}`, false},
		{"json_active_string", `{"active":"true","sub":"alice"}`, false},
		{"json_active_number", `{"active":1}`, false},
		{"json_duplicate_active", `{"active":false,"active":true}`, false},
		{"json_trailing_data", `{"active":true} {"active":false}`, false},
		{"json_array", `[{"active":true}]`, false},
		{"json_null", `null`, false},
		{"json_bom", "\ufeff{\"active\":true}", false},
		{"json_scope_array", `{"active":true,"scope":["read","write"]}`, false},
		{"json_scope_number", `{"active":true,"scope":7}`, false},
		{"json_exp_string", `{"active":true,"exp":"soon"}`, false},
		{"json_exp_huge", `{"active":true,"exp":1e400}`, false},
		{"json_invalid_utf8", "{\"active\":true,\"sub\":\"\xff\xfe\"}", false},
		{"json_deep", `{"active":true,"x":` + strings.Repeat(`{"a":`, 5000) + `1` + strings.Repeat(`}`, 5000) + `}`, false},
		{"json_html", "<html><body>502 Bad Gateway</body></html>", false},
		{"jwt_answer", jwt, false},
		{"jwt_answer_newline", jwt + "\r\n", false},
		{"jwt_alg_none", compactSign(t, "none", nil, map[string]any{"alg": "none"}, claimsAt(now)), false},
		{"jwt_two_segments", strings.Join(strings.Split(jwt, ".")[:2], "."), false},
		{"rfc9701_valid", signed(nil, wrapped), true},
		{"rfc9701_inactive", signed(nil, with(wrapped, "token_introspection", map[string]any{"active": false})), true},
		{"rfc9701_wrong_typ", signed(map[string]any{"typ": "JWT"}, wrapped), false},
		{"rfc9701_wrong_iss", signed(nil, with(wrapped, "iss", "https://evil.example")), false},
		{"rfc9701_wrong_aud", signed(nil, with(wrapped, "aud", "someone-else")), false},
		{"rfc9701_expired", signed(nil, with(wrapped, "exp", now.Add(-2*time.Minute).Unix())), false},
		{"rfc9701_unknown_kid", signed(map[string]any{"kid": "other"}, wrapped), false},
		{"rfc9701_not_object", signed(nil, with(wrapped, "token_introspection", "active")), false},
		{"rfc9701_crit", signed(map[string]any{"crit": []string{"x"}}, wrapped), false},
		{"rfc9701_hs256", hs256Token(t, []byte("gateway"), wrapped), false},
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestWriteFuzzSeeds rewrites the checked-in corpora of this package's fuzz
// targets (PHANTOM_WRITE_FUZZ_SEEDS=1). The fixed keys make the signed seeds
// verify in every run.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("PHANTOM_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set PHANTOM_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz")
	}
	k := newFuzzKeys(t)
	now := newClock().Now()
	for _, s := range fuzzSeeds(t, k, now, false) {
		writeFuzzSeed(t, "FuzzVerifyJWT", s.name, fmt.Sprintf("string(%q)", s.token))
	}
	for _, s := range introspectionSeeds(t, k, now) {
		mode := map[string]int{"json": 0, "jwt": 1, "rfc9701": 2}[strings.SplitN(s.name, "_", 2)[0]]
		writeFuzzSeed(t, "FuzzIntrospectionAnswer", s.name, fmt.Sprintf("[]byte(%q)", s.token), fmt.Sprintf("uint8(%d)", mode))
	}
}

func writeFuzzSeed(t *testing.T, target, name string, values ...string) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	body := "go test fuzz v1\n" + strings.Join(values, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
