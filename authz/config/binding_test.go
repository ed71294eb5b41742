package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phantom-authz/phantom-authz/authz/config"
)

func TestDPoPDefaults(t *testing.T) {
	cfg, err := config.Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.DPoP
	if strings.Join(d.Algorithms, " ") != "ES256 PS256 EdDSA" || d.IATWindow.D() != time.Minute ||
		d.Nonce.Enabled || d.Nonce.Lifetime.D() != 5*time.Minute || d.ReplayMaxEntries != 1<<19 {
		t.Errorf("dpop defaults = %+v", d)
	}
	if cfg.Binding.RequireSenderConstrained {
		t.Error("sender-constrained tokens required by default")
	}
}

func TestDPoPParse(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "nonce")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(`
dpop:
  algorithms: [ES256, EdDSA]
  iat_window: 30s
  nonce: { enabled: true, secret_file: "` + secret + `", lifetime: 2m }
  origins: ["https://api.bank.example"]
binding:
  require_sender_constrained: true
`))
	if err != nil {
		t.Fatal(err)
	}
	if string(cfg.DPoP.Nonce.Secret) != "0123456789abcdef0123456789abcdef" || cfg.DPoP.IATWindow.D() != 30*time.Second ||
		cfg.DPoP.Nonce.Lifetime.D() != 2*time.Minute || !cfg.Binding.RequireSenderConstrained ||
		len(cfg.DPoP.Origins) != 1 || cfg.DPoP.Origins[0] != "https://api.bank.example" {
		t.Errorf("parsed %+v %+v", cfg.DPoP, cfg.Binding)
	}
}

func TestDPoPInvalidNamesKey(t *testing.T) {
	short := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(short, []byte("too short"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ yaml, key string }{
		{"dpop: { algorithms: [HS256] }\n", "dpop.algorithms"},
		{"dpop: { algorithms: [none] }\n", "dpop.algorithms"},
		{"dpop: { algorithms: [] }\n", "dpop.algorithms"},
		{"dpop: { iat_window: 0s }\n", "dpop.iat_window"},
		{"dpop: { iat_window: 1h }\n", "dpop.iat_window"},
		{"dpop:\n  iat_window: soon\n", "dpop.iat_window"},
		{"dpop: { replay_max_entries: 10 }\n", "dpop.replay_max_entries"},
		{"dpop: { nonce: { enabled: true } }\n", "dpop.nonce.secret_file"},
		{"dpop: { nonce: { enabled: true, secret_file: /nonexistent/secret } }\n", "dpop.nonce.secret_file"},
		{"dpop: { nonce: { enabled: true, secret_file: " + short + " } }\n", "dpop.nonce.secret_file"},
		{"dpop: { nonce: { lifetime: 1s } }\n", "dpop.nonce.lifetime"},
		{"dpop: { origins: [api.bank.example] }\n", "dpop.origins[0]"},
		{"dpop: { origins: [\"https://api.bank.example\", \"https://api.bank.example/v1\"] }\n", "dpop.origins[1]"},
		{"dpop:\n  nonce:\n    enable: true\n", "dpop.nonce.enable"},
		{"binding:\n  require_sender_constraint: true\n", "binding.require_sender_constraint"},
		{"binding:\n  xfcc:\n    trusted_addresses: [gateway.local]\n", "binding.xfcc.trusted_addresses[0]"},
		{"binding:\n  xfcc:\n    trusted_addresses: [10.0.0.0/8, 10.0.0.0/40]\n", "binding.xfcc.trusted_addresses[1]"},
		{"binding:\n  xfcc:\n    trusted_principals: [\"\"]\n", "binding.xfcc.trusted_principals[0]"},
		{"binding:\n  xfcc:\n    trusted_principal: [x]\n", "binding.xfcc.trusted_principal"},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			_, err := config.Parse([]byte(c.yaml))
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a config.Error", err)
			}
			if ce.Key != c.key {
				t.Errorf("key = %q (%v), want %q", ce.Key, err, c.key)
			}
		})
	}
}
