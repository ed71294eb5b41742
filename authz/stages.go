package authz

import (
	"context"
	"time"

	"github.com/phantom-authz/phantom-authz/authz/binding"
	"github.com/phantom-authz/phantom-authz/authz/credential"
	"github.com/phantom-authz/phantom-authz/authz/mint"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// Binder checks that the sender of a request holds the key its token is
// bound to (authz/binding): a DPoP proof (RFC 9449), a client certificate
// (RFC 8705); and that the token is bound where the route demands it.
// Errors are *binding.Error values.
type Binder interface {
	Bind(ctx context.Context, in binding.Input, tok *token.Token) (binding.Result, error)
	// Algorithms are the DPoP proof algorithms accepted, for the algs
	// parameter of DPoP challenges.
	Algorithms() []string
	// TrustsForwardedCert reports whether the source peer (principal,
	// address) is a proxy trusted to tell the client certificate in
	// x-forwarded-client-cert; from any other peer the header is stripped.
	TrustsForwardedCert(principal, address string) bool
}

// Resolver turns a presented credential into a Token (authz/token).
type Resolver interface {
	Resolve(ctx context.Context, cred credential.Credential) (*token.Token, error)
}

// Decider decides on a request and its token by policy (authz/policy).
// tok is nil when no credential was required or presented.
type Decider interface {
	Decide(ctx context.Context, r *Request, tok *token.Token) (Decision, error)
	// Ready reports whether a compiled policy set is loaded.
	Ready() bool
}

// TokenPreparer computes, once per resolved token, what the decider needs of
// it on every request (its part of the policy input), storing it in
// tok.Prepared. The engine runs it before the token is cached.
type TokenPreparer interface {
	PrepareToken(tok *token.Token) error
}

// Minter signs the JWT forwarded upstream when the OAuth server gave none
// (authz/mint). It sets tok.JWT and tok.JWTExpiry.
type Minter interface {
	Mint(tok *token.Token) error
}

// UpstreamMinter signs the JWT forwarded to one upstream API (authz/mint):
// the token's claims with that API's audience, claims and narrowed scope,
// and, in a pairwise sector, a pairwise pseudonymous sub. exp is the JWT's
// expiry.
type UpstreamMinter interface {
	MintUpstream(tok *token.Token, up mint.Upstream) (jwt string, exp time.Time, err error)
}

// ServerResolver is a Resolver that can resolve a token on a route that
// names its authorization server (route.Settings.AuthorizationServer).
type ServerResolver interface {
	ResolveAt(ctx context.Context, cred credential.Credential, server string) (*token.Token, error)
}
