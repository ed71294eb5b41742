package token

// Regression tests of the security review (issue 13): each is named after
// what it defends and was seen failing against the code before its fix.

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/phantom-authz/phantom-authz/authz/internal/logtest"
)

// A refresh token (Hydra: token_use refresh_token; Keycloak: typ Refresh),
// an offline token or an ID token is not an access token: a stolen one must
// not work as a bearer token (401 invalid_token, ErrInvalid), whatever the
// OAuth server says about it being active.
func TestRefreshTokenRefusedAsAccessToken(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	answers := []struct {
		name   string
		extra  map[string]any
		refuse bool
	}{
		{name: "hydra refresh token", extra: map[string]any{"token_use": "refresh_token", "token_type": "Bearer"}, refuse: true},
		{name: "token_use id_token", extra: map[string]any{"token_use": "id_token"}, refuse: true},
		{name: "token_use of an unknown kind", extra: map[string]any{"token_use": "authorization_code"}, refuse: true},
		{name: "token_use not a string", extra: map[string]any{"token_use": 1}, refuse: true},
		{name: "keycloak refresh token", extra: map[string]any{"typ": "Refresh"}, refuse: true},
		{name: "keycloak offline token", extra: map[string]any{"typ": "Offline"}, refuse: true},
		{name: "keycloak ID token", extra: map[string]any{"typ": "ID"}, refuse: true},
		{name: "token_type refresh_token", extra: map[string]any{"token_type": "refresh_token"}, refuse: true},
		{name: "token_type RFC 8693 refresh URN", extra: map[string]any{"token_type": "urn:ietf:params:oauth:token-type:refresh_token"}, refuse: true},
		{name: "token_type RFC 8693 ID token URN", extra: map[string]any{"token_type": "urn:ietf:params:oauth:token-type:id_token"}, refuse: true},

		{name: "hydra access token", extra: map[string]any{"token_use": "access_token", "token_type": "Bearer"}},
		{name: "keycloak access token", extra: map[string]any{"typ": "Bearer"}},
		{name: "DPoP token_type", extra: map[string]any{"token_type": "DPoP"}},
		{name: "no token_use or typ", extra: nil},
	}
	for _, tt := range answers {
		t.Run(tt.name, func(t *testing.T) {
			srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
				a := map[string]any{"active": true, "sub": "alice", "scope": "read", "exp": exp}
				for k, v := range tt.extra {
					a[k] = v
				}
				writeJSON(w, a)
			})
			r := mustNew(t, Config{Introspection: introspectionConfig(srv)})
			tok, err := r.Resolve(context.Background(), bearer("ory_rt_stolen"))
			if tt.refuse {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v (token %+v), want ErrInvalid (401 invalid_token)", err, tok)
				}
				return
			}
			if err != nil || tok.Subject != "alice" {
				t.Fatalf("access token refused: %v", err)
			}
		})
	}
}

// A JWT sent by value whose typ (header, or Keycloak's typ claim) says it is
// a refresh or ID token is refused even when the issuer opts out of the
// at+jwt check.
func TestRefreshOrIDJWTRefusedByValue(t *testing.T) {
	testKeys(t)
	clk := newClock()
	good := claimsAt(clk.Now())
	tests := []struct {
		name   string
		hdr    map[string]any
		claims map[string]any
		refuse bool
	}{
		{name: "typ claim Refresh", hdr: map[string]any{"typ": "JWT"}, claims: with(good, "typ", "Refresh"), refuse: true},
		{name: "typ claim ID", hdr: map[string]any{"typ": "JWT"}, claims: with(good, "typ", "ID"), refuse: true},
		{name: "token_use id_token", hdr: map[string]any{"typ": "JWT"}, claims: with(good, "token_use", "id_token"), refuse: true},
		{name: "typ header refresh+jwt", hdr: map[string]any{"typ": "refresh+jwt"}, claims: good, refuse: true},
		{name: "token_use id (Cognito ID token)", hdr: map[string]any{"typ": "JWT"}, claims: with(good, "token_use", "id"), refuse: true},
		{name: "typ header JWT, access claims", hdr: map[string]any{"typ": "JWT"}, claims: with(good, "typ", "Bearer")},
		{name: "token_use access (Cognito access token)", hdr: map[string]any{"typ": "JWT"}, claims: with(good, "token_use", "access")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jwks := newJWKSServer(t, keysES)
			ic := issuerConfig(jwks)
			ic.Type = AnyType
			r := mustNew(t, Config{Issuers: []IssuerConfig{ic}, Now: clk.Now})
			_, err := r.Resolve(context.Background(), bearer(signJWT(t, keysES, tt.hdr, tt.claims)))
			if tt.refuse != (err != nil) || (tt.refuse && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("err = %v, refuse %v", err, tt.refuse)
			}
		})
	}
}

// With introspection.audiences set, a token the OAuth server issued for
// another resource server is refused (RFC 9700 §2.3), as is one whose
// answer names no audience; without it, any audience is accepted.
func TestIntrospectionAudienceRestriction(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	tests := []struct {
		name      string
		audiences []string
		aud       any // nil: no aud in the answer
		refuse    bool
	}{
		{name: "other resource server", audiences: []string{"https://api.bank.example"}, aud: "https://other.example", refuse: true},
		{name: "other resource servers (list)", audiences: []string{"https://api.bank.example"}, aud: []any{"a", "b"}, refuse: true},
		{name: "no aud in the answer", audiences: []string{"https://api.bank.example"}, refuse: true},
		{name: "empty aud list", audiences: []string{"https://api.bank.example"}, aud: []any{}, refuse: true},
		{name: "aud of the wrong type", audiences: []string{"https://api.bank.example"}, aud: 7, refuse: true},
		{name: "ours (string)", audiences: []string{"https://api.bank.example"}, aud: "https://api.bank.example"},
		{name: "ours among others", audiences: []string{"x", "https://api.bank.example"}, aud: []any{"a", "https://api.bank.example"}},
		{name: "not configured", aud: "https://other.example"},
		{name: "not configured, no aud"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
				a := map[string]any{"active": true, "sub": "alice", "exp": exp}
				if tt.aud != nil {
					a["aud"] = tt.aud
				}
				writeJSON(w, a)
			})
			in := introspectionConfig(srv)
			in.Audiences = tt.audiences
			r := mustNew(t, Config{Introspection: in})
			_, err := r.Resolve(context.Background(), bearer("opaque"))
			if tt.refuse != (err != nil) || (tt.refuse && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("err = %v, refuse %v", err, tt.refuse)
			}
		})
	}
	if _, err := New(Config{Introspection: &IntrospectionConfig{Endpoint: "https://as.example/i", ClientID: "c", ClientSecret: "s",
		Audiences: []string{""}}}); err == nil || !strings.Contains(err.Error(), "introspection.audiences") {
		t.Errorf("an empty audience: err = %v, want one naming introspection.audiences", err)
	}
}

// RFC 9068 §4: typ must be at+jwt unless the issuer opts out, so an OIDC ID
// token (typ JWT) with a matching aud is not an access token.
func TestJWTTypeDefaultsToATJWT(t *testing.T) {
	testKeys(t)
	clk := newClock()
	good := claimsAt(clk.Now())
	tests := []struct {
		name   string
		typ    string // the issuer's type setting
		hdr    map[string]any
		refuse bool
	}{
		{name: "ID token (typ JWT)", hdr: map[string]any{"typ": "JWT"}, refuse: true},
		{name: "no typ", hdr: map[string]any{"typ": nil}, refuse: true},
		{name: "typ dpop+jwt", hdr: map[string]any{"typ": "dpop+jwt"}, refuse: true},
		{name: "at+jwt", hdr: map[string]any{"typ": "at+jwt"}},
		{name: "application/at+jwt", hdr: map[string]any{"typ": "application/at+jwt"}},
		{name: "opt-out accepts typ JWT", typ: AnyType, hdr: map[string]any{"typ": "JWT"}},
		{name: "opt-out accepts no typ", typ: AnyType, hdr: map[string]any{"typ": nil}},
		{name: "explicit other type", typ: "jwt", hdr: map[string]any{"typ": "JWT"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jwks := newJWKSServer(t, keysES)
			ic := issuerConfig(jwks)
			ic.Type = tt.typ
			r := mustNew(t, Config{Issuers: []IssuerConfig{ic}, Now: clk.Now})
			_, err := r.Resolve(context.Background(), bearer(signJWT(t, keysES, tt.hdr, good)))
			if tt.refuse != (err != nil) || (tt.refuse && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("err = %v, refuse %v", err, tt.refuse)
			}
		})
	}
}

// Junk tokens the OAuth server answers with 400 invalid_request or
// invalid_token are invalid (401), one by one; they never open the circuit
// breaker, so users with good tokens are not refused with 503.
func TestBreakerIgnoresAnswersAboutOneToken(t *testing.T) {
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		tok := r.PostForm.Get("token")
		switch {
		case strings.HasPrefix(tok, "junk-request"):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_request","error_description":"malformed token"}`))
		case strings.HasPrefix(tok, "junk-token"):
			w.Header().Set("Content-Type", "application/json;charset=UTF-8")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_token"}`))
		default:
			writeJSON(w, map[string]any{"active": true, "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
		}
	})
	in := introspectionConfig(srv)
	in.Breaker = BreakerConfig{Failures: 2, Cooldown: time.Hour}
	r := mustNew(t, Config{Introspection: in})
	ctx := context.Background()
	for i := range 10 {
		for _, kind := range []string{"junk-request", "junk-token"} {
			_, err := r.Resolve(ctx, bearer(fmt.Sprintf("%s-%d", kind, i)))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%s %d: err = %v, want ErrInvalid (401 invalid_token)", kind, i, err)
			}
		}
	}
	if tok, err := r.Resolve(ctx, bearer("good-user")); err != nil || tok.Subject != "alice" {
		t.Fatalf("a good token after 20 junk ones: %v, want it resolved (breaker closed)", err)
	}
	if got := srv.count.Load(); got != 21 {
		t.Errorf("%d calls reached the server, want 21", got)
	}
	if st := r.Stats(); st.IntrospectionsFailed != 0 {
		t.Errorf("IntrospectionsFailed = %d, want 0: answers about one token are not failures", st.IntrospectionsFailed)
	}
}

// Other 4xx answers (a 400 about our request, 429) still count as the
// server failing.
func TestBreakerCountsOther4xx(t *testing.T) {
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"unsupported_token_type"}`))
	})
	in := introspectionConfig(srv)
	in.Breaker = BreakerConfig{Failures: 2, Cooldown: time.Hour}
	r := mustNew(t, Config{Introspection: in})
	for i := range 4 {
		if _, err := r.Resolve(context.Background(), bearer(fmt.Sprintf("t-%d", i))); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("call %d: err = %v, want ErrUnavailable", i, err)
		}
	}
	if got := srv.count.Load(); got != 2 {
		t.Errorf("%d calls reached the server, want 2 (then the breaker opened)", got)
	}
}

// ["admin","users"] and ["admin\x00users"] are different lists, and the
// policy sees each token's own (once, shared lists were keyed by their items
// joined; now every token keeps its claims' JSON).
func TestClaimListsKeptApart(t *testing.T) {
	roles := map[string][]any{
		"two-roles": {"admin", "users"},
		"one-role":  {"admin\x00users"},
		"three":     {"admin", "users", ""},
		"empty":     {},
	}
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		writeJSON(w, map[string]any{"active": true, "sub": "u", "roles": roles[r.PostForm.Get("token")],
			"groups": roles[r.PostForm.Get("token")]})
	})
	r := mustNew(t, Config{Introspection: introspectionConfig(srv)})
	for _, name := range []string{"two-roles", "one-role", "three", "empty", "one-role", "two-roles"} {
		tok, err := r.Resolve(context.Background(), bearer(name))
		if err != nil {
			t.Fatal(err)
		}
		for _, claim := range []string{"roles", "groups"} {
			if got := claimsOf(t, tok)[claim]; !reflect.DeepEqual(got, roles[name]) {
				t.Errorf("token %s: %s = %q, want %q", name, claim, got, roles[name])
			}
		}
	}
}

// Secrets in an endpoint's query string (an API gateway's subscription key)
// or user information never reach the logs or the errors: URLs are logged
// as scheme, host and path.
func TestLoggedURLsHideQueryAndUserinfo(t *testing.T) {
	const querySecret, userSecret = "QUERY-SECRET-4711", "USER-SECRET-0815"
	var logs logtest.Buffer
	intro := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	})
	jwks := newJWKSServer(t)
	jwks.down.Store(true)
	in := introspectionConfig(intro)
	in.Endpoint = strings.Replace(intro.URL, "http://", "http://gw:"+userSecret+"@", 1) + "/introspect?subscription-key=" + querySecret
	in.Breaker = BreakerConfig{Failures: 1, Cooldown: time.Hour}
	ic := issuerConfig(jwks)
	ic.JWKSURI = jwks.URL + "/keys?subscription-key=" + querySecret
	r := mustNew(t, Config{Introspection: in, Issuers: []IssuerConfig{ic}, Logger: newTestLogger(&logs)})
	ctx := context.Background()
	var errs []string
	// Introspection fails (logged), then the breaker opens (logged) and
	// refuses the next token (an error naming the endpoint).
	for _, raw := range []string{"opaque-1", "opaque-2"} {
		if _, err := r.Resolve(ctx, bearer(raw)); err != nil {
			errs = append(errs, err.Error())
		}
	}
	// The JWKS cannot be fetched (logged, and the error names the URI).
	testKeys(t)
	if _, err := r.Resolve(ctx, bearer(signJWT(t, keysES, map[string]any{"typ": "at+jwt"}, claimsAt(time.Now())))); err != nil {
		errs = append(errs, err.Error())
	}
	all := logs.String() + strings.Join(errs, "\n")
	if len(errs) != 3 || !strings.Contains(logs.String(), "/introspect") || !strings.Contains(logs.String(), "/keys") {
		t.Fatalf("expected three errors and log lines naming both endpoints; errors %q, logs:\n%s", errs, logs.String())
	}
	for _, secret := range []string{querySecret, userSecret} {
		if strings.Contains(all, secret) {
			t.Errorf("%s reached the logs or errors:\n%s", secret, all)
		}
	}
}

// The coalescing race: a caller that missed the cache and then lost the CPU
// while the flight finished (and singleflight forgot the key) starts a flight
// of its own; the flight re-checks the cache and does not introspect again.
func TestCoalescingLateCallerFindsTheCache(t *testing.T) {
	srv := newOAuthServer(t, activeAnswer(time.Now().Add(time.Hour)))
	r := mustNew(t, Config{Introspection: introspectionConfig(srv)})
	ctx := context.Background()
	first, err := r.Resolve(ctx, bearer("opaque-late"))
	if err != nil {
		t.Fatal(err)
	}
	// What the late caller does after its cache miss.
	late, _, err := r.resolveMiss(ctx, "opaque-late")
	if err != nil {
		t.Fatal(err)
	}
	if n := srv.count.Load(); n != 1 {
		t.Fatalf("introspection server saw %d requests, want 1", n)
	}
	if late != first {
		t.Error("the late caller got another Token than the cached one")
	}
	// The same for an inactive answer remembered for inactive_ttl.
	inactive := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, map[string]any{"active": false}) })
	r2 := mustNew(t, Config{Introspection: introspectionConfig(inactive)})
	if _, err := r2.Resolve(ctx, bearer("junk")); !errors.Is(err, ErrInactive) {
		t.Fatal(err)
	}
	if _, _, err := r2.resolveMiss(ctx, "junk"); !errors.Is(err, ErrInactive) || inactive.count.Load() != 1 {
		t.Fatalf("late caller of an inactive token: err %v, %d introspections, want ErrInactive and 1", err, inactive.count.Load())
	}
}

// The same race on the JWT-by-value path: the late caller's flight finds
// the verified token in the cache instead of verifying it again.
func TestCoalescingLateCallerFindsTheCacheByValue(t *testing.T) {
	testKeys(t)
	clk := newClock()
	jwks := newJWKSServer(t, keysES)
	r := mustNew(t, Config{Issuers: []IssuerConfig{issuerConfig(jwks)}, Now: clk.Now})
	raw := signJWT(t, keysES, map[string]any{"typ": "at+jwt"}, claimsAt(clk.Now()))
	ctx := context.Background()
	first, err := r.Resolve(ctx, bearer(raw))
	if err != nil {
		t.Fatal(err)
	}
	late, _, err := r.resolveMiss(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	if n := r.Stats().JWTsVerified; n != 1 || late != first {
		t.Fatalf("%d verifications (same token: %v), want 1 and the cached Token", n, late == first)
	}
}

// An introspection answer that says active but whose exp has passed is not
// served, not even once.
func TestExpiredAnswerNotServed(t *testing.T) {
	clk := newClock()
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"active": true, "sub": "alice", "exp": clk.Now().Add(-time.Second).Unix()})
	})
	r := mustNew(t, Config{Introspection: introspectionConfig(srv), Now: clk.Now})
	if tok, err := r.Resolve(context.Background(), bearer("stale")); !errors.Is(err, ErrInactive) {
		t.Fatalf("err = %v (token %+v), want ErrInactive", err, tok)
	}
}

// forgeOldScheme is what anyone with write access to Redis could do with the
// scheme documented before the shared cache had a secret: key = SHA-256 of a
// label and the token, value sealed with a key derived from the token alone.
func forgeOldScheme(t *testing.T, raw string, claims map[string]any) ([32]byte, []byte) {
	t.Helper()
	key := sha256.Sum256([]byte("phantom-authz shared token cache key v1\x00" + raw))
	aesKey, err := hkdf.Key(sha256.New, []byte(raw), nil, "phantom-authz shared token cache seal v1", 32)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(aesKey)
	gcm, _ := cipher.NewGCM(block)
	plain, _ := json.Marshal(map[string]any{"kind": "opaque", "claims": claims})
	out := make([]byte, 1+gcm.NonceSize())
	out[0] = 1
	_, _ = rand.Read(out[1:])
	return key, gcm.Seal(out, out[1:], plain, key[:])
}

// testSharedKey is the replicas' shared-cache secret in tests.
var testSharedKey = []byte("0123456789abcdef0123456789abcdef-replicas")

// Someone who can write to Redis but does not hold redis.cache_key_file
// cannot mint an identity: an entry forged for a token of their choosing is
// never looked up, and one written over a real entry fails authentication:
// it is ignored (the token is introspected), counted and logged once a
// minute at most.
func TestSharedCacheForgedEntryRefused(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		if r.PostForm.Get("token") == "attacker-own" {
			writeJSON(w, map[string]any{"active": true, "sub": "mallory", "scope": "read", "exp": exp})
			return
		}
		writeJSON(w, map[string]any{"active": false})
	})
	shared := newFakeShared()
	admin := map[string]any{"active": true, "sub": "admin", "scope": "admin read write", "exp": exp}

	// A token string the attacker invented, with claims of their choice.
	key, forged := forgeOldScheme(t, "attacker-invented", admin)
	shared.values[key] = forged
	var logs logtest.Buffer
	newR := func() *Resolver {
		return mustNew(t, Config{Introspection: introspectionConfig(srv), Shared: shared, SharedKey: testSharedKey, Logger: newTestLogger(&logs)})
	}
	r1 := newR()
	if tok, err := r1.Resolve(context.Background(), bearer("attacker-invented")); !errors.Is(err, ErrInactive) {
		t.Fatalf("invented token: err = %v (token %+v), want ErrInactive from the OAuth server", err, tok)
	}

	// The attacker's own token, resolved and shared; then every entry in
	// the store overwritten with claims of their choice.
	if tok, err := r1.Resolve(context.Background(), bearer("attacker-own")); err != nil || tok.Subject != "mallory" {
		t.Fatalf("own token: %v", err)
	}
	_, forgedOwn := forgeOldScheme(t, "attacker-own", admin)
	shared.mu.Lock()
	for k := range shared.values {
		shared.values[k] = forgedOwn
	}
	shared.mu.Unlock()
	for i := range 3 {
		tok, err := newR().Resolve(context.Background(), bearer("attacker-own"))
		if err != nil || tok.Subject != "mallory" || slicesContain(tok.Scopes, "admin") {
			t.Fatalf("replica %d: token %+v, err %v; want mallory's own claims", i, tok, err)
		}
	}
	if n := srv.count.Load(); n != 5 {
		t.Errorf("%d introspections, want 5 (the invented token, and the own token on each replica: forged entries are not trusted)", n)
	}
	if got := logs.Count("shared cache entry failed authentication"); got != 3 {
		t.Errorf("%d log lines about forged entries, want 3 (one per replica):\n%s", got, logs.String())
	}
	if strings.Contains(logs.String(), "attacker-own") {
		t.Error("the token reached the logs")
	}
}

func slicesContain(s []string, v string) bool {
	for _, e := range s {
		if e == v {
			return true
		}
	}
	return false
}

// Tampered entries are counted (phantom_authz.shared_cache.rejected) and
// logged at most once a minute.
func TestSharedCacheRejectedCounted(t *testing.T) {
	srv := newOAuthServer(t, activeAnswer(time.Now().Add(time.Hour)))
	shared := newFakeShared()
	r1 := mustNew(t, Config{Introspection: introspectionConfig(srv), Shared: shared, SharedKey: testSharedKey})
	tokens := []string{"tok-1", "tok-2", "tok-3"}
	for _, raw := range tokens {
		if _, err := r1.Resolve(context.Background(), bearer(raw)); err != nil {
			t.Fatal(err)
		}
	}
	shared.mu.Lock()
	for k, v := range shared.values {
		v = bytes.Clone(v)
		v[len(v)-1] ^= 1 // one bit flipped
		shared.values[k] = v
	}
	shared.mu.Unlock()
	var logs logtest.Buffer
	r2 := mustNew(t, Config{Introspection: introspectionConfig(srv), Shared: shared, SharedKey: testSharedKey, Logger: newTestLogger(&logs)})
	for _, raw := range tokens {
		if _, err := r2.Resolve(context.Background(), bearer(raw)); err != nil {
			t.Fatal(err)
		}
	}
	if st := r2.Stats(); st.SharedRejected != 3 || st.SharedHits != 0 || srv.count.Load() != 6 {
		t.Errorf("stats %+v, introspections %d; want three rejected entries and each token introspected again", st, srv.count.Load())
	}
	if got := logs.Count("shared cache entry failed authentication"); got != 1 {
		t.Errorf("%d log lines, want 1 (at most one a minute):\n%s", got, logs.String())
	}
}

// An old sealed entry written back into Redis does not revive a token: the
// absolute expiry sealed inside it is checked on every read.
func TestSharedCacheExpiredEntryNotServed(t *testing.T) {
	clk := newClock()
	var revoked atomic.Bool
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		if revoked.Load() {
			writeJSON(w, map[string]any{"active": false})
			return
		}
		writeJSON(w, map[string]any{"active": true, "sub": "alice", "exp": clk.Now().Add(time.Hour).Unix()})
	})
	shared := newFakeShared()
	cfg := Config{Introspection: introspectionConfig(srv), Shared: shared, SharedKey: testSharedKey, Now: clk.Now,
		Cache: CacheConfig{MaxTTL: 5 * time.Minute}}
	r1 := mustNew(t, cfg)
	ctx := context.Background()
	if _, err := r1.Resolve(ctx, bearer("tok")); err != nil {
		t.Fatal(err)
	}
	snapshot := map[[32]byte][]byte{}
	shared.mu.Lock()
	maps.Copy(snapshot, shared.values)
	shared.mu.Unlock()

	// Revoked at the OAuth server and here; six minutes later the attacker
	// writes the old active entry back (Redis would have let it expire).
	revoked.Store(true)
	if err := r1.Revoke(ctx, "tok"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(6 * time.Minute)
	shared.mu.Lock()
	maps.Copy(shared.values, snapshot)
	shared.mu.Unlock()

	r2 := mustNew(t, cfg)
	if tok, err := r2.Resolve(ctx, bearer("tok")); !errors.Is(err, ErrInactive) {
		t.Fatalf("err = %v (token %+v), want ErrInactive: the written-back entry was served", err, tok)
	}
	if n := srv.count.Load(); n != 2 {
		t.Errorf("%d introspections, want 2", n)
	}
}

// The shared cache needs its secret: without one (or a short one) the
// resolver does not start.
func TestSharedCacheRequiresKey(t *testing.T) {
	for _, key := range [][]byte{nil, []byte("too-short-0123456789abcdef01234")} {
		_, err := New(Config{Introspection: &IntrospectionConfig{Endpoint: "https://as.example/i", ClientID: "c", ClientSecret: "s"},
			Shared: newFakeShared(), SharedKey: key})
		if err == nil || !strings.Contains(err.Error(), "cache_key_file") {
			t.Errorf("key of %d bytes: err = %v, want one naming redis.cache_key_file", len(key), err)
		}
	}
}

// A flood of one JWT never seen before, its key at hand: the flight runs on
// a caller's goroutine (cpuOnly), and still verifies it once for all.
func TestConcurrentNewJWTVerifiedOnce(t *testing.T) {
	testKeys(t)
	clk := newClock()
	jwks := newJWKSServer(t, keysES)
	r := mustNew(t, Config{Issuers: []IssuerConfig{issuerConfig(jwks)}, Now: clk.Now})
	ctx := context.Background()
	// Another JWT first, so that the keys are at hand.
	if _, err := r.Resolve(ctx, bearer(signJWT(t, keysES, map[string]any{"typ": "at+jwt"}, claimsAt(clk.Now())))); err != nil {
		t.Fatal(err)
	}
	claims := claimsAt(clk.Now())
	claims["jti"] = "flood-1"
	raw := signJWT(t, keysES, map[string]any{"typ": "at+jwt"}, claims)
	const callers = 64
	var wg sync.WaitGroup
	toks := make([]*Token, callers)
	for i := range callers {
		wg.Go(func() {
			tok, err := r.Resolve(ctx, bearer(raw))
			if err != nil {
				t.Error(err)
			}
			toks[i] = tok
		})
	}
	wg.Wait()
	if n := r.Stats().JWTsVerified; n != 2 {
		t.Errorf("%d verifications, want 2 (one per JWT)", n)
	}
	for _, tok := range toks {
		if tok == nil || tok != toks[0] || tok.Subject == "" {
			t.Fatal("callers got different or empty Tokens")
		}
	}
}

// A key of the issuer's set may only verify the algorithm its type and
// curve are for (RFC 7518 §3.4: ES256 is P-256): a token whose header says
// ES256 but whose signature is by the set's P-384 key, or that names an
// RSA or Ed25519 key for ES256, is refused.
func TestKeyMustFitTheAlgorithm(t *testing.T) {
	testKeys(t)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keysP384 := signingKey{"p384", jwa.ES384(), p384}
	jwks := newJWKSServer(t, keysES, keysP384, keysPS, keysEd)
	ic := issuerConfig(jwks)
	ic.Algorithms = []string{"ES256", "ES384", "PS256", "EdDSA"}
	r := mustNew(t, Config{Issuers: []IssuerConfig{ic}})
	claims := claimsAt(time.Now())

	// ES256 over the signing input, signed with the P-384 key (r‖s of 48
	// bytes each, as that key's curve sizes them).
	forge := func(kid string) string {
		hdr := map[string]any{"alg": "ES256", "kid": kid, "typ": "at+jwt"}
		unsigned := rawJWT(t, hdr, claims, nil)
		input := unsigned[:len(unsigned)-1]
		sum := sha256.Sum256([]byte(input))
		rr, ss, err := ecdsa.Sign(rand.Reader, p384, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		sig := make([]byte, 96)
		rr.FillBytes(sig[:48])
		ss.FillBytes(sig[48:])
		return input + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	for name, raw := range map[string]string{
		"ES256 by the P-384 key":         forge("p384"),
		"ES256 by the P-384 key, no kid": forge(""),
		"ES256 naming the RSA key":       signJWT(t, keysES, map[string]any{"kid": "ps-1"}, claims),
		"ES256 naming the Ed25519 key":   signJWT(t, keysES, map[string]any{"kid": "ed-1"}, claims),
	} {
		if _, err := r.Resolve(context.Background(), bearer(raw)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	// The same keys verify what they are for.
	for name, raw := range map[string]string{
		"ES256 by the P-256 key": signJWT(t, keysES, nil, claims),
		"ES384 by the P-384 key": signJWT(t, keysP384, nil, claims),
	} {
		if _, err := r.Resolve(context.Background(), bearer(raw)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
