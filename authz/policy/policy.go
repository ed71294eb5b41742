// Package policy is the decide stage: it evaluates the Rego policies in a
// directory, or in an OPA bundle polled from a bundle server (OPA, embedded),
// against each request and its token.
//
// Policies are compiled once per change of the directory or bundle and
// evaluated many times; a reload swaps the compiled set atomically, and a
// set that does not compile is refused while the last good one keeps
// serving. The input is a superset of the OPA-Envoy plugin's, so OPA-Envoy
// policies run unchanged, and the decision is a boolean or the OPA-Envoy
// decision object.
package policy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// Config configures an Engine. The zero value serves ./policies.
type Config struct {
	// Dir holds the policies: every .rego file and every JSON or YAML data
	// file under it, recursively, as OPA's loader takes them (data nests by
	// directory: a/b/data.json is data.a.b). *_test.rego files and hidden
	// files are not served. Default "./policies".
	Dir string
	// Query is the decision to evaluate. Default "data.envoy.authz.allow".
	Query string
	// Logger receives reload results and errors. Default slog.Default().
	Logger *slog.Logger
	// PollInterval is how often Watch re-reads the directory in case a file
	// change was not notified (network file systems, some volume mounts).
	// Default 1s.
	PollInterval time.Duration
	// DecisionCacheBytes is the memory budget of the decision cache, which
	// serves a repeated request (same token, same fields read by the
	// policies) without evaluating the policy again. 0 means
	// DefaultDecisionCacheBytes; a negative value turns the cache off.
	DecisionCacheBytes int64
	// Bundle, when set, takes the policies from an OPA bundle server
	// instead of Dir: the engine is not ready until the first bundle is
	// activated (see Watch and Fetch).
	Bundle *BundleConfig
	// EvalTimeout bounds one evaluation: past it the evaluation stops and
	// the request is denied (503), as when Envoy's own ext_authz timeout
	// strikes, but before it, with the cause logged. 0 means
	// DefaultEvalTimeout; a negative value sets no bound (the caller's
	// context still stops it).
	EvalTimeout time.Duration
}

// Defaults for Config.
const (
	DefaultDir          = "./policies"
	DefaultQuery        = "data.envoy.authz.allow"
	DefaultPollInterval = time.Second
	// DefaultEvalTimeout is well under Envoy's usual ext_authz timeout
	// (250ms in envoy/envoy.yaml) and three orders of magnitude above the
	// evaluation of a typical policy (tens of microseconds).
	DefaultEvalTimeout = 100 * time.Millisecond
)

// Engine decides requests by policy. It is safe for concurrent use.
type Engine struct {
	dir          string
	query        string
	log          *slog.Logger
	pollInterval time.Duration

	set atomic.Pointer[policySet]

	// reloadMu serialises reloads (never taken by Decide).
	reloadMu  sync.Mutex
	failedKey string // what last failed to load (content hash or read error), not to retry

	reloadsOK, reloadsFailed atomic.Uint64

	// evalTimeout bounds each evaluation (0: none); evalTimeouts counts the
	// evaluations it stopped.
	evalTimeout  time.Duration
	evalTimeouts atomic.Uint64

	// decisions caches deterministic decisions (see decisions.go); nil
	// when off.
	decisions *decisionCache

	// bundle is the bundle server the policies come from; nil: dir.
	bundle *bundleSource
}

// The engine is the pipeline's Decider and TokenPreparer.
var (
	_ authz.Decider       = (*Engine)(nil)
	_ authz.TokenPreparer = (*Engine)(nil)
)

// New loads and compiles the policies in cfg.Dir. An error names the file,
// line and message of every problem found. With cfg.Bundle, New only
// prepares the bundle client: Watch or Fetch loads the policies.
func New(cfg Config) (*Engine, error) {
	e := &Engine{
		dir:          filepath.Clean(cmp.Or(cfg.Dir, DefaultDir)),
		query:        cmp.Or(cfg.Query, DefaultQuery),
		log:          cfg.Logger,
		pollInterval: cfg.PollInterval,
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.pollInterval <= 0 {
		e.pollInterval = DefaultPollInterval
	}
	switch {
	case cfg.EvalTimeout == 0:
		e.evalTimeout = DefaultEvalTimeout
	case cfg.EvalTimeout > 0:
		e.evalTimeout = cfg.EvalTimeout
	}
	var err error
	if e.decisions, err = newDecisionCache(e, cfg.DecisionCacheBytes); err != nil {
		return nil, fmt.Errorf("policy: decision cache: %w", err)
	}
	if cfg.Bundle != nil {
		if e.bundle, err = newBundleSource(e, *cfg.Bundle); err != nil {
			return nil, err
		}
		return e, nil
	}
	set, err := loadSet(context.Background(), e.dir, e.query)
	if err != nil {
		return nil, err
	}
	e.set.Store(set)
	return e, nil
}

// Fetch loads the policies once from the bundle server (or, when that
// fails, from the persisted copy) without polling afterwards: for a command
// that decides once. Without a bundle configured it does nothing.
func (e *Engine) Fetch(ctx context.Context) error {
	if e.bundle == nil {
		return nil
	}
	return e.bundle.fetch(ctx)
}

// Ready reports whether a compiled policy set is loaded.
func (e *Engine) Ready() bool { return e.set.Load() != nil }

// Revision is a short hash of the policy and data files being served, or
// the bundle's manifest revision.
func (e *Engine) Revision() string {
	if s := e.set.Load(); s != nil {
		return s.revision
	}
	return ""
}

// Reloads counts reloads since start: applied, and refused because the new
// files did not load or compile.
func (e *Engine) Reloads() (ok, failed uint64) {
	return e.reloadsOK.Load(), e.reloadsFailed.Load()
}

// EvalTimeouts counts the evaluations stopped at Config.EvalTimeout since
// start.
func (e *Engine) EvalTimeouts() uint64 { return e.evalTimeouts.Load() }

// PrepareToken gives the token its identity in decision cache keys, stored
// in tok.Prepared for every request that presents it, and refuses claims no
// policy could read. input.token itself is built per evaluation (see
// tokenInput).
func (e *Engine) PrepareToken(tok *token.Token) error {
	if tok == nil {
		return nil
	}
	claims, err := tok.ClaimMap()
	if err != nil {
		return err
	}
	if err := checkClaims(claims); err != nil {
		return err
	}
	ti := &tokenInput{id: tokenIDs.Add(1)}
	if set := e.set.Load(); set != nil && set.plan != nil && set.plan.tokenByValue {
		if key, ok := set.plan.tokenKey(tok, claims); ok {
			ti.key, ti.keyGen = string(key), set.gen
		}
	}
	tok.Prepared = ti
	return nil
}

// Decide evaluates the policy for r and tok (nil when the request carries
// no token). An undefined decision denies with 403. A malformed decision or
// an evaluation error returns an error (and a denial): the engine answers
// 503. A request the input cannot be built from (a JSON body that does not
// parse) returns an error wrapping authz.ErrInvalidInput.
func (e *Engine) Decide(ctx context.Context, r *authz.Request, tok *token.Token) (authz.Decision, error) {
	set := e.set.Load()
	if set == nil {
		return errorDecision(), errors.New("policy: no policy loaded")
	}
	if err := ctx.Err(); err != nil {
		return errorDecision(), fmt.Errorf("policy: %w", err)
	}
	ti, err := tokenFor(tok)
	if err != nil {
		return errorDecision(), err
	}
	var key decisionKey
	key.make(set, r, ti)
	if d, ok := e.decisions.get(&key); ok {
		return d, nil
	}
	if set.need.has(kToken) {
		if ti, err = ti.withTerm(tok); err != nil {
			return errorDecision(), err
		}
	}
	input, err := buildInput(set.need, r, ti)
	if err != nil {
		return authz.Decision{Status: http.StatusBadRequest, Reason: "invalid_request", Error: "invalid_request"},
			fmt.Errorf("policy: %w", err)
	}

	ev := set.evaluator()
	defer set.release(ev)
	results, err := ev.eval(ctx, input, e.evalTimeout)
	if err != nil {
		if errors.Is(err, ErrEvalTimeout) {
			e.evalTimeouts.Add(1)
			return errorDecision(), fmt.Errorf("%w (%s)", err, e.evalTimeout)
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return errorDecision(), fmt.Errorf("policy: evaluation stopped: %w", ctxErr)
		}
		return errorDecision(), fmt.Errorf("policy: evaluation: %w", err)
	}
	switch {
	case results == 0:
		return undefinedDecision, nil
	case results > 1:
		return errorDecision(), fmt.Errorf("%w: the query has %d results, want one", errMalformed, results)
	}
	d, err := toDecision(ev.result.Value)
	d.DefaultRule = err == nil && set.isDefault(ev.result.Value)
	if err == nil && ev.deterministic() {
		e.decisions.put(&key, d)
	}
	return d, err
}
