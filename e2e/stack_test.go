package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"go.yaml.in/yaml/v3"
)

// The OAuth client every test stack registers in Hydra.
const (
	clientID     = "e2e-client"
	clientSecret = "e2e-secret-0123456789"
)

// The minted JWT's issuer and audience, from envoy/local/phantom-authz.yaml.
const (
	mintIssuer   = "https://phantom-authz.local"
	mintAudience = "api"
)

// ---------------------------------------------------------------- Hydra

// hydra is a real Ory Hydra, in memory, on two free loopback ports.
type hydra struct {
	*process
	publicURL, adminURL string
}

// startHydra starts Hydra and registers the test client (client_credentials,
// scopes read, write and admin).
func startHydra(t *testing.T) *hydra {
	t.Helper()
	pub, adm := freePort(t), freePort(t)
	h := &hydra{
		publicURL: fmt.Sprintf("http://127.0.0.1:%d", pub),
		adminURL:  fmt.Sprintf("http://127.0.0.1:%d", adm),
	}
	h.process = startProcess(t, "hydra", []string{
		"DSN=memory",
		"SECRETS_SYSTEM=e2e-only-not-a-secret-0123456789abcdef",
		"URLS_SELF_ISSUER=" + h.publicURL + "/",
		"SERVE_PUBLIC_HOST=127.0.0.1", "SERVE_PUBLIC_PORT=" + strconv.Itoa(pub),
		"SERVE_ADMIN_HOST=127.0.0.1", "SERVE_ADMIN_PORT=" + strconv.Itoa(adm),
		"LOG_LEVEL=warn",
	}, []int{pub, adm}, tools.hydra, "serve", "all", "--dev", "--sqa-opt-out")
	h.waitHTTP(t, h.adminURL+"/health/ready", 30*time.Second)

	body, _ := json.Marshal(map[string]any{
		"client_id":                  clientID,
		"client_secret":              clientSecret,
		"grant_types":                []string{"client_credentials"},
		"scope":                      "read write admin",
		"token_endpoint_auth_method": "client_secret_basic",
	})
	resp, err := http.Post(h.adminURL+"/admin/clients", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("hydra: create client: %d %s", resp.StatusCode, b)
	}
	return h
}

// token gets an opaque access token with the scope (space-separated) by the
// client-credentials grant.
func (h *hydra) token(t *testing.T, scope string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.publicURL+"/oauth2/token",
		strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, clientSecret)
	var out struct {
		AccessToken string `json:"access_token"`
	}
	h.do(t, req, http.StatusOK, &out)
	if !strings.HasPrefix(out.AccessToken, "ory_at_") {
		t.Fatalf("hydra: access token %q is not an opaque ory_at_ token", out.AccessToken)
	}
	secrets.add(out.AccessToken)
	return out.AccessToken
}

// revoke revokes the token (RFC 7009).
func (h *hydra) revoke(t *testing.T, tok string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.publicURL+"/oauth2/revoke",
		strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, clientSecret)
	h.do(t, req, http.StatusOK, nil)
}

// introspect asks Hydra itself about the token, for comparing claims.
func (h *hydra) introspect(t *testing.T, tok string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.adminURL+"/admin/oauth2/introspect",
		strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var out map[string]any
	h.do(t, req, http.StatusOK, &out)
	return out
}

func (h *hydra) do(t *testing.T, req *http.Request, want int, out any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("hydra: %s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("hydra: %s: %v", req.URL.Path, err)
		}
	}
}

// ---------------------------------------------------------------- phantom-authz

// authzServer is phantom-authz serving the local stack's configuration
// (envoy/local/phantom-authz.yaml) with the test's ports and settings.
type authzServer struct {
	*process
	grpcAddr string
	grpcPort int
	httpURL  string
}

// authzOptions change the shipped local configuration for one test.
type authzOptions struct {
	// introspectionURL replaces Hydra's introspection endpoint (a counting
	// proxy in front of it, say).
	introspectionURL string
	// policyDir replaces the default policies.
	policyDir string
	// set overrides keys by dotted path ("cache.max_ttl": "2s").
	set map[string]any
	// env is added to phantom-authz's environment (OTEL_* variables).
	env []string
	// collectorPort is where Envoy sends its spans (OTLP gRPC); 0: a port
	// nobody listens on.
	collectorPort int
}

// writeAuthzConfig writes the local stack's configuration with the
// test's ports, introspection endpoint, policies and overrides.
func writeAuthzConfig(t *testing.T, grpcPort, httpPort int, introspectionURL string, opts authzOptions) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "envoy", "local", "phantom-authz.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("envoy/local/phantom-authz.yaml: %v", err)
	}
	policyDir := opts.policyDir
	if policyDir == "" {
		policyDir = filepath.Join(root, "policies")
	}
	set := map[string]any{
		"grpc.addr":              fmt.Sprintf("127.0.0.1:%d", grpcPort),
		"http.addr":              fmt.Sprintf("127.0.0.1:%d", httpPort),
		"policy.dir":             policyDir,
		"log.format":             "json",
		"introspection.endpoint": introspectionURL,
	}
	// The shipped origins name port 10000; the tests' Envoy listens
	// elsewhere, so htu is checked against the request unless a test sets
	// its own origins.
	if _, ok := opts.set["dpop"]; !ok {
		set["dpop.origins"] = []any{}
	}
	for k, v := range opts.set {
		set[k] = v
	}
	for k, v := range set {
		setPath(t, cfg, k, v)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "phantom-authz.yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// setPath sets a dotted key in a YAML map; every parent must exist, so a
// key renamed in the shipped file fails the test instead of being added.
func setPath(t *testing.T, m map[string]any, key string, v any) {
	t.Helper()
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			t.Fatalf("envoy/local/phantom-authz.yaml has no section %q (for %s)", p, key)
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

// startAuthz starts phantom-authz against Hydra and waits for /readyz.
func startAuthz(t *testing.T, h *hydra, opts authzOptions) *authzServer {
	t.Helper()
	introspection := opts.introspectionURL
	if introspection == "" {
		introspection = h.adminURL + "/admin/oauth2/introspect"
	}
	gp, hp := freePort(t), freePort(t)
	cfg := writeAuthzConfig(t, gp, hp, introspection, opts)
	a := &authzServer{
		grpcAddr: fmt.Sprintf("127.0.0.1:%d", gp),
		grpcPort: gp,
		httpURL:  fmt.Sprintf("http://127.0.0.1:%d", hp),
	}
	// TMPDIR: the signing key it generates lands in the test's folder.
	a.process = startProcess(t, "phantom-authz", append([]string{"TMPDIR=" + t.TempDir()}, opts.env...), []int{gp, hp},
		bins.authz, "serve", "--config", cfg)
	a.waitHTTP(t, a.httpURL+"/readyz", 30*time.Second)
	return a
}

// ---------------------------------------------------------------- demo API and Envoy

// startDemo starts the echo upstream and returns its port.
func startDemo(t *testing.T) int {
	t.Helper()
	port := freePort(t)
	p := startProcess(t, "demo-api", nil, []int{port}, bins.demo, "-addr", fmt.Sprintf("127.0.0.1:%d", port))
	p.waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 10*time.Second)
	return port
}

// envoyProxy is real Envoy running the shipped envoy/envoy.yaml.
type envoyProxy struct {
	*process
	url, adminURL string
}

// The fixed ports of envoy/envoy.yaml, each swapped for a free one.
const (
	envoyListenerPort = 10000
	envoyAdminPort    = 9901
	envoyAuthzPort    = 9191
	envoyDemoPort     = 8080
	// envoyCollectorPort is the OTLP gRPC collector of Envoy's tracer.
	envoyCollectorPort = 4317
)

// startEnvoy runs envoy/envoy.yaml itself, its fixed ports replaced: the
// tests exercise the configuration that ships. Envoy's spans go to
// collectorPort (OTLP gRPC), or nowhere when it is 0.
func startEnvoy(t *testing.T, authzPort, demoPort, collectorPort int) *envoyProxy {
	t.Helper()
	if collectorPort == 0 {
		collectorPort = freePort(t)
	}
	b, err := os.ReadFile(filepath.Join(root, "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	lis, adm := freePort(t), freePort(t)
	cfg := string(b)
	for from, to := range map[int]int{envoyListenerPort: lis, envoyAdminPort: adm, envoyAuthzPort: authzPort, envoyDemoPort: demoPort,
		envoyCollectorPort: collectorPort} {
		old := fmt.Sprintf("port_value: %d ", from)
		if n := strings.Count(cfg, old); n != 1 {
			t.Fatalf("envoy/envoy.yaml has %q %d times, want once: update startEnvoy with the config", old, n)
		}
		cfg = strings.Replace(cfg, old, fmt.Sprintf("port_value: %d ", to), 1)
	}
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &envoyProxy{
		url:      fmt.Sprintf("http://127.0.0.1:%d", lis),
		adminURL: fmt.Sprintf("http://127.0.0.1:%d", adm),
	}
	// One worker thread: several stacks share two cores.
	e.process = startProcess(t, "envoy", nil, []int{lis, adm}, tools.envoy,
		"-c", path, "--disable-hot-restart", "--concurrency", "1", "-l", "info")
	e.waitHTTP(t, e.adminURL+"/ready", 30*time.Second)
	return e
}

// ---------------------------------------------------------------- the whole stack

// stack is Hydra → phantom-authz ← Envoy → demo API, as `make run` has it.
type stack struct {
	hydra *hydra
	authz *authzServer
	envoy *envoyProxy
}

func newStack(t *testing.T, opts authzOptions) *stack {
	t.Helper()
	needTools(t)
	s := &stack{hydra: startHydra(t)}
	s.authz = startAuthz(t, s.hydra, opts)
	demo := startDemo(t)
	s.envoy = startEnvoy(t, s.authz.grpcPort, demo, opts.collectorPort)
	return s
}

// response is what a client got back from Envoy.
type response struct {
	status int
	header http.Header
	body   []byte
}

// envoyClient has no keep-alive surprises: each request is independent.
var envoyClient = &http.Client{Timeout: 5 * time.Second}

// call sends method path through Envoy with the bearer token (none if "")
// and extra headers.
func (s *stack) call(t *testing.T, method, path, tok string, hdr http.Header) response {
	t.Helper()
	r, err := s.try(method, path, tok, hdr)
	if err != nil {
		t.Fatalf("%s %s through Envoy: %v", method, path, err)
	}
	return r
}

func (s *stack) try(method, path, tok string, hdr http.Header) (response, error) {
	req, err := http.NewRequest(method, s.envoy.url+path, nil)
	if err != nil {
		return response{}, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for k, vs := range hdr {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := envoyClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}, err
}

// echo is what the demo API answers: what reached the upstream.
type echo struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Headers map[string][]string `json:"headers"`
}

// upstream decodes the demo API's echo; the test fails if the response did
// not come from the upstream.
func (r response) upstream(t *testing.T) echo {
	t.Helper()
	var e echo
	if err := json.Unmarshal(r.body, &e); err != nil || e.Method == "" {
		t.Fatalf("response %d is not the upstream's echo: %s", r.status, r.body)
	}
	return e
}

// fromUpstream reports whether the body is the demo API's echo.
func (r response) fromUpstream() bool {
	var e echo
	return json.Unmarshal(r.body, &e) == nil && e.Method != "" && e.Headers != nil
}

// problem is an RFC 9457 problem+json denial body.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Error  string `json:"error"`
	Scope  string `json:"scope"`
}

// denial checks a phantom-authz denial as the client sees it: the status,
// a problem+json body that says the same, and it never came from upstream.
func (r response) denial(t *testing.T, status int) problem {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("content-type %q, want application/problem+json", ct)
	}
	var p problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("denial body is not JSON: %v: %s", err, r.body)
	}
	if p.Status != status || p.Title == "" || p.Type == "" {
		t.Errorf("problem body %+v does not match status %d", p, status)
	}
	if r.fromUpstream() {
		t.Errorf("the denied request reached the upstream: %s", r.body)
	}
	return p
}

// ---------------------------------------------------------------- the minted JWT

// verifyJWT checks raw against phantom-authz's published JWKS (GET
// /.well-known/jwks.json on its HTTP port): signature, iss, aud, exp and the
// RFC 9068 typ; it returns the claims.
func verifyJWT(t *testing.T, httpURL, raw string) map[string]any {
	t.Helper()
	return verifyJWTFor(t, httpURL, raw, mintAudience)
}

// verifyJWTFor is verifyJWT for a JWT minted for the audience aud.
func verifyJWTFor(t *testing.T, httpURL, raw, aud string) map[string]any {
	t.Helper()
	resp, err := http.Get(httpURL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /.well-known/jwks.json: %d %s", resp.StatusCode, b)
	}
	set, err := jwk.Parse(b)
	if err != nil {
		t.Fatalf("JWKS does not parse: %v: %s", err, b)
	}
	if set.Len() == 0 {
		t.Fatal("JWKS has no keys")
	}
	if _, err := jwt.Parse([]byte(raw), jwt.WithKeySet(set), jwt.WithValidate(true),
		jwt.WithIssuer(mintIssuer), jwt.WithAudience(aud)); err != nil {
		t.Fatalf("the upstream JWT does not verify against the JWKS: %v", err)
	}
	parts := strings.Split(raw, ".")
	var header map[string]any
	decodeSegment(t, parts[0], &header)
	if header["typ"] != "at+jwt" {
		t.Errorf("JWT typ %v, want at+jwt (RFC 9068)", header["typ"])
	}
	var claims map[string]any
	decodeSegment(t, parts[1], &claims)
	return claims
}

func decodeSegment(t *testing.T, seg string, out any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatalf("JWT segment: %v", err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("JWT segment: %v", err)
	}
}
