package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/phantom-authz/phantom-authz/authz/config"
)

func TestDefaults(t *testing.T) {
	cfg, err := config.Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GRPC.Addr != "127.0.0.1:9191" || cfg.HTTP.Addr != "127.0.0.1:9192" ||
		cfg.Policy.Dir != "./policies" || cfg.Policy.Query != "data.envoy.authz.allow" {
		t.Errorf("defaults = %+v", cfg)
	}
	if cfg.Introspection != nil {
		t.Errorf("introspection on by default")
	}
}

func TestParseValid(t *testing.T) {
	cfg, err := config.Parse([]byte(`
grpc:   { addr: "127.0.0.1:1" }
http:   { addr: "127.0.0.1:2" }
policy: { dir: "/p", query: "data.x.allow" }
introspection:
  endpoint: "http://127.0.0.1:4445/admin/oauth2/introspect"
  client_id: "c"
  client_secret: "s"
  allow_insecure_http: true
  timeout: 500ms
mint:
  issuer: "https://phantom-authz.local"
  audience: "api"
cache: { max_ttl: 2s }
`))
	if err != nil {
		t.Fatal(err)
	}
	in := cfg.Introspection
	if in == nil || in.Response != "json" || in.AuthMethod != "client_secret_basic" || in.Timeout.D() != 500*time.Millisecond {
		t.Errorf("introspection = %+v", in)
	}
	if len(cfg.Mint.Audience) != 1 || cfg.Mint.Audience[0] != "api" || cfg.Cache.MaxTTL.D() != 2*time.Second {
		t.Errorf("mint/cache = %+v %+v", cfg.Mint, cfg.Cache)
	}
}

func TestParseInvalidNamesKey(t *testing.T) {
	cases := []struct{ yaml, key string }{
		{"grpc:\n  adr: x\n", "grpc.adr"},
		{"bogus: 1\n", "bogus"},
		{"grpc: { addr: nope }\n", "grpc.addr"},
		{"policy:\n  poll_interval: soon\n", "policy.poll_interval"},
		{"policy: { query: allow }\n", "policy.query"},
		{"log: { level: loud }\n", "log.level"},
		{"grpc:\n  max_recv_bytes: lots\n", "grpc.max_recv_bytes"},
		{"introspection:\n  endpoint: http://x/\n  client_id: a\n  client_secret: b\n", "introspection.endpoint"},
		{"introspection:\n  endpoint: https://x/\n  client_id: a\n", "introspection.client_secret"},
		{"introspection:\n  endpoint: https://x/\n  client_id: a\n  client_secret: b\n  response: xml\n", "introspection.response"},
		{"introspection:\n  endpoint: https://x/\n  client_id: a\n  client_secret: b\n  response: rfc9701\n", "introspection.issuer"},
		{"jwt:\n  issuers:\n    - issuer: a\n      jwks_uri: https://a\n      audiences: [x]\n      algorithms: [HS256]\n", "jwt.issuers[0].algorithms"},
		{"jwt:\n  issuers:\n    - issuer: a\n      jwks_uri: https://a\n      audiences: [x]\n      nope: 1\n", "jwt.issuers[0].nope"},
		{"auth: { owned_headers: [\"X-User\"] }\n", "auth.owned_headers"},
		{"cache: { max_ttl: 0s }\n", "cache.max_ttl"},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			_, err := config.Parse([]byte(c.yaml))
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a config.Error", err)
			}
			if ce.Key != c.key || !strings.Contains(err.Error(), c.key) {
				t.Errorf("key = %q (%v), want %q", ce.Key, err, c.key)
			}
		})
	}
}
