package main

import (
	"io"
	"log/slog"
	"runtime/debug"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz/config"
)

// The memory limit follows the cache sizes, and GOMEMLIMIT, when set,
// wins.
func TestLimitMemory(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := config.Config{}
	cfg.Cache.MaxBytes, cfg.Policy.DecisionCacheBytes = 32<<20, 8<<20

	t.Setenv("GOMEMLIMIT", "")
	limitMemory(cfg, quiet)
	if got, want := debug.SetMemoryLimit(-1), int64(32<<20+8<<20+memoryOverhead); got != want {
		t.Errorf("memory limit %d, want cache.max_bytes + policy.decision_cache_bytes + %d = %d", got, memoryOverhead, want)
	}

	debug.SetMemoryLimit(old)
	t.Setenv("GOMEMLIMIT", "1GiB")
	limitMemory(cfg, quiet)
	if got := debug.SetMemoryLimit(-1); got != old {
		t.Errorf("with GOMEMLIMIT set the limit changed to %d", got)
	}
}
