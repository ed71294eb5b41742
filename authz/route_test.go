package authz_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/mint"
	"github.com/phantom-authz/phantom-authz/authz/policy"
	"github.com/phantom-authz/phantom-authz/authz/route"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

func routeTable(t *testing.T, entries ...route.Entry) *route.Table {
	t.Helper()
	tb, err := route.NewTable(entries)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// What an attacker tries against a route table: reach a guarded route
// through a path that looks like a public one, spoof a route with headers,
// or present a bearer token on a route the table makes FAPI-only. The route
// table alone (no context extensions) decides.
func TestRouteTableDecides(t *testing.T) {
	tb := routeTable(t,
		route.Entry{Name: "health", PathPrefix: "/health", Settings: route.Settings{Public: true}},
		route.Entry{Name: "fapi", PathPrefix: "/accounts/", Settings: route.Settings{API: "accounts", SenderConstrained: "required"}},
		route.Entry{Name: "shadow", Hosts: []string{"shadow.example"}, PathPrefix: "/", Settings: route.Settings{API: "shadow", DryRun: true}},
	)
	e, err := authz.New(authz.Config{Decider: &fakeDecider{allow: true}, Resolver: fakeResolver{"tok-read": nil, "tok-none": nil},
		Routes: tb, Realm: "test", Logger: fapiLog})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, host, path string
		headers          map[string]string
		ext, meta        map[string]string
		allowed, dry     bool
		status           int
	}{
		{name: "public by the table", path: "/health/live", allowed: true},
		{name: "dot segments out of the public prefix need a token", path: "/health/../admin", status: 401},
		{name: "encoded dots too", path: "/health/%2e%2e/admin", status: 401},
		{name: "encoded slash refused", path: "/health/..%2Fadmin", status: 400},
		{name: "backslash refused", path: "/health\\..\\admin", status: 400},
		{name: "prefix is a segment: /healthz is not public", path: "/healthz", status: 401},
		{name: "context extension turns the public route off", path: "/health", ext: map[string]string{"public": "false"}, status: 401},
		{name: "route metadata turns the public route off", path: "/health", meta: map[string]string{"public": "false"}, status: 401},
		{name: "context extension wins over route metadata", path: "/health", meta: map[string]string{"public": "false"}, ext: map[string]string{"public": "true"}, allowed: true},
		{name: "a spoofed header is no route setting", path: "/accounts/1", headers: map[string]string{"authorization": "Bearer tok-read", "public": "true", "x-envoy-original-path": "/health"}, status: 401},
		{name: "FAPI-only route refuses a bearer token", path: "/accounts/1", headers: map[string]string{"authorization": "Bearer tok-read"}, status: 401},
		{name: "dot segments into the FAPI route", path: "/health/../accounts/1", headers: map[string]string{"authorization": "Bearer tok-read"}, status: 401},
		{name: "bearer token elsewhere", path: "/other", headers: map[string]string{"authorization": "Bearer tok-read"}, allowed: true},
		{name: "dry-run by the table lets a denial through", host: "shadow.example", path: "/x", headers: map[string]string{"authorization": "Bearer tok-none"}, allowed: true, dry: true},
		{name: "dry-run is per host", host: "other.example", path: "/x", headers: map[string]string{"authorization": "Bearer junk"}, status: 401},
		{name: "invalid context extension value fails closed", path: "/health", ext: map[string]string{"public": "yes"}, status: 500},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := c.headers
			if h == nil {
				h = map[string]string{}
			}
			r := &authz.Request{Method: "GET", Host: c.host, Path: c.path, Scheme: "https", Headers: h,
				ContextExtensions: c.ext, RouteMetadata: c.meta}
			if r.Host == "" {
				r.Host = "api.example"
			}
			// A caller cannot choose the route: the engine selects it.
			r.Route = route.Route{Settings: route.Settings{Public: true, DryRun: true}}
			d := e.Check(context.Background(), r)
			if d.Allowed != c.allowed || d.DryRun != c.dry || (!c.allowed && d.Status != c.status) {
				t.Errorf("allowed=%v dry=%v status=%d reason=%s; want allowed=%v dry=%v status=%d", d.Allowed, d.DryRun, d.Status, d.Reason, c.allowed, c.dry, c.status)
			}
		})
	}
}

// The legacy auth.public_paths and dry_run.paths match the normalised path
// too: /healthz/../admin is not public.
func TestPublicPathsNormalised(t *testing.T) {
	e, err := authz.New(authz.Config{Decider: &fakeDecider{allow: true}, Resolver: fakeResolver{}, PublicPaths: []string{"/healthz*"}, Logger: fapiLog})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{"/healthz": true, "/healthz/x": true, "/healthz/../admin": false, "//healthz/%2e%2e/admin": false, "/healthz/..%2fadmin": false} {
		d := e.Check(context.Background(), &authz.Request{Method: "GET", Path: path, Headers: map[string]string{}})
		if d.Allowed != want {
			t.Errorf("%s: allowed %v, want %v", path, d.Allowed, want)
		}
	}
}

// The policy sees the selected route as input.route, and a cached decision
// for one account is never served for another.
func TestPolicySeesRoute(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(`package envoy.authz
default allow := false
allow if {
	input.route.name == "transactions"
	input.route.api == "accounts"
	input.route.template == "/accounts/{id}/transactions"
	input.route.params.id == "42"
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.New(policy.Config{Dir: dir, Logger: fapiLog})
	if err != nil {
		t.Fatal(err)
	}
	tb := routeTable(t, route.Entry{Name: "transactions", Path: "/accounts/{id}/transactions", Settings: route.Settings{API: "accounts"}})
	e, err := authz.New(authz.Config{Decider: pol, Routes: tb, Logger: fapiLog})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct {
		path string
		want bool
	}{
		{"/accounts/42/transactions", true},
		{"/accounts/43/transactions", false}, // same route, other param: not the cached allow
		{"/accounts/42/transactions", true},
		{"/accounts/42/../43/transactions", false},
		{"/accounts/42/transactions/", false}, // no route: no input.route
		{"/accounts/%34%32/transactions", true},
	} {
		d := e.Check(context.Background(), &authz.Request{Method: "GET", Path: c.path, Headers: map[string]string{}})
		if d.Allowed != c.want {
			t.Errorf("%d %s: allowed %v, want %v", i, c.path, d.Allowed, c.want)
		}
	}
}

// countingMinter wraps a real minter and counts MintUpstream calls.
type countingMinter struct {
	*mint.Minter
	n atomic.Int32
}

func (c *countingMinter) MintUpstream(tok *token.Token, up mint.Upstream) (string, time.Time, error) {
	c.n.Add(1)
	return c.Minter.MintUpstream(tok, up)
}

func jwtClaims(t *testing.T, authorization string) map[string]any {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(authorization, "Bearer "), ".")
	if len(parts) != 3 {
		t.Fatalf("authorization %q is not a bearer JWT", authorization)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(b, &claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

// Two APIs receive, from one client token, JWTs with their own aud and the
// token's scopes narrowed to those each cares about; each is minted once per
// token and API. A JWT the OAuth server gave is forwarded unchanged unless
// the API asks for its own.
func TestUpstreamJWTPerAPI(t *testing.T) {
	m, err := mint.New(mint.Config{Issuer: "https://pa", Audience: []string{"default-aud"}, Generate: true, Logger: fapiLog, CopyClaims: []string{"acr"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	cm := &countingMinter{Minter: m}
	tb := routeTable(t,
		route.Entry{Name: "accounts", PathPrefix: "/accounts", Settings: route.Settings{API: "accounts",
			Upstream: &route.Upstream{Audience: []string{"https://accounts.internal"}, Scopes: []string{"accounts:read", "admin"}, CopyClaims: []string{}}}},
		route.Entry{Name: "payments", PathPrefix: "/payments", Settings: route.Settings{API: "payments",
			Upstream: &route.Upstream{Audience: []string{"https://payments.internal"}, Scopes: []string{"payments:write"}}}},
		route.Entry{Name: "reports", PathPrefix: "/reports", Settings: route.Settings{API: "reports",
			Upstream: &route.Upstream{Audience: []string{"https://reports.internal"}, Reissue: true}}},
	)
	e, err := authz.New(authz.Config{Decider: &fakeDecider{allow: true}, Minter: m, Upstream: cm, Routes: tb, Logger: fapiLog,
		Resolver: oneToken{func() *token.Token {
			tok := &token.Token{Active: true, Kind: token.KindOpaque, Subject: "user-1", ClientID: "app",
				Scopes: []string{"read", "accounts:read", "payments:write"}, Claims: map[string]any{"acr": "urn:bank:sca"},
				Expiry: time.Now().Add(time.Hour)}
			if err := m.Mint(tok); err != nil { // as PrepareToken does in JSON mode
				t.Fatal(err)
			}
			return tok
		}()}})
	if err != nil {
		t.Fatal(err)
	}
	call := func(path string) map[string]any {
		t.Helper()
		d := e.Check(context.Background(), &authz.Request{Method: "GET", Path: path, Headers: map[string]string{"authorization": "Bearer opaque"}})
		if !d.Allowed {
			t.Fatalf("%s denied: %+v", path, d)
		}
		return jwtClaims(t, header(d, "authorization"))
	}
	acc, pay, other := call("/accounts/1"), call("/payments/1"), call("/other")
	for _, c := range []struct {
		name   string
		claims map[string]any
		aud    string
		scope  string
		acr    bool
	}{
		{"accounts", acc, "https://accounts.internal", "accounts:read", false}, // admin: the token lacks it
		{"payments", pay, "https://payments.internal", "payments:write", true},
		{"no API settings", other, "default-aud", "read accounts:read payments:write", true},
	} {
		if aud, _ := c.claims["aud"].([]any); len(aud) != 1 || aud[0] != c.aud {
			t.Errorf("%s: aud %v, want [%s]", c.name, c.claims["aud"], c.aud)
		}
		if c.claims["scope"] != c.scope {
			t.Errorf("%s: scope %q, want %q", c.name, c.claims["scope"], c.scope)
		}
		if _, has := c.claims["acr"]; has != c.acr {
			t.Errorf("%s: acr present %v, want %v (copy_claims)", c.name, has, c.acr)
		}
		if c.claims["sub"] != "user-1" {
			t.Errorf("%s: sub %v", c.name, c.claims["sub"])
		}
	}
	for range 3 {
		call("/accounts/2")
		call("/payments/2")
	}
	if n := cm.n.Load(); n != 2 {
		t.Errorf("%d mints for two APIs over eight requests, want one per API", n)
	}

	// A JWT from the OAuth server (jwt mode) goes unchanged to an API
	// with settings, unless the API asks for its own (reissue).
	serverJWT := "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2ln"
	e2, err := authz.New(authz.Config{Decider: &fakeDecider{allow: true}, Minter: m, Upstream: cm, Routes: tb, Logger: fapiLog,
		Resolver: oneToken{&token.Token{Active: true, Kind: token.KindOpaque, Subject: "user-1", Scopes: []string{"read"},
			JWT: serverJWT, Expiry: time.Now().Add(time.Hour)}}})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"/accounts/1": serverJWT, "/reports/1": ""} {
		d := e2.Check(context.Background(), &authz.Request{Method: "GET", Path: path, Headers: map[string]string{"authorization": "Bearer opaque"}})
		got := strings.TrimPrefix(header(d, "authorization"), "Bearer ")
		if want != "" && got != want {
			t.Errorf("%s: forwarded %q, want the server's JWT unchanged", path, got)
		}
		if want == "" {
			if got == serverJWT {
				t.Errorf("%s: forwarded the server's JWT, want one reissued for the API", path)
			} else if aud := jwtClaims(t, "Bearer "+got)["aud"].([]any); aud[0] != "https://reports.internal" {
				t.Errorf("%s: aud %v", path, aud)
			}
		}
	}

	// Without a minter an API's own JWT cannot be made: deny rather than
	// send a JWT meant for every API.
	e3, err := authz.New(authz.Config{Decider: &fakeDecider{allow: true}, Routes: tb, Logger: fapiLog,
		Resolver: oneToken{&token.Token{Active: true, Kind: token.KindOpaque, Subject: "u", Scopes: []string{"read"}, JWT: "a.b.c", Minted: true}}})
	if err != nil {
		t.Fatal(err)
	}
	d := e3.Check(context.Background(), &authz.Request{Method: "GET", Path: "/accounts/1", Headers: map[string]string{"authorization": "Bearer opaque"}})
	if d.Allowed || d.Status != 503 || slices.ContainsFunc(d.Headers, func(h authz.Header) bool { return h.Key == "authorization" }) {
		t.Errorf("no minter: allowed=%v status=%d headers=%v, want 503 without a JWT", d.Allowed, d.Status, d.Headers)
	}
}

// An API with its own JWT and a pairwise sector gets one JWT with both: its
// aud and narrowed scope, and the sector's pseudonymous sub; the same API
// outside the sector gets another JWT, never the one with the real sub.
func TestUpstreamJWTWithPairwiseSector(t *testing.T) {
	m, err := mint.New(mint.Config{Issuer: "https://pa", Audience: []string{"default-aud"}, Generate: true, Logger: fapiLog,
		PairwiseKeys: []mint.PairwiseKey{{ID: "k1", Secret: []byte(strings.Repeat("s", 32))}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	tb := routeTable(t,
		route.Entry{Name: "accounts", PathPrefix: "/accounts", Settings: route.Settings{API: "accounts", PairwiseSector: "bank-a",
			Upstream: &route.Upstream{Audience: []string{"https://accounts.internal"}, Scopes: []string{"read"}}}},
		route.Entry{Name: "accounts-plain", PathPrefix: "/plain", Settings: route.Settings{API: "accounts"}},
	)
	tok := &token.Token{Active: true, Kind: token.KindOpaque, Subject: "alice", Scopes: []string{"read", "write"},
		Claims: map[string]any{"iss": "https://as"}, Expiry: time.Now().Add(time.Hour)}
	if err := m.Mint(tok); err != nil {
		t.Fatal(err)
	}
	e, err := authz.New(authz.Config{Decider: &fakeDecider{allow: true}, Minter: m, Upstream: m, Routes: tb, Logger: fapiLog, Resolver: oneToken{tok}})
	if err != nil {
		t.Fatal(err)
	}
	claimsOf := func(path string) map[string]any {
		d := e.Check(context.Background(), &authz.Request{Method: "GET", Path: path, Headers: map[string]string{"authorization": "Bearer opaque"}})
		if !d.Allowed {
			t.Fatalf("%s denied: %+v", path, d)
		}
		return jwtClaims(t, header(d, "authorization"))
	}
	sector, plain := claimsOf("/accounts/1"), claimsOf("/plain/1")
	if sector["sub"] == "alice" || sector["pairwise_kid"] != "k1" || sector["scope"] != "read" || sector["aud"].([]any)[0] != "https://accounts.internal" {
		t.Errorf("sector route: %v, want a pairwise sub, the API's aud and scope read", sector)
	}
	if plain["sub"] != "alice" || plain["aud"].([]any)[0] != "https://accounts.internal" || plain["jti"] == sector["jti"] {
		t.Errorf("outside the sector: %v, want the real sub, the API's aud, another JWT", plain)
	}
	if again := claimsOf("/accounts/2"); again["jti"] != sector["jti"] {
		t.Error("the sector's JWT was minted again instead of kept with the token")
	}
}
