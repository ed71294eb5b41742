package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"
)

// A refresh token stolen from a client's storage is not a bearer token.
// Hydra answers the introspection of a refresh token with active: true and
// token_use: refresh_token (even to token_type_hint=access_token); a
// resolver that looks only at active would let it through. The test gets a
// real refresh token from Hydra by the authorization-code flow with the
// offline scope, a browser's part played through Hydra's admin API (login
// and consent challenges accepted), and sends it through Envoy: 401
// invalid_token, while the access token of the same grant passes.
func TestHydraRefreshTokenRefused(t *testing.T) {
	t.Parallel()
	s := newStack(t, authzOptions{})
	access, refresh := s.hydra.authorizationCode(t, "read offline")
	if said := s.hydra.introspect(t, refresh); said["active"] != true || said["token_use"] != "refresh_token" {
		t.Fatalf("Hydra's introspection of the refresh token: %v; want active with token_use refresh_token", said)
	}

	if r := s.call(t, http.MethodGet, "/api/accounts/42", access, nil); r.status != http.StatusOK {
		t.Fatalf("the access token of the same grant: status %d, want 200: %s", r.status, r.body)
	}
	// Twice: the second answer may come from the cache.
	for i := range 2 {
		r := s.call(t, http.MethodGet, "/api/accounts/42", refresh, nil)
		p := r.denial(t, http.StatusUnauthorized)
		if p.Error != "invalid_token" || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Errorf("call %d with the refresh token: error %q, WWW-Authenticate %q; want invalid_token", i, p.Error, r.header.Get("WWW-Authenticate"))
		}
	}
}

// Registered by authorizationCode: a client of the authorization-code flow.
const (
	codeClientID     = "e2e-code-client"
	codeClientSecret = "e2e-code-secret-0123456789"
	codeRedirectURI  = "http://127.0.0.1:9/callback" // never contacted: the code is read from the redirect
)

// authorizationCode runs the authorization-code flow for scope against
// Hydra without a browser and returns the access and refresh tokens: the
// user agent is an HTTP client with a cookie jar that follows no redirects,
// and the login and consent apps are Hydra's admin API accepting the
// challenges for the subject "alice".
func (h *hydra) authorizationCode(t *testing.T, scope string) (access, refresh string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{
		"client_id":                  codeClientID,
		"client_secret":              codeClientSecret,
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"scope":                      scope,
		"redirect_uris":              []string{codeRedirectURI},
		"token_endpoint_auth_method": "client_secret_basic",
	})
	req, _ := http.NewRequest(http.MethodPost, h.adminURL+"/admin/clients", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	h.do(t, req, http.StatusCreated, nil)

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// redirect GETs u as the browser and returns where Hydra sends it.
	redirect := func(u string) *url.URL {
		t.Helper()
		resp, err := browser.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		loc, err := resp.Location()
		if resp.StatusCode/100 != 3 || err != nil {
			t.Fatalf("hydra: GET %s: %d %s, want a redirect", strings.SplitN(u, "?", 2)[0], resp.StatusCode, b)
		}
		return loc
	}
	// accept accepts a login or consent challenge and returns where the
	// browser goes next.
	accept := func(kind, challenge string, v any) string {
		t.Helper()
		body, _ := json.Marshal(v)
		req, _ := http.NewRequest(http.MethodPut, h.adminURL+"/admin/oauth2/auth/requests/"+kind+"/accept?"+
			url.Values{kind + "_challenge": {challenge}}.Encode(), bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		var out struct {
			RedirectTo string `json:"redirect_to"`
		}
		h.do(t, req, http.StatusOK, &out)
		return out.RedirectTo
	}

	auth := h.publicURL + "/oauth2/auth?" + url.Values{
		"client_id": {codeClientID}, "response_type": {"code"}, "scope": {scope},
		"redirect_uri": {codeRedirectURI}, "state": {"e2e-state-0123456789"},
	}.Encode()
	login := redirect(auth).Query().Get("login_challenge")
	if login == "" {
		t.Fatal("hydra: no login_challenge in the redirect to the login app")
	}
	consent := redirect(accept("login", login, map[string]any{"subject": "alice"})).Query().Get("consent_challenge")
	if consent == "" {
		t.Fatal("hydra: no consent_challenge in the redirect to the consent app")
	}
	back := redirect(accept("consent", consent, map[string]any{"grant_scope": strings.Fields(scope)}))
	code := back.Query().Get("code")
	if code == "" || back.Query().Get("state") != "e2e-state-0123456789" {
		t.Fatalf("hydra: the redirect back to the client carries no code or the wrong state (error %q)", back.Query().Get("error"))
	}

	req, _ = http.NewRequest(http.MethodPost, h.publicURL+"/oauth2/token", strings.NewReader(url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {codeRedirectURI},
	}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(codeClientID, codeClientSecret)
	var out struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	h.do(t, req, http.StatusOK, &out)
	if !strings.HasPrefix(out.AccessToken, "ory_at_") || !strings.HasPrefix(out.RefreshToken, "ory_rt_") {
		t.Fatalf("hydra: no ory_at_ access token and ory_rt_ refresh token (is offline in the scope?)")
	}
	secrets.add(out.AccessToken)
	secrets.add(out.RefreshToken)
	secrets.add(codeClientSecret)
	return out.AccessToken, out.RefreshToken
}
