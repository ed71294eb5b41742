package policies

import (
	"context"
	"log/slog"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/policy"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// TestRego runs the Rego tests in this directory (as `opa test .` would)
// and fails on any failing or erroring one.
func TestRego(t *testing.T) {
	ctx := context.Background()
	modules, store, err := tester.LoadWithRegoVersion([]string{"."}, nil, ast.RegoV1)
	if err != nil {
		t.Fatalf("loading policies: %v", err)
	}
	// The helpers the server compiles with every policy set (data.phantom.fapi).
	lib, err := policy.Library()
	if err != nil {
		t.Fatal(err)
	}
	for name, m := range lib {
		modules[name] = m
	}
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Abort(ctx, txn)

	results, err := tester.NewRunner().
		SetStore(store).
		SetModules(modules).
		SetDefaultRegoVersion(ast.RegoV1).
		RaiseBuiltinErrors(true).
		RunTests(ctx, txn)
	if err != nil {
		t.Fatalf("running Rego tests: %v", err)
	}
	n := 0
	for r := range results {
		n++
		switch {
		case r.Error != nil:
			t.Errorf("%s: %s: error: %v", r.Location, r.Name, r.Error)
		case r.Fail:
			t.Errorf("%s: %s: FAIL", r.Location, r.Name)
		case r.Skip:
			t.Logf("%s: %s: skipped", r.Location, r.Name)
		}
	}
	if n == 0 {
		t.Fatal("no Rego tests found")
	}
	t.Logf("%d Rego tests", n)
}

// TestServes loads the directory the way the server does and checks a few
// decisions end to end, through the real input.
func TestServes(t *testing.T) {
	e, err := policy.New(policy.Config{Dir: ".", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("the shipped policies do not load: %v", err)
	}
	tok := &token.Token{Active: true, Kind: token.KindOpaque, Scopes: []string{"read"}, ClientID: "web-app"}
	if err := e.PrepareToken(tok); err != nil {
		t.Fatal(err)
	}
	req := func(method, path string) *authz.Request {
		return &authz.Request{Method: method, Path: path, Headers: map[string]string{":path": path}, Size: -1}
	}
	tests := []struct {
		name         string
		req          *authz.Request
		tok          *token.Token
		allowed      bool
		status       int
		errorCode    string
		neededScopes string
	}{
		{"health check", req("GET", "/healthz"), nil, true, 0, "", ""},
		{"read with read scope", req("GET", "/api/accounts/123"), tok, true, 0, "", ""},
		{"write with read scope", req("PUT", "/api/accounts/123"), tok, false, 403, "insufficient_scope", "write"},
		{"no token", req("GET", "/api/accounts/123"), nil, false, 401, "invalid_token", ""},
		{"unknown route", req("GET", "/nowhere"), tok, false, 403, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := e.Decide(context.Background(), tt.req, tt.tok)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed != tt.allowed || d.Status != tt.status || d.Error != tt.errorCode || d.Scope != tt.neededScopes {
				t.Errorf("got %+v, want allowed=%v status=%d error=%q scope=%q", d, tt.allowed, tt.status, tt.errorCode, tt.neededScopes)
			}
		})
	}
}
