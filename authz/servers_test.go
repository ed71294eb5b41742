package authz_test

import (
	"context"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/credential"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// serverResolver records which server each token was resolved at; tokens
// of server "hydra" are only valid there.
type serverResolver struct{ at []string }

func (s *serverResolver) Resolve(ctx context.Context, c credential.Credential) (*token.Token, error) {
	return s.ResolveAt(ctx, c, "")
}

func (s *serverResolver) ResolveAt(_ context.Context, c credential.Credential, server string) (*token.Token, error) {
	s.at = append(s.at, server)
	if server != "" && server != "hydra" {
		return nil, token.ErrInvalid
	}
	return &token.Token{Active: true, Kind: token.KindOpaque, Scopes: []string{"read"}, JWT: "h.p.s"}, nil
}

// A route naming its authorization server (context extension
// authorization_server) resolves there; without it, as before; a resolver
// that serves one server refuses such a route (503), never allows.
func TestRouteAuthorizationServer(t *testing.T) {
	res := &serverResolver{}
	e, err := authz.New(authz.Config{Decider: &fakeDecider{allow: true}, Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	req := func(server string) *authz.Request {
		r := request(map[string]string{"authorization": "Bearer tok-read"})
		if server != "" {
			r.ContextExtensions = map[string]string{"authorization_server": server}
		}
		return r
	}
	if d := e.Check(context.Background(), req("hydra")); !d.Allowed {
		t.Errorf("hydra route: %+v", d)
	}
	if d := e.Check(context.Background(), req("keycloak")); d.Allowed || d.Status != 401 {
		t.Errorf("keycloak route with hydra's token: %+v, want 401", d)
	}
	if d := e.Check(context.Background(), req("")); !d.Allowed {
		t.Errorf("no server named: %+v", d)
	}
	if got := res.at; len(got) != 3 || got[0] != "hydra" || got[1] != "keycloak" || got[2] != "" {
		t.Errorf("resolved at %q", got)
	}

	one, err := authz.New(authz.Config{Decider: &fakeDecider{allow: true}, Resolver: fakeResolver{"tok-read": nil}})
	if err != nil {
		t.Fatal(err)
	}
	if d := one.Check(context.Background(), req("hydra")); d.Allowed || d.Status != 503 {
		t.Errorf("one-server resolver on a route naming a server: %+v, want 503", d)
	}
}
