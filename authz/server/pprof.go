package server

import (
	"log/slog"
	"net/http"
	"net/http/pprof"
)

// pprofHandler serves Go's runtime profiles (net/http/pprof) under
// /debug/pprof/: the index and every named profile (heap, allocs,
// goroutine, block, mutex, threadcreate), profile (CPU, ?seconds=N),
// trace, cmdline and symbol. Profiles show the program's inner workings and
// a CPU profile or trace costs CPU while it runs, so every path demands the
// admin credential, as POST /admin/revoke does.
func pprofHandler(cfg AdminConfig) http.Handler {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	auth := newAdminAuth(cfg.Token, log)
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if !auth.allow(w, r, "profiling") {
			return
		}
		mux.ServeHTTP(w, r)
	})
}
