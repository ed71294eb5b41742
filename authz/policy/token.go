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
	// id identifies the token in decision cache keys; 0 for one built for a
	// single request (not prepared), which is never cached.
	id uint64
	// size is the estimated heap size of term, for the token cache's budget.
	size int64
}

// Size reports the memory the token's policy input holds, so the token
// cache counts it (token.Token.Prepared). The AST of the claims is several
// times the size of the decoded JSON they come from.
func (ti *tokenInput) Size() int64 { return ti.size }

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
			// Claims no policy can read (nested too deep, say) make the
			// token unusable: 401 invalid_token, not a 503 to retry.
			return nil, fmt.Errorf("policy: token claims: %w: %w", token.ErrInvalid, err)
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
	term := ast.ObjectTerm(items...)
	return &tokenInput{term: term, size: termCost(term, 0)}, nil
}

// termCost estimates the heap bytes of an AST term: the term, its value and
// the object and array structures that hold them. Terms shared with other
// inputs (interned keys) are counted too: an over-estimate errs on the side
// of the budget.
func termCost(t *ast.Term, depth int) int64 {
	const term = 32 // Value interface, Location pointer, rounded to the size class
	if t == nil || depth > maxDepth {
		return term
	}
	switch v := t.Value.(type) {
	case ast.String:
		return term + 16 + int64(len(v))
	case ast.Number:
		return term + 16 + int64(len(v))
	case ast.Object:
		n := int64(term + 96)
		v.Foreach(func(k, x *ast.Term) { n += 64 + termCost(k, depth+1) + termCost(x, depth+1) })
		return n
	case *ast.Array:
		n := int64(term + 48)
		v.Foreach(func(x *ast.Term) { n += 16 + termCost(x, depth+1) })
		return n
	case ast.Set:
		n := int64(term + 96)
		v.Foreach(func(x *ast.Term) { n += 48 + termCost(x, depth+1) })
		return n
	default:
		return term + 16
	}
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
