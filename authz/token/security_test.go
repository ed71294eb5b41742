package token

// Regression tests of the security review (issue 13): each is named after
// what it defends and was seen failing against the code before its fix.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

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
		{name: "typ header JWT, access claims", hdr: map[string]any{"typ": "JWT"}, claims: with(good, "typ", "Bearer")},
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

// Claim lists are shared between tokens by their items: ["admin","users"]
// and ["admin\x00users"] are different lists, and the policy sees each
// token's own.
func TestInternedClaimListsDoNotCollide(t *testing.T) {
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
			if got := tok.Claims[claim]; !reflect.DeepEqual(got, roles[name]) {
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
