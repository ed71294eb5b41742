package authz_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/credential"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// fakeDecider allows when the token has scope "read" (or when no token is
// involved and allow is set), as a stand-in for a compiled policy.
type fakeDecider struct {
	allow bool
	err   error
	seen  *token.Token
}

func (f *fakeDecider) Ready() bool { return true }

func (f *fakeDecider) Decide(_ context.Context, _ *authz.Request, tok *token.Token) (authz.Decision, error) {
	f.seen = tok
	if f.err != nil {
		return authz.Decision{}, f.err
	}
	if tok != nil {
		for _, s := range tok.Scopes {
			if s == "read" {
				return authz.Decision{Allowed: true, Reason: "allowed"}, nil
			}
		}
		return authz.Decision{Status: 403, Error: "insufficient_scope", Scope: "read", Detail: "Scope read is required."}, nil
	}
	if f.allow {
		return authz.Decision{Allowed: true, Reason: "allowed"}, nil
	}
	return authz.Decision{}, nil
}

// fakeResolver knows a few tokens.
type fakeResolver map[string]error

func (f fakeResolver) Resolve(_ context.Context, c credential.Credential) (*token.Token, error) {
	err, ok := f[c.Token]
	if !ok {
		return nil, token.ErrInactive
	}
	if err != nil {
		return nil, err
	}
	scopes := strings.Split(strings.TrimPrefix(c.Token, "tok-"), "-")
	return &token.Token{Active: true, Kind: token.KindOpaque, Scopes: scopes, JWT: "header.payload.sig"}, nil
}

func request(headers map[string]string) *authz.Request {
	return &authz.Request{Method: "GET", Path: "/api/x?y=1", Host: "api.example", Scheme: "https", Headers: headers}
}

func header(d authz.Decision, name string) string {
	for _, h := range d.Headers {
		if h.Key == name {
			return h.Value
		}
	}
	return ""
}

func TestCheck(t *testing.T) {
	resolver := fakeResolver{
		"tok-read":  nil,
		"tok-write": nil,
		"tok-down":  fmt.Errorf("introspection: %w", token.ErrUnavailable),
		"tok-bad":   fmt.Errorf("jwt: %w", token.ErrInvalid),
	}
	cases := []struct {
		name      string
		headers   map[string]string
		ext       map[string]string
		decider   *fakeDecider
		noCreds   bool
		allowed   bool
		status    int
		challenge string // WWW-Authenticate, exact
		errCode   string // problem+json "error"
	}{
		{name: "scope ok", headers: map[string]string{"authorization": "Bearer tok-read"}, allowed: true},
		{name: "missing token", headers: map[string]string{}, status: 401, challenge: `Bearer realm="test"`},
		{name: "inactive token", headers: map[string]string{"authorization": "Bearer junk"}, status: 401,
			challenge: `Bearer realm="test", error="invalid_token", error_description="The access token is not active."`, errCode: "invalid_token"},
		{name: "invalid jwt", headers: map[string]string{"authorization": "Bearer tok-bad"}, status: 401, errCode: "invalid_token"},
		{name: "oauth server down", headers: map[string]string{"authorization": "Bearer tok-down"}, status: 503},
		{name: "wrong scope", headers: map[string]string{"authorization": "Bearer tok-write"}, status: 403,
			challenge: `Bearer realm="test", error="insufficient_scope", error_description="Scope read is required.", scope="read"`, errCode: "insufficient_scope"},
		{name: "malformed header", headers: map[string]string{"authorization": "Bearer  tok-read"}, status: 400, errCode: "invalid_request"},
		{name: "token in query", headers: map[string]string{"authorization": "Bearer tok-read", ":path": "/x?access_token=a"}, status: 400, errCode: "invalid_request"},
		{name: "public route by context extension", headers: map[string]string{}, ext: map[string]string{"public": "true"},
			decider: &fakeDecider{allow: true}, allowed: true},
		{name: "policy error fails closed", headers: map[string]string{"authorization": "Bearer tok-read"},
			decider: &fakeDecider{err: errors.New("policy: eval: boom")}, status: 503},
		{name: "bad input", headers: map[string]string{}, noCreds: true,
			// Not an OAuth error: no error code, no challenge (as OPA-Envoy).
			decider: &fakeDecider{err: fmt.Errorf("policy: %w: request body is not valid JSON", authz.ErrInvalidInput)}, status: 400},
		{name: "no credentials configured: policy alone", headers: map[string]string{}, noCreds: true, decider: &fakeDecider{allow: true}, allowed: true},
		{name: "no credentials configured: policy denies", headers: map[string]string{}, noCreds: true, decider: &fakeDecider{}, status: 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dec := c.decider
			if dec == nil {
				dec = &fakeDecider{}
			}
			cfg := authz.Config{Decider: dec, Realm: "test", OwnedHeaders: []string{"x-user-*", "x-jwt-claims"}}
			if !c.noCreds {
				cfg.Resolver = resolver
			}
			e, err := authz.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			r := request(c.headers)
			if p, ok := c.headers[":path"]; ok {
				r.Path = p
			}
			r.ContextExtensions = c.ext
			d := e.Check(context.Background(), r)
			if d.Allowed != c.allowed {
				t.Fatalf("allowed = %v, want %v (%+v)", d.Allowed, c.allowed, d)
			}
			if c.allowed {
				return
			}
			if d.Status != c.status {
				t.Errorf("status = %d, want %d", d.Status, c.status)
			}
			if c.challenge != "" && header(d, "www-authenticate") != c.challenge {
				t.Errorf("www-authenticate = %q, want %q", header(d, "www-authenticate"), c.challenge)
			}
			if c.status == 401 && !strings.HasPrefix(header(d, "www-authenticate"), `Bearer realm="test"`) {
				t.Errorf("401 without a Bearer challenge: %q", header(d, "www-authenticate"))
			}
			if header(d, "content-type") != "application/problem+json" {
				t.Fatalf("content-type = %q", header(d, "content-type"))
			}
			var p map[string]any
			if err := json.Unmarshal([]byte(d.Body), &p); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if p["status"] != float64(c.status) || p["title"] == "" {
				t.Errorf("problem = %v", p)
			}
			if c.errCode != "" && p["error"] != c.errCode {
				t.Errorf("problem error = %v, want %s", p["error"], c.errCode)
			}
			if strings.Contains(d.Body, "tok-") || strings.Contains(d.Body, "boom") {
				t.Errorf("denial leaks a token or internals: %s", d.Body)
			}
		})
	}
}

func TestCheckInjectsJWTAndStripsOwnedHeaders(t *testing.T) {
	e, err := authz.New(authz.Config{Decider: &fakeDecider{}, Resolver: fakeResolver{"tok-read": nil},
		OwnedHeaders: []string{"x-user-*", "x-jwt-claims"}})
	if err != nil {
		t.Fatal(err)
	}
	d := e.Check(context.Background(), request(map[string]string{
		"authorization": "Bearer tok-read", "x-user-id": "admin", "x-jwt-claims": "{}", "x-other": "keep",
	}))
	if !d.Allowed {
		t.Fatalf("denied: %+v", d)
	}
	if got := header(d, "authorization"); got != "Bearer header.payload.sig" {
		t.Errorf("authorization = %q", got)
	}
	removed := strings.Join(d.RemoveHeaders, ",")
	for _, h := range []string{"x-user-id", "x-jwt-claims"} {
		if !strings.Contains(removed, h) {
			t.Errorf("%s not removed (%v)", h, d.RemoveHeaders)
		}
	}
	if strings.Contains(removed, "x-other") {
		t.Errorf("x-other removed")
	}
}

// Envoy's network filter sends no HTTP attributes: as under OPA-Envoy the
// policy decides on the peers; where a credential is required, there is
// none, so it is denied.
func TestCheckNoHTTPAttributes(t *testing.T) {
	l4 := &authz.Request{Absent: authz.PartRequest | authz.PartHTTP, Source: authz.Peer{Address: "10.0.0.5", Port: 4000}}
	e, _ := authz.New(authz.Config{Decider: &fakeDecider{allow: true}})
	if d := e.Check(context.Background(), l4); !d.Allowed {
		t.Fatalf("no credential stages, the policy allows: got %+v", d)
	}
	e, _ = authz.New(authz.Config{Decider: &fakeDecider{allow: true}, Resolver: fakeResolver{}})
	if d := e.Check(context.Background(), l4); d.Allowed || d.Status != 401 || d.Reason != "missing_token" {
		t.Fatalf("a credential required: got %+v", d)
	}
}

func TestCheckHugeHeaders(t *testing.T) {
	e, _ := authz.New(authz.Config{Decider: &fakeDecider{allow: true}, MaxHeaderBytes: 4096})
	d := e.Check(context.Background(), request(map[string]string{"x-big": strings.Repeat("a", 5000)}))
	if d.Allowed || d.Status != 431 {
		t.Fatalf("got allowed=%v status=%d", d.Allowed, d.Status)
	}
}

func TestCheckPublicRouteDropsCredential(t *testing.T) {
	e, err := authz.New(authz.Config{Decider: &fakeDecider{allow: true}, Resolver: fakeResolver{}, PublicPaths: []string{"/healthz"}})
	if err != nil {
		t.Fatal(err)
	}
	r := request(map[string]string{"authorization": "Bearer opaque-secret"})
	r.Path = "/healthz"
	d := e.Check(context.Background(), r)
	if !d.Allowed {
		t.Fatalf("public route denied: %+v", d)
	}
	if strings.Join(d.RemoveHeaders, ",") != "authorization" {
		t.Errorf("remove = %v, want the client's authorization header removed", d.RemoveHeaders)
	}
}
