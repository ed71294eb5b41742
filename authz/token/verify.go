package token

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// issuer verifies the JWTs of one configured issuer by value.
type issuer struct {
	cfg    IssuerConfig
	algs   algSet
	keys   *keySet
	now    func() time.Time
	shared *interner
}

// verify checks raw (a JWT whose iss names this issuer; c is raw parsed,
// or nil when it did not parse) and returns its Token. A token that fails a
// check is ErrInvalid; keys that could never be fetched are ErrUnavailable.
func (is *issuer) verify(ctx context.Context, raw string, c *compact) (*Token, error) {
	if c == nil {
		var err error
		if c, err = parseCompact(raw); err != nil {
			return nil, fmt.Errorf("%w: jwt: %v", ErrInvalid, err)
		}
	}
	if is.cfg.Type != AnyType && !typMatches(c.header.Typ, is.cfg.Type) {
		return nil, fmt.Errorf("%w: jwt: typ %.40q, expected %q", ErrInvalid, c.header.Typ, is.cfg.Type)
	}
	if err := checkTyp(c.header.Typ); err != nil {
		return nil, fmt.Errorf("%w: jwt: %v", ErrInvalid, err)
	}
	if err := is.keys.verify(ctx, c, is.algs); err != nil {
		if errors.Is(err, errNoKeys) {
			return nil, fmt.Errorf("%w: jwt: %v", ErrUnavailable, err)
		}
		return nil, fmt.Errorf("%w: jwt: %v", ErrInvalid, err)
	}
	if err := is.checkClaims(c.claims); err != nil {
		return nil, fmt.Errorf("%w: jwt: %v", ErrInvalid, err)
	}
	if err := checkPayload(c.claims); err != nil {
		return nil, fmt.Errorf("%w: jwt: %v", ErrInvalid, err)
	}
	tok, err := is.shared.newToken(KindJWT, c.claims, claimsSource{jwt: raw})
	if err != nil {
		return nil, fmt.Errorf("%w: jwt: %v", ErrInvalid, err)
	}
	tok.JWTExpiry, tok.Issuer = tok.Expiry, is.cfg.Issuer
	return tok, nil
}

// checkClaims checks iss, aud, exp (required), nbf and iat with the
// issuer's skew.
func (is *issuer) checkClaims(claims map[string]any) error {
	if iss, _ := claims["iss"].(string); iss != is.cfg.Issuer {
		return fmt.Errorf("issued by %q, expected %q", iss, is.cfg.Issuer)
	}
	if !hasAudience(claims, is.cfg.Audiences...) {
		return errors.New("audience not accepted")
	}
	now := is.now()
	exp, ok, err := numericDate(claims, "exp")
	switch {
	case err != nil:
		return err
	case !ok:
		return errors.New("no exp claim")
	case !now.Before(exp.Add(is.cfg.Skew)):
		return errors.New("token has expired")
	}
	nbf, ok, err := numericDate(claims, "nbf")
	switch {
	case err != nil:
		return err
	case ok && nbf.After(now.Add(is.cfg.Skew)):
		return errors.New("token is not valid yet (nbf)")
	}
	iat, ok, err := numericDate(claims, "iat")
	switch {
	case err != nil:
		return err
	case ok && iat.After(now.Add(is.cfg.Skew)):
		return errors.New("token is issued in the future (iat)")
	}
	return nil
}
