package binding

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
)

// MaxProofBytes bounds the DPoP header: an RSA-4096 proof is under 2 KiB.
const MaxProofBytes = 8 << 10

// minRSABits is the smallest RSA modulus accepted for a proof key.
const minRSABits = 2048

// algorithm is what a JWS algorithm demands of the key that signs with it.
type algorithm struct {
	kty string // the JWK kty
	crv string // EC and OKP: the curve
}

// algorithms are every asymmetric JWS algorithm a proof may use; Config
// picks the allowed ones among them.
var algorithms = map[string]algorithm{
	"ES256":   {kty: "EC", crv: "P-256"},
	"ES384":   {kty: "EC", crv: "P-384"},
	"ES512":   {kty: "EC", crv: "P-521"},
	"PS256":   {kty: "RSA"},
	"PS384":   {kty: "RSA"},
	"PS512":   {kty: "RSA"},
	"RS256":   {kty: "RSA"},
	"RS384":   {kty: "RSA"},
	"RS512":   {kty: "RSA"},
	"EdDSA":   {kty: "OKP", crv: "Ed25519"},
	"Ed25519": {kty: "OKP", crv: "Ed25519"},
}

func algorithmNames() []string {
	names := make([]string, 0, len(algorithms))
	for n := range algorithms {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// proofHeader is the JOSE header of a DPoP proof.
type proofHeader struct {
	Typ string          `json:"typ"`
	Alg string          `json:"alg"`
	JWK json.RawMessage `json:"jwk"`
}

// privateMembers are the JWK members of private and symmetric keys (RFC 7518
// §6.2.2, §6.3.2, §6.4; RFC 8037 §2). encoding/json matches names without
// regard to case, so "D" is refused as well as "d": stricter, never looser.
type privateMembers struct {
	D  json.RawMessage `json:"d"`
	P  json.RawMessage `json:"p"`
	Q  json.RawMessage `json:"q"`
	DP json.RawMessage `json:"dp"`
	DQ json.RawMessage `json:"dq"`
	QI json.RawMessage `json:"qi"`
	K  json.RawMessage `json:"k"`
}

func (m *privateMembers) any() bool {
	return m.D != nil || m.P != nil || m.Q != nil || m.DP != nil || m.DQ != nil || m.QI != nil || m.K != nil
}

// proofClaims are the claims of a DPoP proof (RFC 9449 §4.2).
type proofClaims struct {
	JTI   string   `json:"jti"`
	HTM   string   `json:"htm"`
	HTU   string   `json:"htu"`
	IAT   *float64 `json:"iat"`
	ATH   string   `json:"ath"`
	Nonce *string  `json:"nonce"`
}

// maxJTIBytes bounds the jti: it is hashed, but a proof is not a place for a
// megabyte of identifier.
const maxJTIBytes = 256

func proofError(reason string) *Error {
	return &Error{Err: ErrInvalidProof, DPoP: true, Reason: reason}
}

// The proof failures, one per check of RFC 9449 §4.3.
var (
	errProofSize      = proofError("the DPoP proof is larger than 8192 bytes")
	errProofSyntax    = proofError("the DPoP proof is not a compact JWS")
	errProofHeader    = proofError("the DPoP proof header is not valid JSON")
	errProofTyp       = proofError("the DPoP proof typ is not dpop+jwt")
	errProofAlg       = proofError("the DPoP proof alg is not one of the algorithms accepted")
	errProofNoJWK     = proofError("the DPoP proof header carries no jwk")
	errProofPrivate   = proofError("the DPoP proof jwk holds private or symmetric key material")
	errProofJWK       = proofError("the DPoP proof jwk is not a valid public key")
	errProofKeyAlg    = proofError("the DPoP proof jwk does not match its alg")
	errProofRSASize   = proofError("the DPoP proof RSA key is shorter than 2048 bits")
	errProofSignature = proofError("the DPoP proof signature does not verify with its jwk")
	errProofClaims    = proofError("the DPoP proof claims are not valid JSON")
	errProofJTI       = proofError("the DPoP proof has no valid jti")
	errProofHTM       = proofError("the DPoP proof htm does not match the request method")
	errProofHTU       = proofError("the DPoP proof htu does not match the request URI")
	errProofIAT       = proofError("the DPoP proof has no iat")
	errProofIATOld    = proofError("the DPoP proof iat is too far in the past")
	errProofIATNew    = proofError("the DPoP proof iat is in the future")
	errProofNoATH     = proofError("the DPoP proof has no ath")
	errProofATH       = proofError("the DPoP proof ath does not match the access token")
	errProofReplay    = proofError("the DPoP proof has already been used")

	errKeyMismatch = &Error{Err: ErrInvalidToken, DPoP: true,
		Reason: "the access token is not bound to the DPoP proof key"}
)

// checkProof verifies in.Proof against the request and the token's jkt, in
// the order of RFC 9449 §4.3, and records its jti last so that only proofs
// passing every other check take room in the replay store.
func (b *Binder) checkProof(ctx context.Context, in Input, jkt string) (Result, error) {
	proof := in.Proof
	if len(proof) > MaxProofBytes {
		return Result{}, errProofSize
	}
	// Go's base64 decoders skip CR and LF, even in strict mode: without
	// this check a proof with line breaks inside would verify.
	for i := 0; i < len(proof); i++ {
		if !compactChar[proof[i]] {
			return Result{}, errProofSyntax
		}
	}
	dot1 := strings.IndexByte(proof, '.')
	dot2 := strings.LastIndexByte(proof, '.')
	if dot1 <= 0 || dot2 == dot1 || dot2 == len(proof)-1 || strings.IndexByte(proof[dot1+1:dot2], '.') >= 0 {
		return Result{}, errProofSyntax
	}
	enc := base64.RawURLEncoding
	encHeader := proof[:dot1]
	hdr, cached := b.headers.get(encHeader)
	if !cached {
		var perr *Error
		if hdr, perr = b.parseHeader(encHeader); perr != nil {
			return Result{}, perr
		}
	}
	sig, err := enc.DecodeString(proof[dot2+1:])
	if err != nil {
		return Result{}, errProofSyntax
	}
	if jwsbb.Verify(hdr.pub, hdr.alg, []byte(proof[:dot2]), sig) != nil {
		return Result{}, errProofSignature
	}

	payload, err := enc.DecodeString(proof[dot1+1 : dot2])
	if err != nil {
		return Result{}, errProofSyntax
	}
	var c proofClaims
	if json.Unmarshal(payload, &c) != nil {
		return Result{}, errProofClaims
	}
	if c.JTI == "" || len(c.JTI) > maxJTIBytes {
		return Result{}, errProofJTI
	}
	if c.HTM != in.Method {
		return Result{}, errProofHTM
	}
	if !b.htuMatches(c.HTU, &in) {
		return Result{}, errProofHTU
	}
	now := b.now()
	if c.IAT == nil || math.IsNaN(*c.IAT) {
		return Result{}, errProofIAT
	}
	nowSec, window := float64(now.UnixNano())/1e9, b.window.Seconds()
	switch {
	case *c.IAT < nowSec-window:
		return Result{}, errProofIATOld
	case *c.IAT > nowSec+window:
		return Result{}, errProofIATNew
	}
	// Within the window, so the conversion cannot overflow. The jti is
	// remembered as long as a proof with this iat is accepted, and a
	// second more for the fraction iat may carry.
	until := time.Unix(int64(*c.IAT), 0).Add(b.window + time.Second)
	if c.ATH == "" {
		return Result{}, errProofNoATH
	}
	sum := sha256.Sum256([]byte(in.Token))
	var ath [43]byte
	enc.Encode(ath[:], sum[:])
	if subtle.ConstantTimeCompare(ath[:], []byte(c.ATH)) != 1 {
		return Result{}, errProofATH
	}
	thumb := hdr.thumb
	if subtle.ConstantTimeCompare([]byte(thumb), []byte(jkt)) != 1 {
		return Result{}, errKeyMismatch
	}
	if !cached {
		b.headers.put(encHeader, hdr)
	}

	var res Result
	if b.nonces != nil {
		fresh, ok := false, false
		if c.Nonce != nil {
			fresh, ok = b.nonces.check(*c.Nonce, now, thumb)
		}
		if !ok {
			reason := "this API requires a server nonce in the DPoP proof; use the one in DPoP-Nonce"
			if c.Nonce != nil {
				reason = "the DPoP proof nonce is invalid or expired; use the one in DPoP-Nonce"
			}
			return Result{}, &Error{Err: ErrUseNonce, DPoP: true, Reason: reason, Nonce: b.nonces.issue(now, thumb)}
		}
		if !fresh {
			res.Nonce = b.nonces.issue(now, thumb)
		}
	}

	used, err := b.replay.Use(ctx, replayKey(thumb, c.JTI), until)
	switch {
	case err != nil:
		return Result{}, &Error{Err: ErrUnavailable, Reason: "the DPoP replay check is unavailable; try again later", cause: err}
	case !used:
		return Result{}, errProofReplay
	}
	return res, nil
}

// compactChar holds the bytes of a compact JWS: the base64url alphabet and
// the dots between segments.
var compactChar = func() (t [256]bool) {
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_." {
		t[c] = true
	}
	return t
}()

// parseHeader decodes and checks the proof's protected header: typ, alg
// and jwk.
func (b *Binder) parseHeader(encoded string) (*parsedHeader, *Error) {
	js, err := base64.RawURLEncoding.DecodeString(encoded)
	if err != nil {
		return nil, errProofSyntax
	}
	var hdr proofHeader
	if json.Unmarshal(js, &hdr) != nil {
		return nil, errProofHeader
	}
	if hdr.Typ != "dpop+jwt" {
		return nil, errProofTyp
	}
	alg, ok := b.algs[hdr.Alg]
	if !ok {
		return nil, errProofAlg
	}
	pub, thumb, perr := publicKey(hdr.JWK, alg)
	if perr != nil {
		return nil, perr
	}
	return &parsedHeader{alg: hdr.Alg, pub: pub, thumb: thumb}, nil
}

// publicKey reads the proof's jwk: a public key of the type alg demands,
// never private or symmetric material, and its RFC 7638 thumbprint
// (base64url of the SHA-256).
func publicKey(raw json.RawMessage, alg algorithm) (crypto.PublicKey, string, *Error) {
	if len(raw) == 0 || raw[0] != '{' {
		return nil, "", errProofNoJWK
	}
	var priv privateMembers
	if json.Unmarshal(raw, &priv) != nil {
		return nil, "", errProofJWK
	}
	if priv.any() {
		return nil, "", errProofPrivate
	}
	key, err := jwk.ParseKey(raw)
	if err != nil {
		return nil, "", errProofJWK
	}
	if key.KeyType().String() != alg.kty {
		return nil, "", errProofKeyAlg
	}
	var pub any // a crypto.PublicKey destination finds no RSA exporter
	if err := jwk.Export(key, &pub); err != nil {
		return nil, "", errProofJWK
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve.Params().Name != alg.crv {
			return nil, "", errProofKeyAlg
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return nil, "", errProofRSASize
		}
	case ed25519.PublicKey:
		if alg.crv != "Ed25519" {
			return nil, "", errProofKeyAlg
		}
	default:
		// A private key type here would mean a member slipped past the
		// check above; anything else is a type this stage does not verify.
		return nil, "", errProofJWK
	}
	tp, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, "", errProofJWK
	}
	return pub, base64.RawURLEncoding.EncodeToString(tp), nil
}

// replayKey is the replay store key of a proof: a hash of its key's
// thumbprint and its jti, so clients cannot collide with each other's
// identifiers and the store never holds what a client chose.
func replayKey(thumb, jti string) string {
	h := sha256.New()
	h.Write([]byte(thumb))
	h.Write([]byte{0})
	h.Write([]byte(jti))
	var sum [sha256.Size]byte
	return string(h.Sum(sum[:0]))
}
