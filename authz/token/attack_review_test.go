package token

// Attack review of the hand-written compact-JWS path (parseCompact,
// keySet.verify with jwsbb): tokens an attacker who holds the client, a
// valid token, or a key other than the issuer's can build, each of which
// must be refused (or, for the revocation tests, must stay revoked).

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

// reviewResolver is a one-issuer Resolver whose JWKS holds the package's
// ES256, PS256 and EdDSA keys.
func reviewResolver(t *testing.T, clk *clock, mod ...func(*Config)) *Resolver {
	t.Helper()
	testKeys(t)
	jwks := newJWKSServer(t, keysES, keysPS, keysEd)
	cfg := Config{Issuers: []IssuerConfig{issuerConfig(jwks)}, Now: clk.Now}
	for _, m := range mod {
		m(&cfg)
	}
	return mustNew(t, cfg)
}

// esHeader is the header of the package's ES256 key.
func esHeader() map[string]any { return map[string]any{"alg": "ES256", "kid": "es-1", "typ": "at+jwt"} }

// splitSig returns header.payload and the decoded signature of raw.
func splitSig(t *testing.T, raw string) (string, []byte) {
	t.Helper()
	i := strings.LastIndexByte(raw, '.')
	sig, err := base64.RawURLEncoding.DecodeString(raw[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	return raw[:i], sig
}

// withSig is input with sig as its signature.
func withSig(input string, sig []byte) string {
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// highSTwin is raw (ES256) with its signature (r, s) replaced by (r, N-s):
// the same claims, another string, and a valid ECDSA signature.
func highSTwin(t *testing.T, raw string) string {
	t.Helper()
	input, sig := splitSig(t, raw)
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(elliptic.P256().Params().N, s)
	twin := append([]byte(nil), sig...)
	s.FillBytes(twin[32:])
	return withSig(input, twin)
}

func TestReviewForgedJWTsRefused(t *testing.T) {
	clk := newClock()
	r := reviewResolver(t, clk)
	good := claimsAt(clk.Now())
	valid := compactSign(t, "ES256", ecKey, esHeader(), good)
	if _, err := r.Resolve(context.Background(), bearer(valid)); err != nil {
		t.Fatalf("the valid token: %v", err)
	}
	input, sig := splitSig(t, valid)
	n := elliptic.P256().Params().N
	der := func() []byte {
		sum := sha256.Sum256([]byte(input))
		d, err := ecdsa.SignASN1(rand.Reader, ecKey, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		return d
	}()
	rs := func(rv, sv *big.Int) []byte {
		out := make([]byte, 64)
		rv.FillBytes(out[:32])
		sv.FillBytes(out[32:])
		return out
	}
	sigR := new(big.Int).SetBytes(sig[:32])
	sigSeg := valid[strings.LastIndexByte(valid, '.')+1:]
	// A base64url character whose low two bits (unused at the end of a
	// 64-byte signature) differ: a lax decoder reads the same bytes.
	nonCanonical := func() string {
		last := sigSeg[len(sigSeg)-1]
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		i := strings.IndexByte(alphabet, last)
		return input + "." + sigSeg[:len(sigSeg)-1] + string(alphabet[i^1])
	}()
	attacker, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	for name, raw := range map[string]string{
		// Encoding variants of a valid token: not the token that was signed.
		"LF inside the signature":      input + "." + sigSeg[:40] + "\n" + sigSeg[40:],
		"CRLF after the signature":     valid + "\r\n",
		"CR inside the payload":        valid[:len(valid)/2] + "\r" + valid[len(valid)/2:],
		"non-canonical trailing bits":  nonCanonical,
		"padded signature":             valid + "==",
		"DER signature":                withSig(input, der),
		"signature with a leading 0":   withSig(input, append([]byte{0}, sig...)),
		"signature truncated to 63":    withSig(input, sig[:63]),
		"r zero":                       withSig(input, rs(big.NewInt(0), new(big.Int).SetBytes(sig[32:]))),
		"s zero":                       withSig(input, rs(sigR, big.NewInt(0))),
		"s = N":                        withSig(input, rs(sigR, n)),
		"JWS JSON serialization":       `{"protected":"` + strings.Split(valid, ".")[0] + `","payload":"` + strings.Split(valid, ".")[1] + `","signature":"` + sigSeg + `"}`,
		"extra dot":                    input + ".." + sigSeg,
		"empty signature":              input + ".",
		"alg None":                     compactSign(t, "none", nil, map[string]any{"alg": "None", "typ": "at+jwt"}, good) + "x",
		"alg empty":                    compactSign(t, "ES256", ecKey, map[string]any{"alg": "", "kid": "es-1", "typ": "at+jwt"}, good),
		"alg es256 (case)":             compactSign(t, "ES256", ecKey, map[string]any{"alg": "es256", "kid": "es-1", "typ": "at+jwt"}, good),
		"alg ES384 not configured":     compactSign(t, "ES256", ecKey, map[string]any{"alg": "ES384", "kid": "es-1", "typ": "at+jwt"}, good),
		"kid absent, attacker's key":   compactSign(t, "ES256", attacker, map[string]any{"alg": "ES256", "typ": "at+jwt"}, good),
		"b64 false":                    compactSign(t, "ES256", ecKey, map[string]any{"alg": "ES256", "kid": "es-1", "typ": "at+jwt", "b64": false, "crit": []string{"b64"}}, good),
		"b64 true":                     compactSign(t, "ES256", ecKey, map[string]any{"alg": "ES256", "kid": "es-1", "typ": "at+jwt", "b64": true}, good),
		"crit null":                    compactSign(t, "ES256", ecKey, `{"alg":"ES256","kid":"es-1","typ":"at+jwt","crit":null}`, good),
		"Crit (case) names exp":        compactSign(t, "ES256", ecKey, `{"alg":"ES256","kid":"es-1","typ":"at+jwt","Crit":["exp"],"exp":1}`, good),
		"duplicate typ":                compactSign(t, "ES256", ecKey, `{"alg":"ES256","kid":"es-1","typ":"JWT","typ":"at+jwt"}`, good),
		"nested JWT payload (cty JWT)": compactSign(t, "ES256", ecKey, map[string]any{"alg": "ES256", "kid": "es-1", "typ": "at+jwt", "cty": "JWT"}, valid),
		"payload array":                compactSign(t, "ES256", ecKey, esHeader(), []any{good}),
		"payload trailing data":        compactSign(t, "ES256", ecKey, esHeader(), mustJSON(t, good)+`{}`),
		"typ at+jwt with a space":      compactSign(t, "ES256", ecKey, map[string]any{"alg": "ES256", "kid": "es-1", "typ": "at+jwt "}, good),
		"typ id+jwt":                   compactSign(t, "ES256", ecKey, map[string]any{"alg": "ES256", "kid": "es-1", "typ": "application/ID+JWT"}, good),
		"exp 1e20":                     compactSign(t, "ES256", ecKey, esHeader(), with(good, "exp", 1e20)),
		"exp beyond int64":             compactSign(t, "ES256", ecKey, esHeader(), strings.Replace(mustJSON(t, good), `"exp":`, `"exp":99999999999999999999999`, 1)),
		"exp true":                     compactSign(t, "ES256", ecKey, esHeader(), with(good, "exp", true)),
		"exp array":                    compactSign(t, "ES256", ecKey, esHeader(), with(good, "exp", []any{good["exp"]})),
		"nbf string in the future":     compactSign(t, "ES256", ecKey, esHeader(), with(good, "nbf", "9999999999")),
		"iat future":                   compactSign(t, "ES256", ecKey, esHeader(), with(good, "iat", clk.Now().Add(2*time.Minute).Unix())),
		"aud array of non-strings":     compactSign(t, "ES256", ecKey, esHeader(), with(good, "aud", []any{[]any{"api"}, map[string]any{"api": 1}})),
		"iss array":                    compactSign(t, "ES256", ecKey, esHeader(), with(good, "iss", []any{testIssuer})),
		"lone surrogate UTF-8 bytes":   compactSign(t, "ES256", ecKey, esHeader(), `{"iss":"`+testIssuer+"\",\"aud\":\"api\",\"exp\":9999999999,\"sub\":\"\xed\xa0\x80\"}"),
	} {
		tok, err := r.Resolve(context.Background(), bearer(raw))
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: tok = %v, err = %v, want ErrInvalid", name, tok != nil, err)
		}
	}
}

// A case-variant of a header name is the same member to encoding/json (it
// matches struct fields case-insensitively, the last one winning) but
// another member to every JOSE library: {"alg":"none","ALG":"ES256"} is an
// unsigned token to them and an ES256 one here. uniqueNames refuses exact
// duplicates for that reason; case variants are the same ambiguity.
func TestReviewHeaderCaseVariantsRefused(t *testing.T) {
	clk := newClock()
	r := reviewResolver(t, clk)
	good := claimsAt(clk.Now())
	for name, hdr := range map[string]string{
		"alg then ALG":         `{"alg":"none","ALG":"ES256","kid":"es-1","typ":"at+jwt"}`,
		"alg then Alg":         `{"alg":"RS256","Alg":"ES256","kid":"es-1","typ":"at+jwt"}`,
		"typ then TYP":         `{"alg":"ES256","kid":"es-1","typ":"JWT","TYP":"at+jwt"}`,
		"kid then KID":         `{"alg":"ES256","kid":"other","KID":"es-1","typ":"at+jwt"}`,
		"ALG only":             `{"ALG":"ES256","kid":"es-1","typ":"at+jwt"}`,
		"kid with Kelvin sign": "{\"alg\":\"ES256\",\"kid\":\"x\",\"\u212aid\":\"es-1\",\"typ\":\"at+jwt\"}",
	} {
		raw := compactSign(t, "ES256", ecKey, hdr, good)
		if _, err := r.Resolve(context.Background(), bearer(raw)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

// ECDSA signatures are malleable: (r, N-s) verifies wherever (r, s) does,
// so every ES* token has a twin, another string with the same claims. Both
// are accepted (refusing high s would refuse half of what issuers sign),
// but a revocation, which names the token by its hash, must hold for both:
// otherwise the holder of a revoked token flips s and goes on.
func TestReviewRevokedJWTTwinStaysRevoked(t *testing.T) {
	clk := newClock()
	ctx := context.Background()
	good := claimsAt(clk.Now())

	t.Run("one replica", func(t *testing.T) {
		r := reviewResolver(t, clk)
		raw := compactSign(t, "ES256", ecKey, esHeader(), good)
		twin := highSTwin(t, raw)
		if _, err := r.Resolve(ctx, bearer(twin)); err != nil {
			t.Fatalf("the twin of a valid token is valid too: %v", err)
		}
		if err := r.Revoke(ctx, raw); err != nil {
			t.Fatal(err)
		}
		for name, tok := range map[string]string{"revoked": raw, "its twin": twin} {
			if _, err := r.Resolve(ctx, bearer(tok)); !errors.Is(err, ErrInactive) {
				t.Errorf("%s: err = %v, want ErrInactive", name, err)
			}
		}
	})
	t.Run("shared cache, no publisher", func(t *testing.T) {
		shared := newFakeShared()
		mod := func(c *Config) { c.Shared, c.SharedKey = shared, testSharedKey }
		r1, r2 := reviewResolver(t, clk, mod), reviewResolver(t, clk, mod)
		raw := compactSign(t, "ES256", ecKey, esHeader(), good)
		if err := r1.Revoke(ctx, raw); err != nil {
			t.Fatal(err)
		}
		if _, err := r2.Resolve(ctx, bearer(highSTwin(t, raw))); !errors.Is(err, ErrInactive) {
			t.Errorf("twin on the other replica: err = %v, want ErrInactive", err)
		}
	})
	t.Run("publisher", func(t *testing.T) {
		pub := &fakePublisher{}
		r1 := reviewResolver(t, clk, func(c *Config) { c.Publisher = pub })
		r2 := reviewResolver(t, clk)
		raw := compactSign(t, "ES256", ecKey, esHeader(), good)
		if err := r1.Revoke(ctx, raw); err != nil {
			t.Fatal(err)
		}
		for _, id := range pub.ids {
			r2.ApplyRevocation(id)
		}
		if _, err := r2.Resolve(ctx, bearer(highSTwin(t, raw))); !errors.Is(err, ErrInactive) {
			t.Errorf("twin on the replica told by the publisher: err = %v, want ErrInactive", err)
		}
	})
}

// A JWKS key whose key_ops do not include verify (RFC 7517 §4.3), like one
// whose use is enc, is an encryption key: it verifies nothing, even if its
// private half could be made to sign (an RSA1_5 decryption oracle signs).
func TestReviewKeyOpsWithoutVerifyRefused(t *testing.T) {
	testKeys(t)
	clk := newClock()
	body := func(ops []string, use string) []byte {
		pub, err := jwk.Import(ecKey.Public())
		if err != nil {
			t.Fatal(err)
		}
		_ = pub.Set(jwk.KeyIDKey, "es-1")
		if use != "" {
			_ = pub.Set(jwk.KeyUsageKey, use)
		}
		if ops != nil {
			_ = pub.Set(jwk.KeyOpsKey, ops)
		}
		set := jwk.NewSet()
		_ = set.AddKey(pub)
		b, _ := json.Marshal(set)
		return b
	}
	raw := compactSign(t, "ES256", ecKey, esHeader(), claimsAt(clk.Now()))
	for name, tc := range map[string]struct {
		jwks []byte
		ok   bool
	}{
		"key_ops verify":      {body([]string{"verify"}, ""), true},
		"no key_ops, use sig": {body(nil, "sig"), true},
		"use enc":             {body(nil, "enc"), false},
		"key_ops encrypt":     {body([]string{"encrypt", "wrapKey"}, ""), false},
		"key_ops sign only":   {body([]string{"sign"}, ""), false},
		"key_ops deriveKey":   {body([]string{"deriveKey"}, ""), false},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write(tc.jwks)
			}))
			defer srv.Close()
			ic := IssuerConfig{Issuer: testIssuer, JWKSURI: srv.URL, Audiences: []string{"api"}, AllowInsecureHTTP: true}
			r := mustNew(t, Config{Issuers: []IssuerConfig{ic}, Now: clk.Now})
			_, err := r.Resolve(context.Background(), bearer(raw))
			if tc.ok && err != nil {
				t.Fatalf("err = %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("accepted with a key that is not for verification")
			}
		})
	}
}

// Two issuers: a token signed by one with the other's iss (or kid) is
// refused; routing (iss) and verification (that issuer's keys) agree.
func TestReviewCrossIssuerRefused(t *testing.T) {
	testKeys(t)
	clk := newClock()
	jwksA := newJWKSServer(t, keysES)
	jwksB := newJWKSServer(t, keysES2)
	icA, icB := issuerConfig(jwksA), issuerConfig(jwksB)
	icB.Issuer = "https://b.example"
	r := mustNew(t, Config{Issuers: []IssuerConfig{icA, icB}, Now: clk.Now})
	good := claimsAt(clk.Now())
	for name, raw := range map[string]string{
		"A's key, B's iss":              compactSign(t, "ES256", ecKey, esHeader(), with(good, "iss", icB.Issuer)),
		"A's key, B's kid and iss":      compactSign(t, "ES256", ecKey, map[string]any{"alg": "ES256", "kid": "es-2", "typ": "at+jwt"}, with(good, "iss", icB.Issuer)),
		"A's key, ISS (case) names B":   compactSign(t, "ES256", ecKey, esHeader(), `{"iss":"`+icB.Issuer+`","ISS":"`+testIssuer+`","aud":"api","exp":9999999999}`),
		"A's key, iss B then iss A…":    compactSign(t, "ES256", ecKey, esHeader(), `{"iss":"`+testIssuer+`","iss":"`+icB.Issuer+`","aud":"api","exp":9999999999}`),
		"B's key, iss A, no kid":        compactSign(t, "ES256", ecKey2, map[string]any{"alg": "ES256", "typ": "at+jwt"}, good),
		"B's key, iss A, A's kid":       compactSign(t, "ES256", ecKey2, esHeader(), good),
		"B's key, iss A with a slash":   compactSign(t, "ES256", ecKey2, map[string]any{"alg": "ES256", "kid": "es-2", "typ": "at+jwt"}, with(good, "iss", testIssuer+"/")),
		"unparsable, peekIssuer says B": compactSign(t, "ES256", ecKey, esHeader(), `{"iss":"`+icB.Issuer+`","aud":"api","exp":9999999999} x`),
	} {
		tok, err := r.Resolve(context.Background(), bearer(raw))
		if err == nil {
			t.Errorf("%s: accepted, issuer %q", name, tok.Issuer)
		}
	}
}

// Duplicate claim names: RFC 7519 §4 lets a parser use the lexically last
// member. What is checked (iss, aud, exp) and what the policy reads
// (ClaimMap) must then be that same member.
func TestReviewDuplicateClaimsReadConsistently(t *testing.T) {
	clk := newClock()
	r := reviewResolver(t, clk)
	exp := clk.Now().Add(time.Minute).Unix()
	payload := `{"iss":"https://evil.example","aud":"someone-else","sub":"mallory","exp":1,` +
		`"iss":"` + testIssuer + `","aud":"api","sub":"alice","exp":` + big.NewInt(exp).String() + `}`
	raw := compactSign(t, "ES256", ecKey, esHeader(), payload)
	tok, err := r.Resolve(context.Background(), bearer(raw))
	if err != nil {
		t.Fatal(err)
	}
	c := claimsOf(t, tok)
	if tok.Subject != "alice" || c["sub"] != "alice" || c["iss"] != testIssuer || c["aud"] != "api" || tok.Expiry.Unix() != exp {
		t.Errorf("token %+v, claims %v: not the members that were checked", tok, c)
	}
}

// A JWKS key that names its alg verifies that alg only: the RSA key
// published for RS256 does not verify a PS256 token, nor the reverse.
func TestReviewKeyAlgMustMatchHeaderAlg(t *testing.T) {
	testKeys(t)
	clk := newClock()
	pub, err := jwk.Import(rsaKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	_ = pub.Set(jwk.KeyIDKey, "ps-1")
	_ = pub.Set(jwk.AlgorithmKey, "RS256")
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	body, _ := json.Marshal(set)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
	defer srv.Close()
	ic := IssuerConfig{Issuer: testIssuer, JWKSURI: srv.URL, Audiences: []string{"api"}, AllowInsecureHTTP: true,
		Algorithms: []string{"PS256", "RS256"}}
	r := mustNew(t, Config{Issuers: []IssuerConfig{ic}, Now: clk.Now})
	good := claimsAt(clk.Now())
	if _, err := r.Resolve(context.Background(), bearer(signJWT(t, keysRS, nil, good))); err != nil {
		t.Fatalf("RS256 with the RS256 key: %v", err)
	}
	if _, err := r.Resolve(context.Background(), bearer(signJWT(t, keysPS, nil, good))); !errors.Is(err, ErrInvalid) {
		t.Errorf("PS256 with the key published for RS256: err = %v, want ErrInvalid", err)
	}
}
