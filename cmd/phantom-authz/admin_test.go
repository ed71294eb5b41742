package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz/config"
	"github.com/phantom-authz/phantom-authz/authz/server"
)

// With admin.pprof on and no credentials configured (no resolver), the
// profiles are served and POST /admin/revoke is not: a nil resolver must
// not become a revoker that panics.
func TestAdminConfigPProfWithoutResolver(t *testing.T) {
	const tok = "admin-0123456789abcdef"
	var cfg config.Config
	cfg.Admin = config.Admin{TokenFile: "/x", Token: tok, PProf: true}
	a := adminConfig(cfg, &stack{}, nil)
	if a == nil || !a.PProf || a.Revoker != nil {
		t.Fatalf("admin config %+v: want pprof on, no revoker", a)
	}
	h := server.NewHTTPHandler(server.HTTPConfig{Admin: a})
	get := httptest.NewRequest(http.MethodGet, "/debug/pprof/heap", nil)
	get.Header.Set("Authorization", "Bearer "+tok)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, get)
	if rec.Code != http.StatusOK {
		t.Errorf("heap: status %d, want 200", rec.Code)
	}
	post := httptest.NewRequest(http.MethodPost, "/admin/revoke", strings.NewReader("token=x"))
	post.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	post.Header.Set("Authorization", "Bearer "+tok)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, post)
	if rec.Code != http.StatusNotFound {
		t.Errorf("revoke: status %d, want 404", rec.Code)
	}

	cfg.Admin.PProf = false
	if a := adminConfig(cfg, &stack{}, nil); a != nil {
		t.Errorf("admin token, no pprof, nothing to revoke: %+v, want nil (404)", a)
	}
}
