package policy

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/phantom-authz/phantom-authz/authz/token"
)

// tokenInput is input.token. The token cache keeps, per resolved token, only
// its identity (PrepareToken): the AST of its claims is built for each
// evaluation the decision cache cannot answer, and dropped after it. Kept
// with the token, the AST doubled the memory of every cached token (about
// 2.2 KB for an 850-byte JWT), all of it pointers for the garbage collector
// to walk on every cycle, while a token seen once (a stream of new tokens)
// builds it exactly once either way; a cached token evaluates only on a
// route or method the decision cache has not seen with it.
type tokenInput struct {
	term *ast.Term // nil in the prepared input: see withTerm
	// id identifies the token in decision cache keys; 0 for one built for a
	// single request (not prepared), which is never cached.
	id uint64
	// key is the token's values of the fields the policy set of generation
	// keyGen reads (tokenkey.go); keyGen 0: none.
	key    string
	keyGen uint64
}

// Size reports the memory the token's prepared input holds, so the token
// cache counts it (token.Token.Prepared).
func (ti *tokenInput) Size() int64 { return 48 + int64(len(ti.key)) }

// withTerm returns ti with input.token built from tok when ti has none.
func (ti *tokenInput) withTerm(tok *token.Token) (*tokenInput, error) {
	if ti == nil || ti.term != nil {
		return ti, nil
	}
	full, err := newTokenInput(tok)
	if err != nil {
		return nil, err
	}
	full.id, full.key, full.keyGen = ti.id, ti.key, ti.keyGen
	return full, nil
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
	kIss      = ast.StringTerm("iss")
)

// newTokenInput builds input.token:
//
//	{"active": bool, "kind": "opaque"|"jwt", "scopes": [...], "claims": {...},
//	 "client_id": "...", "sub": "...", "exp": seconds, "cnf": {...},
//	 "iss": "..."}
//
// scopes and claims are always present (possibly empty); client_id, sub, exp
// and cnf only when the token has them, so a policy can test them with a
// plain reference. iss is the issuer of the authorization server that
// vouched for the token (configured, not read from the token), when one is
// named.
func newTokenInput(tok *token.Token) (ti *tokenInput, err error) {
	// Claims come from outside; a conversion bug must deny, not crash.
	defer func() {
		if r := recover(); r != nil {
			ti, err = nil, fmt.Errorf("policy: token claims: %v", r)
		}
	}()

	decoded, err := tok.ClaimMap()
	if err != nil {
		return nil, fmt.Errorf("policy: %w: %w", token.ErrInvalid, err)
	}
	claims := ast.Value(ast.NewObject())
	if len(decoded) > 0 {
		claims, err = toValue(decoded, 0)
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
	if tok.Issuer != "" {
		items = append(items, [2]*ast.Term{kIss, ast.StringTerm(tok.Issuer)})
	}
	if obj, ok := claims.(ast.Object); ok {
		if cnf := obj.Get(kCnf); cnf != nil {
			items = append(items, [2]*ast.Term{kCnf, cnf})
		}
	}
	return &tokenInput{term: ast.ObjectTerm(items...)}, nil
}

// checkClaims returns the error newTokenInput would return for claims, without
// building anything: PrepareToken refuses such a token when it is resolved
// (401 invalid_token), as when it built the input then.
func checkClaims(claims map[string]any) error {
	for k, v := range claims {
		if err := checkValue(v, 1); err != nil {
			return fmt.Errorf("policy: token claims: %w: %s: %w", token.ErrInvalid, k, err)
		}
	}
	return nil
}

// checkValue reports what toValue(x, depth) would fail with.
func checkValue(x any, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("value nested deeper than %d levels", maxDepth)
	}
	switch x := x.(type) {
	case nil, bool, string, int, int32, int64, uint32, uint64, []string, map[string]string:
		return nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			_, err := floatValue(x)
			return err
		}
		return nil
	case []any:
		for _, e := range x {
			if err := checkValue(e, depth+1); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		for k, e := range x {
			if err := checkValue(e, depth+1); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
		return nil
	case json.Number:
		_, err := toValue(x, depth)
		return err
	default:
		// Rare types: whatever the conversion says.
		_, err := toValue(x, depth)
		return err
	}
}

// tokenFor returns the prepared input.token of tok (its identity, no AST:
// see withTerm), building it when the token was not prepared (it is not
// stored then: the token may be shared).
func tokenFor(tok *token.Token) (*tokenInput, error) {
	if tok == nil {
		return nil, nil
	}
	if ti, ok := tok.Prepared.(*tokenInput); ok && ti != nil {
		return ti, nil
	}
	return newTokenInput(tok)
}
