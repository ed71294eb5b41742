package policy

import (
	"context"
	"errors"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
)

// evaluator is the reusable state of one evaluation of a policy set: the
// topdown query with its compiled body and wiring, the rule cache, the
// cancellation check. The set pools them, so a decision allocates only what
// the evaluation itself needs.
//
// This is what rego.PreparedEvalQuery.Eval does, minus what a decision does
// not need: no metrics, no result set converted to Go values, no goroutine
// per evaluation to watch the context.
type evaluator struct {
	q      *topdown.Query
	rules  ruleCache
	cancel ctxCancel
	iter   func(topdown.QueryResult) error

	results int
	result  *ast.Term

	// nd records the non-deterministic builtins an evaluation called, and
	// builtinErrs the builtins that failed (a failed call is not recorded
	// in nd): either makes the decision unfit for the decision cache.
	nd          builtins.NDBCache
	builtinErrs []topdown.Error
}

// noMetadata is the request metadata handed to builtins: none. Read-only.
var noMetadata = map[string]any{}

func (s *policySet) evaluator() *evaluator {
	if ev, ok := s.evaluators.Get().(*evaluator); ok {
		return ev
	}
	ev := &evaluator{nd: builtins.NDBCache{}}
	ev.q = topdown.NewQuery(s.query).
		WithQueryCompiler(s.queryCompiler).
		WithCompiler(s.compiler).
		WithStore(s.store).
		WithTransaction(s.txn).
		WithMetrics(metrics.NoOp()).
		WithBaseCache(s.data).
		WithVirtualCache(&ev.rules).
		WithCancel(&ev.cancel).
		WithRequestMetadata(noMetadata).
		WithNDBuiltinCache(ev.nd).
		WithBuiltinErrorList(&ev.builtinErrs)
	ev.iter = ev.collect
	return ev
}

func (s *policySet) release(ev *evaluator) {
	ev.rules.reset()
	ev.cancel = ctxCancel{}
	ev.result = nil
	clear(ev.nd)
	clear(ev.builtinErrs)
	ev.builtinErrs = ev.builtinErrs[:0]
	s.evaluators.Put(ev)
}

// ErrEvalTimeout is the error of an evaluation stopped at its deadline
// (Config.EvalTimeout): a policy that iterates too much, or a builtin that
// takes too long. The request is denied (503), never allowed.
var ErrEvalTimeout = errors.New("policy: evaluation stopped: it took longer than policy.eval_timeout")

// eval runs the query on input and returns how many results it had; the
// last one is in ev.result. A timeout > 0 stops the evaluation after that
// long with ErrEvalTimeout.
func (ev *evaluator) eval(ctx context.Context, input *ast.Term, timeout time.Duration) (int, error) {
	ev.rules.start()
	now := time.Now()
	ev.cancel.ctx = ctx
	if timeout > 0 {
		ev.cancel.deadline = now.Add(timeout)
	}
	ev.results, ev.result = 0, nil
	err := ev.q.WithInput(input).WithTime(now).Iter(ctx, ev.iter)
	if err != nil && ev.cancel.expired {
		return ev.results, ErrEvalTimeout
	}
	return ev.results, err
}

// deterministic reports whether the last evaluation's result depends only on
// its input and the policy set: it called no non-deterministic builtin and
// no builtin failed.
func (ev *evaluator) deterministic() bool {
	return len(ev.nd) == 0 && len(ev.builtinErrs) == 0
}

func (ev *evaluator) collect(qr topdown.QueryResult) error {
	ev.results++
	ev.result = qr[decisionVar]
	return nil
}

// ctxCancel stops an evaluation once its context ends or its deadline
// passes. The evaluator polls it between steps (and numbers.range per
// number); reading a context's error is an atomic load and the clock is
// read every deadlineEvery polls, so this replaces OPA's goroutine per
// evaluation, and a deadline costs no timer and no allocation.
type ctxCancel struct {
	ctx      context.Context
	deadline time.Time // zero: none
	polls    uint32
	expired  bool
}

// deadlineEvery is how many polls pass between two reads of the clock: an
// evaluation step is well under a microsecond, so the deadline is overshot
// by far less than a millisecond.
const deadlineEvery = 64

// Cancel is not used: the context and the deadline are the only sources of
// cancellation.
func (c *ctxCancel) Cancel() {}

// Cancelled reports whether the evaluation's context has ended or its
// deadline passed. One evaluation polls from one goroutine.
func (c *ctxCancel) Cancelled() bool {
	if c.ctx != nil && c.ctx.Err() != nil {
		return true
	}
	if c.deadline.IsZero() {
		return false
	}
	if c.expired {
		return true
	}
	c.polls++
	if c.polls%deadlineEvery == 0 && time.Now().After(c.deadline) {
		c.expired = true
	}
	return c.expired
}
