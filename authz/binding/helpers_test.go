package binding_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
)

// keys are generated once for the whole package: RSA generation is slow.
var keys = sync.OnceValue(func() (k struct {
	es256, es256b, p384 *ecdsa.PrivateKey
	rsa, rsa1024        *rsa.PrivateKey
	ed                  ed25519.PrivateKey
}) {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	var err error
	k.es256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.es256b, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.p384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(err)
	k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsa1024, err = rsa.GenerateKey(rand.Reader, 1024) //nolint:gosec // the test of the size check
	must(err)
	_, k.ed, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	return k
})

// jwkOf is the JWK of key (public or private) as a JSON object.
func jwkOf(t testing.TB, key any) map[string]any {
	t.Helper()
	k, err := jwk.Import(key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// thumbprint is the RFC 7638 SHA-256 thumbprint of the public key, base64url.
func thumbprint(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	k, err := jwk.Import(pub)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

func encode(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func ath(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func newJTI() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// proof is a DPoP proof under construction: a header and claims that a test
// changes before signing with key (a private key, or HMAC bytes).
type proof struct {
	header map[string]any
	claims map[string]any
	key    any
	alg    string // the algorithm to sign with; "none" leaves a junk signature
}

// newProof is a valid ES256 proof for GET https://api.example.com/v1/accounts
// with tok, issued at now.
func newProof(t testing.TB, tok string, now time.Time) *proof {
	t.Helper()
	k := keys().es256
	return &proof{
		header: map[string]any{"typ": "dpop+jwt", "alg": "ES256", "jwk": jwkOf(t, &k.PublicKey)},
		claims: map[string]any{
			"jti": newJTI(), "htm": "GET", "htu": "https://api.example.com/v1/accounts",
			"iat": now.Unix(), "ath": ath(tok),
		},
		key: k,
		alg: "ES256",
	}
}

// signWith switches the proof to key and alg, its jwk to key's public half.
func (p *proof) signWith(t testing.TB, key crypto.Signer, alg string) *proof {
	p.key, p.alg = key, alg
	p.header["alg"] = alg
	p.header["jwk"] = jwkOf(t, key.Public())
	return p
}

func (p *proof) String() string { return p.sign(nil) }

func (p *proof) sign(t testing.TB) string {
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(p.header)
	c, _ := json.Marshal(p.claims)
	input := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	if p.alg == "none" {
		return input + ".AAAA"
	}
	sig, err := jwsbb.Sign(p.key, p.alg, []byte(input), rand.Reader)
	if err != nil {
		if t != nil {
			t.Fatal(err)
		}
		panic(err)
	}
	return input + "." + enc.EncodeToString(sig)
}

// certificate is a self-signed client certificate: its URL-encoded PEM as
// Envoy forwards it, and its x5t#S256.
func certificate(t testing.TB, cn string) (encoded, x5t string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return envoyEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))),
		base64.RawURLEncoding.EncodeToString(sum[:])
}

// envoyEscape URL-encodes a PEM as Envoy does for include_peer_certificate.
func envoyEscape(s string) string {
	return strings.NewReplacer("\n", "%0A", " ", "%20", "+", "%2B", "/", "%2F", "=", "%3D").Replace(s)
}
