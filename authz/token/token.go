// Package token resolves a presented access token into a Token: opaque
// tokens by OAuth introspection (RFC 7662, RFC 9701, or the phantom-token
// application/jwt answer), JWTs by value through the issuers' JWKS. Results
// are cached by the token's SHA-256 and concurrent misses share one call.
package token

import (
	"errors"
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
	// Claims are all claims (introspection answer or JWT payload), as
	// encoding/json decodes them: numbers are float64, except integers beyond
	// 2^53, which are json.Number so they re-encode exactly. Values that
	// repeat across tokens (iss, aud, client_id, scope, ...) are shared.
	Claims map[string]any
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
