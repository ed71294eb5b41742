package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// routesPolicy allows public routes, and tokens with scope read elsewhere.
const routesPolicy = `package envoy.authz

default allow := false

allow if input.route.public

allow if {
	input.token.active
	"read" in input.token.scopes
}
`

// The route table alone, with no context extensions (as behind Istio's
// CUSTOM AuthorizationPolicy), makes routes FAPI-only, public or dry-run
// through real Envoy; Envoy's route metadata marks a route public the same
// way; and two APIs behind one Envoy receive, from the same client token,
// JWTs with their own aud and narrowed scope.
func TestEnvoyRouteTable(t *testing.T) {
	needTools(t)
	h := startHydra(t)
	policyDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(policyDir, "policy.rego"), []byte(routesPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAuthz(t, h, authzOptions{policyDir: policyDir, set: map[string]any{
		"routes": []any{
			map[string]any{"name": "status", "path_prefix": "/status", "public": true},
			map[string]any{"name": "fapi", "path_prefix": "/fapi/", "api": "fapi", "sender_constrained": "required"},
			map[string]any{"name": "shadow", "path_prefix": "/shadow/", "api": "shadow", "dry_run": true},
			map[string]any{"name": "accounts", "path": "/accounts/{id}", "methods": []any{"GET"}, "api": "accounts",
				"upstream_jwt": map[string]any{"audience": "https://accounts.internal", "scopes": []any{"read"}}},
			map[string]any{"name": "payments", "path_prefix": "/payments/", "api": "payments",
				"upstream_jwt": map[string]any{"audience": []any{"https://payments.internal"}, "scopes": []any{"write", "admin"}}},
		},
	}})
	demo := startDemo(t)
	e, _ := startEnvoyEdited(t, a.grpcPort, demo, "envoy-routes.yaml", func(cfg map[string]any) {
		hcm := at(cfg, "static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config").(map[string]any)
		vh := at(hcm, "route_config", "virtual_hosts", 0).(map[string]any)
		// No context extensions anywhere: one catch-all route, and one
		// route whose metadata (not context extensions) makes it public.
		vh["routes"] = []any{
			map[string]any{
				"match": map[string]any{"prefix": "/meta-public"}, "route": map[string]any{"cluster": "demo_api"},
				"metadata": map[string]any{"filter_metadata": map[string]any{"phantom-authz": map[string]any{"public": true}}},
			},
			map[string]any{"match": map[string]any{"prefix": "/"}, "route": map[string]any{"cluster": "demo_api"}},
		}
		for _, f := range list(hcm["http_filters"]) {
			if str(at(f, "name")) == "envoy.filters.http.ext_authz" {
				at(f, "typed_config").(map[string]any)["route_metadata_context_namespaces"] = []any{"phantom-authz"}
			}
		}
	})
	s := &stack{hydra: h, authz: a, envoy: e}
	tok := h.token(t, "read write")

	t.Run("public by the table", func(t *testing.T) {
		r := s.call(t, "GET", "/status/live", tok, nil)
		if r.status != 200 || r.upstream(t).Headers["authorization"] != nil {
			t.Errorf("status %d, upstream authorization %v: want 200 and no credential upstream", r.status, r.upstream(t).Headers["authorization"])
		}
	})
	t.Run("public by route metadata", func(t *testing.T) {
		if r := s.call(t, "GET", "/meta-public", "", nil); r.status != 200 || !r.fromUpstream() {
			t.Errorf("status %d: want 200 from the upstream", r.status)
		}
	})
	t.Run("dot segments out of the public route need a token", func(t *testing.T) {
		for _, p := range []string{"/status/../accounts/1", "/status/%2e%2e/accounts/1", "//status/./../accounts/1"} {
			if r := s.call(t, "GET", p, "", nil); r.status != 401 || r.fromUpstream() {
				t.Errorf("%s: status %d, want 401 before the upstream", p, r.status)
			}
		}
		// Envoy refuses an encoded slash itself (path_with_escaped_slashes_action).
		if r := s.call(t, "GET", "/status/..%2Faccounts/1", "", nil); r.status < 400 || r.fromUpstream() {
			t.Errorf("encoded slash: status %d, want refused", r.status)
		}
	})
	t.Run("FAPI-only by the table refuses a bearer token", func(t *testing.T) {
		r := s.call(t, "GET", "/fapi/x", tok, nil)
		if r.status != 401 || r.fromUpstream() {
			t.Fatalf("status %d, want 401", r.status)
		}
		if p := r.denial(t, 401); !strings.Contains(p.Detail, "sender-constrained") && !strings.Contains(strings.ToLower(p.Detail), "bound") {
			t.Errorf("denial %+v does not say a bound token is needed", p)
		}
		// The same token is fine on a route without the requirement.
		if r := s.call(t, "GET", "/other", tok, nil); r.status != 200 {
			t.Errorf("elsewhere: status %d, want 200", r.status)
		}
	})
	t.Run("dry-run by the table lets a denial through", func(t *testing.T) {
		r := s.call(t, "GET", "/shadow/x", "", nil)
		if r.status != 200 || !r.fromUpstream() {
			t.Errorf("status %d, want 200 from the upstream (denial logged, not enforced)", r.status)
		}
		if r := s.call(t, "GET", "/other", "", nil); r.status != 401 {
			t.Errorf("off the dry-run route: status %d, want 401", r.status)
		}
	})
	t.Run("one token, two APIs, two JWTs", func(t *testing.T) {
		jwtOf := func(path string) map[string]any {
			t.Helper()
			r := s.call(t, "GET", path, tok, nil)
			if r.status != 200 {
				t.Fatalf("%s: status %d: %s", path, r.status, r.body)
			}
			auth := r.upstream(t).Headers["authorization"]
			if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") || strings.Contains(auth[0], tok) {
				t.Fatalf("%s: upstream authorization %v, want one minted JWT", path, auth)
			}
			return verifyAPIJWT(t, a.httpURL, strings.TrimPrefix(auth[0], "Bearer "))
		}
		acc, pay, other := jwtOf("/accounts/1"), jwtOf("/payments/1"), jwtOf("/other")
		for _, c := range []struct {
			name       string
			claims     map[string]any
			aud, scope string
		}{
			{"accounts", acc, "https://accounts.internal", "read"},
			{"payments", pay, "https://payments.internal", "write"}, // admin: the token lacks it
			{"no API settings", other, mintAudience, "read write"},
		} {
			aud := c.claims["aud"]
			if l, ok := aud.([]any); ok && len(l) == 1 {
				aud = l[0]
			}
			if aud != c.aud || c.claims["scope"] != c.scope || c.claims["sub"] != clientID {
				t.Errorf("%s: aud %v scope %q sub %v, want aud %s scope %q sub %s", c.name, c.claims["aud"], c.claims["scope"], c.claims["sub"], c.aud, c.scope, clientID)
			}
		}
		// A second request gets the JWT kept with the cached token.
		r := s.call(t, "GET", "/accounts/2", tok, nil)
		if got := r.upstream(t).Headers["authorization"]; len(got) != 1 || verifyAPIJWT(t, a.httpURL, strings.TrimPrefix(got[0], "Bearer "))["jti"] != acc["jti"] {
			t.Errorf("second request to accounts: a new JWT was minted, want the one kept with the token")
		}
	})
}

// verifyAPIJWT verifies an API's JWT against phantom-authz's JWKS, whatever
// its audience, and returns its claims.
func verifyAPIJWT(t *testing.T, httpURL, raw string) map[string]any {
	t.Helper()
	var claims map[string]any
	decodeSegment(t, strings.Split(raw, ".")[1], &claims)
	aud := mintAudience
	switch v := claims["aud"].(type) {
	case string:
		aud = v
	case []any:
		aud, _ = v[0].(string)
	}
	return verifyJWTFor(t, httpURL, raw, aud)
}
