package authz

import (
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/phantom-authz/phantom-authz/authz/mint"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// InteractionHeader is FAPI's correlation id: echoed to the upstream and to
// the client, or generated when the client sent none.
const InteractionHeader = "x-fapi-interaction-id"

// interaction puts the request's x-fapi-interaction-id on the upstream
// request and on the response to the client (the denial, on deny). A client
// value that is not a UUID (RFC 9562 text form) is replaced by a fresh one,
// as is a missing one: the id correlates logs across parties, so it must not
// carry arbitrary client text into them, and a diagnostic header is no
// reason to refuse a request.
func (e *Engine) interaction(r *Request, d *Decision) {
	if !e.cfg.InteractionID {
		return
	}
	id := r.Headers[InteractionHeader]
	if !isUUID(id) {
		id = uuid.NewString()
	}
	h := Header{Key: InteractionHeader, Value: id}
	if !hasHeader(d.Headers, InteractionHeader) {
		d.Headers = append(d.Headers, h)
	}
	if d.Allowed && !hasHeader(d.ResponseHeaders, InteractionHeader) {
		d.ResponseHeaders = append(d.ResponseHeaders, h)
	}
}

// isUUID reports whether s is a UUID in its 36-character text form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	_, err := uuid.Parse(s)
	return err == nil
}

// PairwiseSectorKey is the context_extensions key with which an Envoy route
// names the pairwise sector of its upstream.
const PairwiseSectorKey = "pairwise_sector"

// sector is the pairwise sector of the request's upstream: the route's
// pairwise_sector, else the one configured for its API; "" when the
// upstream gets the real subject.
func (e *Engine) sector(r *Request) string {
	if s := r.Route.PairwiseSector; s != "" {
		return s
	}
	if len(e.cfg.PairwiseSectors) == 0 {
		return ""
	}
	return e.cfg.PairwiseSectors[r.Route.API]
}

// errNoUpstreamMinter: a route asks for its API's own JWT or a pairwise
// subject but none can be made. Forwarding the token's JWT instead would
// defeat the point (an audience meant for others, the real subject), so it
// denies.
var errNoUpstreamMinter = errors.New("authz: per-API JWTs and pairwise subjects are not configured")

// upstreamJWT is the JWT to forward for tok on this request: the token's
// own; or, when the route's API has upstream_jwt settings or its upstream
// is in a pairwise sector, one minted for it on first use and kept with the
// token, so one JWT is signed per token and API. An API's settings do not
// replace a JWT the OAuth server (or the client) gave unless they ask to
// (Reissue).
func (e *Engine) upstreamJWT(r *Request, tok *token.Token) (string, error) {
	if tok == nil {
		return "", nil
	}
	sector := e.sector(r)
	up := r.Route.Upstream
	if up != nil && !up.Reissue && !tok.Minted {
		up = nil
	}
	if sector == "" && up == nil {
		return tok.JWT, nil
	}
	if e.cfg.Upstream == nil {
		return "", errNoUpstreamMinter
	}
	key := sector
	spec := mint.Upstream{Sector: sector}
	if up != nil {
		key = up.Key
		if sector != "" {
			key += "\x00" + sector
		}
		spec.Audience, spec.CopyClaims, spec.Scopes = up.Audience, up.CopyClaims, up.Scopes
	}
	if jwt, ok := tok.SectorJWT(key, time.Now()); ok {
		return jwt, nil
	}
	jwt, exp, err := e.cfg.Upstream.MintUpstream(tok, spec)
	if err != nil {
		return "", err
	}
	tok.SetSectorJWT(key, jwt, exp)
	return jwt, nil
}
