package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz/server"
)

const adminToken = "admin-0123456789abcdef"

type fakeRevoker struct {
	got []string
	err error
}

func (f *fakeRevoker) Revoke(_ context.Context, tok string) error {
	f.got = append(f.got, tok)
	return f.err
}

func TestAdminRevoke(t *testing.T) {
	const victim = "opaque-token-to-revoke-123"
	form := func(v url.Values) string { return v.Encode() }
	cases := []struct {
		name, auth, contentType, body string
		revokeErr                     error
		status                        int
		challenge, errCode            string
		revoked                       bool
	}{
		{name: "ok", auth: "Bearer " + adminToken, body: form(url.Values{"token": {victim}}), status: 200, revoked: true},
		{name: "hint ignored", auth: "bearer " + adminToken, body: form(url.Values{"token": {victim}, "token_type_hint": {"refresh_token"}}), status: 200, revoked: true},
		{name: "no credential", body: form(url.Values{"token": {victim}}), status: 401, challenge: `Bearer realm="phantom-authz-admin"`},
		{name: "wrong credential", auth: "Bearer not-the-admin-token", body: form(url.Values{"token": {victim}}), status: 401,
			challenge: `Bearer realm="phantom-authz-admin", error="invalid_token"`, errCode: "invalid_token"},
		{name: "basic scheme", auth: "Basic " + adminToken, body: form(url.Values{"token": {victim}}), status: 401, challenge: `Bearer realm="phantom-authz-admin"`},
		{name: "prefix of the credential", auth: "Bearer " + adminToken[:10], body: form(url.Values{"token": {victim}}), status: 401, errCode: "invalid_token",
			challenge: `Bearer realm="phantom-authz-admin", error="invalid_token"`},
		{name: "no token", auth: "Bearer " + adminToken, body: form(url.Values{"token_type_hint": {"access_token"}}), status: 400, errCode: "invalid_request"},
		{name: "empty token", auth: "Bearer " + adminToken, body: "token=", status: 400, errCode: "invalid_request"},
		{name: "two tokens", auth: "Bearer " + adminToken, body: "token=a&token=b", status: 400, errCode: "invalid_request"},
		{name: "json body", auth: "Bearer " + adminToken, contentType: "application/json", body: `{"token":"x"}`, status: 400, errCode: "invalid_request"},
		{name: "not shared", auth: "Bearer " + adminToken, body: form(url.Values{"token": {victim}}), revokeErr: errors.New("redis down"),
			status: 503, errCode: "temporarily_unavailable", revoked: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			rev := &fakeRevoker{err: c.revokeErr}
			h := server.NewHTTPHandler(server.HTTPConfig{Admin: &server.AdminConfig{
				Token: adminToken, Revoker: rev, Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
			}})
			req := httptest.NewRequest(http.MethodPost, "/admin/revoke", strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if c.contentType != "" {
				req.Header.Set("Content-Type", c.contentType)
			}
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.status {
				t.Fatalf("status %d, want %d (%s)", rec.Code, c.status, rec.Body)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != c.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, c.challenge)
			}
			if c.status != 200 {
				if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
					t.Errorf("content type %q", ct)
				}
				var p struct {
					Status int    `json:"status"`
					Error  string `json:"error"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != c.status || p.Error != c.errCode {
					t.Errorf("problem %s (%v), want status %d error %q", rec.Body, err, c.status, c.errCode)
				}
			} else if rec.Body.Len() != 0 {
				t.Errorf("body %q, want none", rec.Body)
			}
			if c.revoked != (len(rev.got) == 1 && rev.got[0] == victim) {
				t.Errorf("revoked %q, want revoked=%v", rev.got, c.revoked)
			}
			if strings.Contains(logs.String(), victim) || strings.Contains(logs.String(), adminToken[:10]) {
				t.Errorf("a token is in the logs: %s", logs.String())
			}
		})
	}
}

func TestAdminRevokeOff(t *testing.T) {
	for name, admin := range map[string]*server.AdminConfig{
		"absent":   nil,
		"no token": {Revoker: &fakeRevoker{}},
	} {
		t.Run(name, func(t *testing.T) {
			h := server.NewHTTPHandler(server.HTTPConfig{Admin: admin})
			req := httptest.NewRequest(http.MethodPost, "/admin/revoke", strings.NewReader("token=x"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Authorization", "Bearer anything")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusNotFound {
				t.Errorf("status %d, want 404", rec.Code)
			}
		})
	}
}

func TestAdminRevokeMethod(t *testing.T) {
	h := server.NewHTTPHandler(server.HTTPConfig{Admin: &server.AdminConfig{Token: adminToken, Revoker: &fakeRevoker{}}})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/admin/revoke?token=x", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d, want 405", rec.Code)
	}
}
