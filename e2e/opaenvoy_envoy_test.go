package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/server"
)

// cannedAuthz answers each CheckRequest with the response its path names,
// so a test can see what real Envoy makes of each kind of answer.
type cannedAuthz struct {
	authv3.UnimplementedAuthorizationServer
	answers map[string]*authv3.CheckResponse
}

func (c *cannedAuthz) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	p, _, _ := strings.Cut(req.GetAttributes().GetRequest().GetHttp().GetPath(), "?")
	if r, ok := c.answers[p]; ok {
		return r, nil
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED)}}, nil
}

// opaEnvoyHeaders is how OPA-Envoy writes headers: no append action, so
// Envoy's default.
func opaEnvoyHeaders(kv ...string) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for i := 0; i < len(kv); i += 2 {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: kv[i], Value: kv[i+1]}})
	}
	return out
}

// TestEnvoyDeliversDecisionsAsOPAEnvoyDoes sends requests through real
// Envoy to an authorization server that answers as phantom-authz's
// ToResponse does (and, for comparison, as OPA-Envoy does), and checks what
// the upstream and the client receive: every value of a header array, never
// a client's value beside the policy's, query parameters set and removed,
// and the denial statuses OPA-Envoy refuses (418, 451, 499, 599) delivered as
// they are.
func TestEnvoyDeliversDecisionsAsOPAEnvoyDoes(t *testing.T) {
	needTools(t)
	decisionID := authz.DecisionID{0x6f, 0x1c, 0x9a, 0x3e, 0x6d, 0x7b, 0x4c, 0x1a, 0x9e, 0x2f, 0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f}
	allow := func(d authz.Decision) *authv3.CheckResponse {
		d.Allowed = true
		return server.ToResponse(d)
	}
	answers := map[string]*authv3.CheckResponse{
		"/phantom/headers": allow(authz.Decision{
			DecisionID:      decisionID,
			Headers:         []authz.Header{{Key: "x-multi", Value: "a"}, {Key: "x-multi", Value: "b"}, {Key: "x-one", Value: "1"}},
			ResponseHeaders: []authz.Header{{Key: "set-cookie", Value: "a=1"}, {Key: "set-cookie", Value: "b=2"}},
		}),
		"/opa-envoy/headers": {
			Status: &rpcstatus.Status{},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers:              opaEnvoyHeaders("x-multi", "a", "x-multi", "b", "x-one", "1"),
				ResponseHeadersToAdd: opaEnvoyHeaders("set-cookie", "a=1", "set-cookie", "b=2"),
			}},
		},
		"/phantom/query": allow(authz.Decision{
			QueryParamsToSet:    []authz.Header{{Key: "foo", Value: "bar"}, {Key: "baz", Value: "qux"}},
			QueryParamsToRemove: []string{"drop"},
		}),
	}
	statuses := []int{200, 302, 401, 418, 429, 451, 499, 503, 599}
	for _, s := range statuses {
		answers[fmt.Sprintf("/phantom/deny/%d", s)] = server.ToResponse(authz.Decision{
			Status: s, Body: fmt.Sprintf("denied %d", s), PolicyBody: true,
			Headers: []authz.Header{{Key: "set-cookie", Value: "a=1"}, {Key: "set-cookie", Value: "b=2"}},
		})
	}

	authzPort := serveCanned(t, &cannedAuthz{answers: answers})
	upstreamPort := serveEcho(t)
	accessLog := filepath.Join(t.TempDir(), "access.log")
	proxy := startEnvoyFor(t, authzPort, upstreamPort, accessLog)
	client := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) (*http.Response, echoed) {
		t.Helper()
		req, _ := http.NewRequest("GET", proxy+path, nil)
		// A client trying to smuggle its own value of the policy's header.
		req.Header.Set("x-multi", "client")
		req.Header.Set("x-one", "client")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var e echoed
		if resp.StatusCode == 200 && !strings.HasPrefix(path, "/phantom/deny/") {
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatalf("%s: upstream answer %q: %v", path, b, err)
			}
		} else {
			e.Body = string(b)
		}
		return resp, e
	}

	resp, e := get("/phantom/headers")
	// Envoy joins appended request headers with commas: one line, every
	// value, and not the client's.
	if got := e.Headers["X-Multi"]; !slices.Equal(got, []string{"a,b"}) {
		t.Errorf("phantom-authz's answer: upstream got x-multi %q, want every value of the policy's, none of the client's", got)
	}
	if got := e.Headers["X-One"]; !slices.Equal(got, []string{"1"}) {
		t.Errorf("phantom-authz's answer: upstream got x-one %q, want the policy's value only", got)
	}
	if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"a=1", "b=2"}) {
		t.Errorf("phantom-authz's answer: client got set-cookie %q, want both", got)
	}

	// What OPA-Envoy's answer (no append action) delivers, as README.md
	// says: Envoy replaces the request's header with each value in turn, so
	// only the last of an array arrives; to the client, both.
	resp, e = get("/opa-envoy/headers")
	if got := e.Headers["X-Multi"]; !slices.Equal(got, []string{"b"}) {
		t.Errorf("OPA-Envoy's answer: upstream got x-multi %q; README.md says only the last value arrives", got)
	}
	if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"a=1", "b=2"}) {
		t.Errorf("OPA-Envoy's answer: client got set-cookie %q; README.md says both arrive", got)
	}

	_, e = get("/phantom/query?drop=1&foo=client&keep=2")
	q := e.Query
	if q.Get("foo") != "bar" || q.Get("baz") != "qux" || q.Has("drop") || q.Get("keep") != "2" || len(q["foo"]) != 1 {
		t.Errorf("query parameters: upstream got %v, want foo=bar baz=qux keep=2 and no drop", q)
	}

	// Envoy's access log can print the decision id (README.md says how),
	// to be joined with phantom-authz's decision log.
	want := "/phantom/headers " + decisionID.String()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(accessLog)
		if strings.Contains(string(b), want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Envoy's access log %q has no line %q", b, want)
		}
		time.Sleep(200 * time.Millisecond)
	}

	for _, s := range statuses {
		resp, e := get(fmt.Sprintf("/phantom/deny/%d", s))
		if resp.StatusCode != s || e.Body != fmt.Sprintf("denied %d", s) {
			t.Errorf("denial %d: client got %d %q", s, resp.StatusCode, e.Body)
		}
		if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"a=1", "b=2"}) {
			t.Errorf("denial %d: client got set-cookie %q, want both", s, got)
		}
	}
}

// echoed is what the echo upstream received.
type echoed struct {
	Headers http.Header `json:"headers"`
	Query   url.Values  `json:"query"`
	Body    string      `json:"-"`
}

func serveCanned(t *testing.T, c *cannedAuthz) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	authv3.RegisterAuthorizationServer(s, c)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return l.Addr().(*net.TCPAddr).Port
}

func serveEcho(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(echoed{Headers: r.Header, Query: r.URL.Query()})
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() { _ = s.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// startEnvoyFor runs Envoy with the HTTP ext_authz filter (gRPC) in front
// of an upstream, logging each request's path and decision id to
// accessLog, and returns its URL.
func startEnvoyFor(t *testing.T, authzPort, upstreamPort int, accessLog string) string {
	t.Helper()
	lis, adm := freePort(t), freePort(t)
	cfg := strings.NewReplacer("LISTENER", strconv.Itoa(lis), "ADMIN", strconv.Itoa(adm),
		"AUTHZ", strconv.Itoa(authzPort), "UPSTREAM", strconv.Itoa(upstreamPort), "ACCESSLOG", accessLog).Replace(parityEnvoyConfig)
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, "envoy", nil, []int{lis, adm}, tools.envoy,
		"-c", path, "--disable-hot-restart", "--concurrency", "1", "-l", "warning")
	p.waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/ready", adm), 60*time.Second)
	return fmt.Sprintf("http://127.0.0.1:%d", lis)
}

const parityEnvoyConfig = `
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: ADMIN}}
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: LISTENER}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: ACCESSLOG
              log_format:
                text_format_source:
                  inline_string: "%REQ(:PATH)% %DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%\n"
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: upstream}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              grpc_service:
                envoy_grpc: {cluster_name: authz}
                timeout: 5s
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: authz
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: authz
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: AUTHZ}}}
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: UPSTREAM}}}
`
