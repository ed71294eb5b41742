package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runConfig runs `phantom-authz config` with args and returns its output.
func runConfig(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := configCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// `config` prints the effective configuration, defaults applied, and no
// secret: not the client secret (here from the environment), not the
// secrets read from files, not a Redis password in its URL.
func TestConfigCommandMasksSecrets(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secrets := map[string]string{
		"client secret":   "cs-from-env-0123456789",
		"pairwise secret": "pairwise-secret-0123456789abcdef0123456789",
		"nonce secret":    "nonce-secret-0123456789abcdef0123456789ab",
		"admin token":     "admin-token-0123456789abcdef",
		"redis password":  "redis-pw-0123456789",
		"cache key":       "cache-key-0123456789abcdef0123456789abcdef",
	}
	t.Setenv("PA_TEST_CLIENT_SECRET", secrets["client secret"])
	cfg := write("config.yaml", `
grpc: {addr: "127.0.0.1:19191"}
introspection:
  endpoint: https://as.example/introspect
  client_id: gateway
  client_secret: ${PA_TEST_CLIENT_SECRET}
pairwise:
  keys: [{id: k1, secret_file: `+write("pairwise.key", secrets["pairwise secret"])+`}]
dpop:
  nonce: {enabled: true, secret_file: `+write("nonce.key", secrets["nonce secret"])+`}
admin:
  token_file: `+write("admin.token", secrets["admin token"])+`
redis:
  url: redis://phantom:`+secrets["redis password"]+`@127.0.0.1:6379/0
  cache_key_file: `+write("cache.key", secrets["cache key"])+`
`)
	out, err := runConfig(t, "--config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	for what, v := range secrets {
		if strings.Contains(out, v) {
			t.Errorf("the %s is printed", what)
		}
	}
	for _, want := range []string{
		"addr: 127.0.0.1:19191",                // from the file
		"max_recv_bytes: 4194304",              // a default
		"timeout: 2s",                          // a default of a section the file set
		"client_secret: '***'",                 // masked
		"redis://phantom:***@127.0.0.1:6379/0", // masked in the URL
		"secret_file: " + dir,                  // file names are not secrets
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// Without --config it prints the defaults; an invalid file is exit status
// 2 with an error naming the key and not the secret around it.
func TestConfigCommandErrors(t *testing.T) {
	out, err := runConfig(t)
	if err != nil || !strings.Contains(out, "addr: 127.0.0.1:9191") {
		t.Fatalf("defaults: err %v, output:\n%s", err, out)
	}
	const secret = "cs-0123456789-secret"
	path := filepath.Join(t.TempDir(), "bad.yaml")
	bad := "introspection:\n  endpoint: https://as.example/introspect\n  client_id: gw\n  client_secret: !!int " + secret + "\n"
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = runConfig(t, "--config", path)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("err = %v, want exit status 2", err)
	}
	if msg := err.Error() + out; strings.Contains(msg, secret) || !strings.Contains(msg, "introspection.client_secret") {
		t.Errorf("error %q (output %q): want the key named and the secret not", err, out)
	}
}
