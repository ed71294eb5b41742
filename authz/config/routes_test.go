package config_test

import (
	"errors"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz/config"
)

func TestRoutes(t *testing.T) {
	cfg, err := config.Parse([]byte(`
introspection: {endpoint: "https://as.example/introspect", client_id: pa, client_secret: s}
routes:
  - name: tx
    hosts: ["*.bank.example"]
    path: /accounts/{id}/transactions
    methods: [GET]
    api: accounts
    sender_constrained: required
    dry_run: true
    upstream_jwt: {audience: https://accounts.internal, scopes: [accounts:read], copy_claims: [acr], reissue: true}
  - name: health
    path_prefix: /health
    public: true
`))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Routes[0]
	if r.Name != "tx" || r.API != "accounts" || !r.DryRun || r.SenderConstrained != "required" || r.UpstreamJWT == nil ||
		r.UpstreamJWT.Audience[0] != "https://accounts.internal" || !r.UpstreamJWT.Reissue || !cfg.Routes[1].Public {
		t.Errorf("routes = %+v", cfg.Routes)
	}

	for src, key := range map[string]string{
		"routes: [{name: a}]":                                                "routes[0].path",
		"routes: [{name: a, path: /a}, {name: a, path: /b}]":                 "routes[1].name",
		"routes: [{name: a, path: /a/../b}]":                                 "routes[0].path",
		"routes: [{name: a, path: /a, sender_constrained: always}]":          "routes[0].sender_constrained",
		"routes: [{name: a, path: /a, pairwise_sector: s}]":                  "routes[0].pairwise_sector",
		"routes: [{name: a, path: /a, api: x, upstream_jwt: {audience: b}}]": "routes[0].upstream_jwt",
		"routes: [{name: a, path: /a, hosts: ['a:80']}]":                     "routes[0].hosts",
		"routes: [{name: a, path: /a, publc: true}]":                         "routes[0].publc",
		"routes: [{name: a, path: /a, upstream_jwt: {audiense: x}}]":         "routes[0].upstream_jwt.audiense",
	} {
		_, err := config.Parse([]byte(src))
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Key != key {
			t.Errorf("%s: err %v, want one naming %s", src, err, key)
		}
	}
}
