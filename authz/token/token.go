// Package token resolves a presented access token into a Token: opaque
// tokens by OAuth introspection (RFC 7662, RFC 9701, or the phantom-token
// application/jwt answer), JWTs by value through the issuers' JWKS. Results
// are cached by the token's SHA-256 and concurrent misses share one call.
package token

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Kind says how the token was presented.
type Kind string

// The token kinds the policy sees as input.token.kind.
const (
	KindOpaque Kind = "opaque"
	KindJWT    Kind = "jwt"
)

// Token is a resolved access token. A Token returned by a Resolver is shared
// by every request that presents the same token while it is cached: treat it
// (its slices and maps too) as read-only. Prepare is the one place that may
// set fields, before the Token is shared.
type Token struct {
	// Active is false for a token the OAuth server does not know or has revoked.
	Active bool
	Kind   Kind
	// Scopes are the space-separated "scope" claim, split.
	Scopes []string
	// Claims are the claims of a Token built by hand (a test, a custom
	// stage). A Resolver leaves Claims nil and keeps the claims as JSON, the
	// payload of JWT when that is where they came from: read them with
	// ClaimMap. A decoded map costs a cached token about as much memory as
	// its JWT again, all of it pointers for the garbage collector to walk,
	// while a check reads the claims only to build a policy input the
	// decision cache does not hold, or to mint a JWT.
	Claims map[string]any
	// claimsJSON is the claims as a JSON object; nil when they are the
	// payload of JWT (claimsInJWT) or the Token was built by hand.
	claimsJSON  []byte
	claimsInJWT bool
	// decoded is the claims map while the Resolver builds the Token, so
	// that Prepare does not decode it again; cleared before the Token is
	// shared.
	decoded map[string]any
	// cnf is the cnf claim (RFC 7800), kept decoded (hasCnf: present): a
	// sender-constrained token's checks read it on every request.
	cnf    any
	hasCnf bool
	// Issuer is the issuer of the authorization server that vouched for
	// the token (verified it, or answered its introspection); "" when the
	// one-server configuration names none.
	Issuer   string
	ClientID string
	Subject  string
	// Expiry is the token's exp; zero when it has none.
	Expiry time.Time
	// JWT is the token to forward upstream: the OAuth server's JWT, the
	// client's own JWT (by value) or one minted by authz/mint. JWTExpiry is
	// its exp; the cache never keeps the Token past it.
	JWT       string
	JWTExpiry time.Time
	// Minted: JWT was signed by phantom-authz (authz/mint), not given by
	// the OAuth server or the client; an API's own JWT replaces it.
	Minted bool
	// Prepared holds what later stages compute once per token and reuse on
	// every request while the token is cached (the policy input of the token).
	// Set by the Resolver's Prepare hook before the token enters the cache.
	// A value with a Size() int64 method reports its bytes to the cache's
	// budget; any other is counted as large as Claims.
	Prepared any

	// sectorJWTs are the upstream JWTs minted per pairwise sector
	// (sector → sectorJWT), kept with the token while it is cached. The
	// number of sectors is bounded by configuration, not by requests.
	sectorJWTs sync.Map
}

// ClaimMap returns all claims (introspection answer or JWT payload), as
// encoding/json decodes them: numbers are float64, except integers beyond
// 2^53, which are json.Number so they re-encode exactly. For a resolved
// Token the map is decoded anew on each call: the caller may keep it, and
// must not expect another call to return the same map.
func (t *Token) ClaimMap() (map[string]any, error) {
	switch {
	case t.Claims != nil:
		return t.Claims, nil
	case t.decoded != nil:
		return t.decoded, nil
	}
	data := t.claimsJSON
	if t.claimsInJWT {
		_, rest, _ := strings.Cut(t.JWT, ".")
		payload, _, _ := strings.Cut(rest, ".")
		var err error
		if data, err = b64.DecodeString(payload); err != nil {
			return nil, fmt.Errorf("token: claims: %w", err)
		}
	}
	if data == nil {
		return map[string]any{}, nil
	}
	var claims map[string]any
	if err := decodeObject(data, &claims); err != nil {
		return nil, fmt.Errorf("token: claims: %w", err)
	}
	normalize(claims)
	return claims, nil
}

// Confirmation is the token's cnf claim (RFC 7800), of whatever type it
// came; ok is false when the token has none.
func (t *Token) Confirmation() (cnf any, ok bool) {
	if t.Claims != nil {
		cnf, ok = t.Claims["cnf"]
		return cnf, ok
	}
	return t.cnf, t.hasCnf
}

type sectorJWT struct {
	jwt string
	exp time.Time
}

// SectorJWT returns the upstream JWT minted for the pairwise sector, when one
// is kept and has not expired at now. Safe for concurrent use.
func (t *Token) SectorJWT(sector string, now time.Time) (string, bool) {
	v, ok := t.sectorJWTs.Load(sector)
	if !ok {
		return "", false
	}
	s := v.(sectorJWT)
	if !now.Before(s.exp) {
		return "", false
	}
	return s.jwt, true
}

// SetSectorJWT keeps jwt, valid until exp, as the token's upstream JWT for
// the pairwise sector. Safe for concurrent use: of two racing calls the
// last wins, and both JWTs are valid.
func (t *Token) SetSectorJWT(sector, jwt string, exp time.Time) {
	t.sectorJWTs.Store(sector, sectorJWT{jwt: jwt, exp: exp})
}

// Errors a Resolver returns, each mapping to exactly one denial.
var (
	// ErrInactive: the token is unknown, expired or revoked (401 invalid_token).
	ErrInactive = errors.New("token: inactive")
	// ErrInvalid: a JWT failed verification (401 invalid_token).
	ErrInvalid = errors.New("token: invalid")
	// ErrUnavailable: the OAuth server or JWKS could not answer (503).
	ErrUnavailable = errors.New("token: authorization server unavailable")
)
