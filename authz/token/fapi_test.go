package token

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// weakRSA is a 1024-bit key: too short for FAPI.
func weakRSA(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// An RSA key under 2048 bits in an issuer's JWKS verifies nothing, even
// with an allowed algorithm, while the set's other keys keep working.
func TestJWKSRefusesShortRSAKeys(t *testing.T) {
	testKeys(t)
	clk := newClock()
	weak := weakRSA(t)
	// The set by hand: jwx will not even import a key this short.
	var set map[string][]any
	if err := json.Unmarshal(jwksJSON(t, keysPS), &set); err != nil {
		t.Fatal(err)
	}
	set["keys"] = append(set["keys"], map[string]any{
		"kty": "RSA", "kid": "weak-1", "use": "sig", "alg": "PS256",
		"n": base64.RawURLEncoding.EncodeToString(weak.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(weak.E)).Bytes()),
	})
	body, _ := json.Marshal(set)
	jwks := newJWKSServer(t)
	jwks.body.Store(&body)
	r := mustNew(t, Config{Issuers: []IssuerConfig{issuerConfig(jwks)}, Now: clk.Now})

	if _, err := r.Resolve(context.Background(), bearer(signJWT(t, keysPS, nil, claimsAt(clk.Now())))); err != nil {
		t.Fatalf("2048-bit PS256 token from the same set: %v", err)
	}
	// A PS256 token signed with the 1024-bit key, by hand.
	hdr := map[string]any{"alg": "PS256", "kid": "weak-1"}
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	input := enc(hdr) + "." + enc(claimsAt(clk.Now()))
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPSS(rand.Reader, weak, crypto.SHA256, sum[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	if err != nil {
		t.Fatal(err)
	}
	weakJWT := input + "." + base64.RawURLEncoding.EncodeToString(sig)
	if _, err := r.Resolve(context.Background(), bearer(weakJWT)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("1024-bit PS256 token: err = %v, want ErrInvalid", err)
	}
}

// FAPI's algorithms are the default: a token signed RS256 (or anything but
// PS256, ES256, EdDSA) is refused unless configured.
func TestDefaultAlgorithmsAreFAPIs(t *testing.T) {
	if got := strings.Join(defaultAlgorithms, ","); got != "ES256,PS256,EdDSA" {
		t.Fatalf("default algorithms %s", got)
	}
	testKeys(t)
	clk := newClock()
	jwks := newJWKSServer(t, keysPS, keysEd)
	r := mustNew(t, Config{Issuers: []IssuerConfig{issuerConfig(jwks)}, Now: clk.Now})
	if _, err := r.Resolve(context.Background(), bearer(signJWT(t, keysEd, nil, claimsAt(clk.Now())))); err != nil {
		t.Errorf("EdDSA: %v", err)
	}
	if _, err := r.Resolve(context.Background(), bearer(signJWT(t, keysRS, nil, claimsAt(clk.Now())))); !errors.Is(err, ErrInvalid) {
		t.Errorf("RS256 by default: err = %v, want ErrInvalid", err)
	}
}

// phantom-authz's own private_key_jwt key must not be a short RSA key.
func TestClientKeyRefusesShortRSA(t *testing.T) {
	der, err := x509.MarshalPKCS8PrivateKey(weakRSA(t))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "client.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{Introspection: &IntrospectionConfig{
		Endpoint: "https://as.example/introspect", ClientID: "gw",
		AuthMethod: AuthPrivateKeyJWT, PrivateKeyFile: file, PrivateKeyAlg: "PS256",
	}})
	// jwx refuses to parse the key already; our own check stands behind it.
	if err == nil || !strings.HasPrefix(err.Error(), "token: introspection.private_key_file") {
		t.Fatalf("err = %v, want the short RSA key refused", err)
	}
}

// The CA bundles cover the JWKS endpoints: introspection.ca_file when
// introspection is configured, the resolver's own CAFile when only issuers
// are; the system roots refuse the test server.
func TestCAFilesCoverJWKS(t *testing.T) {
	testKeys(t)
	clk := newClock()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(jwksJSON(t, keysES))
	}))
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	issuer := IssuerConfig{Issuer: testIssuer, JWKSURI: srv.URL, Audiences: []string{"api"}}
	intro := func(ca string) *IntrospectionConfig {
		return &IntrospectionConfig{Endpoint: "https://as.example/introspect", ClientID: "gw", ClientSecret: "s", CAFile: ca}
	}
	for _, tt := range []struct {
		name    string
		cfg     Config
		wantErr error
	}{
		{"issuer only, ca_file", Config{CAFile: caFile}, nil},
		{"introspection.ca_file", Config{Introspection: intro(caFile)}, nil},
		{"both", Config{CAFile: caFile, Introspection: intro(caFile)}, nil},
		{"system roots", Config{}, ErrUnavailable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Issuers, cfg.Now = []IssuerConfig{issuer}, clk.Now
			r := mustNew(t, cfg)
			_, err := r.Resolve(context.Background(), bearer(signJWT(t, keysES, nil, claimsAt(clk.Now()))))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
	if _, err := New(Config{Issuers: []IssuerConfig{issuer}, CAFile: "/nonexistent/ca.pem"}); err == nil ||
		!strings.HasPrefix(err.Error(), "token: ca_file") {
		t.Errorf("missing ca_file: err = %v", err)
	}
}
