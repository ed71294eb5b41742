package token

import (
	"context"
	"crypto/x509"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"
)

const testIssuer = "https://issuer.example"

// issuerConfig is an issuer verified against jwks.
func issuerConfig(jwks *jwksServer) IssuerConfig {
	return IssuerConfig{Issuer: testIssuer, JWKSURI: jwks.URL, Audiences: []string{"api", "other-api"}, AllowInsecureHTTP: true}
}

// claimsAt are valid access-token claims at now.
func claimsAt(now time.Time) map[string]any {
	return map[string]any{
		"iss": testIssuer, "sub": "alice", "aud": []string{"api"}, "client_id": "web", "scope": "read write",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(), "jti": "id-1",
	}
}

func with(c map[string]any, kv ...any) map[string]any {
	out := maps.Clone(c)
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
			continue
		}
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func TestByValue(t *testing.T) {
	testKeys(t)
	clk := newClock()
	now := clk.Now()
	good := claimsAt(now)
	atJWT := map[string]any{"typ": "at+jwt"}
	pubDER, _ := x509.MarshalPKIXPublicKey(rsaKey.Public())

	// An attacker's JWKS a token may point at with jku: never fetched.
	var attackerHits atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attackerHits.Add(1)
		_, _ = w.Write(jwksJSON(t, keysUnknown))
	}))
	defer attacker.Close()

	hs256 := func() string {
		// HS256 keyed with the public key's bytes: the classic confusion attack.
		tok, err := jws.Sign([]byte(`{"iss":"`+testIssuer+`","aud":"api","exp":`+strconv.FormatInt(now.Add(time.Hour).Unix(), 10)+`}`),
			jws.WithKey(jwa.HS256(), pubDER))
		if err != nil {
			t.Fatal(err)
		}
		return string(tok)
	}

	tests := []struct {
		name    string
		issuer  func(*IssuerConfig)
		token   string
		wantErr error
	}{
		{name: "ES256", token: signJWT(t, keysES, atJWT, good)},
		{name: "PS256", token: signJWT(t, keysPS, atJWT, good)},
		{name: "EdDSA", token: signJWT(t, keysEd, atJWT, good)},
		{name: "single audience string", token: signJWT(t, keysES, nil, with(good, "aud", "other-api"))},
		{name: "expired within skew", token: signJWT(t, keysES, nil, with(good, "exp", now.Add(-30*time.Second).Unix()))},
		{name: "typ checked when configured", issuer: func(c *IssuerConfig) { c.Type = "at+jwt" },
			token: signJWT(t, keysES, map[string]any{"typ": "application/AT+JWT"}, good)},

		{name: "alg none", token: rawJWT(t, map[string]any{"alg": "none", "kid": "es-1"}, good, nil), wantErr: ErrInvalid},
		{name: "alg none with a signature", token: rawJWT(t, map[string]any{"alg": "none", "kid": "es-1"}, good, []byte("x")), wantErr: ErrInvalid},
		{name: "HS256 with the public key", token: hs256(), wantErr: ErrInvalid},
		{name: "RS256 not in the allow-list", token: signJWT(t, keysRS, nil, good), wantErr: ErrInvalid},
		{name: "alg switched to ES256 for an RSA key", token: reheader(t, signJWT(t, keysPS, nil, good), map[string]any{"alg": "ES256", "kid": "ps-1"}), wantErr: ErrInvalid},
		{name: "wrong audience", token: signJWT(t, keysES, nil, with(good, "aud", "someone-else")), wantErr: ErrInvalid},
		{name: "no audience", token: signJWT(t, keysES, nil, with(good, "aud", nil)), wantErr: ErrInvalid},
		{name: "wrong typ", issuer: func(c *IssuerConfig) { c.Type = "at+jwt" },
			token: signJWT(t, keysES, map[string]any{"typ": "JWT"}, good), wantErr: ErrInvalid},
		{name: "expired beyond skew", token: signJWT(t, keysES, nil, with(good, "exp", now.Add(-61*time.Second).Unix())), wantErr: ErrInvalid},
		{name: "no exp", token: signJWT(t, keysES, nil, with(good, "exp", nil)), wantErr: ErrInvalid},
		{name: "nbf in the future", token: signJWT(t, keysES, nil, with(good, "nbf", now.Add(2*time.Minute).Unix())), wantErr: ErrInvalid},
		{name: "iat in the future", token: signJWT(t, keysES, nil, with(good, "iat", now.Add(2*time.Minute).Unix())), wantErr: ErrInvalid},
		{name: "tighter skew", issuer: func(c *IssuerConfig) { c.Skew = 5 * time.Second },
			token: signJWT(t, keysES, nil, with(good, "exp", now.Add(-10*time.Second).Unix())), wantErr: ErrInvalid},
		{name: "crit header", token: signJWT(t, keysES, map[string]any{"crit": []string{"exp"}, "exp": 1}, good), wantErr: ErrInvalid},
		{name: "signed by an unknown key", token: signJWT(t, keysUnknown, nil, good), wantErr: ErrInvalid},
		{name: "jku is never fetched", token: signJWT(t, keysUnknown, map[string]any{"jku": attacker.URL}, good), wantErr: ErrInvalid},
		{name: "tampered payload", token: func() string {
			parts := strings.Split(signJWT(t, keysES, nil, good), ".")
			other := strings.Split(signJWT(t, keysES, nil, with(good, "sub", "admin")), ".")
			return parts[0] + "." + other[1] + "." + parts[2]
		}(), wantErr: ErrInvalid},
		{name: "scope of the wrong type", token: signJWT(t, keysES, nil, with(good, "scope", 42)), wantErr: ErrInvalid},
		{name: "other issuer and no introspection", token: signJWT(t, keysES, nil, with(good, "iss", "https://evil.example")), wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jwks := newJWKSServer(t, keysES, keysPS, keysEd)
			ic := issuerConfig(jwks)
			if tt.issuer != nil {
				tt.issuer(&ic)
			}
			r := mustNew(t, Config{Issuers: []IssuerConfig{ic}, Now: clk.Now})
			tok, err := r.Resolve(context.Background(), bearer(tt.token))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tok.Kind != KindJWT || !tok.Active || tok.JWT != tt.token || tok.Subject != "alice" || tok.ClientID != "web" ||
				!tok.Expiry.Equal(tok.JWTExpiry) || tok.Expiry.IsZero() || claimsOf(t, tok)["jti"] != "id-1" {
				t.Errorf("token = %+v", tok)
			}
		})
	}
	if attackerHits.Load() != 0 {
		t.Errorf("the jku URL was fetched %d times", attackerHits.Load())
	}
}

// reheader replaces the protected header of a compact JWS, keeping its
// payload and signature.
func reheader(t *testing.T, tok string, hdr map[string]any) string {
	parts := strings.Split(tok, ".")
	return strings.Split(rawJWT(t, hdr, nil, nil), ".")[0] + "." + parts[1] + "." + parts[2]
}

func TestKeyRotation(t *testing.T) {
	testKeys(t)
	clk := newClock()
	jwks := newJWKSServer(t, keysES)
	r := mustNew(t, Config{Issuers: []IssuerConfig{issuerConfig(jwks)}, Now: clk.Now})
	resolve := func(k signingKey, jti string) error {
		_, err := r.Resolve(context.Background(), bearer(signJWT(t, k, nil, with(claimsAt(clk.Now()), "jti", jti))))
		return err
	}

	if err := resolve(keysES, "1"); err != nil {
		t.Fatal(err)
	}
	if n := jwks.count.Load(); n != 1 {
		t.Fatalf("JWKS fetched %d times, want 1", n)
	}
	// The issuer rotates to a new key; the first token with the new kid
	// triggers one refresh and verifies.
	jwks.set(t, keysES2)
	clk.Advance(31 * time.Second)
	if err := resolve(keysES2, "2"); err != nil {
		t.Fatalf("new key: %v", err)
	}
	if err := resolve(keysES2, "3"); err != nil {
		t.Fatalf("new key, second token: %v", err)
	}
	if n := jwks.count.Load(); n != 2 {
		t.Fatalf("JWKS fetched %d times, want 2", n)
	}
	// The withdrawn key no longer verifies.
	clk.Advance(31 * time.Second)
	if err := resolve(keysES, "4"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("withdrawn key: err = %v, want ErrInvalid", err)
	}
}

func TestKidRefreshRateLimited(t *testing.T) {
	testKeys(t)
	clk := newClock()
	jwks := newJWKSServer(t, keysES)
	r := mustNew(t, Config{Issuers: []IssuerConfig{issuerConfig(jwks)}, Now: clk.Now})
	unknownKid := signingKey{kid: "made-up", alg: jwa.ES256(), key: ecKey2}
	for i := range 20 {
		tok := signJWT(t, unknownKid, nil, with(claimsAt(clk.Now()), "jti", strconv.Itoa(i)))
		if _, err := r.Resolve(context.Background(), bearer(tok)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("err = %v, want ErrInvalid", err)
		}
		clk.Advance(time.Second) // 20 tokens over 20s: one fetch only
	}
	if n := jwks.count.Load(); n != 1 {
		t.Fatalf("JWKS fetched %d times in 20s, want 1", n)
	}
	clk.Advance(15 * time.Second)
	tok := signJWT(t, unknownKid, nil, with(claimsAt(clk.Now()), "jti", "late"))
	_, _ = r.Resolve(context.Background(), bearer(tok))
	if n := jwks.count.Load(); n != 2 {
		t.Fatalf("JWKS fetched %d times after 35s, want 2", n)
	}
}

func TestJWKSDownKeepsLastKeys(t *testing.T) {
	testKeys(t)
	clk := newClock()
	jwks := newJWKSServer(t, keysES)
	r := mustNew(t, Config{Issuers: []IssuerConfig{issuerConfig(jwks)}, Now: clk.Now})
	resolve := func(k signingKey, jti string) error {
		_, err := r.Resolve(context.Background(), bearer(signJWT(t, k, nil, with(claimsAt(clk.Now()), "jti", jti))))
		return err
	}
	if err := resolve(keysES, "1"); err != nil {
		t.Fatal(err)
	}
	jwks.down.Store(true)
	clk.Advance(31 * time.Second)
	// An unknown kid prompts a refresh, which fails...
	if err := resolve(keysES2, "2"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown kid: err = %v, want ErrInvalid", err)
	}
	// ...and the keys fetched before still verify.
	if err := resolve(keysES, "3"); err != nil {
		t.Fatalf("known kid while JWKS is down: %v", err)
	}
	// Keys grow old while the endpoint is down: still kept.
	clk.Advance(2 * time.Hour)
	if err := resolve(keysES, "4"); err != nil {
		t.Fatalf("old keys while JWKS is down: %v", err)
	}
	if st := r.Stats(); st.JWKSRefreshes != 1 || st.JWKSFailures == 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestJWKSNeverReachable(t *testing.T) {
	testKeys(t)
	clk := newClock()
	jwks := newJWKSServer(t, keysES)
	jwks.down.Store(true)
	r := mustNew(t, Config{Issuers: []IssuerConfig{issuerConfig(jwks)}, Now: clk.Now})
	tok := signJWT(t, keysES, nil, claimsAt(clk.Now()))
	if _, err := r.Resolve(context.Background(), bearer(tok)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	// Retried, but not on every request.
	_, _ = r.Resolve(context.Background(), bearer(tok))
	if n := jwks.count.Load(); n != 1 {
		t.Fatalf("JWKS fetched %d times, want 1", n)
	}
	jwks.down.Store(false)
	clk.Advance(emptyRetryInterval)
	if _, err := r.Resolve(context.Background(), bearer(tok)); err != nil {
		t.Fatalf("after the JWKS came back: %v", err)
	}
}

func TestStaleKeysRefreshedInBackground(t *testing.T) {
	testKeys(t)
	clk := newClock()
	jwks := newJWKSServer(t, keysES)
	r := mustNew(t, Config{Issuers: []IssuerConfig{issuerConfig(jwks)}, Now: clk.Now})
	resolve := func(jti string) error {
		_, err := r.Resolve(context.Background(), bearer(signJWT(t, keysES, nil, with(claimsAt(clk.Now()), "jti", jti))))
		return err
	}
	if err := resolve("1"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(keysMaxAge + time.Minute)
	if err := resolve("2"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for jwks.count.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("stale keys were not refreshed")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestJWTOfAnotherIssuerIsIntrospected(t *testing.T) {
	testKeys(t)
	clk := newClock()
	jwks := newJWKSServer(t, keysES)
	srv := newOAuthServer(t, activeAnswer(clk.Now().Add(time.Hour)))
	r := mustNew(t, Config{Issuers: []IssuerConfig{issuerConfig(jwks)}, Introspection: introspectionConfig(srv), Now: clk.Now})

	foreign := signJWT(t, keysES, nil, with(claimsAt(clk.Now()), "iss", "https://other.example"))
	tok, err := r.Resolve(context.Background(), bearer(foreign))
	if err != nil || tok.Kind != KindOpaque || srv.count.Load() != 1 {
		t.Fatalf("foreign JWT: tok, err = %+v, %v; introspections %d", tok, err, srv.count.Load())
	}
	own := signJWT(t, keysES, nil, claimsAt(clk.Now()))
	tok, err = r.Resolve(context.Background(), bearer(own))
	if err != nil || tok.Kind != KindJWT || srv.count.Load() != 1 {
		t.Fatalf("own JWT: tok, err = %+v, %v; introspections %d", tok, err, srv.count.Load())
	}
	// A JWT of a configured issuer that fails verification is not introspected.
	bad := signJWT(t, keysUnknown, nil, claimsAt(clk.Now()))
	if _, err := r.Resolve(context.Background(), bearer(bad)); !errors.Is(err, ErrInvalid) || srv.count.Load() != 1 {
		t.Fatalf("bad JWT: err = %v; introspections %d", err, srv.count.Load())
	}
}
