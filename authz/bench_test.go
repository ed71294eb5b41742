package authz_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/binding"
	"github.com/phantom-authz/phantom-authz/authz/mint"
	"github.com/phantom-authz/phantom-authz/authz/policy"
	"github.com/phantom-authz/phantom-authz/authz/route"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// benchRequest is a typical API call as Envoy describes it.
func benchRequest(authorization string) *authz.Request {
	h := map[string]string{
		":authority": "api.example.com", ":method": "GET", ":path": "/api/accounts/123", ":scheme": "https",
		"accept": "application/json", "user-agent": "curl/8.7.1", "x-forwarded-proto": "https",
		"x-request-id": "9f1c6a52-3b2e-4c4e-9a57-0d3c1c2f8e11", "x-forwarded-for": "203.0.113.7",
	}
	if authorization != "" {
		h["authorization"] = authorization
	}
	return &authz.Request{
		ID: "9f1c6a52-3b2e-4c4e-9a57-0d3c1c2f8e11", Method: "GET", Scheme: "https", Host: "api.example.com",
		Path: "/api/accounts/123", Protocol: "HTTP/1.1", Size: -1, Headers: h,
		Source: authz.Peer{Address: "203.0.113.7", Port: 51234}, Destination: authz.Peer{Address: "10.0.0.5", Port: 8443},
		ContextExtensions: map[string]string{"api": "accounts"},
	}
}

// allowPolicy is the foundation's case: the policy alone decides (no
// credential stages), on the default policy's public path.
func BenchmarkEngineAllowPolicyOnly(b *testing.B) {
	pol, err := policy.New(policy.Config{Dir: "../policies"})
	if err != nil {
		b.Fatal(err)
	}
	e, err := authz.New(authz.Config{Decider: pol})
	if err != nil {
		b.Fatal(err)
	}
	r := benchRequest("")
	r.Path, r.ContextExtensions = "/healthz", nil
	runAllow(b, e, r)
}

// BenchmarkEngineCachedOpaque is the phantom-token hot path: a cached opaque
// token → default policy → JWT injected.
func BenchmarkEngineCachedOpaque(b *testing.B) {
	runAllow(b, cachedOpaqueEngine(b, authz.Config{}), benchRequest("Bearer 2YotnFZFEjr1zCsicMWpAA"))
}

// BenchmarkEngineCachedOpaqueRoutes is the hot path behind a route table:
// the request matches the fourth entry (a path template), whose API gets its
// own JWT (aud, narrowed scope), kept with the cached token.
func BenchmarkEngineCachedOpaqueRoutes(b *testing.B) {
	routes, err := route.NewTable([]route.Entry{
		{Name: "health", PathPrefix: "/health", Settings: route.Settings{Public: true}},
		{Name: "payments", Hosts: []string{"*.payments.example.com"}, PathPrefix: "/", Settings: route.Settings{API: "payments"}},
		{Name: "admin", Path: "/admin", Methods: []string{"POST"}, Settings: route.Settings{API: "admin", SenderConstrained: "mtls"}},
		{Name: "account", Path: "/api/accounts/{id}", Settings: route.Settings{API: "accounts",
			Upstream: &route.Upstream{Audience: []string{"https://accounts.internal"}, Scopes: []string{"read"}}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	r := benchRequest("Bearer 2YotnFZFEjr1zCsicMWpAA")
	r.ContextExtensions = nil
	runAllow(b, cachedOpaqueEngine(b, authz.Config{Routes: routes}), r)
}

// cachedOpaqueEngine is an engine with the default policy, introspection
// (of a stand-in OAuth server) and minting, and cfg's Routes.
func cachedOpaqueEngine(b *testing.B, cfg authz.Config) *authz.Engine {
	introspect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"active": true, "scope": "openid read write", "client_id": "web-app", "sub": "user-42",
			"exp": time.Now().Add(time.Hour).Unix(), "iss": "https://login.example.com",
		})
	}))
	b.Cleanup(introspect.Close)
	pol, err := policy.New(policy.Config{Dir: "../policies"})
	if err != nil {
		b.Fatal(err)
	}
	m, err := mint.New(mint.Config{Issuer: "https://phantom-authz.local", Audience: []string{"api"}, Generate: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close() })
	var e *authz.Engine
	res, err := token.New(token.Config{
		Introspection: &token.IntrospectionConfig{Endpoint: introspect.URL, ClientID: "pa", ClientSecret: "s", AllowInsecureHTTP: true},
		Prepare:       func(t *token.Token) error { return e.PrepareToken(t) },
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(res.Close)
	e, err = authz.New(authz.Config{Decider: pol, Resolver: res, Minter: m, Upstream: m, Routes: cfg.Routes, OwnedHeaders: []string{"x-jwt-*", "x-user-*"}})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

func runAllow(b *testing.B, e *authz.Engine, r *authz.Request) {
	ctx := context.Background()
	if d := e.Check(ctx, r); !d.Allowed {
		b.Fatalf("want allow, got %+v", d)
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := e.Check(ctx, r); !d.Allowed {
			b.Fatal("denied")
		}
	}
}

// acceptingReplay lets one proof through again and again, so the benchmark
// measures the proof's verification; binding's BenchmarkMemoryReplay
// measures the store (about 0.5 µs, no allocation).
type acceptingReplay struct{}

func (acceptingReplay) Use(context.Context, string, time.Time) (bool, error) { return true, nil }

// BenchmarkEngineCachedOpaqueDPoP is the hot path of a DPoP-bound opaque
// token: cached token → ES256 proof verified (one signature verification)
// → default policy → JWT injected.
func BenchmarkEngineCachedOpaqueDPoP(b *testing.B) {
	client := newDPoPClient(b)
	introspect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"active": true, "scope": "openid read write", "client_id": "web-app", "sub": "user-42",
			"exp": time.Now().Add(time.Hour).Unix(), "iss": "https://login.example.com",
			"cnf": map[string]any{"jkt": client.jkt},
		})
	}))
	defer introspect.Close()
	pol, err := policy.New(policy.Config{Dir: "../policies"})
	if err != nil {
		b.Fatal(err)
	}
	m, err := mint.New(mint.Config{Issuer: "https://phantom-authz.local", Audience: []string{"api"}, Generate: true})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	var e *authz.Engine
	res, err := token.New(token.Config{
		Introspection: &token.IntrospectionConfig{Endpoint: introspect.URL, ClientID: "pa", ClientSecret: "s", AllowInsecureHTTP: true},
		Prepare:       func(t *token.Token) error { return e.PrepareToken(t) },
	})
	if err != nil {
		b.Fatal(err)
	}
	defer res.Close()
	bd, err := binding.New(binding.Config{Replay: acceptingReplay{}})
	if err != nil {
		b.Fatal(err)
	}
	e, err = authz.New(authz.Config{Decider: pol, Resolver: res, Minter: m, Binder: bd, OwnedHeaders: []string{"x-jwt-*", "x-user-*"}})
	if err != nil {
		b.Fatal(err)
	}
	const tok = "2YotnFZFEjr1zCsicMWpAA"
	r := benchRequest("DPoP " + tok)
	r.Headers["dpop"] = client.proof(b, "GET", "https://api.example.com/api/accounts/123", tok, nil)
	runAllow(b, e, r)
}
