package mint

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

// minRSABits is the smallest RSA modulus accepted (NIST SP 800-131A, RFC 7518 §3.3).
const minRSABits = 2048

// signingKey is one private key with what its signatures and its JWK need.
type signingKey struct {
	file string
	kid  string
	alg  jwa.SignatureAlgorithm
	priv crypto.Signer
	pub  jwk.Key // public JWK with kid, alg and use set
	// sigSize is the length of a JWS signature by the key (RFC 7518 §3.4:
	// ECDSA signatures are R‖S, each the size of the curve order).
	sigSize int
}

// loadKey reads the one private key of a PEM file.
func loadKey(file string) (*signingKey, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		// The path is named once, by fileError; drop the copy in PathError.
		if pe, ok := errors.AsType[*fs.PathError](err); ok {
			err = pe.Err
		}
		return nil, fileError(file, err)
	}
	priv, err := parsePEM(data)
	if err != nil {
		return nil, fileError(file, err)
	}
	k, err := newSigningKey(priv)
	if err != nil {
		return nil, fileError(file, err)
	}
	k.file = file
	return k, nil
}

func fileError(file string, err error) error {
	return fmt.Errorf("mint: signing_key_file %q: %w", file, err)
}

// parsePEM finds the one private key among the PEM blocks of data. Other
// blocks (a certificate bundled with the key, EC PARAMETERS) are skipped.
func parsePEM(data []byte) (crypto.Signer, error) {
	var key any
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var err error
		var k any
		switch block.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted private keys are not supported")
		default:
			continue
		}
		if _, ok := block.Headers["Proc-Type"]; ok {
			return nil, errors.New("encrypted private keys are not supported")
		}
		if err != nil {
			return nil, fmt.Errorf("%s block does not parse: %w", block.Type, err)
		}
		if key != nil {
			return nil, errors.New("holds more than one private key")
		}
		key = k
	}
	if key == nil {
		return nil, errors.New("no PEM private key (PKCS#8, SEC 1 or PKCS#1) found")
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	return signer, nil
}

// newSigningKey picks the algorithm for priv and builds its public JWK, with
// the RFC 7638 thumbprint as kid.
func newSigningKey(priv crypto.Signer) (*signingKey, error) {
	var alg jwa.SignatureAlgorithm
	var sigSize int
	switch k := priv.(type) {
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			alg = jwa.ES256()
		case elliptic.P384():
			alg = jwa.ES384()
		case elliptic.P521():
			alg = jwa.ES512()
		default:
			return nil, fmt.Errorf("unsupported EC curve %s (use P-256)", k.Curve.Params().Name)
		}
		sigSize = 2 * ((k.Curve.Params().BitSize + 7) / 8)
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits is too short (at least %d)", bits, minRSABits)
		}
		alg = jwa.PS256()
		sigSize = k.Size()
	case ed25519.PrivateKey:
		alg = jwa.EdDSA()
		sigSize = ed25519.SignatureSize
	default:
		return nil, fmt.Errorf("unsupported key type %T (use EC P-256, RSA or Ed25519)", priv)
	}

	pub, err := jwk.PublicKeyOf(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("thumbprint: %w", err)
	}
	k := &signingKey{kid: base64.RawURLEncoding.EncodeToString(tp), alg: alg, priv: priv, pub: pub, sigSize: sigSize}
	if err := k.setJWK(); err != nil {
		return nil, err
	}
	return k, nil
}

// setJWK writes kid, alg and use into the public JWK; called again when a
// kid is configured.
func (k *signingKey) setJWK() error {
	for name, v := range map[string]any{jwk.KeyIDKey: k.kid, jwk.AlgorithmKey: k.alg, jwk.KeyUsageKey: jwk.ForSignature} {
		if err := k.pub.Set(name, v); err != nil {
			return fmt.Errorf("jwk %s: %w", name, err)
		}
	}
	return nil
}

// generateKey creates an ES256 key and writes it, PKCS#8, to a new file only
// the process owner can read, so a local run can be restarted with the same
// key by naming the file.
func generateKey() (*signingKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("mint: generate: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("mint: generate: %w", err)
	}
	f, err := os.CreateTemp("", "phantom-authz-signing-key-*.pem")
	if err != nil {
		return nil, fmt.Errorf("mint: generate: %w", err)
	}
	name := f.Name()
	err = f.Chmod(0o600) // CreateTemp's mode already; say it where it matters.
	if err == nil {
		err = pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(name)
		return nil, fmt.Errorf("mint: generate: %w", err)
	}
	k, err := newSigningKey(priv)
	if err != nil {
		return nil, fmt.Errorf("mint: generate: %w", err)
	}
	k.file = name
	return k, nil
}
