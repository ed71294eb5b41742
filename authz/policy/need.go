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

// inputNeed returns what the compiled modules and the query read of input.
func inputNeed(c *ast.Compiler, query ast.Body) *need {
	root := &need{}
	visit := func(r ast.Ref) bool {
		if !r.HasPrefix(ast.InputRootRef) {
			return false
		}
		root.add(r[1:])
		return false
	}
	for _, m := range c.Modules {
		ast.WalkRefs(m, visit)
	}
	ast.WalkRefs(query, visit)
	if !root.all && len(root.children) == 0 {
		return nil
	}
	return root
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
