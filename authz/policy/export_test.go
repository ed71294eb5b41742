package policy

import (
	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// DecisionCached reports whether e's decision cache holds a decision for r
// and tok under the policy set being served.
func DecisionCached(e *Engine, r *authz.Request, tok *token.Token) bool {
	e.decisions.wait()
	ti, err := tokenFor(tok)
	if err != nil {
		return false
	}
	var k decisionKey
	k.make(e.set.Load(), r, ti)
	_, ok := e.decisions.get(&k)
	return ok
}
