package authz

import (
	"context"

	"github.com/phantom-authz/phantom-authz/authz/credential"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

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
