package config

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// PolicyBundle is an OPA bundle server the policies come from instead of
// policy.dir (policy.bundle; off while url is empty).
type PolicyBundle struct {
	// URL is the bundle's full URL (.tar.gz).
	URL string `yaml:"url"`
	// PollMin and PollMax bound the random delay between polls (whole
	// seconds: OPA's downloader counts in seconds).
	PollMin Duration `yaml:"poll_min"`
	PollMax Duration `yaml:"poll_max"`
	// Timeout bounds one download.
	Timeout Duration `yaml:"timeout"`
	// CAFile replaces the system roots for the server's certificate.
	CAFile string `yaml:"ca_file"`
	// TokenFile holds the bearer credential for the server (re-read for
	// every download).
	TokenFile string `yaml:"token_file"`
	// AllowInsecureHTTP permits an http:// URL (local runs only).
	AllowInsecureHTTP bool `yaml:"allow_insecure_http"`
	// PersistDir keeps the last activated bundle, served when the server
	// cannot be reached at start.
	PersistDir string `yaml:"persist_dir"`
	// Verification demands bundles signed with this key (OPA's
	// .signatures.json).
	Verification *BundleVerification `yaml:"verification"`
}

// BundleVerification is the key bundles are signed with.
type BundleVerification struct {
	PublicKeyFile string `yaml:"public_key_file"`
	KeyID         string `yaml:"key_id"`
	Algorithm     string `yaml:"algorithm"`
	Scope         string `yaml:"scope"`
}

// Defaults of policy.bundle.
const (
	defaultBundlePollMin = 10 * time.Second
	defaultBundlePollMax = 30 * time.Second
	defaultBundleTimeout = 10 * time.Second
)

// bundleAlgorithms are the signature algorithms accepted for bundles:
// OPA's, without HMAC (a shared secret is not a public key).
var bundleAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}

// validate fills in defaults and checks policy.bundle.
func (b *PolicyBundle) validate() error {
	if b.URL == "" {
		if b.CAFile != "" || b.TokenFile != "" || b.PersistDir != "" || b.Verification != nil || b.AllowInsecureHTTP ||
			b.PollMin != 0 || b.PollMax != 0 || b.Timeout != 0 {
			return &Error{"policy.bundle.url", "required when other policy.bundle keys are set"}
		}
		return nil
	}
	if err := endpoint("policy.bundle.url", b.URL, b.AllowInsecureHTTP, true); err != nil {
		return err
	}
	if b.PollMin == 0 {
		b.PollMin = Duration(defaultBundlePollMin)
	}
	if b.PollMax == 0 {
		b.PollMax = Duration(defaultBundlePollMax)
	}
	if b.Timeout == 0 {
		b.Timeout = Duration(defaultBundleTimeout)
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"policy.bundle.poll_min", b.PollMin}, {"policy.bundle.poll_max", b.PollMax}} {
		if d.v < Duration(time.Second) || d.v.D()%time.Second != 0 {
			return &Error{d.key, fmt.Sprintf("%s must be a whole number of seconds, at least 1s", d.v.D())}
		}
	}
	if b.PollMin > b.PollMax {
		return &Error{"policy.bundle.poll_min", fmt.Sprintf("%s is more than poll_max (%s)", b.PollMin.D(), b.PollMax.D())}
	}
	if b.Timeout < 0 {
		return &Error{"policy.bundle.timeout", "must be positive"}
	}
	if b.CAFile != "" {
		pemBytes, err := os.ReadFile(b.CAFile)
		if err != nil {
			return &Error{"policy.bundle.ca_file", err.Error()}
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pemBytes) {
			return &Error{"policy.bundle.ca_file", "no PEM certificate in " + b.CAFile}
		}
	}
	if b.TokenFile != "" {
		tok, err := os.ReadFile(b.TokenFile)
		if err != nil {
			return &Error{"policy.bundle.token_file", err.Error()}
		}
		if strings.TrimSpace(string(tok)) == "" {
			return &Error{"policy.bundle.token_file", "file is empty"}
		}
	}
	if b.PersistDir != "" {
		if info, err := os.Stat(b.PersistDir); err == nil && !info.IsDir() {
			return &Error{"policy.bundle.persist_dir", b.PersistDir + " is not a directory"}
		}
	}
	if b.Verification != nil {
		return b.Verification.validate()
	}
	return nil
}

func (v *BundleVerification) validate() error {
	if v.Algorithm == "" {
		v.Algorithm = "RS256"
	}
	if !oneOf(v.Algorithm, bundleAlgorithms...) {
		return &Error{"policy.bundle.verification.algorithm", fmt.Sprintf("%q is not one of %s", v.Algorithm, strings.Join(bundleAlgorithms, ", "))}
	}
	const key = "policy.bundle.verification.public_key_file"
	if v.PublicKeyFile == "" {
		return &Error{key, "required with verification"}
	}
	b, err := os.ReadFile(v.PublicKeyFile)
	if err != nil {
		return &Error{key, err.Error()}
	}
	pub, err := publicKey(b)
	if err != nil {
		return &Error{key, err.Error()}
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if v.Algorithm[0] == 'E' {
			return &Error{key, "an RSA key cannot verify " + v.Algorithm}
		}
		if k.N.BitLen() < 2048 {
			return &Error{key, fmt.Sprintf("RSA key of %d bits; at least 2048 required", k.N.BitLen())}
		}
	case *ecdsa.PublicKey:
		if v.Algorithm[0] != 'E' {
			return &Error{key, "an EC key cannot verify " + v.Algorithm}
		}
	default:
		return &Error{key, fmt.Sprintf("%T keys are not supported; use RSA or EC", pub)}
	}
	return nil
}

// publicKey reads the first PEM block: a public key or a certificate.
func publicKey(b []byte) (any, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	switch block.Type {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		return c.PublicKey, nil
	}
	return nil, fmt.Errorf("PEM block %q is not a public key or certificate (never give a private key here)", block.Type)
}
