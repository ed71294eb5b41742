package authz

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/phantom-authz/phantom-authz/authz/binding"
	"github.com/phantom-authz/phantom-authz/authz/credential"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// SenderConstrainedKey is the context_extensions (or route table) key with
// which a route demands sender-constrained tokens: "required" (DPoP or certificate),
// "dpop", "mtls", or "optional" (the default: bindings are verified where
// tokens have them).
const SenderConstrainedKey = "sender_constrained"

// SchemeDPoP is Decision.Scheme for a DPoP challenge (RFC 9449 §7.1).
const SchemeDPoP = "DPoP"

// bound is what the bind stage hands on to the response of an allowed
// request.
type bound struct {
	// checked: the stage ran (credentials are on and the route is not
	// public), so the request's DPoP header is this stage's to drop.
	checked bool
	// nonce is a fresh DPoP-Nonce for the client.
	nonce string
}

// defaultBinder gives an engine with credentials a Binder when none is
// configured: a token bound to a key must never pass as a bearer token
// because the wiring forgot a stage.
func defaultBinder(cfg *Config) error {
	if cfg.Binder != nil || cfg.Resolver == nil {
		return nil
	}
	b, err := binding.New(binding.Config{})
	if err != nil {
		return err
	}
	cfg.Binder = b
	return nil
}

// bind runs the bind stage: the token must be bound as the route demands,
// and to the sender of this request. It returns the denial when it refuses.
func (e *Engine) bind(ctx context.Context, r *Request, cred credential.Credential, tok *token.Token) (bound, *Decision) {
	if e.cfg.Binder == nil {
		return bound{}, nil
	}
	req, err := binding.ParseRequirement(r.Route.SenderConstrained)
	if err != nil {
		d := deny(500, "route_misconfigured", "", "This route is misconfigured.")
		return bound{}, &d
	}
	in := binding.Input{
		Scheme: cred.Scheme, Token: cred.Token, Proof: cred.Proof,
		Method: r.Method, URLScheme: r.Scheme, Host: r.Host, Path: r.Path,
		Certificate: r.Source.Certificate, Require: req,
		ForwardedCert: r.Headers[binding.XFCCHeader],
		PeerPrincipal: r.Source.Principal, PeerAddress: r.Source.Address,
	}
	if in.URLScheme == "" {
		in.URLScheme = r.Headers[":scheme"]
	}
	if in.Host == "" {
		in.Host = r.Headers[":authority"]
	}
	res, err := e.cfg.Binder.Bind(ctx, in, tok)
	if err != nil {
		d := bindDenial(err)
		return bound{}, &d
	}
	return bound{checked: true, nonce: res.Nonce}, nil
}

// bindDenial maps a bind error to its one denial.
func bindDenial(err error) Decision {
	var be *binding.Error
	if !errors.As(err, &be) {
		return deny(503, "binding_error", "", "The sender constraint could not be checked; try again later.")
	}
	detail := strings.ToUpper(be.Reason[:1]) + be.Reason[1:] + "."
	var d Decision
	switch {
	case errors.Is(err, binding.ErrInvalidProof):
		d = deny(401, "invalid_dpop_proof", "invalid_dpop_proof", detail)
	case errors.Is(err, binding.ErrUseNonce):
		d = deny(401, "use_dpop_nonce", "use_dpop_nonce", detail)
		d.Headers = append(d.Headers, Header{Key: "dpop-nonce", Value: be.Nonce})
	case errors.Is(err, binding.ErrInvalidToken):
		d = deny(401, "invalid_token", "invalid_token", detail)
	default:
		return deny(503, "binding_unavailable", "", "The sender constraint could not be checked; try again later.")
	}
	if be.DPoP {
		d.Scheme = SchemeDPoP
	}
	return d
}

// forwardBound completes an allow: the DPoP proof stays here (the upstream
// gets the JWT, not the client's proof), and a fresh nonce goes back to the
// client.
func (e *Engine) forwardBound(r *Request, b bound, d *Decision) {
	if !b.checked {
		// No credential stages (the policy alone decides, as OPA-Envoy
		// does: headers are the policy's), or a public route, which
		// forward already cleans.
		return
	}
	if _, sent := r.Headers["dpop"]; sent && !hasHeader(d.Headers, "dpop") && !slices.Contains(d.RemoveHeaders, "dpop") {
		d.RemoveHeaders = append(d.RemoveHeaders, "dpop")
	}
	if b.nonce != "" {
		d.ResponseHeaders = append(d.ResponseHeaders, Header{Key: "dpop-nonce", Value: b.nonce})
	}
}

// forwardedCert strips a client certificate header that did not come from a
// trusted proxy: the upstream must never take a client's say-so for a
// certificate (binding.xfcc names the proxies it may come from).
func (e *Engine) forwardedCert(r *Request, d *Decision) {
	if e.cfg.Binder == nil {
		return // no credential stages: the headers are the policy's
	}
	if _, sent := r.Headers[binding.XFCCHeader]; !sent || hasHeader(d.Headers, binding.XFCCHeader) ||
		e.cfg.Binder.TrustsForwardedCert(r.Source.Principal, r.Source.Address) {
		return
	}
	if !slices.Contains(d.RemoveHeaders, binding.XFCCHeader) {
		d.RemoveHeaders = append(d.RemoveHeaders, binding.XFCCHeader)
	}
}

// denialScheme picks the challenge scheme of a denial that has none yet:
// DPoP when the client used it or the route demands it (RFC 9449 §7.1),
// Bearer otherwise.
func (e *Engine) denialScheme(r *Request, d *Decision) {
	if d.Scheme != "" || e.cfg.Resolver == nil {
		return
	}
	auth := r.Headers["authorization"]
	if len(auth) > 5 && strings.EqualFold(auth[:5], "dpop ") || r.Route.SenderConstrained == "dpop" {
		d.Scheme = SchemeDPoP
	}
}

// dpopAlgs is the algs parameter of DPoP challenges.
func (e *Engine) dpopAlgs() string {
	if e.cfg.Binder == nil {
		return strings.Join(binding.DefaultAlgorithms, " ")
	}
	return strings.Join(e.cfg.Binder.Algorithms(), " ")
}
