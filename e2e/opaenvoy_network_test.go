package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/health"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/credential"
	"github.com/phantom-authz/phantom-authz/authz/policy"
	"github.com/phantom-authz/phantom-authz/authz/server"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// noTokens is a credential stage that is on but never reached: a network
// filter's check carries no credential.
type noTokens struct{}

func (noTokens) Resolve(context.Context, credential.Credential) (*token.Token, error) {
	return nil, errors.New("no token expected")
}

// TestEnvoyNetworkFilterChecks runs Envoy's network (L4) ext_authz filter,
// which sends CheckRequests without HTTP attributes, in front of a TCP echo
// server: as under OPA-Envoy the policy decides on the peers (a connection
// it allows is proxied, one it denies is closed), and where a credential is
// required the connection is refused.
func TestEnvoyNetworkFilterChecks(t *testing.T) {
	needTools(t)
	const rego = `package envoy.authz

default allow := false

allow if {
	input.attributes.source.address.socketAddress.address == "127.0.0.1"
	input.attributes.destination.address.socketAddress.portValue == to_number(data.port)
	not input.attributes.request
}
`
	echo := serveTCPEcho(t)
	lisAllow, lisCred, lisOther := freePort(t), freePort(t), freePort(t)
	allowPort := serveEngine(t, rego, lisAllow, nil)
	credPort := serveEngine(t, rego, lisCred, noTokens{})
	otherPort := serveEngine(t, rego, -1, nil) // the policy expects another port

	adm := freePort(t)
	cfg := strings.ReplaceAll(networkEnvoyHead, "ADMIN", strconv.Itoa(adm))
	for _, l := range []struct{ lis, authz int }{{lisAllow, allowPort}, {lisCred, credPort}, {lisOther, otherPort}} {
		cfg += strings.NewReplacer("LISTENER", strconv.Itoa(l.lis), "AUTHZ", strconv.Itoa(l.authz)).Replace(networkEnvoyListener)
	}
	cfg += strings.ReplaceAll(networkEnvoyEcho, "ECHO", strconv.Itoa(echo))
	for _, port := range []int{allowPort, credPort, otherPort} {
		cfg += strings.ReplaceAll(networkAuthzCluster, "PORT", strconv.Itoa(port))
	}
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, "envoy", nil, []int{lisAllow, lisCred, lisOther, adm}, tools.envoy,
		"-c", path, "--disable-hot-restart", "--concurrency", "1", "-l", "warning")
	p.waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/ready", adm), 60*time.Second)

	if got := exchange(t, lisAllow); got != "ping" {
		t.Errorf("a connection the policy allows: echoed %q, want ping", got)
	}
	if got := exchange(t, lisOther); got != "" {
		t.Errorf("a connection the policy denies: echoed %q, want the connection closed", got)
	}
	if got := exchange(t, lisCred); got != "" {
		t.Errorf("a connection where a credential is required: echoed %q, want the connection closed", got)
	}
}

// serveEngine serves a phantom-authz engine with rego (data.port = port)
// over gRPC on loopback.
func serveEngine(t *testing.T, rego string, port int, resolver authz.Resolver) int {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(rego), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data.json"), []byte(fmt.Sprintf(`{"port": "%d"}`, port)), 0o600); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	pe, err := policy.New(policy.Config{Dir: dir, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	cfg := authz.Config{Decider: pe, Logger: quiet, Resolver: resolver}
	e, err := authz.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := server.NewGRPC(e, health.NewServer())
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return l.Addr().(*net.TCPAddr).Port
}

func serveTCPEcho(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// exchange sends "ping" through Envoy's listener and returns what came back
// before the connection closed ("" when Envoy closed it).
func exchange(t *testing.T, port int) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return ""
	}
	buf := make([]byte, 4)
	n, _ := io.ReadFull(c, buf)
	return string(buf[:n])
}

const networkEnvoyHead = `
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: ADMIN}}
static_resources:
  listeners:
`

const networkEnvoyListener = `
  - address: {socket_address: {address: 127.0.0.1, port_value: LISTENER}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.ext_authz
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz
          stat_prefix: ext_authz
          transport_api_version: V3
          failure_mode_allow: false
          grpc_service:
            envoy_grpc: {cluster_name: authz_AUTHZ}
            timeout: 5s
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: echo
`

const networkEnvoyEcho = `
  clusters:
  - name: echo
    type: STATIC
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ECHO}}}
`

const networkAuthzCluster = `
  - name: authz_PORT
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: authz_PORT
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: PORT}}}
`
