package main

import (
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/phantom-authz/phantom-authz/authz/config"
)

// memoryOverhead is what the process needs besides its two caches: the
// runtime, the compiled policies, connections and their buffers, and room
// for the garbage of the requests in flight between two collections.
const memoryOverhead = 64 << 20

// limitMemory sets the Go runtime's soft memory limit to what the
// configuration lets the caches hold plus memoryOverhead, unless GOMEMLIMIT
// is set (it wins). Under a stream of tokens never seen before the token
// cache stays full and every check leaves garbage; with the default GOGC
// alone the heap grows to twice what is live and the freed pages return to
// the system slowly: scenario b1 of e2e/bench (a new JWT every request, 60 s)
// reached 290 MiB of RSS with the default 64 MiB token cache and 16 MiB
// decision cache, against 171 MiB with this limit. The price is more
// frequent collections once the caches are full: 293 -> 389 µs of CPU per
// check in that run (one run each on a busy machine). A deployment that
// prefers CPU to memory sets GOMEMLIMIT higher (or GOGC). The limit is soft:
// the collector works harder near it, and never fails an allocation.
func limitMemory(cfg config.Config, log *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit := cfg.Cache.MaxBytes + cfg.Policy.DecisionCacheBytes + memoryOverhead
	debug.SetMemoryLimit(limit)
	log.Debug("memory limit set from the cache sizes", "bytes", limit)
}
