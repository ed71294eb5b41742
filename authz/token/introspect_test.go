package token

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/phantom-authz/phantom-authz/authz/internal/logtest"
)

func TestIntrospectionModes(t *testing.T) {
	testKeys(t)
	clk := newClock()
	exp := clk.Now().Add(time.Hour).Truncate(time.Second)
	answer := map[string]any{
		"active": true, "sub": "alice", "client_id": "web", "scope": "read write",
		"exp": exp.Unix(), "iss": "https://as.example", "custom": map[string]any{"n": 12345678901234567},
	}
	phantom := signJWT(t, keysES, map[string]any{"typ": "at+jwt"}, map[string]any{
		"iss": "https://as.example", "sub": "alice", "client_id": "web", "scope": "read write", "exp": exp.Unix(),
	})
	jwks := newJWKSServer(t, keysES)
	signed := func(active bool) string {
		ti := map[string]any{"active": false}
		if active {
			ti = answer
		}
		return signJWT(t, keysES, map[string]any{"typ": "token-introspection+jwt"}, map[string]any{
			"iss": "https://as.example", "aud": "gateway", "iat": clk.Now().Unix(), "token_introspection": ti,
		})
	}

	tests := []struct {
		name     string
		mode     string
		accept   string
		respond  func(w http.ResponseWriter)
		wantErr  error
		wantJWT  string
		wantKind Kind
	}{
		{name: "json active", mode: ResponseJSON, accept: "application/json",
			respond: func(w http.ResponseWriter) { writeJSON(w, answer) }},
		{name: "json inactive", mode: ResponseJSON, accept: "application/json",
			respond: func(w http.ResponseWriter) { writeJSON(w, map[string]any{"active": false}) }, wantErr: ErrInactive},
		{name: "jwt active", mode: ResponseJWT, accept: "application/jwt",
			respond: func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/jwt")
				_, _ = w.Write([]byte(phantom + "\n"))
			}, wantJWT: phantom},
		{name: "jwt inactive 204", mode: ResponseJWT, accept: "application/jwt",
			respond: func(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }, wantErr: ErrInactive},
		{name: "jwt inactive as json", mode: ResponseJWT, accept: "application/jwt",
			respond: func(w http.ResponseWriter) { writeJSON(w, map[string]any{"active": false}) }, wantErr: ErrInactive},
		{name: "rfc9701 active", mode: ResponseRFC9701, accept: "application/token-introspection+jwt",
			respond: func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/token-introspection+jwt")
				_, _ = w.Write([]byte(signed(true)))
			}},
		{name: "rfc9701 inactive", mode: ResponseRFC9701, accept: "application/token-introspection+jwt",
			respond: func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "application/token-introspection+jwt")
				_, _ = w.Write([]byte(signed(false)))
			}, wantErr: ErrInactive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
				if got := r.Header.Get("Accept"); got != tt.accept {
					t.Errorf("Accept = %q, want %q", got, tt.accept)
				}
				if err := r.ParseForm(); err != nil || r.PostForm.Get("token") != "opaque-1" {
					t.Errorf("token not posted: %v %v", err, r.PostForm)
				}
				tt.respond(w)
			})
			cfg := introspectionConfig(srv)
			cfg.Response = tt.mode
			cfg.Issuer, cfg.JWKSURI = "https://as.example", jwks.URL
			r := mustNew(t, Config{Introspection: cfg, Now: clk.Now})

			tok, err := r.Resolve(context.Background(), bearer("opaque-1"))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tok.Active || tok.Kind != KindOpaque || tok.Subject != "alice" || tok.ClientID != "web" ||
				!slices.Equal(tok.Scopes, []string{"read", "write"}) || !tok.Expiry.Equal(exp) {
				t.Errorf("token = %+v", tok)
			}
			if tok.JWT != tt.wantJWT {
				t.Errorf("JWT = %q, want %q", tok.JWT, tt.wantJWT)
			}
			if tt.wantJWT != "" && !tok.JWTExpiry.Equal(exp) {
				t.Errorf("JWTExpiry = %v, want %v", tok.JWTExpiry, exp)
			}
			if tt.mode != ResponseJWT {
				// Large integers survive exactly (json.Number).
				if n := claimsOf(t, tok)["custom"].(map[string]any)["n"]; n.(interface{ String() string }).String() != "12345678901234567" {
					t.Errorf("custom.n = %v", n)
				}
			}
		})
	}
}

func TestRFC9701Rejects(t *testing.T) {
	testKeys(t)
	clk := newClock()
	jwks := newJWKSServer(t, keysES)
	good := map[string]any{"iss": "https://as.example", "aud": "gateway", "iat": clk.Now().Unix(),
		"token_introspection": map[string]any{"active": true, "sub": "alice"}}
	with := func(k, v string) map[string]any {
		c := map[string]any{}
		for n, x := range good {
			c[n] = x
		}
		c[k] = v
		return c
	}
	tests := []struct {
		name string
		body string
	}{
		{"wrong typ", signJWT(t, keysES, map[string]any{"typ": "JWT"}, good)},
		{"wrong iss", signJWT(t, keysES, map[string]any{"typ": "token-introspection+jwt"}, with("iss", "https://evil.example"))},
		{"wrong aud", signJWT(t, keysES, map[string]any{"typ": "token-introspection+jwt"}, with("aud", "someone-else"))},
		{"unknown key", signJWT(t, keysUnknown, map[string]any{"typ": "token-introspection+jwt"}, good)},
		{"not a JWT", "hello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/token-introspection+jwt")
				_, _ = w.Write([]byte(tt.body))
			})
			cfg := introspectionConfig(srv)
			cfg.Response, cfg.Issuer, cfg.JWKSURI = ResponseRFC9701, "https://as.example", jwks.URL
			r := mustNew(t, Config{Introspection: cfg, Now: clk.Now})
			if _, err := r.Resolve(context.Background(), bearer("opaque-1")); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("err = %v, want ErrUnavailable", err)
			}
		})
	}
}

func TestClientAuthentication(t *testing.T) {
	testKeys(t)
	dir := t.TempDir()
	der, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "client.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	clientPub, _ := jwk.Import(ecKey.Public())

	const id, secret = "gate way:1", "p@ss wörd+/="
	tests := []struct {
		name  string
		setup func(cfg *IntrospectionConfig)
		check func(t *testing.T, r *http.Request, endpoint string)
	}{
		{
			name:  "client_secret_basic",
			setup: func(cfg *IntrospectionConfig) {},
			check: func(t *testing.T, r *http.Request, _ string) {
				// RFC 6749 §2.3.1: each part form-urlencoded, then base64.
				want := "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
				if got := r.Header.Get("Authorization"); got != want {
					t.Errorf("Authorization = %q, want %q", got, want)
				}
				gotID, gotSecret, _ := r.BasicAuth()
				if u, _ := url.QueryUnescape(gotID); u != id {
					t.Errorf("client id = %q", u)
				}
				if s, _ := url.QueryUnescape(gotSecret); s != secret {
					t.Error("client secret does not round-trip")
				}
				if r.PostForm.Has("client_secret") {
					t.Error("secret also in the form")
				}
			},
		},
		{
			name:  "client_secret_post",
			setup: func(cfg *IntrospectionConfig) { cfg.AuthMethod = AuthClientSecretPost },
			check: func(t *testing.T, r *http.Request, _ string) {
				if r.Header.Get("Authorization") != "" {
					t.Error("Authorization header sent")
				}
				if r.PostForm.Get("client_id") != id || r.PostForm.Get("client_secret") != secret {
					t.Errorf("form = %v", r.PostForm)
				}
			},
		},
		{
			name: "private_key_jwt",
			setup: func(cfg *IntrospectionConfig) {
				cfg.AuthMethod, cfg.ClientSecret = AuthPrivateKeyJWT, ""
				cfg.PrivateKeyFile, cfg.PrivateKeyID = keyFile, "client-key-1"
				cfg.Issuer = "https://as.example"
			},
			check: func(t *testing.T, r *http.Request, endpoint string) {
				if r.Header.Get("Authorization") != "" || r.PostForm.Has("client_secret") {
					t.Error("a secret was sent")
				}
				if got := r.PostForm.Get("client_assertion_type"); got != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
					t.Errorf("client_assertion_type = %q", got)
				}
				assertion := r.PostForm.Get("client_assertion")
				payload, err := jws.Verify([]byte(assertion), jws.WithKey(jwa.ES256(), clientPub))
				if err != nil {
					t.Fatalf("assertion does not verify: %v", err)
				}
				msg, _ := jws.Parse([]byte(assertion))
				if kid, _ := msg.Signatures()[0].ProtectedHeaders().KeyID(); kid != "client-key-1" {
					t.Errorf("kid = %q", kid)
				}
				var c compact
				if err := decodeObject(payload, &c.claims); err != nil {
					t.Fatal(err)
				}
				iat, _, _ := numericDate(c.claims, "iat")
				exp, _, _ := numericDate(c.claims, "exp")
				if c.claims["iss"] != id || c.claims["sub"] != id || c.claims["jti"] == "" ||
					!hasAudience(c.claims, endpoint) || !hasAudience(c.claims, "https://as.example") ||
					exp.Sub(iat) != 60*time.Second {
					t.Errorf("assertion claims = %v", c.claims)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var endpoint string
			srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
				if err := r.ParseForm(); err != nil {
					t.Fatal(err)
				}
				if r.PostForm.Get("token_type_hint") != "access_token" {
					t.Errorf("token_type_hint = %q", r.PostForm.Get("token_type_hint"))
				}
				tt.check(t, r, endpoint)
				writeJSON(w, map[string]any{"active": true, "sub": "alice"})
			})
			cfg := introspectionConfig(srv)
			cfg.ClientID, cfg.ClientSecret, cfg.TokenTypeHint = id, secret, "access_token"
			endpoint = cfg.Endpoint
			tt.setup(cfg)
			r := mustNew(t, Config{Introspection: cfg})
			if _, err := r.Resolve(context.Background(), bearer("opaque-1")); err != nil {
				t.Fatal(err)
			}
			if srv.count.Load() != 1 {
				t.Fatalf("server saw %d requests", srv.count.Load())
			}
		})
	}
}

func TestIntrospectionFailures(t *testing.T) {
	const token = "opaque-secret-token-value"
	tests := []struct {
		name    string
		handle  http.HandlerFunc
		timeout time.Duration
	}{
		{name: "timeout", timeout: 50 * time.Millisecond, handle: func(w http.ResponseWriter, r *http.Request) {
			_ = r.ParseForm() // lets the server notice the client going away
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}},
		{name: "500", handle: func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "boom", http.StatusInternalServerError)
		}},
		{name: "503", handle: func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}},
		{name: "html body", handle: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html><body>Login</body></html>"))
		}},
		{name: "garbage json", handle: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"active": tru`))
		}},
		{name: "json without active", handle: func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, map[string]any{"sub": "alice"})
		}},
		{name: "active not a bool", handle: func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, map[string]any{"active": "true"})
		}},
		{name: "exp not a number", handle: func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, map[string]any{"active": true, "exp": "tomorrow"})
		}},
		{name: "body too large", handle: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"active":true,"x":"` + strings.Repeat("a", maxBody) + `"}`))
		}},
		{name: "connection closed mid-body", handle: func(w http.ResponseWriter, r *http.Request) {
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"active\":true,")
			_ = buf.Flush()
		}},
		{name: "401", handle: func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
		}},
		{name: "403", handle: func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "forbidden", http.StatusForbidden)
		}},
		{name: "redirect not followed", handle: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:1/elsewhere", http.StatusTemporaryRedirect)
		}},
		{name: "204 in json mode", handle: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newOAuthServer(t, tt.handle)
			cfg := introspectionConfig(srv)
			cfg.Timeout = tt.timeout
			var logs logtest.Buffer
			r := mustNew(t, Config{Introspection: cfg, Logger: newTestLogger(&logs)})
			_, err := r.Resolve(context.Background(), bearer(token))
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("err = %v, want ErrUnavailable", err)
			}
			for _, text := range []string{err.Error(), logs.String()} {
				if strings.Contains(text, token) || strings.Contains(text, cfg.ClientSecret) {
					t.Errorf("token or secret leaked: %s", text)
				}
			}
			if st := r.Stats(); st.IntrospectionsFailed != 1 {
				t.Errorf("stats = %+v", st)
			}
		})
	}
}

func TestUnreachableServer(t *testing.T) {
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {})
	cfg := introspectionConfig(srv)
	srv.Close()
	r := mustNew(t, Config{Introspection: cfg})
	if _, err := r.Resolve(context.Background(), bearer("opaque-1")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

func TestCAFile(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"active": true, "sub": "alice"})
	}))
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		caFile  string
		wantErr error
	}{
		{"trusted by ca_file", caFile, nil},
		{"system roots refuse it", "", ErrUnavailable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := mustNew(t, Config{Introspection: &IntrospectionConfig{
				Endpoint: srv.URL, ClientID: "gateway", ClientSecret: "s", CAFile: tt.caFile,
			}})
			_, err := r.Resolve(context.Background(), bearer("opaque-1"))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	in := func(mod func(*IntrospectionConfig)) *IntrospectionConfig {
		c := &IntrospectionConfig{Endpoint: "https://as.example/introspect", ClientID: "gw", ClientSecret: "s"}
		mod(c)
		return c
	}
	is := func(mod func(*IssuerConfig)) []IssuerConfig {
		c := IssuerConfig{Issuer: "https://as.example", JWKSURI: "https://as.example/jwks", Audiences: []string{"api"}}
		mod(&c)
		return []IssuerConfig{c}
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"nothing configured", Config{}, "token: configure introspection or at least one issuer"},
		{"http endpoint", Config{Introspection: in(func(c *IntrospectionConfig) { c.Endpoint = "http://as.example/introspect" })},
			"token: introspection.endpoint must be https (or set allow_insecure_http)"},
		{"relative endpoint", Config{Introspection: in(func(c *IntrospectionConfig) { c.Endpoint = "/introspect" })},
			"token: introspection.endpoint must be an absolute URL"},
		{"no client id", Config{Introspection: in(func(c *IntrospectionConfig) { c.ClientID = "" })},
			"token: introspection.client_id is required"},
		{"no secret", Config{Introspection: in(func(c *IntrospectionConfig) { c.ClientSecret = "" })},
			"token: introspection.client_secret is required for auth_method client_secret_basic"},
		{"bad auth method", Config{Introspection: in(func(c *IntrospectionConfig) { c.AuthMethod = "tls_client_auth" })},
			`token: introspection.auth_method "tls_client_auth"`},
		{"no private key", Config{Introspection: in(func(c *IntrospectionConfig) { c.AuthMethod = AuthPrivateKeyJWT })},
			"token: introspection.private_key_file is required"},
		{"missing private key file", Config{Introspection: in(func(c *IntrospectionConfig) {
			c.AuthMethod, c.PrivateKeyFile = AuthPrivateKeyJWT, "/nonexistent/key.pem"
		})}, "token: introspection.private_key_file"},
		{"bad response", Config{Introspection: in(func(c *IntrospectionConfig) { c.Response = "xml" })},
			`token: introspection.response "xml"`},
		{"rfc9701 without issuer", Config{Introspection: in(func(c *IntrospectionConfig) { c.Response = ResponseRFC9701 })},
			"token: introspection.issuer is required for response rfc9701"},
		{"rfc9701 http jwks", Config{Introspection: in(func(c *IntrospectionConfig) {
			c.Response, c.Issuer, c.JWKSURI = ResponseRFC9701, "https://as.example", "http://as.example/jwks"
		})}, "token: introspection.jwks_uri must be https (or set allow_insecure_http)"},
		{"bad ca file", Config{Introspection: in(func(c *IntrospectionConfig) { c.CAFile = "/nonexistent/ca.pem" })},
			"token: introspection.ca_file"},
		{"issuer http jwks", Config{Issuers: is(func(c *IssuerConfig) { c.JWKSURI = "http://as.example/jwks" })},
			"token: issuers[0].jwks_uri must be https (or set allow_insecure_http)"},
		{"issuer without audiences", Config{Issuers: is(func(c *IssuerConfig) { c.Audiences = nil })},
			"token: issuers[0].audiences must list"},
		{"issuer alg none", Config{Issuers: is(func(c *IssuerConfig) { c.Algorithms = []string{"none"} })},
			`token: issuers[0].algorithms: "none" is not allowed`},
		{"issuer alg HS256", Config{Issuers: is(func(c *IssuerConfig) { c.Algorithms = []string{"ES256", "HS256"} })},
			`token: issuers[0].algorithms: "HS256" is not allowed`},
		{"issuer unknown alg", Config{Issuers: is(func(c *IssuerConfig) { c.Algorithms = []string{"XX1"} })},
			`token: issuers[0].algorithms: unknown algorithm "XX1"`},
		{"issuer skew too large", Config{Issuers: is(func(c *IssuerConfig) { c.Skew = 2 * time.Minute })},
			"token: issuers[0].skew must be between 0 and 1m0s"},
		{"issuer twice", Config{Issuers: append(is(func(*IssuerConfig) {}), is(func(*IssuerConfig) {})...)},
			`token: issuers[1].issuer "https://as.example" is configured twice`},
		{"negative max cost", Config{Issuers: is(func(*IssuerConfig) {}), Cache: CacheConfig{MaxCost: -1}},
			"token: cache.max_cost must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(tt.cfg)
			if err == nil {
				r.Close()
				t.Fatalf("New succeeded, want error %q", tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("err = %q, want prefix %q", err, tt.want)
			}
		})
	}
}

// TestConfigValid: configurations New must accept, defaults filled.
func TestConfigValid(t *testing.T) {
	r, err := New(Config{Issuers: []IssuerConfig{{
		Issuer: "https://as.example", JWKSURI: "https://as.example/jwks", Audiences: []string{"api"},
		Algorithms: []string{"RS256", "PS256", "ES384", "EdDSA"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
}
