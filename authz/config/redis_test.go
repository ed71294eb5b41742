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

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRedisDefaults(t *testing.T) {
	cfg, err := config.Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Redis
	if r.URL != "" || r.KeyPrefix != "phantom-authz:" || r.Timeout.D() != 100*time.Millisecond ||
		!r.TokenCache || !r.ReplayStore || r.ReplayFailOpen || r.RevocationChannel != "phantom-authz:revocations" {
		t.Errorf("redis defaults = %+v", r)
	}
	if cfg.Admin.TokenFile != "" || cfg.Admin.Token != "" || cfg.Admin.PProf {
		t.Errorf("admin defaults = %+v", cfg.Admin)
	}
}

func TestRedisValid(t *testing.T) {
	pw := writeFile(t, "pw", "  s3cret \n")
	admin := writeFile(t, "admin", "0123456789abcdef0123\n")
	cfg, err := config.Parse([]byte(`
redis:
  url: "redis://user:fromurl@127.0.0.1:6380/2"
  password_file: "` + pw + `"
  key_prefix: "p:"
  timeout: 150ms
  token_cache: false
  replay_fail_open: true
  revocation_channel: "ch"
admin:
  token_file: "` + admin + `"
  pprof: true
`))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Redis
	if r.Password != "s3cret" || r.KeyPrefix != "p:" || r.Timeout.D() != 150*time.Millisecond || r.TokenCache ||
		!r.ReplayStore || !r.ReplayFailOpen || r.RevocationChannel != "ch" {
		t.Errorf("redis = %+v", r)
	}
	if cfg.Admin.Token != "0123456789abcdef0123" || !cfg.Admin.PProf {
		t.Errorf("admin token not read, or pprof not on: %v", cfg.Admin.PProf)
	}
}

// The shared token cache is authenticated with redis.cache_key_file: read,
// trimmed, and off the hook only when the token cache is off.
func TestRedisCacheKeyFile(t *testing.T) {
	key := writeFile(t, "cache.key", "0123456789abcdef0123456789abcdef0123\n")
	cfg, err := config.Parse([]byte("redis: { url: \"redis://127.0.0.1:6379\", cache_key_file: \"" + key + "\" }"))
	if err != nil {
		t.Fatal(err)
	}
	if string(cfg.Redis.CacheKey) != "0123456789abcdef0123456789abcdef0123" {
		t.Errorf("cache key = %q", cfg.Redis.CacheKey)
	}
	if _, err := config.Parse([]byte("redis: { url: \"redis://127.0.0.1:6379\", token_cache: false }")); err != nil {
		t.Errorf("token cache off, no key: %v", err)
	}
}

func TestRedisInvalidNamesKey(t *testing.T) {
	empty := writeFile(t, "empty", "\n")
	short := writeFile(t, "short", "tooshort")
	shortKey := writeFile(t, "short.key", "  0123456789abcdef0123456789abcde \n") // 31 bytes once trimmed
	notPEM := writeFile(t, "ca.pem", "not a certificate")
	cases := []struct{ name, yaml, key, reason string }{
		{"scheme", "redis: { url: \"http://127.0.0.1:6379\" }", "redis.url", "not redis or rediss"},
		{"no host", "redis: { url: \"redis:///0\" }", "redis.url", "host"},
		{"bad db", "redis: { url: \"redis://127.0.0.1:6379/x\" }", "redis.url", "database number"},
		{"bad option", "redis: { url: \"redis://127.0.0.1:6379/0?bogus=1\" }", "redis.url", "bogus"},
		{"timeout zero", "redis: { timeout: 0s }", "redis.timeout", "positive"},
		{"timeout negative", "redis: { timeout: -1s }", "redis.timeout", "positive"},
		{"timeout word", "redis:\n  timeout: soon\n", "redis.timeout", "duration"},
		{"prefix", "redis: { key_prefix: \"\" }", "redis.key_prefix", "non-empty"},
		{"channel", "redis: { revocation_channel: \"a b\" }", "redis.revocation_channel", "white space"},
		{"fail open without store", "redis: { replay_store: false, replay_fail_open: true }", "redis.replay_fail_open", "replay_store"},
		{"password without url", "redis: { password_file: /x }", "redis.url", "must be set"},
		{"password missing", "redis: { url: \"redis://127.0.0.1:6379\", password_file: /nonexistent/pw }", "redis.password_file", "no such file"},
		{"password empty", "redis: { url: \"redis://127.0.0.1:6379\", password_file: \"" + empty + "\" }", "redis.password_file", "empty"},
		{"ca without tls", "redis: { url: \"redis://127.0.0.1:6379\", token_cache: false, ca_file: \"" + notPEM + "\" }", "redis.ca_file", "rediss"},
		{"ca not pem", "redis: { url: \"rediss://127.0.0.1:6379\", token_cache: false, ca_file: \"" + notPEM + "\" }", "redis.ca_file", "PEM"},
		{"cache key missing", "redis: { url: \"redis://127.0.0.1:6379\" }", "redis.cache_key_file", "required while redis.token_cache is on"},
		{"cache key unreadable", "redis: { url: \"redis://127.0.0.1:6379\", cache_key_file: /nonexistent/key }", "redis.cache_key_file", "no such file"},
		{"cache key short", "redis: { url: \"redis://127.0.0.1:6379\", cache_key_file: \"" + shortKey + "\" }", "redis.cache_key_file", "at least 32"},
		{"cache key without url", "redis: { cache_key_file: /x }", "redis.url", "must be set"},
		{"unknown key", "redis:\n  urls: x\n", "redis.urls", "unknown key"},
		{"admin short", "admin: { token_file: \"" + short + "\" }", "admin.token_file", "at least 16"},
		{"admin missing", "admin: { token_file: /nonexistent/admin }", "admin.token_file", "no such file"},
		{"pprof without admin token", "admin: { pprof: true }", "admin.pprof", "needs admin.token_file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse([]byte(c.yaml))
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a config.Error", err)
			}
			if ce.Key != c.key || !strings.Contains(err.Error(), c.reason) {
				t.Errorf("err = %v, want key %s and %q", err, c.key, c.reason)
			}
		})
	}
}

// A password in the URL never appears in an error.
func TestRedisURLErrorHidesPassword(t *testing.T) {
	for _, u := range []string{"redis://u:hunter2secret@127.0.0.1:6379/x", "redis://u:hunter2secret@127.0.0.1:6379/0?bogus=1", "redis://u:hunter2secret@/0"} {
		_, err := config.Parse([]byte("redis: { url: \"" + u + "\" }"))
		if err == nil {
			t.Fatalf("%s: no error", u)
		}
		if strings.Contains(err.Error(), "hunter2secret") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}
