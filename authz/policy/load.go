package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// policySet is one compiled generation of the policy directory or bundle.
// What it compiled never changes (its caches synchronise themselves): a
// reload builds a new set and swaps the pointer.
type policySet struct {
	compiler *ast.Compiler
	// query is the configured query, compiled, with its value captured in
	// decisionVar.
	query         ast.Body
	queryCompiler ast.QueryCompiler
	store         storage.Store
	// txn is a read transaction on the set's own store, opened once and
	// shared by every evaluation. Nothing ever writes to that store, and an
	// in-memory read transaction is a plain pointer into the data, so
	// sharing it is safe and saves a lock and an allocation per request. It
	// is never closed: the store goes away with the set.
	txn  storage.Transaction
	data *dataCache
	need *need
	// plan keys the set's decisions in the decision cache; nil when they
	// must not be cached. gen numbers the set in those keys.
	plan *keyPlan
	gen  uint64
	// evaluators are reusable evaluation states of this set (see evaluator).
	evaluators sync.Pool
	// hash identifies the files the set was loaded from (see snapshot), or
	// the bundle's tarball.
	hash     [sha256.Size]byte
	revision string
	// defaultValue is the query's default rule value (nil: none).
	defaultValue ast.Value
}

// decisionVar receives the value of the configured query.
var decisionVar = ast.Var("phantom_authz_decision")

// maxDirDepth stops a symlink loop in the policy directory.
const maxDirDepth = 32

// snapshot is the content of the policy directory as the loader sees it.
type snapshot struct {
	hash  [sha256.Size]byte
	files map[string][]byte // by path as the loader names it
	rego  int               // number of .rego files
}

// loaderFilter keeps the serving set: no hidden files or directories (editor
// swap files, Kubernetes' ..data), no *_test.rego.
func loaderFilter(_ string, info fs.FileInfo, depth int) bool {
	if depth == 0 {
		return false
	}
	name := info.Name()
	if strings.HasPrefix(name, ".") {
		return true
	}
	return !info.IsDir() && strings.HasSuffix(name, "_test.rego")
}

// loaded reports whether the loader takes a file of this name (below the
// root it skips files of unknown types).
func loaded(name string) bool {
	switch filepath.Ext(name) {
	case ".rego", ".json", ".yaml", ".yml":
		return true
	}
	return strings.HasSuffix(name, ".tar.gz")
}

// takeSnapshot reads every file the loader would load under dir, following
// the loader's rules (symlinks followed, same filter), and hashes paths and
// contents. Reading before loading means a change racing a reload is seen by
// the next check rather than lost.
func takeSnapshot(dir string) (*snapshot, error) {
	s := &snapshot{files: map[string][]byte{}}
	h := sha256.New()
	var walk func(path string, depth int) error
	walk = func(path string, depth int) error {
		if depth > maxDirDepth {
			return fmt.Errorf("%s: directories nested too deep (a symlink loop?)", path)
		}
		info, err := os.Stat(path)
		if err != nil {
			return err
		}
		if loaderFilter(path, info, depth) {
			return nil
		}
		if !info.IsDir() {
			if depth > 0 && !loaded(info.Name()) {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, path)
			fmt.Fprintf(h, "%s\x00%d\x00", filepath.ToSlash(rel), len(b))
			h.Write(b)
			s.files[path] = b
			if filepath.Ext(path) == ".rego" {
				s.rego++
			}
			return nil
		}
		entries, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := walk(filepath.Join(path, e.Name()), depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(dir, 0); err != nil {
		return nil, err
	}
	h.Sum(s.hash[:0])
	return s, nil
}

// loadSet loads, compiles and prepares the policy set in dir.
func loadSet(ctx context.Context, dir, query string) (*policySet, error) {
	snap, err := takeSnapshot(dir)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return loadSnapshot(ctx, dir, query, snap)
}

// loadSnapshot loads the set whose files snap has just read.
func loadSnapshot(ctx context.Context, dir, query string, snap *snapshot) (*policySet, error) {
	if snap.rego == 0 {
		return nil, fmt.Errorf("policy: no .rego files in %s", dir)
	}

	res, err := loader.NewFileLoader().
		WithRegoVersion(ast.RegoV1).
		Filtered([]string{dir}, loaderFilter)
	if err != nil {
		return nil, fmt.Errorf("policy: %s", describe(err, snap))
	}

	set, err := compileSet(ctx, query, res.ParsedModules(), res.Documents,
		func(err error) string { return describe(err, snap) })
	if err != nil {
		return nil, err
	}
	set.hash = snap.hash
	set.revision = hex.EncodeToString(snap.hash[:6])
	return set, nil
}

// compileSet compiles modules (with the helper library) and data into a
// policy set ready to evaluate query; explain renders compile errors. The
// caller sets the set's hash and revision.
func compileSet(ctx context.Context, query string, parsed map[string]*ast.Module, documents any,
	explain func(error) string) (*policySet, error) {
	data, err := ast.InterfaceToValue(documents)
	if err != nil {
		return nil, fmt.Errorf("policy: data: %w", err)
	}
	obj, ok := data.(ast.Object)
	if !ok {
		return nil, errors.New("policy: data is not an object")
	}
	// The store hands out AST values as they are: evaluation reads the
	// route tables without converting them on every request.
	store := inmem.NewFromASTObject(obj)
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}

	modules, err := Library()
	if err != nil {
		return nil, err
	}
	for name, m := range parsed {
		modules[name] = m
	}
	compiler := ast.NewCompiler().WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn))
	compiler.Compile(modules)
	if compiler.Failed() {
		return nil, fmt.Errorf("policy: %s", explain(compiler.Errors))
	}

	body, qc, err := compileQuery(compiler, query)
	if err != nil {
		return nil, fmt.Errorf("policy: query %q: %s", query, explain(err))
	}

	need := inputNeed(compiler, body, obj)
	return &policySet{
		plan:          newKeyPlan(compiler, need),
		gen:           setGenerations.Add(1),
		compiler:      compiler,
		query:         body,
		queryCompiler: qc,
		store:         store,
		txn:           txn,
		data:          &dataCache{},
		need:          need,
		defaultValue:  defaultValue(compiler, query),
	}, nil
}

// compileQuery compiles the configured query, a reference such as
// data.envoy.authz.allow, into "decisionVar = <query>".
func compileQuery(c *ast.Compiler, query string) (ast.Body, ast.QueryCompiler, error) {
	parsed, err := ast.ParseBodyWithOpts(query, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return nil, nil, err
	}
	ref, ok := parsed[0].Terms.(*ast.Term)
	if len(parsed) != 1 || !ok || parsed[0].Negated || len(parsed[0].With) > 0 {
		return nil, nil, errors.New("must be a single reference, such as data.envoy.authz.allow")
	}
	if _, ok := ref.Value.(ast.Ref); !ok {
		return nil, nil, errors.New("must be a reference, such as data.envoy.authz.allow")
	}
	qc := c.QueryCompiler()
	body, err := qc.Compile(ast.NewBody(ast.Equality.Expr(ast.NewTerm(decisionVar), ref)))
	if err != nil {
		return nil, nil, err
	}
	return body, qc, nil
}

// describe renders load and compile errors one per line as file:line:
// message, so an operator can go straight to the mistake.
func describe(err error, snap *snapshot) string {
	var lines []string
	var add func(error)
	add = func(err error) {
		var astErrs ast.Errors
		var loadErrs loader.Errors
		var astErr *ast.Error
		switch {
		case errors.As(err, &loadErrs):
			for _, e := range loadErrs {
				add(e)
			}
		case errors.As(err, &astErrs):
			for _, e := range astErrs {
				lines = append(lines, e.Error())
			}
		case errors.As(err, &astErr):
			lines = append(lines, astErr.Error())
		default:
			lines = append(lines, jsonLine(err, snap))
		}
	}
	add(err)
	return strings.Join(lines, "\n")
}

// jsonLine adds the line number to a JSON syntax error in a data file (the
// loader reports "path: message" with only a byte offset inside).
func jsonLine(err error, snap *snapshot) string {
	msg := err.Error()
	var syn *json.SyntaxError
	if !errors.As(err, &syn) {
		return msg
	}
	path, rest, ok := strings.Cut(msg, ": ")
	b, found := snap.files[path]
	if !ok || !found {
		return msg
	}
	off := min(int(syn.Offset), len(b))
	line := bytes.Count(b[:off], []byte("\n")) + 1
	return fmt.Sprintf("%s:%d: %s", path, line, rest)
}
