package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// TLS is a server's certificate, its key, and the CA of the client
// certificates it requires (optional). The files are re-read when they
// change.
type TLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// Pairwise replaces the sub of the JWT forwarded to chosen upstreams with a
// pairwise pseudonymous identifier.
type Pairwise struct {
	// Keys derive the identifiers: the first is in use; the others are
	// published too (pairwise_previous) while upstreams move off them.
	Keys []PairwiseKey `yaml:"keys"`
	// Sectors maps an API (context_extensions api) to its sector id.
	Sectors map[string]string `yaml:"sectors"`
}

// PairwiseKey is one pairwise secret and its id.
type PairwiseKey struct {
	ID         string `yaml:"id"`
	SecretFile string `yaml:"secret_file"`
	// Secret is the content of SecretFile (surrounding white space
	// trimmed), read by Validate.
	Secret []byte `yaml:"-" secret:"true"`
}

// MinPairwiseSecret is the shortest pairwise secret, in bytes.
const MinPairwiseSecret = 32

// FAPI holds FAPI 2.0 hygiene switches.
type FAPI struct {
	// InteractionID echoes, or generates, x-fapi-interaction-id.
	InteractionID bool `yaml:"interaction_id"`
}

// validateFAPI checks the TLS, CA bundle and pairwise settings.
func (c *Config) validateFAPI() error {
	if err := c.GRPC.TLS.validate("grpc.tls"); err != nil {
		return err
	}
	if err := c.HTTP.TLS.validate("http.tls"); err != nil {
		return err
	}
	if c.JWT.CAFile != "" {
		if err := caFile("jwt.ca_file", c.JWT.CAFile); err != nil {
			return err
		}
	}
	if c.Pairwise != nil {
		if !c.Credentials() {
			return &Error{"pairwise", "needs introspection or jwt.issuers: without tokens there is no subject to replace"}
		}
		if err := c.Pairwise.validate(); err != nil {
			return err
		}
	}
	return nil
}

func (t *TLS) validate(key string) error {
	if t == nil {
		return nil
	}
	if t.CertFile == "" {
		return &Error{key + ".cert_file", "required with " + key}
	}
	if t.KeyFile == "" {
		return &Error{key + ".key_file", "required with " + key}
	}
	if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
		return &Error{key + ".cert_file", fmt.Sprintf("%s with key_file %s: %v", t.CertFile, t.KeyFile, err)}
	}
	if t.ClientCAFile != "" {
		return caFile(key+".client_ca_file", t.ClientCAFile)
	}
	return nil
}

// caFile checks that a PEM CA bundle holds a certificate.
func caFile(key, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return &Error{key, err.Error()}
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return &Error{key, path + " holds no PEM certificate"}
	}
	return nil
}

func (p *Pairwise) validate() error {
	if len(p.Keys) == 0 {
		return &Error{"pairwise.keys", "must list at least one key"}
	}
	seen := map[string]bool{}
	for i := range p.Keys {
		k := &p.Keys[i]
		key := func(f string) string { return fmt.Sprintf("pairwise.keys[%d].%s", i, f) }
		if !keyID(k.ID) {
			return &Error{key("id"), "must be non-empty printable ASCII without quotes or backslashes"}
		}
		if seen[k.ID] {
			return &Error{key("id"), fmt.Sprintf("%q is used twice", k.ID)}
		}
		seen[k.ID] = true
		if k.SecretFile == "" {
			return &Error{key("secret_file"), "must not be empty"}
		}
		b, err := os.ReadFile(k.SecretFile)
		if err != nil {
			return &Error{key("secret_file"), err.Error()}
		}
		k.Secret = bytes.TrimSpace(b)
		if len(k.Secret) < MinPairwiseSecret {
			return &Error{key("secret_file"), fmt.Sprintf("the secret has %d bytes, at least %d are needed (e.g. openssl rand -base64 48)", len(k.Secret), MinPairwiseSecret)}
		}
	}
	for api, sector := range p.Sectors {
		if api == "" || sector == "" {
			return &Error{"pairwise.sectors", fmt.Sprintf("%q: %q: API and sector must both be non-empty", api, sector)}
		}
	}
	return nil
}

// keyID reports whether s can name a key in a JWT claim and a log line.
func keyID(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
