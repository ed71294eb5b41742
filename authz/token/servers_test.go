package token

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const (
	hydraIssuer    = "http://hydra.test/"
	keycloakIssuer = "http://keycloak.test/realms/bank"
)

// keycloakAnswer is what Keycloak answers with the jwt-claim attribute:
// the claims, active, and jwt (when not "").
func keycloakAnswer(claims map[string]any, active bool, jwt string) map[string]any {
	out := map[string]any{"active": active}
	for k, v := range claims {
		out[k] = v
	}
	if jwt != "" {
		out["jwt"] = jwt
	}
	return out
}

// kcClaims are a Keycloak access token's claims at now.
func kcClaims(now time.Time) map[string]any {
	return map[string]any{
		"iss": keycloakIssuer, "sub": "svc-tpp", "client_id": "tpp", "azp": "tpp", "typ": "Bearer",
		"aud": "phantom-authz", "scope": "read write", "exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(),
		"jti": "trrtcc:7b965b44",
	}
}

// twoServers is Hydra (opaque ory_at_ tokens, JSON) and Keycloak (JWTs,
// introspected, keycloak answers) configured at once, each counting calls.
type twoServers struct {
	hydra, keycloak *oauthServer
	keys            *jwksServer
	clock           *clock
	// kcAnswer is what the Keycloak stub answers (default: active, with a
	// jwt field signed by the realm key).
	kcAnswer atomic.Pointer[func(tok string) map[string]any]
}

func newTwoServers(t *testing.T) *twoServers {
	t.Helper()
	testKeys(t)
	s := &twoServers{keys: newJWKSServer(t, keysRS), clock: newClock()}
	s.hydra = newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		writeJSON(w, map[string]any{"active": strings.HasPrefix(r.PostForm.Get("token"), "ory_at_"),
			"iss": hydraIssuer, "sub": "alice", "client_id": "hydra-client", "scope": "read",
			"exp": s.clock.Now().Add(time.Hour).Unix()})
	})
	s.keycloak = newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		if r.Header.Get("Accept") != "application/jwt" {
			t.Errorf("keycloak asked with Accept %q", r.Header.Get("Accept"))
		}
		answer := (*s.kcAnswer.Load())(r.PostForm.Get("token"))
		writeJSON(w, answer)
	})
	def := func(string) map[string]any {
		c := kcClaims(s.clock.Now())
		return keycloakAnswer(c, true, signJWT(t, keysRS, map[string]any{"typ": "JWT"}, c))
	}
	s.kcAnswer.Store(&def)
	return s
}

func (s *twoServers) config(hydraDefault bool) Config {
	hydra := introspectionConfig(s.hydra)
	kc := introspectionConfig(s.keycloak)
	kc.Response = ResponseKeycloak
	return Config{
		Now: s.clock.Now,
		Servers: []ServerConfig{
			{Name: "hydra", Issuer: hydraIssuer, Introspection: hydra, TokenPrefixes: []string{"ory_at_"}, Default: hydraDefault},
			{Name: "keycloak", Issuer: keycloakIssuer, Introspection: kc, IntrospectJWTs: true,
				JWT: &IssuerConfig{JWKSURI: s.keys.URL, Audiences: []string{"phantom-authz"}, Algorithms: []string{"RS256"}, AllowInsecureHTTP: true}},
		},
	}
}

// kcToken is a lightweight Keycloak access token (introspected, so its
// signature is Keycloak's business).
func (s *twoServers) kcToken(t *testing.T) string {
	return signJWT(t, keysRS, nil, map[string]any{"iss": keycloakIssuer, "sub": "svc-tpp", "azp": "tpp",
		"exp": s.clock.Now().Add(5 * time.Minute).Unix(), "jti": t.Name()})
}

// A token goes to the one server it belongs to, never to another: the
// Keycloak JWT to Keycloak, ory_at_ to Hydra; a JWT of an unknown issuer
// and an opaque token no server claims reach nobody.
func TestServersRouteEachTokenToItsServer(t *testing.T) {
	s := newTwoServers(t)
	r := mustNew(t, s.config(false))
	ctx := context.Background()

	tok, err := r.Resolve(ctx, bearer(s.kcToken(t)))
	if err != nil {
		t.Fatalf("keycloak token: %v", err)
	}
	if tok.Issuer != keycloakIssuer || tok.JWT == "" || tok.ClientID != "tpp" {
		t.Errorf("keycloak token: issuer %q client %q jwt %v", tok.Issuer, tok.ClientID, tok.JWT != "")
	}
	if s.hydra.count.Load() != 0 || s.keycloak.count.Load() != 1 {
		t.Fatalf("calls: hydra %d keycloak %d, want 0 and 1", s.hydra.count.Load(), s.keycloak.count.Load())
	}

	tok, err = r.Resolve(ctx, bearer("ory_at_abc"))
	if err != nil || tok.Issuer != hydraIssuer {
		t.Fatalf("hydra token: %v %+v", err, tok)
	}
	if s.hydra.count.Load() != 1 || s.keycloak.count.Load() != 1 {
		t.Fatalf("calls: hydra %d keycloak %d, want 1 and 1", s.hydra.count.Load(), s.keycloak.count.Load())
	}

	for name, raw := range map[string]string{
		"JWT of an unknown issuer": signJWT(t, keysRS, nil, map[string]any{"iss": "http://evil.test/", "sub": "x",
			"exp": s.clock.Now().Add(time.Minute).Unix()}),
		"JWT naming Keycloak's issuer with a trailing slash": signJWT(t, keysRS, nil, map[string]any{"iss": keycloakIssuer + "/", "sub": "x",
			"exp": s.clock.Now().Add(time.Minute).Unix()}),
		"opaque token without a known prefix": "some-opaque-token",
		"Hydra's prefix, not at the start":    "x-ory_at_abc",
	} {
		if _, err := r.Resolve(ctx, bearer(raw)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if s.hydra.count.Load() != 1 || s.keycloak.count.Load() != 1 {
		t.Errorf("tokens of no server were sent: hydra %d keycloak %d calls, want 1 and 1", s.hydra.count.Load(), s.keycloak.count.Load())
	}

	// With Hydra the default server, an opaque token without prefix goes there.
	r = mustNew(t, s.config(true))
	if _, err := r.Resolve(ctx, bearer("some-opaque-token")); !errors.Is(err, ErrInactive) {
		t.Errorf("opaque token at the default server: %v, want ErrInactive (Hydra does not know it)", err)
	}
	if s.hydra.count.Load() != 2 || s.keycloak.count.Load() != 1 {
		t.Errorf("calls: hydra %d keycloak %d, want 2 and 1", s.hydra.count.Load(), s.keycloak.count.Load())
	}
}

// Keycloak's jwt field is forwarded only when the answer is active and the
// field verifies as this token's, signed by the realm; an inactive answer's
// field (Keycloak sends one) is never used.
func TestKeycloakResponse(t *testing.T) {
	s := newTwoServers(t)
	now := s.clock.Now()
	signed := func(c map[string]any, typ string) string {
		return signJWT(t, keysRS, map[string]any{"typ": typ}, c)
	}
	other := kcClaims(now)
	other["jti"] = "trrtcc:another"
	refresh := kcClaims(now)
	refresh["typ"] = "Refresh"
	wrongIss := kcClaims(now)
	wrongIss["iss"] = hydraIssuer

	cases := []struct {
		name   string
		answer func(c map[string]any) map[string]any
		want   error // nil: allowed
		jwt    bool  // the answer's jwt is forwarded
	}{
		{"active, jwt verifies", func(c map[string]any) map[string]any { return keycloakAnswer(c, true, signed(c, "JWT")) }, nil, true},
		{"active, no jwt field: minted later", func(c map[string]any) map[string]any { return keycloakAnswer(c, true, "") }, nil, false},
		{"inactive with a well-signed jwt field", func(c map[string]any) map[string]any { return keycloakAnswer(c, false, signed(c, "JWT")) }, ErrInactive, false},
		{"inactive refresh token with its jwt field", func(c map[string]any) map[string]any {
			return keycloakAnswer(refresh, false, signed(refresh, "JWT"))
		}, ErrInactive, false},
		{"active refresh token (no audience check)", func(c map[string]any) map[string]any {
			return keycloakAnswer(refresh, true, signed(refresh, "JWT"))
		}, ErrInvalid, false},
		{"active, jwt field of a refresh token", func(c map[string]any) map[string]any {
			r := keycloakAnswer(c, true, signed(refresh, "JWT"))
			return r
		}, ErrInvalid, false},
		{"active, jwt field about another token", func(c map[string]any) map[string]any { return keycloakAnswer(c, true, signed(other, "JWT")) }, ErrUnavailable, false},
		{"active, jwt field signed by another key", func(c map[string]any) map[string]any {
			return keycloakAnswer(c, true, signJWT(t, keysUnknown, map[string]any{"typ": "JWT"}, c))
		}, ErrUnavailable, false},
		{"active, jwt field of another issuer", func(c map[string]any) map[string]any { return keycloakAnswer(c, true, signed(wrongIss, "JWT")) }, ErrUnavailable, false},
		{"active, jwt field not a string", func(c map[string]any) map[string]any {
			a := keycloakAnswer(c, true, "")
			a["jwt"] = map[string]any{"alg": "none"}
			return a
		}, ErrUnavailable, false},
		{"active, unsigned jwt field", func(c map[string]any) map[string]any {
			return keycloakAnswer(c, true, rawJWT(t, map[string]any{"alg": "none"}, c, nil))
		}, ErrUnavailable, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var sent atomic.Value
			answer := func(string) map[string]any {
				a := tc.answer(kcClaims(now))
				if j, ok := a["jwt"].(string); ok {
					sent.Store(j)
				}
				return a
			}
			s.kcAnswer.Store(&answer)
			r := mustNew(t, s.config(false))
			tok, err := r.Resolve(context.Background(), bearer(s.kcToken(t)))
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("err %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := claimsOf(t, tok)["jwt"]; ok {
				t.Error("the jwt field is among the claims the policy sees")
			}
			if j, _ := sent.Load().(string); tc.jwt && tok.JWT != j {
				t.Error("the verified jwt field is not the JWT forwarded")
			}
			if !tc.jwt && tok.JWT != "" {
				t.Error("a JWT is forwarded where none verified")
			}
		})
	}
}

// metadataServer serves RFC 8414 or OpenID Connect metadata naming issuer,
// counting requests.
type metadataServer struct {
	*httptest.Server
	issuer atomic.Value // string: the issuer the metadata names
	down   atomic.Bool
	oidc   bool // only openid-configuration (RFC 8414's URL: 404)
	count  atomic.Int64
	jwks   string
	intro  string
}

func newMetadataServer(t *testing.T, oidc bool, jwks, intro string) *metadataServer {
	m := &metadataServer{oidc: oidc, jwks: jwks, intro: intro}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.count.Add(1)
		switch {
		case m.down.Load():
			http.Error(w, "down", http.StatusServiceUnavailable)
		case r.URL.Path == "/.well-known/oauth-authorization-server/realms/bank" && !m.oidc,
			r.URL.Path == "/realms/bank/.well-known/openid-configuration" && m.oidc:
			writeJSON(w, map[string]any{"issuer": m.issuer.Load(), "jwks_uri": m.jwks, "introspection_endpoint": m.intro})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(m.Close)
	m.issuer.Store(m.URL + "/realms/bank")
	return m
}

// A server configured by its issuer alone: the JWKS URI and the
// introspection endpoint come from its metadata, read at either
// well-known URL; metadata naming another issuer is refused, and its
// endpoints never called; a metadata outage keeps the last good copy.
func TestDiscovery(t *testing.T) {
	testKeys(t)
	now := newClock()
	keys := newJWKSServer(t, keysES)
	intro := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"active": true, "sub": "alice", "exp": now.Now().Add(time.Hour).Unix()})
	})
	for _, oidc := range []bool{false, true} {
		meta := newMetadataServer(t, oidc, keys.URL, intro.URL)
		issuer := meta.URL + "/realms/bank"
		cfg := Config{Now: now.Now, Servers: []ServerConfig{{
			Issuer: issuer, Discovery: true, AllowInsecureHTTP: true, Default: true,
			Introspection: &IntrospectionConfig{ClientID: "gw", ClientSecret: "s", AllowInsecureHTTP: true},
			JWT:           &IssuerConfig{Audiences: []string{"api"}, AllowInsecureHTTP: true},
		}}}
		jwt := func() string {
			return signJWT(t, keysES, nil, map[string]any{"iss": issuer, "aud": "api", "sub": "bob",
				"exp": now.Now().Add(10 * time.Minute).Unix()})
		}
		r := mustNew(t, cfg)
		if tok, err := r.Resolve(context.Background(), bearer(jwt())); err != nil || tok.Subject != "bob" || tok.Issuer != issuer {
			t.Fatalf("oidc=%v: JWT by value with the discovered JWKS: %v %+v", oidc, err, tok)
		}
		if tok, err := r.Resolve(context.Background(), bearer("opaque")); err != nil || tok.Subject != "alice" {
			t.Fatalf("oidc=%v: opaque token at the discovered endpoint: %v", oidc, err)
		}

		// The metadata goes down and grows old: the last good copy serves.
		meta.down.Store(true)
		now.Advance(2 * time.Hour)
		if _, err := r.Resolve(context.Background(), bearer(jwt())); err != nil {
			t.Errorf("oidc=%v: after a metadata outage: %v", oidc, err)
		}
		meta.down.Store(false)
		r.Close() // and its background refreshes

		// Metadata naming another issuer: refused, nothing it names is used.
		meta.issuer.Store("https://attacker.test/realms/bank")
		keysBefore, introBefore := keys.count.Load(), intro.count.Load()
		r = mustNew(t, cfg)
		if _, err := r.Resolve(context.Background(), bearer(jwt())); !errors.Is(err, ErrUnavailable) {
			t.Errorf("oidc=%v: metadata of another issuer: %v, want ErrUnavailable", oidc, err)
		}
		if _, err := r.Resolve(context.Background(), bearer("opaque-2")); !errors.Is(err, ErrUnavailable) {
			t.Errorf("oidc=%v: metadata of another issuer, opaque token: %v, want ErrUnavailable", oidc, err)
		}
		if keys.count.Load() != keysBefore || intro.count.Load() != introBefore {
			t.Errorf("oidc=%v: endpoints of refused metadata were called", oidc)
		}
	}

	// An explicit endpoint overrides the metadata's.
	meta := newMetadataServer(t, true, keys.URL, "http://127.0.0.1:1/never")
	explicit := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"active": true, "sub": "carol", "exp": now.Now().Add(time.Hour).Unix()})
	})
	r := mustNew(t, Config{Now: now.Now, Servers: []ServerConfig{{
		Issuer: meta.URL + "/realms/bank", Discovery: true, AllowInsecureHTTP: true, Default: true,
		Introspection: introspectionConfig(explicit),
	}}})
	if tok, err := r.Resolve(context.Background(), bearer("opaque")); err != nil || tok.Subject != "carol" {
		t.Fatalf("explicit endpoint: %v", err)
	}
}

// Configurations that cannot route every token to one server stop start-up.
func TestServersConfigRefused(t *testing.T) {
	s := newTwoServers(t)
	for name, edit := range map[string]func(*Config){
		"both forms":   func(c *Config) { c.Introspection = introspectionConfig(s.hydra) },
		"two defaults": func(c *Config) { c.Servers[0].Default, c.Servers[1].Default = true, true },
		"overlapping prefixes": func(c *Config) {
			c.Servers[1].TokenPrefixes = []string{"ory_"}
		},
		"same issuer twice": func(c *Config) { c.Servers[1].Issuer = hydraIssuer },
		"no issuer":         func(c *Config) { c.Servers[0].Issuer = "" },
		"prefixes without introspection": func(c *Config) {
			c.Servers[1].Introspection, c.Servers[1].IntrospectJWTs, c.Servers[1].TokenPrefixes = nil, false, []string{"kc_"}
		},
		"jwt.issuer not the server's": func(c *Config) { c.Servers[1].JWT.Issuer = hydraIssuer },
		"keycloak without JWKS": func(c *Config) {
			c.Servers[1].JWT = nil
		},
	} {
		cfg := s.config(false)
		edit(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A route naming its server: an opaque token without prefix goes there
// (not to the default); a token of another server, by prefix, iss or a
// cached answer, is refused on it without a call.
func TestResolveAtRouteServer(t *testing.T) {
	s := newTwoServers(t)
	cfg := s.config(true) // Hydra is the default
	r := mustNew(t, cfg)
	ctx := context.Background()
	// Keycloak's stub answers an opaque token as it does a JWT.
	if tok, err := r.ResolveAt(ctx, bearer("kc-opaque-1"), "keycloak"); err != nil || tok.Issuer != keycloakIssuer {
		t.Fatalf("opaque token on Keycloak's route: %v", err)
	}
	if s.hydra.count.Load() != 0 || s.keycloak.count.Load() != 1 {
		t.Fatalf("calls: hydra %d keycloak %d, want 0 and 1", s.hydra.count.Load(), s.keycloak.count.Load())
	}
	// Hydra's token (prefix) and a Keycloak JWT on each other's routes.
	if _, err := r.ResolveAt(ctx, bearer("ory_at_x"), "keycloak"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Hydra token on Keycloak's route: %v, want ErrInvalid", err)
	}
	if _, err := r.ResolveAt(ctx, bearer(s.kcToken(t)), "hydra"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Keycloak JWT on Hydra's route: %v, want ErrInvalid", err)
	}
	if s.hydra.count.Load() != 0 || s.keycloak.count.Load() != 1 {
		t.Errorf("tokens refused by route were sent: hydra %d keycloak %d", s.hydra.count.Load(), s.keycloak.count.Load())
	}
	// The token Keycloak vouched for, now cached, on Hydra's route.
	if _, err := r.ResolveAt(ctx, bearer("kc-opaque-1"), "hydra"); !errors.Is(err, ErrInvalid) {
		t.Errorf("cached Keycloak token on Hydra's route: %v, want ErrInvalid", err)
	}
	// And Hydra's token on its own route still works after all this.
	if tok, err := r.ResolveAt(ctx, bearer("ory_at_x"), "hydra"); err != nil || tok.Issuer != hydraIssuer {
		t.Errorf("Hydra token on Hydra's route: %v", err)
	}
	if _, err := r.ResolveAt(ctx, bearer("ory_at_y"), "retail"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("a route naming no configured server: %v, want ErrUnavailable", err)
	}
}

// A token another replica resolved, read from the shared cache, keeps the
// server that vouched for it: input.token.iss, and a route naming that
// server accepts it (another server's route does not).
func TestSharedKeepsServer(t *testing.T) {
	s := newTwoServers(t)
	shared := newFakeShared()
	cfg := s.config(true)
	cfg.Shared, cfg.SharedKey = shared, testSharedKey
	r1, r2 := mustNew(t, cfg), mustNew(t, cfg)
	ctx := context.Background()
	if tok, err := r1.ResolveAt(ctx, bearer("kc-opaque-2"), "keycloak"); err != nil || tok.Issuer != keycloakIssuer {
		t.Fatalf("replica 1: %v", err)
	}
	tok, err := r2.ResolveAt(ctx, bearer("kc-opaque-2"), "keycloak")
	if err != nil || tok.Issuer != keycloakIssuer {
		t.Fatalf("replica 2, from the shared cache: %v %+v", err, tok)
	}
	if s.keycloak.count.Load() != 1 {
		t.Errorf("keycloak introspections: %d, want 1 (the second replica reads the shared cache)", s.keycloak.count.Load())
	}
	r3 := mustNew(t, cfg)
	if _, err := r3.ResolveAt(ctx, bearer("kc-opaque-2"), "hydra"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Keycloak's token from the shared cache on Hydra's route: %v, want ErrInvalid", err)
	}
}

// Warm fetches the metadata and the keys before any token comes; the first
// token then fetches nothing more.
func TestWarm(t *testing.T) {
	testKeys(t)
	now := newClock()
	keys := newJWKSServer(t, keysES)
	meta := newMetadataServer(t, true, keys.URL, "")
	issuer := meta.URL + "/realms/bank"
	r := mustNew(t, Config{Now: now.Now, Servers: []ServerConfig{{
		Issuer: issuer, Discovery: true, AllowInsecureHTTP: true,
		JWT: &IssuerConfig{Audiences: []string{"api"}, AllowInsecureHTTP: true},
	}}})
	if meta.count.Load() != 0 || keys.count.Load() != 0 {
		t.Fatal("New contacted the server")
	}
	r.Warm(context.Background())
	m, k := meta.count.Load(), keys.count.Load()
	if m == 0 || k != 1 {
		t.Fatalf("after Warm: %d metadata and %d JWKS fetches, want some and 1", m, k)
	}
	jwt := signJWT(t, keysES, nil, map[string]any{"iss": issuer, "aud": "api", "sub": "bob", "exp": now.Now().Add(time.Minute).Unix()})
	if _, err := r.Resolve(context.Background(), bearer(jwt)); err != nil {
		t.Fatal(err)
	}
	if meta.count.Load() != m || keys.count.Load() != k {
		t.Error("the first token fetched again what Warm fetched")
	}
}
