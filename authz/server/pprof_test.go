package server_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/pprof/profile"

	"github.com/phantom-authz/phantom-authz/authz/server"
)

// pprofPaths are the profiles an operator (or e2e/bench) asks for.
var pprofPaths = []string{
	"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/allocs", "/debug/pprof/goroutine?debug=1",
	"/debug/pprof/profile?seconds=1", "/debug/pprof/trace?seconds=1", "/debug/pprof/cmdline",
}

func pprofGet(t *testing.T, h http.Handler, path, auth string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// Whoever reaches the HTTP port without the admin credential gets no
// profile: the same 401 and challenge as POST /admin/revoke, and the
// credential tried is never logged.
func TestPProfRefusesWithoutTheAdminToken(t *testing.T) {
	var logs bytes.Buffer
	h := server.NewHTTPHandler(server.HTTPConfig{Admin: &server.AdminConfig{
		Token: adminToken, PProf: true, Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
	}})
	const wrong = "Bearer not-the-admin-token-0123"
	cases := []struct {
		name, auth, challenge, errCode string
	}{
		{"no credential", "", `Bearer realm="phantom-authz-admin"`, ""},
		{"basic scheme", "Basic " + adminToken, `Bearer realm="phantom-authz-admin"`, ""},
		{"empty bearer", "Bearer ", `Bearer realm="phantom-authz-admin"`, ""},
		{"wrong credential", wrong, `Bearer realm="phantom-authz-admin", error="invalid_token"`, "invalid_token"},
		{"prefix of the credential", "Bearer " + adminToken[:10], `Bearer realm="phantom-authz-admin", error="invalid_token"`, "invalid_token"},
		{"credential and more", "Bearer " + adminToken + "x", `Bearer realm="phantom-authz-admin", error="invalid_token"`, "invalid_token"},
	}
	for _, c := range cases {
		for _, path := range pprofPaths {
			t.Run(c.name+" "+path, func(t *testing.T) {
				rec := pprofGet(t, h, path, c.auth)
				if rec.Code != http.StatusUnauthorized {
					t.Fatalf("status %d, want 401 (%.200s)", rec.Code, rec.Body)
				}
				if got := rec.Header().Get("WWW-Authenticate"); got != c.challenge {
					t.Errorf("WWW-Authenticate %q, want %q", got, c.challenge)
				}
				var p struct {
					Status int    `json:"status"`
					Error  string `json:"error"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != 401 || p.Error != c.errCode {
					t.Errorf("problem %s (%v), want status 401 error %q", rec.Body, err, c.errCode)
				}
			})
		}
	}
	if strings.Contains(logs.String(), adminToken[:10]) || strings.Contains(logs.String(), "not-the-admin") {
		t.Errorf("a credential is in the logs: %s", logs.String())
	}
	if !strings.Contains(logs.String(), "profiling refused") {
		t.Errorf("refusals not logged: %s", logs.String())
	}
}

// With pprof off (the default), or no admin token, the paths do not exist,
// even for the right credential.
func TestPProfOff(t *testing.T) {
	for name, admin := range map[string]*server.AdminConfig{
		"absent":              nil,
		"pprof off":           {Token: adminToken, Revoker: &fakeRevoker{}},
		"pprof without token": {PProf: true},
	} {
		t.Run(name, func(t *testing.T) {
			h := server.NewHTTPHandler(server.HTTPConfig{Admin: admin})
			for _, path := range pprofPaths {
				if rec := pprofGet(t, h, path, "Bearer "+adminToken); rec.Code != http.StatusNotFound {
					t.Errorf("%s: status %d, want 404", path, rec.Code)
				}
			}
		})
	}
}

// Profiling on without a revoker still serves profiles, and revocation
// stays off.
func TestPProfWithoutRevoker(t *testing.T) {
	h := server.NewHTTPHandler(server.HTTPConfig{Admin: &server.AdminConfig{Token: adminToken, PProf: true}})
	if rec := pprofGet(t, h, "/debug/pprof/heap", "Bearer "+adminToken); rec.Code != http.StatusOK {
		t.Errorf("heap: status %d, want 200", rec.Code)
	}
	req := httptest.NewRequest(http.MethodPost, "/admin/revoke", strings.NewReader("token=x"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+adminToken)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotFound {
		t.Errorf("revoke: status %d, want 404", rec.Code)
	}
}

// With the credential, the profiles come back, and a CPU profile is one
// that pprof reads.
func TestPProfServesProfiles(t *testing.T) {
	h := server.NewHTTPHandler(server.HTTPConfig{Admin: &server.AdminConfig{Token: adminToken, Revoker: &fakeRevoker{}, PProf: true}})
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/heap", "/debug/pprof/allocs"} {
		rec := pprofGet(t, h, path, "bearer "+adminToken)
		if rec.Code != http.StatusOK || rec.Body.Len() == 0 {
			t.Errorf("%s: status %d, %d bytes", path, rec.Code, rec.Body.Len())
		}
		if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
			t.Errorf("%s: Cache-Control %q", path, cc)
		}
	}
	for _, path := range []string{"/debug/pprof/heap", "/debug/pprof/profile?seconds=1"} {
		req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		p, err := profile.Parse(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("%s: status %d, parse: %v", path, resp.StatusCode, err)
		}
		if len(p.SampleType) == 0 {
			t.Errorf("%s: a profile without sample types", path)
		}
		if strings.Contains(path, "profile") && (p.DurationNanos <= 0 || p.PeriodType == nil || p.PeriodType.Type != "cpu") {
			t.Errorf("%s: not a CPU profile: duration %d, period type %v", path, p.DurationNanos, p.PeriodType)
		}
	}
	rec := pprofGet(t, h, "/debug/pprof/trace?seconds=1", "Bearer "+adminToken)
	if rec.Code != http.StatusOK || rec.Body.Len() == 0 {
		t.Errorf("trace: status %d, %d bytes", rec.Code, rec.Body.Len())
	}
}
