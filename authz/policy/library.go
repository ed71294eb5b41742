package policy

import (
	_ "embed"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
)

// fapiRego is the helper library every policy set is compiled with
// (data.phantom.fapi: step-up, consent). It ships inside the binary, so a
// policy can rely on it whatever policy.dir holds, and it is not part of the
// directory's content hash: it changes only with the binary.
//
//go:embed lib/fapi.rego
var fapiRego string

// libraryFile is the name the library's module goes by in compile errors.
const libraryFile = "phantom-authz:lib/fapi.rego"

// Library returns the helper modules phantom-authz compiles with every
// policy set, by file name, freshly parsed (the compiler may keep them).
// Tools that compile or test the policies outside the server (the Rego tests
// of policies/) add them to their own modules.
func Library() (map[string]*ast.Module, error) {
	m, err := ast.ParseModuleWithOpts(libraryFile, fapiRego, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, fmt.Errorf("policy: library: %w", err)
	}
	return map[string]*ast.Module{libraryFile: m}, nil
}
