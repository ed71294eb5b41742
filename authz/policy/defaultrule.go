package policy

import (
	"github.com/open-policy-agent/opa/v1/ast"
)

// defaultValue is the value of the default rule of the query's reference
// (`default allow := ...`), or nil when it has none. A decision equal to it
// was made by the default rule: no rule written for the request matched.
func defaultValue(c *ast.Compiler, query string) ast.Value {
	ref, err := ast.ParseRef(query)
	if err != nil {
		return nil
	}
	for _, r := range c.GetRulesExact(ref) {
		if r.Default && r.Head.Value != nil && r.Head.Value.IsGround() {
			return r.Head.Value.Value
		}
	}
	return nil
}

// isDefault reports whether v is the set's default decision.
func (s *policySet) isDefault(v ast.Value) bool {
	return s.defaultValue != nil && v != nil && s.defaultValue.Compare(v) == 0
}
