package server

import (
	"net/http"
)

// HTTPConfig is what the HTTP server serves.
type HTTPConfig struct {
	// Ready reports readiness (policies compiled and loaded).
	Ready func() bool
	// JWKS is the public key set of minted JWTs; nil serves an empty set.
	JWKS func() []byte
	// Extra handlers mounted as they are (e.g. "/metrics").
	Extra map[string]http.Handler
	// Admin, when set with a Token and a Revoker, serves POST /admin/revoke,
	// and with a Token and PProf the profiles under /debug/pprof/; otherwise
	// those paths answer 404.
	Admin *AdminConfig
}

// NewHTTPHandler serves GET /healthz (alive), GET /readyz (200 once ready,
// else 503), GET /.well-known/jwks.json and, when configured, POST
// /admin/revoke and GET /debug/pprof/.
func NewHTTPHandler(cfg HTTPConfig) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if cfg.Ready == nil || !cfg.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		body := []byte(`{"keys":[]}`)
		if cfg.JWKS != nil {
			body = cfg.JWKS()
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(body)
	})
	if a := cfg.Admin; a != nil && a.Token != "" {
		if a.Revoker != nil {
			mux.Handle("POST /admin/revoke", revokeHandler(*a))
		}
		if a.PProf {
			mux.Handle("GET /debug/pprof/", pprofHandler(*a))
		}
	}
	for p, h := range cfg.Extra {
		mux.Handle(p, h)
	}
	return mux
}
