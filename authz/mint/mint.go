// Package mint signs the JWT forwarded upstream when the OAuth server gave
// none (RFC 9068 shape, typ at+jwt), and publishes the JWK Set the upstream
// verifies it with.
package mint

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/phantom-authz/phantom-authz/authz/token"
)

// DefaultMaxLifetime bounds a minted JWT's lifetime when Config.MaxLifetime is zero.
const DefaultMaxLifetime = 5 * time.Minute

// Config configures a Minter. Issuer, Audience and a key are required.
type Config struct {
	// Issuer is the iss of minted tokens.
	Issuer string
	// Audience is the aud of minted tokens: at least one.
	Audience []string
	// KeyFiles are PEM private keys (PKCS#8, SEC 1 or PKCS#1): EC P-256 signs
	// ES256 (P-384 ES384, P-521 ES512), RSA of at least 2048 bits PS256,
	// Ed25519 EdDSA. The first signs; all are published, so a key can be
	// rotated in by listing it second, then first, then dropping the old.
	KeyFiles []string
	// KeyIDs optionally name the keys of KeyFiles, by position; a key without
	// one (or "") gets its RFC 7638 thumbprint, base64url.
	KeyIDs []string
	// Generate, when KeyFiles is empty, creates an ES256 key in a new file
	// (mode 0600) and logs its path: for local runs. Ignored with KeyFiles.
	Generate bool
	// MaxLifetime caps a minted JWT's exp at now+MaxLifetime; default 5m.
	MaxLifetime time.Duration
	// CopyClaims are claims copied from the introspection answer into the
	// JWT when present (e.g. "acr", "auth_time", "amr"). cnf is always
	// copied. The claims the minter sets itself cannot be listed.
	CopyClaims []string
	// PairwiseKeys derive pairwise pseudonymous subjects for MintForSector:
	// the first derives, all are published in pairwise_previous. None turns
	// MintForSector off.
	PairwiseKeys []PairwiseKey
	// Logger receives the generated key's path; default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// reserved are the claims Mint sets itself; copying them would let the
// introspection answer override the minter (an upstream audience, a longer exp).
var reserved = map[string]bool{
	jwt.IssuerKey: true, jwt.SubjectKey: true, jwt.AudienceKey: true,
	jwt.ExpirationKey: true, jwt.IssuedAtKey: true, jwt.NotBeforeKey: true,
	jwt.JwtIDKey: true, "client_id": true, "scope": true,
	ClaimPairwiseKID: true, ClaimPairwisePrevious: true,
}

// Minter signs upstream JWTs. It is safe for concurrent use.
type Minter struct {
	issuer      string
	audience    []string
	maxLifetime time.Duration
	copyClaims  []string
	now         func() time.Time
	pairwise    *pairwise // nil: no pairwise keys

	signer *signingKey
	// generated is the file of a key generated for this run, removed by Close.
	generated string
	// prefix is the encoded protected header and its ".", the same for
	// every JWT; sigLen the encoded signature's length.
	prefix []byte
	sigLen int
	jwks   []byte
}

// New checks cfg, loads the keys and precomputes the JWK Set.
func New(cfg Config) (*Minter, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("mint: issuer: must not be empty")
	}
	if len(cfg.Audience) == 0 {
		return nil, errors.New("mint: audience: must name at least one audience")
	}
	for _, a := range cfg.Audience {
		if a == "" {
			return nil, errors.New("mint: audience: an audience is empty")
		}
	}
	switch {
	case cfg.MaxLifetime < 0:
		return nil, errors.New("mint: max_lifetime: must be positive")
	case cfg.MaxLifetime == 0:
		cfg.MaxLifetime = DefaultMaxLifetime
	}
	for _, c := range cfg.CopyClaims {
		if c == "" || reserved[c] {
			return nil, fmt.Errorf("mint: copy_claims: %q is set by the minter itself", c)
		}
	}
	if len(cfg.KeyIDs) > len(cfg.KeyFiles) {
		return nil, errors.New("mint: key_ids: more key IDs than signing_key_files")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}

	var pw *pairwise
	if len(cfg.PairwiseKeys) > 0 {
		var err error
		if pw, err = newPairwise(cfg.PairwiseKeys); err != nil {
			return nil, err
		}
	}
	keys, err := loadKeys(cfg)
	if err != nil {
		return nil, err
	}
	set := jwk.NewSet()
	for _, k := range keys {
		if err := set.AddKey(k.pub); err != nil {
			return nil, fmt.Errorf("mint: jwks: %w", err)
		}
	}
	jwks, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("mint: jwks: %w", err)
	}
	prefix, err := protectedHeader(keys[0])
	if err != nil {
		return nil, err
	}
	return &Minter{
		issuer:      cfg.Issuer,
		audience:    append([]string(nil), cfg.Audience...),
		maxLifetime: cfg.MaxLifetime,
		copyClaims:  withConfirmation(cfg.CopyClaims),
		now:         cfg.Now,
		pairwise:    pw,
		signer:      keys[0],
		prefix:      prefix,
		sigLen:      base64.RawURLEncoding.EncodedLen(keys[0].sigSize),
		jwks:        jwks,
		generated:   generatedFile(cfg, keys[0]),
	}, nil
}

// generatedFile is the path of k when it was generated for this run.
func generatedFile(cfg Config, k *signingKey) string {
	if len(cfg.KeyFiles) == 0 {
		return k.file
	}
	return ""
}

// protectedHeader encodes the RFC 9068 header of k's JWTs, with the "."
// that follows it.
func protectedHeader(k *signingKey) ([]byte, error) {
	h := jws.NewHeaders()
	for name, v := range map[string]any{jws.AlgorithmKey: k.alg, jws.KeyIDKey: k.kid, jws.TypeKey: "at+jwt"} {
		if err := h.Set(name, v); err != nil {
			return nil, fmt.Errorf("mint: header %s: %w", name, err)
		}
	}
	js, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("mint: header: %w", err)
	}
	return append(base64.RawURLEncoding.AppendEncode(nil, js), '.'), nil
}

// loadKeys reads KeyFiles (or generates a key) and gives each its kid.
func loadKeys(cfg Config) ([]*signingKey, error) {
	if len(cfg.KeyFiles) == 0 {
		if !cfg.Generate {
			return nil, errors.New("mint: signing_key_file: none given (name a PEM private key, or generate one for a local run)")
		}
		k, err := generateKey()
		if err != nil {
			return nil, err
		}
		cfg.Logger.Info("mint: generated a signing key for this run (removed on exit); set mint.signing_key_file to keep one across restarts",
			slog.String("path", k.file), slog.String("kid", k.kid), slog.String("alg", k.alg.String()))
		return []*signingKey{k}, nil
	}

	keys := make([]*signingKey, 0, len(cfg.KeyFiles))
	byKID := make(map[string]string, len(cfg.KeyFiles))
	for i, file := range cfg.KeyFiles {
		k, err := loadKey(file)
		if err != nil {
			return nil, err
		}
		if i < len(cfg.KeyIDs) && cfg.KeyIDs[i] != "" {
			if !validKID(cfg.KeyIDs[i]) {
				return nil, fileError(file, fmt.Errorf("key ID %q must be printable ASCII without quotes or backslashes", cfg.KeyIDs[i]))
			}
			k.kid = cfg.KeyIDs[i]
			if err := k.setJWK(); err != nil {
				return nil, fileError(file, err)
			}
		}
		// Verifiers pick the key by kid: two keys under one kid would make
		// half the tokens fail, and the same key twice is a config mistake.
		if other, dup := byKID[k.kid]; dup {
			return nil, fileError(file, fmt.Errorf("key ID %q is already used by %q (the same key twice?)", k.kid, other))
		}
		byKID[k.kid] = file
		keys = append(keys, k)
	}
	return keys, nil
}

func validKID(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// Mint signs the upstream JWT for tok and sets tok.JWT and tok.JWTExpiry.
// Its exp is the token's, capped at now+MaxLifetime; an inactive or expired
// token is refused with an error wrapping token.ErrInactive.
func (m *Minter) Mint(tok *token.Token) error {
	signed, exp, err := m.sign(tok, nil, nil)
	if err != nil {
		return err
	}
	tok.JWT, tok.JWTExpiry, tok.Minted = signed, exp, true
	return nil
}

// sign signs the upstream JWT of tok and returns it with its expiry. up,
// when not nil, overrides the audience, the copied claims and narrows the
// scope (see MintUpstream). subject, when not nil, turns the token's
// subject into the JWT's sub and may add claims.
func (m *Minter) sign(tok *token.Token, up *Upstream, subject func(sub string, claims map[string]any) string) (string, time.Time, error) {
	if tok == nil || !tok.Active {
		return "", time.Time{}, fmt.Errorf("mint: %w", token.ErrInactive)
	}
	now := m.now()
	if !tok.Expiry.IsZero() && !tok.Expiry.After(now) {
		return "", time.Time{}, fmt.Errorf("mint: the token has expired: %w", token.ErrInactive)
	}
	exp := now.Add(m.maxLifetime)
	if !tok.Expiry.IsZero() && tok.Expiry.Before(exp) {
		exp = tok.Expiry
	}
	// NumericDate has whole seconds; round exp down so the JWT never
	// outlives the token, and refuse one that would be dead on arrival.
	expSec, nowSec := exp.Unix(), now.Unix()
	if expSec <= nowSec {
		return "", time.Time{}, fmt.Errorf("mint: the token expires within a second: %w", token.ErrInactive)
	}
	sub := tok.Subject
	if sub == "" {
		// A client-credentials token acts for the client itself.
		sub = tok.ClientID
	}
	if sub == "" {
		return "", time.Time{}, errors.New("mint: the token has neither sub nor client_id")
	}

	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", time.Time{}, fmt.Errorf("mint: jti: %w", err)
	}

	copyClaims, audience, scopes := m.copyClaims, m.audience, tok.Scopes
	if up != nil {
		if up.CopyClaims != nil {
			copyClaims = withConfirmation(up.CopyClaims)
		}
		if len(up.Audience) > 0 {
			audience = up.Audience
		}
		if up.Scopes != nil {
			scopes = narrow(tok.Scopes, up.Scopes)
		}
	}
	var from map[string]any
	if len(copyClaims) > 0 {
		var err error
		if from, err = tok.ClaimMap(); err != nil {
			return "", time.Time{}, fmt.Errorf("mint: %w", err)
		}
	}
	claims := make(map[string]any, 8+len(copyClaims))
	for _, name := range copyClaims {
		if v, ok := from[name]; ok && v != nil {
			claims[name] = v
		}
	}
	if subject != nil {
		sub = subject(sub, claims)
	}
	claims[jwt.IssuerKey] = m.issuer
	claims[jwt.SubjectKey] = sub
	claims[jwt.AudienceKey] = audience
	claims[jwt.ExpirationKey] = expSec
	claims[jwt.IssuedAtKey] = nowSec
	claims[jwt.JwtIDKey] = base64.RawURLEncoding.EncodeToString(jti[:])
	if tok.ClientID != "" {
		claims["client_id"] = tok.ClientID
	}
	if len(scopes) > 0 {
		claims["scope"] = strings.Join(scopes, " ")
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("mint: claims: %w", err)
	}

	// jwx's building blocks, as its own jwt.Sign fast path uses them: that
	// path hard-codes typ JWT, and the general one clones and re-encodes the
	// same header for every token (a quarter of an ES256 mint, measured).
	enc := base64.RawURLEncoding
	buf := make([]byte, 0, len(m.prefix)+enc.EncodedLen(len(payload))+1+m.sigLen)
	buf = append(buf, m.prefix...)
	buf = enc.AppendEncode(buf, payload)
	sig, err := jwsbb.Sign(m.signer.priv, m.signer.alg.String(), buf, rand.Reader)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("mint: sign: %w", err)
	}
	buf = append(buf, '.')
	signed := enc.AppendEncode(buf, sig)
	return string(signed), time.Unix(expSec, 0), nil
}

// JWKS returns the public JWK Set JSON of every configured key, for
// GET /.well-known/jwks.json. It is computed once by New; each call returns
// a fresh copy the caller may keep.
func (m *Minter) JWKS() []byte { return bytes.Clone(m.jwks) }

// Close removes the key file generated for this run, if any, so private keys
// do not pile up in the temp folder.
func (m *Minter) Close() error {
	if m.generated == "" {
		return nil
	}
	return os.Remove(m.generated)
}
