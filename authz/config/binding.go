package config

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/phantom-authz/phantom-authz/authz/binding"
)

// DPoP configures the checking of DPoP proofs (RFC 9449).
type DPoP struct {
	// Algorithms are the proof signature algorithms accepted (asymmetric).
	Algorithms []string `yaml:"algorithms"`
	// IATWindow is how far a proof's iat may be from now, either way.
	IATWindow Duration `yaml:"iat_window"`
	// ReplayMaxEntries bounds the in-memory replay store.
	ReplayMaxEntries int `yaml:"replay_max_entries"`
	// Nonce configures server-provided nonces (RFC 9449 §9).
	Nonce DPoPNonce `yaml:"nonce"`
	// Origins are the API's external origins (https://api.example.com):
	// when set, a proof's htu must name one of them instead of the Host
	// the client sent.
	Origins []string `yaml:"origins"`
}

// DPoPNonce turns server nonces on: every proof must carry one.
type DPoPNonce struct {
	Enabled bool `yaml:"enabled"`
	// SecretFile holds the HMAC secret every replica shares (32 bytes or
	// more).
	SecretFile string `yaml:"secret_file"`
	// Lifetime is the longest a nonce is accepted.
	Lifetime Duration `yaml:"lifetime"`
	// Secret is the content of SecretFile (surrounding white space
	// trimmed), read by Validate.
	Secret []byte `yaml:"-" secret:"true"`
}

// Binding says where sender-constrained tokens are demanded.
type Binding struct {
	// RequireSenderConstrained demands a DPoP- or certificate-bound token on
	// every route (FAPI 2.0); otherwise routes demand it with Envoy's
	// context_extensions sender_constrained.
	RequireSenderConstrained bool `yaml:"require_sender_constrained"`
	// XFCC names the proxies trusted to tell the client certificate in
	// x-forwarded-client-cert.
	XFCC XFCC `yaml:"xfcc"`
}

// XFCC says which source peers of the CheckRequest may tell the client
// certificate in x-forwarded-client-cert (RFC 8705 behind a proxy that
// terminates TLS). Every list that is set must match; none set: the header
// is never read, and stripped.
type XFCC struct {
	// TrustedPrincipals are source principals, matched exactly.
	TrustedPrincipals []string `yaml:"trusted_principals"`
	// TrustedAddresses are source IP addresses or CIDR prefixes.
	TrustedAddresses []string `yaml:"trusted_addresses"`
}

// validate checks the xfcc section.
func (x *XFCC) validate() error {
	for i, p := range x.TrustedPrincipals {
		if strings.TrimSpace(p) == "" {
			return &Error{fmt.Sprintf("binding.xfcc.trusted_principals[%d]", i), "must not be empty"}
		}
	}
	for i, a := range x.TrustedAddresses {
		if _, err := binding.ParseAddressPrefix(a); err != nil {
			return &Error{fmt.Sprintf("binding.xfcc.trusted_addresses[%d]", i), err.Error()}
		}
	}
	return nil
}

// dpopAlgorithms are the algorithms dpop.algorithms may name.
var dpopAlgorithms = []string{"ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "EdDSA", "Ed25519"}

func defaultDPoP() DPoP {
	return DPoP{
		Algorithms:       []string{"ES256", "PS256", "EdDSA"},
		IATWindow:        Duration(60 * time.Second),
		ReplayMaxEntries: 1 << 19,
		Nonce:            DPoPNonce{Lifetime: Duration(5 * time.Minute)},
	}
}

// validate checks the dpop section and reads the nonce secret.
func (d *DPoP) validate() error {
	if len(d.Algorithms) == 0 {
		return &Error{"dpop.algorithms", "must name at least one algorithm"}
	}
	for _, a := range d.Algorithms {
		if !slices.Contains(dpopAlgorithms, a) {
			return &Error{"dpop.algorithms", fmt.Sprintf("%q is not an asymmetric algorithm (one of %s)", a, strings.Join(dpopAlgorithms, ", "))}
		}
	}
	if d.IATWindow < Duration(time.Second) || d.IATWindow > Duration(10*time.Minute) {
		return &Error{"dpop.iat_window", "must be between 1s and 10m"}
	}
	if d.ReplayMaxEntries < 1024 {
		return &Error{"dpop.replay_max_entries", "must be at least 1024"}
	}
	for i, o := range d.Origins {
		if err := binding.ValidateOrigin(o); err != nil {
			return &Error{fmt.Sprintf("dpop.origins[%d]", i), fmt.Sprintf("%q: %v", o, err)}
		}
	}
	n := &d.Nonce
	if n.Lifetime < Duration(2*time.Second) {
		return &Error{"dpop.nonce.lifetime", "must be at least 2s"}
	}
	if !n.Enabled {
		return nil
	}
	if n.SecretFile == "" {
		return &Error{"dpop.nonce.secret_file", "required when dpop.nonce.enabled (every replica must share the secret)"}
	}
	b, err := os.ReadFile(n.SecretFile)
	if err != nil {
		return &Error{"dpop.nonce.secret_file", err.Error()}
	}
	n.Secret = []byte(strings.TrimSpace(string(b)))
	if len(n.Secret) < 32 {
		return &Error{"dpop.nonce.secret_file", "the secret must be at least 32 bytes"}
	}
	return nil
}
