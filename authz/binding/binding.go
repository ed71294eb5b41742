// Package binding is the bind stage: it checks that the client presenting an
// access token holds the key the token is bound to (the token's cnf claim).
// A DPoP-bound token (cnf.jkt, RFC 9449) must come with a valid DPoP proof
// signed by that key; a certificate-bound token (cnf."x5t#S256", RFC 8705)
// must come over a TLS connection whose client certificate has that
// thumbprint. A route may also demand that every token be bound (FAPI 2.0).
package binding

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/phantom-authz/phantom-authz/authz/credential"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// Requirement says what a route demands of the token's sender constraint.
type Requirement uint8

// The requirements, weakest first: a stronger one never loosens a weaker.
const (
	// RequireNone verifies a binding when the token has one; an unbound
	// token is a bearer token and passes.
	RequireNone Requirement = iota
	// RequireAny demands a bound token, by DPoP or by certificate.
	RequireAny
	// RequireDPoP demands a DPoP-bound token presented with a proof.
	RequireDPoP
	// RequireMTLS demands a certificate-bound token.
	RequireMTLS
)

// ParseRequirement reads the value of a route's sender_constrained context
// extension: "" or "optional" (RequireNone), "required" (RequireAny), "dpop"
// or "mtls".
func ParseRequirement(s string) (Requirement, error) {
	switch s {
	case "", "optional":
		return RequireNone, nil
	case "required":
		return RequireAny, nil
	case "dpop":
		return RequireDPoP, nil
	case "mtls":
		return RequireMTLS, nil
	}
	return RequireNone, fmt.Errorf("binding: sender_constrained %q is not one of optional, required, dpop, mtls", s)
}

// Input is what Bind needs of the request.
type Input struct {
	// Scheme is the Authorization scheme the credential came with.
	Scheme credential.Scheme
	// Token is the access token as presented; Proof the DPoP header value.
	Token, Proof string
	// Method is the HTTP method; URLScheme, Host and Path are Envoy's
	// :scheme, :authority and :path (the query, if any, is ignored).
	Method, URLScheme, Host, Path string
	// Certificate is the client's TLS certificate as Envoy forwards it with
	// include_peer_certificate: URL-encoded PEM; empty without one.
	Certificate string
	// ForwardedCert is the x-forwarded-client-cert header (its occurrences
	// joined by commas), read only when the source peer is a trusted proxy
	// (Config.XFCC).
	ForwardedCert string
	// PeerPrincipal and PeerAddress are the CheckRequest's source peer: the
	// principal of its certificate as Envoy reports it, its IP address.
	PeerPrincipal, PeerAddress string
	// Require is the route's requirement; Config.RequireSenderConstrained
	// raises it to at least RequireAny.
	Require Requirement
}

// Result is what a successful Bind hands back to the response.
type Result struct {
	// Nonce, when set, is a fresh server nonce for the client's next proofs
	// (the DPoP-Nonce response header): the one it used is about to expire.
	Nonce string
}

// Errors Bind returns, each mapping to exactly one denial. The *Error that
// wraps one says why, in a sentence fit for the client.
var (
	// ErrInvalidProof: the DPoP proof is missing a check (401
	// invalid_dpop_proof, DPoP challenge).
	ErrInvalidProof = errors.New("binding: invalid DPoP proof")
	// ErrInvalidToken: the token is not bound to this sender, is bound but
	// presented without its proof (a downgrade to Bearer), or is unbound on
	// a route that demands a binding (401 invalid_token).
	ErrInvalidToken = errors.New("binding: token not bound to the sender")
	// ErrUseNonce: the proof lacks a valid server nonce (401 use_dpop_nonce,
	// the nonce to use in Error.Nonce, RFC 9449 §9).
	ErrUseNonce = errors.New("binding: DPoP nonce required")
	// ErrUnavailable: the replay store could not answer (503).
	ErrUnavailable = errors.New("binding: replay store unavailable")
)

// Error is a failed Bind. Reason is fixed text: it never repeats anything the
// request sent.
type Error struct {
	// Err is ErrInvalidProof, ErrInvalidToken, ErrUseNonce or ErrUnavailable.
	Err error
	// Reason is a short sentence for the client, without a final period.
	Reason string
	// DPoP says the client is to be answered with a DPoP challenge: it used
	// the DPoP scheme, or the token or the route demands it.
	DPoP bool
	// Nonce is the server nonce the client must put in its next proof
	// (ErrUseNonce only).
	Nonce string

	cause error
}

// Error reads "binding: <kind>: <reason>".
func (e *Error) Error() string {
	if e.cause != nil {
		return e.Err.Error() + ": " + e.Reason + ": " + e.cause.Error()
	}
	return e.Err.Error() + ": " + e.Reason
}

// Unwrap returns the kind and, for ErrUnavailable, the store's error.
func (e *Error) Unwrap() []error {
	if e.cause != nil {
		return []error{e.Err, e.cause}
	}
	return []error{e.Err}
}

// Config configures a Binder. The zero value works: DPoP with ES256, PS256
// and EdDSA, a 60 s window, an in-memory replay store, no server nonces, and
// bindings verified where tokens have them.
type Config struct {
	// Algorithms are the DPoP proof signature algorithms accepted (default
	// ES256, PS256, EdDSA). Asymmetric only: none and HS* are refused.
	Algorithms []string
	// IATWindow is how far a proof's iat may be from now, either way
	// (default 60s). Each proof's jti is remembered as long as its iat is.
	IATWindow time.Duration
	// Replay remembers the proofs already used (default: in memory, this
	// process only; NewMemoryReplay(0)).
	Replay ReplayStore
	// Nonce, when set, makes every DPoP proof carry a server nonce.
	Nonce *NonceConfig
	// RequireSenderConstrained demands a bound token on every route (FAPI
	// 2.0), whatever the route says.
	RequireSenderConstrained bool
	// XFCC, when set, names the proxies in front of Envoy whose
	// x-forwarded-client-cert tells the client certificate of
	// certificate-bound tokens; nil: the header is never read.
	XFCC *XFCCConfig
	// Origins are the API's external origins (https://api.example.com):
	// when set, a DPoP proof's htu must name one of them rather than the
	// :scheme and :authority the client sent (see htuMatches).
	Origins []string
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// DefaultAlgorithms are the DPoP proof algorithms accepted when none are
// configured.
var DefaultAlgorithms = []string{"ES256", "PS256", "EdDSA"}

// DefaultIATWindow is the proof iat window when none is configured.
const DefaultIATWindow = 60 * time.Second

// Binder checks sender constraints. It is safe for concurrent use.
type Binder struct {
	algs     map[string]algorithm
	algNames []string
	window   time.Duration
	replay   ReplayStore
	nonces   *nonces
	origins  []origin
	xfcc     *xfccTrust
	headers  *headerCache
	require  Requirement
	now      func() time.Time
}

// New checks cfg and returns a Binder.
func New(cfg Config) (*Binder, error) {
	b := &Binder{window: cfg.IATWindow, replay: cfg.Replay, now: cfg.Now, headers: newHeaderCache()}
	names := cfg.Algorithms
	if len(names) == 0 {
		names = DefaultAlgorithms
	}
	b.algs = make(map[string]algorithm, len(names))
	for _, name := range names {
		a, ok := algorithms[name]
		if !ok {
			if name == "none" || strings.HasPrefix(strings.ToUpper(name), "HS") {
				return nil, fmt.Errorf("binding: dpop.algorithms: %q is not allowed (proofs are signed with a private key)", name)
			}
			return nil, fmt.Errorf("binding: dpop.algorithms: unknown algorithm %q (one of %s)", name, strings.Join(algorithmNames(), ", "))
		}
		if _, dup := b.algs[name]; !dup {
			b.algs[name] = a
			b.algNames = append(b.algNames, name)
		}
	}
	switch {
	case b.window < 0:
		return nil, errors.New("binding: dpop.iat_window: must be positive")
	case b.window == 0:
		b.window = DefaultIATWindow
	}
	if b.replay == nil {
		b.replay = NewMemoryReplay(0)
	}
	if b.now == nil {
		b.now = time.Now
	}
	if cfg.Nonce != nil {
		n, err := newNonces(*cfg.Nonce)
		if err != nil {
			return nil, err
		}
		b.nonces = n
	}
	if cfg.RequireSenderConstrained {
		b.require = RequireAny
	}
	var err error
	if b.origins, err = parseOrigins(cfg.Origins); err != nil {
		return nil, err
	}
	if b.xfcc, err = newXFCCTrust(cfg.XFCC); err != nil {
		return nil, err
	}
	return b, nil
}

// Algorithms returns the DPoP proof algorithms accepted, for the algs
// parameter of DPoP challenges.
func (b *Binder) Algorithms() []string { return slices.Clone(b.algNames) }

// Fixed errors: the common denials do not allocate.
var (
	errDowngrade = &Error{Err: ErrInvalidToken, DPoP: true,
		Reason: "the access token is DPoP-bound and must be presented with the DPoP scheme and a proof"}
	errNotDPoPBound = &Error{Err: ErrInvalidToken, DPoP: true,
		Reason: "the access token is not DPoP-bound"}
	errNotCertBound = &Error{Err: ErrInvalidToken,
		Reason: "the access token is not bound to a client certificate"}
	errUnbound = &Error{Err: ErrInvalidToken,
		Reason: "this API requires a sender-constrained (DPoP- or certificate-bound) access token"}
	errBadCnf = &Error{Err: ErrInvalidToken,
		Reason: "the access token is bound by a confirmation method that cannot be verified here"}
)

// Bind checks that the sender of in holds the key tok is bound to, and that
// tok is bound as strongly as the route requires. Errors are *Error values
// wrapping one of the Err* kinds.
func (b *Binder) Bind(ctx context.Context, in Input, tok *token.Token) (Result, error) {
	jkt, x5t, ok := confirmation(tok)
	if !ok {
		return Result{}, withScheme(errBadCnf, in.Scheme)
	}
	dpop := in.Scheme == credential.SchemeDPoP
	switch {
	case jkt != "" && !dpop:
		return Result{}, errDowngrade
	case dpop && jkt == "":
		return Result{}, errNotDPoPBound
	}
	switch max(in.Require, b.require) {
	case RequireAny:
		if jkt == "" && x5t == "" {
			return Result{}, withScheme(errUnbound, in.Scheme)
		}
	case RequireDPoP:
		if jkt == "" {
			return Result{}, errNotDPoPBound
		}
	case RequireMTLS:
		if x5t == "" {
			return Result{}, withScheme(errNotCertBound, in.Scheme)
		}
	}
	if x5t != "" {
		if err := b.clientCertificate(&in, x5t); err != nil {
			return Result{}, withScheme(err, in.Scheme)
		}
	}
	if !dpop {
		return Result{}, nil
	}
	return b.checkProof(ctx, in, jkt)
}

// withScheme returns e marked for a DPoP challenge when the client used the
// DPoP scheme.
func withScheme(e *Error, s credential.Scheme) error {
	if s != credential.SchemeDPoP || e.DPoP {
		return e
	}
	c := *e
	c.DPoP = true
	return &c
}

// confirmation reads the token's cnf claim (RFC 7800): the DPoP key's
// thumbprint and the certificate's. ok is false when cnf is not an object,
// when jkt or x5t#S256 is not a non-empty string, or when cnf names only
// other methods (a jwk, a kid): such a token is bound to something this
// stage cannot verify, so it fails closed rather than pass as a bearer token.
func confirmation(tok *token.Token) (jkt, x5t string, ok bool) {
	if tok == nil {
		return "", "", true
	}
	v, has := tok.Confirmation()
	if !has {
		return "", "", true
	}
	cnf, isObj := v.(map[string]any)
	if !isObj {
		return "", "", false
	}
	get := func(name string) (string, bool) {
		v, has := cnf[name]
		if !has {
			return "", true
		}
		s, isStr := v.(string)
		return s, isStr && s != ""
	}
	jkt, ok1 := get("jkt")
	x5t, ok2 := get("x5t#S256")
	if len(cnf) > 0 && jkt == "" && x5t == "" {
		return "", "", false
	}
	return jkt, x5t, ok1 && ok2
}
