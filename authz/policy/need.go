package policy

import (
	"github.com/open-policy-agent/opa/v1/ast"
)

// need is the part of the input a compiled policy set can read, as a tree of
// input field names. Building the whole OPA-Envoy input costs more than
// evaluating a typical policy, so only what some rule refers to is built.
//
// The tree comes from every reference to input in the compiled modules and
// the query: input.attributes.request.http.method needs that one field;
// input.attributes.request.http.headers[x] needs all headers; a bare input
// (passed to a function, bound to a variable, walked) needs everything.
// A nil *need reads nothing; all reads everything below it.
type need struct {
	all      bool
	children map[*ast.Term]*need
}

// all is the need of a whole subtree.
var all = &need{all: true}

// child returns the need below field k, nil when the policy never reads it.
func (n *need) child(k *ast.Term) *need {
	if n == nil {
		return nil
	}
	if n.all {
		return n
	}
	return n.children[k]
}

// has reports whether the policy reads field k or anything below it.
func (n *need) has(k *ast.Term) bool { return n.child(k) != nil }

// inputKeys maps every field name of the input schema to its shared key
// term; the need tree is keyed by those terms.
var inputKeys = func() map[string]*ast.Term {
	m := map[string]*ast.Term{}
	for _, k := range []*ast.Term{
		kAttributes, kSource, kDestination, kAddress, kSocketAddress, kPortValue,
		kPrincipal, kCertificate, kService, kLabels, kRequest, kTime, kHTTP, kID,
		kMethod, kHeaders, kHeaderMap, kPath, kHost, kScheme, kQuery, kFragment,
		kSize, kProtocol, kBody, kRawBody, kContextExt, kMetadataContext,
		kTLSSession, kSNI, kParsedPath, kParsedQuery, kParsedBody, kTruncatedBody,
		kVersion, kToken, kRoute, kRouteMetadata, kValue, kSeconds, kNanos, kSourcePrincipal,
	} {
		m[string(k.Value.(ast.String))] = k
	}
	return m
}()

// inputNeed returns what the compiled modules and the query read of input;
// data is the set's base documents.
//
// A claim read by a name the function was given, input.token.claims[claim]
// in a function whose parameter claim is (FAPI's consent_matches), needs
// only the claims its callers name, when each call names one with a string
// or with base data (data.openbanking.settings.consent_claim); else, as for
// any claim read by a variable, all claims.
func inputNeed(c *ast.Compiler, query ast.Body, data ast.Object) *need {
	root := &need{}
	var params []claimParam
	for _, m := range c.Modules {
		ast.WalkRules(m, func(rule *ast.Rule) bool {
			ast.WalkRefs(rule.Body, func(r ast.Ref) bool {
				if !r.HasPrefix(ast.InputRootRef) {
					return false
				}
				if i, ok := claimByParam(rule, r); ok {
					params = append(params, claimParam{fn: rule.Ref(), arg: i, rest: r})
					return false
				}
				root.add(r[1:])
				return false
			})
			// The head: a rule's value, key and arguments.
			ast.WalkRefs(rule.Head, func(r ast.Ref) bool {
				if r.HasPrefix(ast.InputRootRef) {
					root.add(r[1:])
				}
				return false
			})
			return false
		})
	}
	ast.WalkRefs(query, func(r ast.Ref) bool {
		if r.HasPrefix(ast.InputRootRef) {
			root.add(r[1:])
		}
		return false
	})
	// A with modifier can replace the data a call names its claim with, or
	// the function itself with one no call names: then no name is known.
	replaced := usesWith(c, query)
	for _, p := range params {
		names, ok := claimNamesPassed(c, query, data, p)
		ok = ok && !replaced
		if !ok {
			root.add(p.rest[1:]) // claims[var]: all claims
			continue
		}
		for _, name := range names {
			root.add(ast.Ref{ast.InputRootDocument, kToken, kClaims, ast.StringTerm(name)}[1:])
		}
	}
	if !root.all && len(root.children) == 0 {
		return nil
	}
	return root
}

// usesWith reports whether any expression of the set or the query has a
// with modifier.
func usesWith(c *ast.Compiler, query ast.Body) bool {
	found := false
	visit := func(e *ast.Expr) bool {
		found = found || len(e.With) > 0
		return found
	}
	for _, m := range c.Modules {
		ast.WalkExprs(m, visit)
	}
	ast.WalkExprs(query, visit)
	return found
}

// claimParam is a function's read of input.token.claims[p], p its
// parameter number arg; rest is the whole ref.
type claimParam struct {
	fn   ast.Ref
	arg  int
	rest ast.Ref
}

// claimByParam reports whether r reads input.token.claims[v] with v a
// parameter of the function rule, and which.
func claimByParam(rule *ast.Rule, r ast.Ref) (int, bool) {
	if len(rule.Head.Args) == 0 || len(r) < 4 || !r[1].Equal(kToken) || !r[2].Equal(kClaims) {
		return 0, false
	}
	v, ok := r[3].Value.(ast.Var)
	if !ok {
		return 0, false
	}
	for i, a := range rule.Head.Args {
		if av, ok := a.Value.(ast.Var); ok && av.Equal(v) {
			return i, true
		}
	}
	return 0, false
}

// claimNamesPassed returns the claim names every call of p.fn passes as its
// parameter p.arg: a string, or a string of base data (directly, or through
// a variable the calling body binds to one); ok is false when a call passes
// anything else.
func claimNamesPassed(c *ast.Compiler, query ast.Body, data ast.Object, p claimParam) (names []string, ok bool) {
	ok = true
	visit := func(body ast.Body) {
		for _, e := range body {
			ast.WalkExprs(e, func(x *ast.Expr) bool {
				if !ok || !x.IsCall() || !x.Operator().Equal(p.fn) {
					return false
				}
				name, found := stringArg(x.Operand(p.arg), body, data)
				if !found {
					ok = false
					return true
				}
				names = append(names, name)
				return false
			})
		}
	}
	for _, m := range c.Modules {
		ast.WalkRules(m, func(rule *ast.Rule) bool {
			visit(rule.Body)
			return !ok
		})
	}
	visit(query)
	return names, ok
}

// stringArg resolves a call's argument to a string: a string term, a ref to
// base data holding one, or a variable body binds (v = x, v := x) to either.
// A negated equality binds nothing: `not v = "x"` holds for every v but "x".
func stringArg(arg *ast.Term, body ast.Body, data ast.Object) (string, bool) {
	if arg == nil {
		return "", false
	}
	if v, ok := arg.Value.(ast.Var); ok {
		bound := false
		for _, e := range body {
			if e.Negated || !e.IsEquality() && !e.IsAssignment() {
				continue
			}
			l, r := e.Operand(0), e.Operand(1)
			switch {
			case l.Equal(ast.VarTerm(string(v))):
				arg, bound = r, true
			case r.Equal(ast.VarTerm(string(v))):
				arg, bound = l, true
			}
			if bound {
				break
			}
		}
		if !bound {
			return "", false
		}
	}
	switch x := arg.Value.(type) {
	case ast.String:
		return string(x), true
	case ast.Ref:
		if !x.HasPrefix(ast.DefaultRootRef) || !x.IsGround() || data == nil {
			return "", false
		}
		v, err := data.Find(x[1:])
		if err != nil {
			return "", false
		}
		s, ok := v.(ast.String)
		return string(s), ok
	}
	return "", false
}

// add marks the path (the ref after "input") as read. The path stops at the
// first part that is not a constant string (a variable, a number): everything
// below that point is needed.
func (n *need) add(path ast.Ref) {
	for _, part := range path {
		if n.all {
			return
		}
		s, ok := part.Value.(ast.String)
		if !ok {
			n.setAll()
			return
		}
		k, ok := inputKeys[string(s)]
		if !ok {
			// A name outside the schema: a header, a context extension,
			// a label. The builder never looks it up, but the decision
			// cache keys on exactly the names read.
			k = n.named(string(s))
		}
		next := n.children[k]
		if next == nil {
			if n.children == nil {
				n.children = map[*ast.Term]*need{}
			}
			next = &need{}
			n.children[k] = next
		}
		n = next
	}
	// The path ends here: the whole value is read.
	n.setAll()
}

// childNamed returns the need below the field called name (nil: not read).
func (n *need) childNamed(name string) *need {
	if n == nil {
		return nil
	}
	if n.all {
		return n
	}
	for k, c := range n.children {
		if string(k.Value.(ast.String)) == name {
			return c
		}
	}
	return nil
}

// named returns the key term of the child called name, a new one when
// there is none yet.
func (n *need) named(name string) *ast.Term {
	for k := range n.children {
		if string(k.Value.(ast.String)) == name {
			return k
		}
	}
	return ast.StringTerm(name)
}

func (n *need) setAll() {
	n.all = true
	n.children = nil
}
