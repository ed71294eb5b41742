package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phantom-authz/phantom-authz/authz/config"
)

func writePEM(t *testing.T, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPolicyBundleParse(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	pub := writePEM(t, "PUBLIC KEY", der)
	cfg, err := config.Parse([]byte(`
policy:
  bundle:
    url: https://bundles.example.com/authz/bundle.tar.gz
    persist_dir: /var/lib/phantom-authz
    verification: { public_key_file: "` + pub + `", key_id: release, scope: prod }
`))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Policy.Bundle
	if b.URL != "https://bundles.example.com/authz/bundle.tar.gz" || b.PollMin.D() != 10*time.Second ||
		b.PollMax.D() != 30*time.Second || b.Timeout.D() != 10*time.Second || b.PersistDir != "/var/lib/phantom-authz" {
		t.Errorf("bundle = %+v", b)
	}
	if v := b.Verification; v == nil || v.Algorithm != "RS256" || v.KeyID != "release" || v.Scope != "prod" {
		t.Errorf("verification = %+v", v)
	}

	// Absent: policies come from policy.dir.
	cfg, err = config.Parse(nil)
	if err != nil || cfg.Policy.Bundle.URL != "" {
		t.Errorf("default bundle = %+v, %v", cfg.Policy.Bundle, err)
	}
}

func TestPolicyBundleErrors(t *testing.T) {
	dir := t.TempDir()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	rsaPub := writePEM(t, "PUBLIC KEY", der)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ = x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	ecPub := writePEM(t, "PUBLIC KEY", der)
	der, _ = x509.MarshalPKCS8PrivateKey(ecKey)
	private := writePEM(t, "PRIVATE KEY", der)
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const u = "url: https://b.example.com/b.tar.gz\n    "
	for _, c := range []struct {
		yaml, key, reason string
	}{
		{"url: ftp://b.example.com/b.tar.gz", "policy.bundle.url", "not https"},
		{"url: http://b.example.com/b.tar.gz", "policy.bundle.url", "must be https"},
		{"url: /b.tar.gz", "policy.bundle.url", "not an absolute URL"},
		{"poll_min: 5s", "policy.bundle.url", "required"},
		{u + "poll_min: 40s", "policy.bundle.poll_min", "more than poll_max (30s)"},
		{u + "poll_min: 500ms", "policy.bundle.poll_min", "whole number of seconds"},
		{u + "poll_max: 1500ms", "policy.bundle.poll_max", "whole number of seconds"},
		{u + "timeout: -1s", "policy.bundle.timeout", "positive"},
		{u + "poll_max: ten", "policy.bundle.poll_max", "not a duration"},
		{u + "ca_file: " + filepath.Join(dir, "none.pem"), "policy.bundle.ca_file", "no such file"},
		{u + "ca_file: " + empty, "policy.bundle.ca_file", "no PEM certificate"},
		{u + "token_file: " + empty, "policy.bundle.token_file", "empty"},
		{u + "persist_dir: " + empty, "policy.bundle.persist_dir", "not a directory"},
		{u + "verification: {key_id: k}", "policy.bundle.verification.public_key_file", "required"},
		{u + "verification: {public_key_file: " + rsaPub + ", algorithm: HS256}", "policy.bundle.verification.algorithm", "not one of"},
		{u + "verification: {public_key_file: " + rsaPub + ", algorithm: ES256}", "policy.bundle.verification.public_key_file", "RSA key cannot verify ES256"},
		{u + "verification: {public_key_file: " + ecPub + "}", "policy.bundle.verification.public_key_file", "EC key cannot verify RS256"},
		{u + "verification: {public_key_file: " + private + ", algorithm: ES256}", "policy.bundle.verification.public_key_file", "not a public key"},
		{u + "verifcation: {}", "policy.bundle.verifcation", "unknown key"},
	} {
		_, err := config.Parse([]byte("policy:\n  bundle:\n    " + c.yaml + "\n"))
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Key != c.key || !strings.Contains(ce.Reason, c.reason) {
			t.Errorf("%q: error %v, want key %s with %q", c.yaml, err, c.key, c.reason)
		}
	}
}
