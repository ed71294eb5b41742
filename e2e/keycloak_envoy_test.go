package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/phantom-authz/phantom-authz/authz/credential"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// Keycloak and Hydra side by side behind real Envoy (TLS, client
// certificates), phantom-authz running the shipped
// envoy/keycloak/phantom-authz.yaml.

// kcStack is Keycloak + Hydra → phantom-authz ← Envoy (TLS) → demo API.
type kcStack struct {
	*tlsStack
	kc    *keycloakServer
	hydra *hydra
	// hydraCalls counts the introspections that reached Hydra.
	hydraCalls atomic.Int64
}

func newKeycloakStack(t *testing.T, cacheTTL string) *kcStack {
	t.Helper()
	return newKeycloakStackAs(t, cacheTTL, kcIntrospector)
}

// newKeycloakStackAs is newKeycloakStack with phantom-authz introspecting
// as the client introspector.
func newKeycloakStackAs(t *testing.T, cacheTTL, introspector string) *kcStack {
	t.Helper()
	k := needKeycloak(t)
	s := &kcStack{kc: k, hydra: startHydra(t)}

	// A counting proxy in front of Hydra's introspection endpoint.
	target, _ := url.Parse(s.hydra.adminURL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hydraCalls.Add(1)
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(counting.Close)

	gp, hp := freePort(t), freePort(t)
	a := &authzServer{grpcAddr: fmt.Sprintf("127.0.0.1:%d", gp), grpcPort: gp, httpURL: fmt.Sprintf("http://127.0.0.1:%d", hp)}
	a.process = startProcess(t, "phantom-authz", []string{
		"TMPDIR=" + t.TempDir(),
		"PHANTOM_GRPC_ADDR=" + a.grpcAddr, fmt.Sprintf("PHANTOM_HTTP_ADDR=127.0.0.1:%d", hp),
		"PHANTOM_POLICY_DIR=" + filepath.Join(root, "policies"),
		"PHANTOM_CACHE_MAX_TTL=" + cacheTTL,
		"KEYCLOAK_ISSUER=" + k.issuer, "KEYCLOAK_CLIENT_ID=" + introspector,
		"KEYCLOAK_INTROSPECTION_SECRET=" + kcIntrospectorSecret, "KEYCLOAK_CA_FILE=" + k.ca.file,
		"HYDRA_ISSUER=" + s.hydra.publicURL + "/", "HYDRA_INTROSPECTION=" + counting.URL + "/admin/oauth2/introspect",
	}, []int{gp, hp}, bins.authz, "serve", "--config", filepath.Join(root, "envoy", "keycloak", "phantom-authz.yaml"))
	a.waitHTTP(t, a.httpURL+"/readyz", 30*time.Second)

	// Envoy's listener: a server certificate and client certificates of
	// the Keycloak CA, so a certificate-bound token's certificate opens
	// the TLS connection too.
	p := &pki{ca: k.ca, clientA: k.mtlsCert.tls, clientB: k.otherCert.tls}
	p.server = k.ca.server(dirTB{TB: t, dir: k.ca.dir}, "envoy-"+strings.ReplaceAll(t.Name(), "/", "-"), "localhost", "127.0.0.1")
	s.tlsStack = &tlsStack{pki: p, authz: a}
	s.url = startEnvoyTLS(t, a.grpcPort, startDemo(t), p, keycloakRoute(t))
	return s
}

// keycloakRoute adds to envoy/envoy.yaml a route /api/kc/ for the accounts
// API that accepts Keycloak's tokens only (context extension
// authorization_server), before the shipped /api/ route.
func keycloakRoute(t *testing.T) func(cfg map[string]any) {
	return func(cfg map[string]any) {
		vh := at(cfg, "static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config",
			"route_config", "virtual_hosts", 0).(map[string]any)
		routes := vh["routes"].([]any)
		for i, r := range routes {
			if at(r, "match", "prefix") != "/api/" {
				continue
			}
			kc := map[string]any{
				"match": map[string]any{"prefix": "/api/kc/"},
				"route": map[string]any{"cluster": "demo_api"},
				"typed_per_filter_config": map[string]any{"envoy.filters.http.ext_authz": map[string]any{
					"@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
					"check_settings": map[string]any{"context_extensions": map[string]any{
						"api": "accounts", "authorization_server": "keycloak",
					}},
				}},
			}
			vh["routes"] = append(routes[:i:i], append([]any{kc}, routes[i:]...)...)
			return
		}
		t.Fatal("envoy/envoy.yaml has no /api/ route")
	}
}

// upstreamKeycloakJWT checks the request reached the upstream with one
// Bearer JWT that Keycloak's realm key signed (the answer's jwt field),
// never the client's own token; it returns the JWT's claims.
func (s *kcStack) upstreamKeycloakJWT(t *testing.T, r response, clientToken string) map[string]any {
	t.Helper()
	raw := upstreamBearer(t, r, clientToken)
	set, err := jwk.Fetch(context.Background(), s.kc.issuer+"/protocol/openid-connect/certs",
		jwk.WithHTTPClient(s.kc.httpClient(nil)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwt.Parse([]byte(raw), jwt.WithKeySet(set), jwt.WithValidate(true), jwt.WithIssuer(s.kc.issuer)); err != nil {
		t.Fatalf("the upstream JWT does not verify against the realm's JWKS: %v", err)
	}
	_, claims := jwtParts(t, raw)
	return claims
}

// Keycloak tokens through Envoy: client-credentials, lightweight, revoked,
// refresh, DPoP-bound and certificate-bound; Hydra's on the same route; a
// Keycloak token never reaches Hydra.
func TestKeycloakThroughEnvoy(t *testing.T) {
	t.Parallel()
	needTools(t)
	s := newKeycloakStack(t, "3s")
	k := s.kc
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	// Envoy asks every client for a certificate of the CA; tokens not bound
	// to one are sent with this one.
	get := func(t *testing.T, hdr http.Header) response {
		return s.call(t, &k.otherCert.tls, "GET", "/api/accounts/1", hdr)
	}
	// A new token is introspected at Keycloak over TLS: on two busy cores
	// that can outlast Envoy's 250 ms ext_authz timeout (503 from Envoy,
	// empty body). The work goes on and its answer is kept; the client
	// retries, as a client would. hdr is called for each try (a fresh DPoP
	// proof each time).
	retry := func(t *testing.T, cert *tls.Certificate, hdr func() http.Header) response {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			r := s.call(t, cert, "GET", "/api/accounts/1", hdr())
			if r.status != http.StatusServiceUnavailable || len(r.body) > 0 || time.Now().After(deadline) {
				return r
			}
		}
	}
	same := func(h http.Header) func() http.Header { return func() http.Header { return h } }

	// The first Keycloak token makes phantom-authz read the realm's
	// metadata and keys and introspect, over TLS: on two busy cores that can
	// outlast Envoy's ext_authz timeout (503). The work goes on and is
	// kept; wait until it is done.
	warm := k.clientCredentials(t, kcTPP, nil, "").AccessToken
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		r := get(t, bearer(warm))
		if r.status == http.StatusOK {
			break
		}
		if r.status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("warming up: status %d: %s", r.status, r.body)
		}
	}

	t.Run("TPP client-credentials token", func(t *testing.T) {
		tok := k.clientCredentials(t, kcTPP, nil, "").AccessToken
		claims := s.upstreamKeycloakJWT(t, retry(t, &k.otherCert.tls, same(bearer(tok))), tok)
		if claims["client_id"] != kcTPP || !strings.Contains(fmt.Sprint(claims["scope"]), "read") {
			t.Errorf("upstream JWT claims %v, want client_id %s and scope read", claims, kcTPP)
		}
	})

	t.Run("lightweight token", func(t *testing.T) {
		tok := k.clientCredentials(t, kcLight, nil, "").AccessToken
		if _, c := jwtParts(t, tok); c["aud"] != nil || c["client_id"] != nil {
			t.Fatalf("not a lightweight token: %v", c)
		}
		// The upstream gets the claims only introspection knows.
		claims := s.upstreamKeycloakJWT(t, retry(t, &k.otherCert.tls, same(bearer(tok))), tok)
		// (Keycloak's jwt field names the client in azp for transient
		// sessions, as client credentials are; aud came from introspection.)
		if claims["azp"] != kcLight || !strings.Contains(fmt.Sprint(claims["aud"]), kcIntrospector) {
			t.Errorf("upstream JWT claims %v, want azp %s and aud %s", claims, kcLight, kcIntrospector)
		}
	})

	t.Run("revoked token, once its cache entry expires", func(t *testing.T) {
		tok := k.clientCredentials(t, kcTPP, nil, "").AccessToken
		s.upstreamKeycloakJWT(t, retry(t, &k.otherCert.tls, same(bearer(tok))), tok)
		k.revoke(t, kcTPP, tok)
		// cache.max_ttl is 3s here; allow a busy machine plenty more.
		deadline := time.Now().Add(60 * time.Second)
		for {
			r := retry(t, &k.otherCert.tls, same(bearer(tok)))
			if r.status == http.StatusUnauthorized {
				if p := r.denial(t, http.StatusUnauthorized); p.Error != "invalid_token" {
					t.Errorf("revoked: error %q, want invalid_token", p.Error)
				}
				break
			}
			if r.status != http.StatusOK || time.Now().After(deadline) {
				t.Fatalf("revoked token: status %d (%s) after %v", r.status, r.body, time.Since(deadline.Add(-60*time.Second)))
			}
			time.Sleep(500 * time.Millisecond)
		}
	})

	t.Run("refresh token", func(t *testing.T) {
		toks := k.clientCredentials(t, kcTPP, nil, "")
		r := retry(t, &k.otherCert.tls, same(bearer(toks.RefreshToken)))
		if p := r.denial(t, http.StatusUnauthorized); p.Error != "invalid_token" {
			t.Errorf("refresh token: error %q, want invalid_token", p.Error)
		}
	})

	t.Run("DPoP-bound token", func(t *testing.T) {
		key := newDPoPKey(t)
		tok := k.clientCredentials(t, kcDPoP, nil, key.proof(t, "POST", k.tokenEndpoint(), "", nil)).AccessToken
		htu := s.url + "/api/accounts/1"
		var proof string
		claims := s.upstreamKeycloakJWT(t, retry(t, &k.otherCert.tls, func() http.Header {
			proof = key.proof(t, "GET", htu, tok, nil)
			return dpopHeaders(tok, proof)
		}), tok)
		if cnf, _ := claims["cnf"].(map[string]any); cnf["jkt"] != key.jkt {
			t.Errorf("upstream JWT cnf %v, want jkt %s", claims["cnf"], key.jkt)
		}
		for name, tc := range map[string]struct {
			hdr    http.Header
			status int
			code   string
		}{
			"replayed proof":      {dpopHeaders(tok, proof), 401, "invalid_dpop_proof"},
			"proof for other URL": {dpopHeaders(tok, key.proof(t, "GET", s.url+"/api/accounts/2", tok, nil)), 401, "invalid_dpop_proof"},
			// The DPoP scheme without its header is a malformed request
			// (authz/credential): 400, never the upstream.
			"missing proof":  {http.Header{"Authorization": {"DPoP " + tok}}, 400, "invalid_request"},
			"sent as Bearer": {bearer(tok), 401, "invalid_token"},
		} {
			if p := get(t, tc.hdr).denial(t, tc.status); p.Error != tc.code {
				t.Errorf("%s: error %q, want %q", name, p.Error, tc.code)
			}
		}
	})

	t.Run("certificate-bound token", func(t *testing.T) {
		tok := k.clientCredentials(t, kcMTLS, &k.mtlsCert.tls, "").AccessToken
		claims := s.upstreamKeycloakJWT(t, retry(t, &k.mtlsCert.tls, same(bearer(tok))), tok)
		if cnf, _ := claims["cnf"].(map[string]any); cnf["x5t#S256"] == nil {
			t.Errorf("upstream JWT cnf %v, want x5t#S256", claims["cnf"])
		}
		r := s.call(t, &k.otherCert.tls, "GET", "/api/accounts/1", bearer(tok))
		if p := r.denial(t, http.StatusUnauthorized); p.Error != "invalid_token" {
			t.Errorf("another certificate: error %q, want invalid_token", p.Error)
		}
	})

	t.Run("Hydra and Keycloak on the same route", func(t *testing.T) {
		before := s.hydraCalls.Load()
		kcTok := k.clientCredentials(t, kcTPP, nil, "").AccessToken
		s.upstreamKeycloakJWT(t, retry(t, &k.otherCert.tls, same(bearer(kcTok))), kcTok)
		if n := s.hydraCalls.Load() - before; n != 0 {
			t.Errorf("a Keycloak token reached Hydra's introspection endpoint (%d calls)", n)
		}
		hydraTok := s.hydra.token(t, "read")
		claims := s.upstreamClaims(t, retry(t, &k.otherCert.tls, same(bearer(hydraTok))), hydraTok)
		if claims["client_id"] != clientID {
			t.Errorf("Hydra token: upstream JWT client_id %v, want %s", claims["client_id"], clientID)
		}
		if n := s.hydraCalls.Load() - before; n != 1 {
			t.Errorf("Hydra introspections: %d, want 1", n)
		}
		// A JWT of an issuer no server has, and an opaque token no server
		// claims: 401, sent nowhere.
		forged := signedJWT(t, map[string]any{"iss": "https://attacker.example/realms/phantom", "sub": "x",
			"exp": time.Now().Add(time.Hour).Unix()})
		for name, tok := range map[string]string{"unknown issuer": forged, "no prefix": "opaque-token-of-nobody"} {
			if r := get(t, bearer(tok)); r.status != http.StatusUnauthorized {
				t.Errorf("%s: status %d, want 401", name, r.status)
			}
		}
		if n := s.hydraCalls.Load() - before; n != 1 {
			t.Errorf("tokens of no server reached Hydra: %d introspections, want 1", n)
		}

		// A route for Keycloak's tokens only (context extension
		// authorization_server): Keycloak's token passes; Hydra's, valid
		// and cached, is refused there without a call; an unprefixed
		// opaque token goes to Keycloak (which does not know it), not Hydra.
		kcRoute := func(tok string) response {
			for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				r := s.call(t, &k.otherCert.tls, "GET", "/api/kc/1", bearer(tok))
				if r.status != http.StatusServiceUnavailable || len(r.body) > 0 || time.Now().After(deadline) {
					return r
				}
			}
		}
		s.upstreamKeycloakJWT(t, kcRoute(kcTok), kcTok)
		for name, tok := range map[string]string{"Hydra's token": hydraTok, "unprefixed opaque token": "opaque-token-of-nobody-2"} {
			if p := kcRoute(tok).denial(t, http.StatusUnauthorized); p.Error != "invalid_token" {
				t.Errorf("%s on Keycloak's route: error %q, want invalid_token", name, p.Error)
			}
		}
		if n := s.hydraCalls.Load() - before; n != 1 {
			t.Errorf("Keycloak's route sent tokens to Hydra: %d introspections, want 1", n)
		}
	})
}

// With Keycloak's audience check off for phantom-authz's client, Keycloak
// vouches for a refresh token (active, typ Refresh): phantom-authz refuses
// it itself, while access tokens pass.
func TestKeycloakRefreshTokenWithoutAudienceCheck(t *testing.T) {
	t.Parallel()
	needTools(t)
	s := newKeycloakStackAs(t, "30s", kcIntrospectorAnyAud)
	k := s.kc
	toks := k.clientCredentials(t, kcTPP, nil, "")
	if a := k.introspectAs(t, kcIntrospectorAnyAud, toks.RefreshToken, ""); a["active"] != true || a["typ"] != "Refresh" {
		t.Fatalf("Keycloak does not vouch for the refresh token here: %v", a)
	}
	call := func(tok string) response {
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			r := s.call(t, &k.otherCert.tls, "GET", "/api/accounts/1", http.Header{"Authorization": {"Bearer " + tok}})
			// 503 with an empty body: Envoy's ext_authz timeout on a cold path.
			if r.status != http.StatusServiceUnavailable || len(r.body) > 0 || time.Now().After(deadline) {
				return r
			}
		}
	}
	s.upstreamKeycloakJWT(t, call(toks.AccessToken), toks.AccessToken)
	if p := call(toks.RefreshToken).denial(t, http.StatusUnauthorized); p.Error != "invalid_token" {
		t.Errorf("refresh token: error %q, want invalid_token", p.Error)
	}
}

// signedJWT is an ES256 JWT with claims, signed by a key nobody trusts.
func signedJWT(t *testing.T, claims map[string]any) string {
	t.Helper()
	key := newDPoPKey(t)
	return key.signed(t, map[string]any{"typ": "at+jwt", "alg": "ES256"}, claims)
}

// Discovery against the real servers: configured by issuer alone,
// phantom-authz finds Keycloak's and Hydra's keys; an issuer that differs
// from the metadata's by a trailing slash is refused.
func TestDiscoveryKeycloakAndHydra(t *testing.T) {
	t.Parallel()
	k := needKeycloak(t)
	h := startHydra(t)
	forged := func(iss string) string {
		return signedJWT(t, map[string]any{"iss": iss, "sub": "x", "aud": "api", "exp": time.Now().Add(time.Hour).Unix()})
	}
	cases := []struct {
		name, issuer, ca string
		want             error
	}{
		// Metadata found and matching: the keys are fetched, and a JWT
		// signed by another key fails their check (invalid, not unavailable).
		{"keycloak", k.issuer, k.ca.file, token.ErrInvalid},
		{"hydra", h.publicURL + "/", "", token.ErrInvalid},
		// The metadata names another issuer: refused, no keys.
		{"keycloak, issuer with a trailing slash", k.issuer + "/", k.ca.file, token.ErrUnavailable},
		{"hydra, issuer without its trailing slash", h.publicURL, "", token.ErrUnavailable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := token.New(token.Config{
				CAFile: tc.ca,
				Servers: []token.ServerConfig{{
					Issuer: tc.issuer, Discovery: true, AllowInsecureHTTP: true,
					JWT: &token.IssuerConfig{Audiences: []string{"api"}, Type: token.AnyType, AllowInsecureHTTP: true,
						Algorithms: []string{"ES256", "RS256"}},
				}},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			// Each fetch has 2 s; on two busy cores Hydra may take longer
			// (it generates its key pairs on the first JWKS request), and
			// phantom-authz then answers "fetched too recently" until it
			// may try again 5 s later. The test tries again for a while on
			// any unavailable answer but the refusal it looks for.
			tok := forged(tc.issuer)
			for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(time.Second) {
				_, err = r.Resolve(context.Background(), credentialOf(tok))
				transient := errors.Is(err, token.ErrUnavailable) && !strings.Contains(err.Error(), "RFC 8414 §3.3")
				if !transient || time.Now().After(deadline) {
					break
				}
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("err %v, want %v", err, tc.want)
			}
			if tc.want == token.ErrUnavailable && !strings.Contains(err.Error(), "RFC 8414 §3.3") {
				t.Errorf("err %v, want the metadata refused for naming another issuer", err)
			}
			st := r.Stats()
			if wantKeys := tc.want == token.ErrInvalid; (st.JWKSRefreshes > 0) != wantKeys {
				t.Errorf("JWKS fetched %d times; want fetched: %v", st.JWKSRefreshes, wantKeys)
			}
		})
	}
}

// credentialOf is a Bearer credential for raw.
func credentialOf(raw string) credential.Credential {
	return credential.Credential{Scheme: credential.SchemeBearer, Token: raw}
}
