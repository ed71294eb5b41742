package policy

import (
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/phantom-authz/phantom-authz/authz/token"
)

// tokenInput is input.token, built once per resolved token (PrepareToken)
// and shared by every request that presents it while it is cached.
type tokenInput struct {
	term *ast.Term
}

var (
	kActive   = ast.StringTerm("active")
	kKind     = ast.StringTerm("kind")
	kScopes   = ast.StringTerm("scopes")
	kClaims   = ast.StringTerm("claims")
	kClientID = ast.StringTerm("client_id")
	kSub      = ast.StringTerm("sub")
	kExp      = ast.StringTerm("exp")
	kCnf      = ast.StringTerm("cnf")
)

// newTokenInput builds input.token:
//
//	{"active": bool, "kind": "opaque"|"jwt", "scopes": [...], "claims": {...},
//	 "client_id": "...", "sub": "...", "exp": seconds, "cnf": {...}}
//
// scopes and claims are always present (possibly empty); client_id, sub, exp
// and cnf only when the token has them, so a policy can test them with a
// plain reference.
func newTokenInput(tok *token.Token) (ti *tokenInput, err error) {
	// Claims come from outside; a conversion bug must deny, not crash.
	defer func() {
		if r := recover(); r != nil {
			ti, err = nil, fmt.Errorf("policy: token claims: %v", r)
		}
	}()

	claims := ast.Value(ast.NewObject())
	if len(tok.Claims) > 0 {
		claims, err = toValue(tok.Claims, 0)
		if err != nil {
			return nil, fmt.Errorf("policy: token claims: %w", err)
		}
	}
	scopes := make([]*ast.Term, len(tok.Scopes))
	for i, s := range tok.Scopes {
		scopes[i] = ast.StringTerm(s)
	}

	items := [][2]*ast.Term{
		{kActive, ast.InternedTerm(tok.Active)},
		{kKind, ast.StringTerm(string(tok.Kind))},
		{kScopes, ast.ArrayTerm(scopes...)},
		{kClaims, ast.NewTerm(claims)},
	}
	if tok.ClientID != "" {
		items = append(items, [2]*ast.Term{kClientID, ast.StringTerm(tok.ClientID)})
	}
	if tok.Subject != "" {
		items = append(items, [2]*ast.Term{kSub, ast.StringTerm(tok.Subject)})
	}
	if !tok.Expiry.IsZero() {
		items = append(items, [2]*ast.Term{kExp, ast.InternedTerm(tok.Expiry.Unix())})
	}
	if obj, ok := claims.(ast.Object); ok {
		if cnf := obj.Get(kCnf); cnf != nil {
			items = append(items, [2]*ast.Term{kCnf, cnf})
		}
	}
	return &tokenInput{term: ast.ObjectTerm(items...)}, nil
}

// tokenFor returns the prepared input.token of tok, building it when the
// token was not prepared (it is not stored then: the token may be shared).
func tokenFor(tok *token.Token) (*tokenInput, error) {
	if tok == nil {
		return nil, nil
	}
	if ti, ok := tok.Prepared.(*tokenInput); ok && ti != nil {
		return ti, nil
	}
	return newTokenInput(tok)
}
