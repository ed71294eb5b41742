package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/phantom-authz/phantom-authz/authz/credential"
)

// clock is a settable clock for Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_800_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// signingKey is a private key with its kid and algorithm.
type signingKey struct {
	kid string
	alg jwa.SignatureAlgorithm
	key crypto.Signer
}

var (
	keyOnce             sync.Once
	rsaKey              *rsa.PrivateKey
	ecKey, ecKey2       *ecdsa.PrivateKey
	edKey               ed25519.PrivateKey
	keysES, keysES2     signingKey
	keysPS, keysEd      signingKey
	keysRS, keysUnknown signingKey
)

func testKeys(t testing.TB) {
	t.Helper()
	keyOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		ecKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		ecKey2, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, edKey, _ = ed25519.GenerateKey(rand.Reader)
		keysES = signingKey{"es-1", jwa.ES256(), ecKey}
		keysES2 = signingKey{"es-2", jwa.ES256(), ecKey2}
		keysPS = signingKey{"ps-1", jwa.PS256(), rsaKey}
		keysRS = signingKey{"ps-1", jwa.RS256(), rsaKey}
		keysEd = signingKey{"ed-1", jwa.EdDSA(), edKey}
		unknown, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		keysUnknown = signingKey{"es-1", jwa.ES256(), unknown}
	})
}

// jwksJSON is the public JWK set of keys.
func jwksJSON(t testing.TB, keys ...signingKey) []byte {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		pub, err := jwk.Import(k.key.Public())
		if err != nil {
			t.Fatal(err)
		}
		_ = pub.Set(jwk.KeyIDKey, k.kid)
		_ = pub.Set(jwk.KeyUsageKey, "sig")
		if err := set.AddKey(pub); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signJWT signs claims with k; hdr adds protected headers. typ is at+jwt
// (RFC 9068) unless hdr names another, or nil for none.
func signJWT(t testing.TB, k signingKey, hdr map[string]any, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	h := jws.NewHeaders()
	if k.kid != "" {
		_ = h.Set(jws.KeyIDKey, k.kid)
	}
	if _, ok := hdr["typ"]; !ok {
		_ = h.Set(jws.TypeKey, "at+jwt")
	}
	for name, v := range hdr {
		if v == nil {
			continue
		}
		if err := h.Set(name, v); err != nil {
			t.Fatal(err)
		}
	}
	signed, err := jws.Sign(payload, jws.WithKey(k.alg, k.key, jws.WithProtectedHeaders(h)))
	if err != nil {
		t.Fatal(err)
	}
	return string(signed)
}

// rawJWT assembles a compact JWS from JSON header and payload and raw
// signature bytes, for tokens no library would sign.
func rawJWT(t testing.TB, hdr, claims any, sig []byte) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(hdr) + "." + enc(claims) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// jwksServer serves a JWK set that tests can swap or take down, counting
// requests.
type jwksServer struct {
	*httptest.Server
	body  atomic.Pointer[[]byte]
	down  atomic.Bool
	count atomic.Int64
}

func newJWKSServer(t testing.TB, keys ...signingKey) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.set(t, keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.count.Add(1)
		if s.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(t testing.TB, keys ...signingKey) {
	b := jwksJSON(t, keys...)
	s.body.Store(&b)
}

// oauthServer is an introspection endpoint run by handle, counting requests.
type oauthServer struct {
	*httptest.Server
	count atomic.Int64
}

func newOAuthServer(t testing.TB, handle http.HandlerFunc) *oauthServer {
	t.Helper()
	s := &oauthServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.count.Add(1)
		handle(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// writeJSON answers v as application/json.
func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// bearer is a Bearer credential for tok.
func bearer(tok string) credential.Credential {
	return credential.Credential{Scheme: credential.SchemeBearer, Token: tok}
}

// introspectionConfig is a client_secret_basic json-mode config for s.
func introspectionConfig(s *oauthServer) *IntrospectionConfig {
	return &IntrospectionConfig{
		Endpoint:          s.URL + "/introspect",
		ClientID:          "gateway",
		ClientSecret:      "s3cret",
		AllowInsecureHTTP: true,
	}
}

func mustNew(t testing.TB, cfg Config) *Resolver {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// claimsOf is tok's claims, decoded.
func claimsOf(t testing.TB, tok *Token) map[string]any {
	t.Helper()
	m, err := tok.ClaimMap()
	if err != nil {
		t.Fatal(err)
	}
	return m
}
