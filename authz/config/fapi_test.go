package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/phantom-authz/phantom-authz/authz/config"
)

// certFiles writes a self-signed certificate and its key.
func certFiles(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeTestFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeTestFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile
}

func writeTestFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

const introspectionYAML = "introspection:\n  endpoint: https://as.example/introspect\n  client_id: a\n  client_secret: b\n"

func TestFAPIDefaults(t *testing.T) {
	cfg, err := config.Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.FAPI.InteractionID {
		t.Error("fapi.interaction_id is off by default")
	}
	if want := []string{"acr", "auth_time", "amr"}; !reflect.DeepEqual(cfg.Mint.CopyClaims, want) {
		t.Errorf("mint.copy_claims = %v, want %v", cfg.Mint.CopyClaims, want)
	}
	if cfg.GRPC.TLS != nil || cfg.HTTP.TLS != nil || cfg.Pairwise != nil {
		t.Error("TLS or pairwise on by default")
	}
}

func TestFAPIParse(t *testing.T) {
	cert, key := certFiles(t)
	secret := filepath.Join(t.TempDir(), "pairwise.key")
	writeTestFile(t, secret, []byte(strings.Repeat("s", 40)+"\n"))
	cfg, err := config.Parse([]byte(introspectionYAML + `
grpc:
  tls: {cert_file: ` + cert + `, key_file: ` + key + `, client_ca_file: ` + cert + `}
http:
  tls: {cert_file: ` + cert + `, key_file: ` + key + `}
jwt:
  ca_file: ` + cert + `
pairwise:
  keys: [{id: "2026-01", secret_file: ` + secret + `}]
  sectors: {accounts: "https://accounts.bank.example"}
fapi: {interaction_id: false}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GRPC.TLS.ClientCAFile != cert || cfg.HTTP.TLS.KeyFile != key || cfg.JWT.CAFile != cert {
		t.Errorf("tls = %+v %+v", cfg.GRPC.TLS, cfg.HTTP.TLS)
	}
	if k := cfg.Pairwise.Keys[0]; k.ID != "2026-01" || string(k.Secret) != strings.Repeat("s", 40) {
		t.Errorf("pairwise key = %q %q (the secret trimmed)", k.ID, k.Secret)
	}
	if cfg.Pairwise.Sectors["accounts"] != "https://accounts.bank.example" || cfg.FAPI.InteractionID {
		t.Errorf("pairwise = %+v, fapi = %+v", cfg.Pairwise, cfg.FAPI)
	}
}

func TestFAPIInvalidNamesKey(t *testing.T) {
	cert, key := certFiles(t)
	dir := t.TempDir()
	short := filepath.Join(dir, "short.key")
	writeTestFile(t, short, []byte("too short"))
	good := filepath.Join(dir, "good.key")
	writeTestFile(t, good, []byte(strings.Repeat("k", 32)))
	junk := filepath.Join(dir, "junk.pem")
	writeTestFile(t, junk, []byte("junk"))
	missing := filepath.Join(dir, "missing")

	cases := []struct{ yaml, key string }{
		{"grpc:\n  tls: {key_file: " + key + "}\n", "grpc.tls.cert_file"},
		{"grpc:\n  tls: {cert_file: " + cert + "}\n", "grpc.tls.key_file"},
		{"grpc:\n  tls: {cert_file: " + missing + ", key_file: " + key + "}\n", "grpc.tls.cert_file"},
		{"grpc:\n  tls: {cert_file: " + cert + ", key_file: " + junk + "}\n", "grpc.tls.cert_file"},
		{"grpc:\n  tls: {cert_file: " + cert + ", key_file: " + key + ", client_ca_file: " + junk + "}\n", "grpc.tls.client_ca_file"},
		{"grpc:\n  tls: {cert_file: " + cert + ", key_file: " + key + ", ca_file: x}\n", "grpc.tls.ca_file"},
		{"http:\n  tls: {cert_file: " + cert + ", key_file: " + key + ", client_ca_file: " + missing + "}\n", "http.tls.client_ca_file"},
		{"jwt:\n  ca_file: " + junk + "\n", "jwt.ca_file"},
		{"pairwise:\n  keys: [{id: a, secret_file: " + good + "}]\n", "pairwise"},
		{introspectionYAML + "pairwise:\n  keys: []\n", "pairwise.keys"},
		{introspectionYAML + "pairwise:\n  keys: [{id: a, secret_file: " + short + "}]\n", "pairwise.keys[0].secret_file"},
		{introspectionYAML + "pairwise:\n  keys: [{id: a, secret_file: " + missing + "}]\n", "pairwise.keys[0].secret_file"},
		{introspectionYAML + "pairwise:\n  keys: [{secret_file: " + good + "}]\n", "pairwise.keys[0].id"},
		{introspectionYAML + "pairwise:\n  keys: [{id: a, secret_file: " + good + "}, {id: a, secret_file: " + good + "}]\n", "pairwise.keys[1].id"},
		{introspectionYAML + "pairwise:\n  keys: [{id: a, secret_file: " + good + "}]\n  sectors: {accounts: \"\"}\n", "pairwise.sectors"},
		{"fapi: {interaction_id: maybe}\n", "fapi.interaction_id"},
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
