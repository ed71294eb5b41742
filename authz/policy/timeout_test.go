package policy_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/phantom-authz/phantom-authz/authz/policy"
)

// slowPolicies are policies whose evaluation takes seconds or more: a
// comprehension over 4 million pairs, and a builtin asked for a billion
// numbers. /fast is an ordinary rule beside them.
const slowPolicies = `package envoy.authz

default allow := false

allow if {
	input.attributes.request.http.path == "/pairs"
	count([x | some a in numbers.range(1, 2000); some b in numbers.range(1, 2000); x := a * b]) > 0
}

allow if {
	input.attributes.request.http.path == "/range"
	count(numbers.range(1, 1000000000)) > 0
}

allow if input.attributes.request.http.path == "/fast"
`

// An evaluation past policy.eval_timeout stops with ErrEvalTimeout, soon
// after the deadline, and is counted; it is never cached, and the next
// request's evaluation is unaffected.
func TestEvalTimeout(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"slow.rego": slowPolicies})
	const timeout = 50 * time.Millisecond
	e, err := policy.New(policy.Config{Dir: dir, Logger: slog.New(slog.DiscardHandler), EvalTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	for i, path := range []string{"/pairs", "/range", "/pairs"} {
		start := time.Now()
		d, err := e.Decide(context.Background(), getRequest(path, nil), nil)
		took := time.Since(start)
		if !errors.Is(err, policy.ErrEvalTimeout) {
			t.Fatalf("%s: err %v, want ErrEvalTimeout", path, err)
		}
		if d.Allowed || d.Status != 503 {
			t.Errorf("%s: decision %+v, want a 503 denial", path, d)
		}
		// Far past the deadline would mean the evaluation was not stopped
		// (it takes seconds); the bound is loose for a busy machine.
		if took > timeout+time.Second {
			t.Errorf("%s: took %s with a %s deadline", path, took, timeout)
		}
		if got := e.EvalTimeouts(); got != uint64(i+1) {
			t.Errorf("EvalTimeouts = %d, want %d", got, i+1)
		}
	}
	d, err := e.Decide(context.Background(), getRequest("/fast", nil), nil)
	if err != nil || !d.Allowed {
		t.Fatalf("/fast after timeouts: %+v, %v; want allowed", d, err)
	}
}

// The default deadline applies when none is configured; a negative one
// sets none (the caller's context still stops the evaluation).
func TestEvalTimeoutDefaultAndOff(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"slow.rego": slowPolicies})
	e, err := policy.New(policy.Config{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := e.Decide(context.Background(), getRequest("/range", nil), nil); !errors.Is(err, policy.ErrEvalTimeout) {
		t.Fatalf("default deadline: %v, want ErrEvalTimeout", err)
	}
	if took := time.Since(start); took < policy.DefaultEvalTimeout {
		t.Errorf("stopped after %s, before the default deadline %s", took, policy.DefaultEvalTimeout)
	}

	off, err := policy.New(policy.Config{Dir: dir, Logger: slog.New(slog.DiscardHandler), EvalTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	_, err = off.Decide(ctx, getRequest("/range", nil), nil)
	if err == nil || errors.Is(err, policy.ErrEvalTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no deadline, context ends: %v, want the context's error", err)
	}
	if got := off.EvalTimeouts(); got != 0 {
		t.Errorf("EvalTimeouts = %d without a deadline", got)
	}
}
