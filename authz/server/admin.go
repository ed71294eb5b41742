package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"mime"
	"net/http"
	"strings"
)

// Revoker makes a token inactive in the caches of this replica and, when
// replicas share Redis, of every replica (token.Resolver). An error means
// this replica applied the revocation but could not pass it on.
type Revoker interface {
	Revoke(ctx context.Context, token string) error
}

// AdminConfig configures the administrative endpoints: POST /admin/revoke
// and, with PProf, Go's profiles under /debug/pprof/.
type AdminConfig struct {
	// Token is the bearer credential the endpoints demand. Required.
	Token string
	// Revoker applies revocations; nil turns POST /admin/revoke off (404).
	Revoker Revoker
	// PProf serves net/http/pprof's handlers under /debug/pprof/, behind
	// Token.
	PProf bool
	// Logger receives one line per revocation and per refused call; nil
	// discards them. Neither token is ever logged.
	Logger *slog.Logger
}

// adminRealm is the realm of the endpoint's challenges, apart from the one
// clients of the protected APIs see.
const adminRealm = "phantom-authz-admin"

// maxAdminBody bounds the form of a revocation (a token is at most 8 KiB).
const maxAdminBody = 16 << 10

// revokeHandler serves POST /admin/revoke in the shape of RFC 7009: a form
// with token (token_type_hint is accepted and ignored), 200 whether or not
// the token was known. The caller authenticates with the admin credential
// as a bearer token, compared in constant time.
func revokeHandler(cfg AdminConfig) http.Handler {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	auth := newAdminAuth(cfg.Token, log)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if !auth.allow(w, r, "revocation") {
			return
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
			adminProblem(w, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxAdminBody)
		if err := r.ParseForm(); err != nil {
			adminProblem(w, http.StatusBadRequest, "invalid_request", "the body is not a form of at most 16 KiB")
			return
		}
		tokens := r.PostForm["token"]
		if len(tokens) != 1 || tokens[0] == "" {
			adminProblem(w, http.StatusBadRequest, "invalid_request", "the form must carry exactly one token")
			return
		}
		err := cfg.Revoker.Revoke(r.Context(), tokens[0])
		id := sha256.Sum256([]byte(tokens[0]))
		if err != nil {
			// Applied here; the caller should retry so the others get it.
			log.Error("admin: token revoked on this replica only", "token_id", hexID(id[:16]), "err", err)
			w.Header().Set("Retry-After", "1")
			adminProblem(w, http.StatusServiceUnavailable, "temporarily_unavailable",
				"the token was revoked on this replica only: the other replicas could not be told; retry")
			return
		}
		log.Info("admin: token revoked", "token_id", hexID(id[:16]), "remote", r.RemoteAddr)
		w.WriteHeader(http.StatusOK)
	})
}

// adminAuth checks the admin bearer credential of the administrative
// endpoints (revocation, profiling).
type adminAuth struct {
	want [sha256.Size]byte
	log  *slog.Logger
}

func newAdminAuth(token string, log *slog.Logger) adminAuth {
	return adminAuth{want: sha256.Sum256([]byte(token)), log: log}
}

// allow reports whether r carries the admin credential as a bearer token,
// compared in constant time (over hashes, so the length leaks nothing
// either). Otherwise it answers 401 with the admin realm's challenge, logs
// the refusal of what (never the credential presented) and returns false.
func (a adminAuth) allow(w http.ResponseWriter, r *http.Request, what string) bool {
	scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || cred == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+adminRealm+`"`)
		adminProblem(w, http.StatusUnauthorized, "", "this endpoint requires the admin bearer token")
		a.log.Warn("admin: "+what+" refused: no admin token", "remote", r.RemoteAddr)
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(cred)))
	if subtle.ConstantTimeCompare(got[:], a.want[:]) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+adminRealm+`", error="invalid_token"`)
		adminProblem(w, http.StatusUnauthorized, "invalid_token", "the admin token is not valid")
		a.log.Warn("admin: "+what+" refused: wrong admin token", "remote", r.RemoteAddr)
		return false
	}
	return true
}

// hexID is the ID a revocation is logged by: the first 128 bits of the
// token's SHA-256 (token.TokenID), never the token.
func hexID(b []byte) string { return hex.EncodeToString(b) }

// adminProblem writes an RFC 9457 problem with the OAuth error code.
func adminProblem(w http.ResponseWriter, status int, code, detail string) {
	body, err := json.Marshal(struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail,omitempty"`
		Error  string `json:"error,omitempty"`
	}{"about:blank", http.StatusText(status), status, detail, code})
	if err != nil {
		body = []byte(`{}`)
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
