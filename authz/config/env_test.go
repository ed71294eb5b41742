package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/phantom-authz/phantom-authz/authz/config"
)

// ${VAR} and ${VAR:-default} are replaced in values before decoding; a
// value stays one value whatever it holds; keys are never expanded.
func TestEnvironmentExpansion(t *testing.T) {
	t.Setenv("PA_ADDR", "127.0.0.1:7000")
	t.Setenv("PA_SECRET", "from-the-environment")
	t.Setenv("PA_MAX", "8192")
	t.Setenv("PA_TIMEOUT", "750ms")
	t.Setenv("PA_EMPTY", "")
	t.Setenv("PA_YAML", "a: b\n- c: {d}")
	t.Setenv("PA_KEY", "grpc")
	cfg, err := config.Parse([]byte(`
grpc:
  addr: ${PA_ADDR}
  max_recv_bytes: ${PA_MAX}
http:
  addr: "${PA_UNSET:-127.0.0.1:7001}"
log:
  level: ${PA_EMPTY:-warn}
mint:
  issuer: ${PA_YAML}
auth:
  public_paths: ["/health$$", "/${env:PA_KEY}"]
introspection:
  endpoint: https://as.example/introspect
  client_id: gw-${PA_KEY}
  client_secret: ${PA_SECRET}
  timeout: ${PA_TIMEOUT}
`))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case cfg.GRPC.Addr != "127.0.0.1:7000", cfg.GRPC.MaxRecvBytes != 8192:
		t.Errorf("grpc = %+v", cfg.GRPC)
	case cfg.HTTP.Addr != "127.0.0.1:7001":
		t.Errorf("default not used: http.addr = %q", cfg.HTTP.Addr)
	case cfg.Log.Level != "warn":
		t.Errorf("default not used for an empty variable: log.level = %q", cfg.Log.Level)
	case cfg.Mint.Issuer != "a: b\n- c: {d}":
		t.Errorf("a value holding YAML became %q", cfg.Mint.Issuer)
	case strings.Join(cfg.Auth.PublicPaths, " ") != "/health$ /grpc":
		t.Errorf("public_paths = %q", cfg.Auth.PublicPaths)
	case cfg.Introspection.ClientID != "gw-grpc" || cfg.Introspection.ClientSecret != "from-the-environment":
		t.Errorf("introspection = %+v", cfg.Introspection)
	case cfg.Introspection.Timeout.D() != 750*time.Millisecond:
		t.Errorf("timeout = %v", cfg.Introspection.Timeout)
	}

	// A key is not a value: ${PA_KEY} as a key is just an unknown key.
	if _, err := config.Parse([]byte("${PA_KEY}:\n  addr: x:1\n")); err == nil || !strings.Contains(err.Error(), "${PA_KEY}: unknown key") {
		t.Errorf("expanded key: err = %v", err)
	}
}

// An undefined variable without a default, or a malformed reference, is
// an error naming the key (and the variable, never a value).
func TestEnvironmentExpansionErrors(t *testing.T) {
	t.Setenv("PA_SET", "s3cr3t-around")
	tests := []struct{ yaml, key, says string }{
		{"grpc:\n  addr: ${PA_NOT_SET}\n", "grpc.addr", "PA_NOT_SET is not set"},
		{"auth:\n  public_paths: [/a, \"${PA_NOT_SET}\"]\n", "auth.public_paths[1]", "PA_NOT_SET is not set"},
		{"grpc:\n  addr: ${PA_SET\n", "grpc.addr", "no closing }"},
		{"grpc:\n  addr: ${PA-SET}\n", "grpc.addr", "does not name an environment variable"},
		{"grpc:\n  max_recv_bytes: \"${PA_SET}\"\n", "grpc.max_recv_bytes", "cannot unmarshal !!str *** into int (line 2)"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			_, err := config.Parse([]byte(tt.yaml))
			var ce *config.Error
			if !errors.As(err, &ce) || ce.Key != tt.key || !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("err = %v, want one naming %s saying %q", err, tt.key, tt.says)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("the error repeats the value: %v", err)
			}
		})
	}
}
