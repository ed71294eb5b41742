package config_test

import (
	"errors"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz/config"
)

const twoServers = `
authorization_servers:
  - name: hydra
    issuer: http://127.0.0.1:4444/
    token_prefixes: [ory_at_]
    default: true
    introspection:
      endpoint: http://127.0.0.1:4445/admin/oauth2/introspect
      client_id: phantom-authz
      client_secret: unused
      allow_insecure_http: true
  - name: keycloak
    issuer: https://kc.example/realms/bank
    discovery: true
    introspect_jwts: true
    introspection:
      client_id: phantom-authz
      client_secret: s3cret
      response: keycloak
    jwt:
      audiences: [phantom-authz]
      algorithms: [RS256]
`

func TestAuthorizationServersParse(t *testing.T) {
	cfg, err := config.Parse([]byte(twoServers))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Credentials() || len(cfg.AuthorizationServers) != 2 {
		t.Fatalf("servers: %+v", cfg.AuthorizationServers)
	}
	kc := cfg.AuthorizationServers[1]
	if !kc.Discovery || !kc.IntrospectJWTs || kc.Introspection.Response != "keycloak" || kc.Introspection.Endpoint != "" ||
		kc.Introspection.CircuitBreaker.Failures != 5 {
		t.Errorf("keycloak server: %+v %+v", kc, kc.Introspection)
	}
}

// Each mistake stops start-up with the key that holds it.
func TestAuthorizationServersInvalidNamesKey(t *testing.T) {
	hydra := "  - issuer: http://h/\n    introspection: { endpoint: http://h/i, client_id: c, client_secret: s, allow_insecure_http: true }\n"
	cases := []struct{ yaml, key string }{
		{twoServers + "introspection: { endpoint: https://x/i, client_id: c, client_secret: s }\n", "authorization_servers"},
		{"authorization_servers:\n  - introspection: { endpoint: https://x/i, client_id: c, client_secret: s }\n", "authorization_servers[0].issuer"},
		{"authorization_servers:\n  - issuer: https://x\n", "authorization_servers[0].introspection"},
		{"authorization_servers:\n  - issuer: https://x\n    jwt: { jwks_uri: https://x/k, audiences: [a] }\n    default: true\n", "authorization_servers[0].introspection"},
		{"authorization_servers:\n" + hydra + hydra, "authorization_servers[1].issuer"},
		{"authorization_servers:\n  - issuer: https://x\n    introspection: { client_id: c, client_secret: s }\n", "authorization_servers[0].introspection.endpoint"},
		{"authorization_servers:\n  - issuer: http://x\n    discovery: true\n    introspection: { client_id: c, client_secret: s }\n", "authorization_servers[0].issuer"},
		{"authorization_servers:\n  - issuer: https://x\n    jwt: { audiences: [a] }\n", "authorization_servers[0].jwt.jwks_uri"},
		{"authorization_servers:\n  - issuer: https://x\n    jwt: { issuer: https://y, jwks_uri: https://x/k, audiences: [a] }\n", "authorization_servers[0].jwt.issuer"},
		{"authorization_servers:\n  - issuer: https://x\n    introspection: { endpoint: https://x/i, client_id: c, client_secret: s, response: keycloak2 }\n", "authorization_servers[0].introspection.response"},
		{"authorization_servers:\n  - issuer: https://x\n    token_prefixes: [ory_]\n    introspection: { endpoint: https://x/i, client_id: c, client_secret: s }\n" +
			"  - issuer: https://y\n    token_prefixes: [ory_at_]\n    introspection: { endpoint: https://y/i, client_id: c, client_secret: s }\n", "authorization_servers[1].token_prefixes"},
		{"authorization_servers:\n  - issuer: https://x\n    default: true\n    introspection: { endpoint: https://x/i, client_id: c, client_secret: s }\n" +
			"  - issuer: https://y\n    default: true\n    introspection: { endpoint: https://y/i, client_id: c, client_secret: s }\n", "authorization_servers"},
		{"introspection: { endpoint: https://x/i, client_id: c, client_secret: s, response: keycloak }\n", "introspection.issuer"},
		{twoServers + "routes:\n  - { name: r, path_prefix: /api/, api: accounts, authorization_server: retail }\n", "routes[0].authorization_server"},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			_, err := config.Parse([]byte(c.yaml))
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("err %v, want a config error", err)
			}
			if ce.Key != c.key {
				t.Errorf("key %q (%v), want %q", ce.Key, err, c.key)
			}
		})
	}
}
