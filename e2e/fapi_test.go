package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// FAPI through real Envoy: Envoy talks to phantom-authz over mutual TLS,
// the policy asks for strong customer authentication (RFC 9470 step-up) on
// one API, the upstream gets a pairwise subject, and x-fapi-interaction-id
// reaches both the upstream and the client.

// The step-up the test policy demands on /api/payments/..., and the
// pairwise sector of the accounts API (the shipped Envoy route names it
// api: accounts).
const (
	scaACR          = "urn:openbanking:psd2:sca"
	accountsSector  = "https://accounts.bank.example"
	pairwiseKeyID   = "e2e-2026"
	pairwiseSecret  = "e2e-only-pairwise-secret-0123456789abcdefghij"
	authzServerName = "phantom-authz"
)

// fapiPolicy allows an active token, except on /api/payments/..., where it
// demands SCA: the one-liner from policies/README.md.
const fapiPolicy = `package envoy.authz

import data.phantom.fapi

sca := {"acr_values": ["` + scaACR + `"], "max_age": 300}

default allow := false

allow := {"allowed": true} if {
	input.token.active
	input.parsed_path[1] != "payments"
} else := fapi.step_up(sca) if {
	not fapi.authenticated(sca)
} else := {"allowed": true} if {
	input.token.active
}
`

// fapiCerts are a test CA, phantom-authz's server certificate and
// Envoy's client certificate, both for the name phantom-authz (what Envoy
// checks), and a client certificate from another CA.
type fapiCerts struct {
	ca                      *testCA
	server, envoy, stranger *leafCert
}

func newFAPICerts(t *testing.T) *fapiCerts {
	t.Helper()
	c := &fapiCerts{ca: newTestCA(t, "phantom-authz e2e CA")}
	c.server = c.ca.server(t, "server", authzServerName)
	c.envoy = c.ca.client(t, "envoy", authzServerName)
	c.stranger = newTestCA(t, "another CA").client(t, "stranger", authzServerName)
	return c
}

// startEnvoyMTLS runs envoy/envoy.yaml, its ports swapped as startEnvoy
// does, with the ext_authz cluster calling phantom-authz over mutual TLS:
// Envoy presents its client certificate and accepts only a server
// certificate for phantom-authz from the test CA.
func startEnvoyMTLS(t *testing.T, authzPort, demoPort int, c *fapiCerts) *envoyProxy {
	t.Helper()
	e, _ := startEnvoyEdited(t, authzPort, demoPort, "envoy-mtls.yaml", func(cfg map[string]any) {
		var cluster map[string]any
		clusters, _ := at(cfg, "static_resources", "clusters").([]any)
		for _, cl := range clusters {
			if m, ok := cl.(map[string]any); ok && m["name"] == "phantom_authz" {
				cluster = m
			}
		}
		if cluster == nil {
			t.Fatal("envoy/envoy.yaml has no phantom_authz cluster")
		}
		socket := envoyTLSSocket("UpstreamTlsContext", c.envoy, c.ca)
		typed := at(socket, "typed_config").(map[string]any)
		typed["sni"] = authzServerName
		common := typed["common_tls_context"].(map[string]any)
		common["alpn_protocols"] = []any{"h2"}
		common["validation_context"].(map[string]any)["match_typed_subject_alt_names"] = []any{map[string]any{
			"san_type": "DNS", "matcher": map[string]any{"exact": authzServerName},
		}}
		cluster["transport_socket"] = socket
	})
	return e
}

// expectedPairwise is the documented derivation, computed apart from
// phantom-authz: the token's iss (as the OAuth server's answer names it)
// qualifies its sub.
func expectedPairwise(secret, sector, iss, sub string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	_ = binary.Write(mac, binary.BigEndian, uint64(len(sector)))
	mac.Write([]byte(sector))
	_ = binary.Write(mac, binary.BigEndian, uint64(len(iss)))
	mac.Write([]byte(iss + sub))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func TestEnvoyFAPI(t *testing.T) {
	t.Parallel()
	needTools(t)
	certs := newFAPICerts(t)
	policyDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(policyDir, "fapi.rego"), []byte(fapiPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(t.TempDir(), "pairwise.key")
	if err := os.WriteFile(secretFile, []byte(pairwiseSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	s := &stack{hydra: startHydra(t)}
	s.authz = startAuthz(t, s.hydra, authzOptions{policyDir: policyDir, set: map[string]any{
		"grpc.tls": map[string]any{"cert_file": certs.server.certFile, "key_file": certs.server.keyFile, "client_ca_file": certs.ca.file},
		"pairwise": map[string]any{
			"keys":    []any{map[string]any{"id": pairwiseKeyID, "secret_file": secretFile}},
			"sectors": map[string]any{"accounts": accountsSector},
		},
	}})
	s.envoy = startEnvoyMTLS(t, s.authz.grpcPort, startDemo(t), certs)
	tok := s.hydra.token(t, "read")
	said := s.hydra.introspect(t, tok)
	sub, _ := said["sub"].(string)
	iss, _ := said["iss"].(string)
	if sub == "" || iss == "" {
		t.Fatalf("Hydra's answer has no sub or iss: %v", said)
	}

	t.Run("step-up", func(t *testing.T) {
		r := s.call(t, http.MethodPost, "/api/payments/p-1", tok, nil)
		p := r.denial(t, http.StatusUnauthorized)
		want := `Bearer realm="phantom-authz", error="insufficient_user_authentication", ` +
			`error_description="A stronger authentication is required.", acr_values="` + scaACR + `", max_age="300"`
		if got := r.header.Get("WWW-Authenticate"); got != want {
			t.Errorf("WWW-Authenticate\n got %s\nwant %s", got, want)
		}
		if p.Error != "insufficient_user_authentication" {
			t.Errorf("problem error %q", p.Error)
		}
		if _, err := uuid.Parse(r.header.Get("X-Fapi-Interaction-Id")); err != nil {
			t.Errorf("the denial carries no x-fapi-interaction-id: %q", r.header.Get("X-Fapi-Interaction-Id"))
		}
	})

	t.Run("pairwise subject over mutual TLS", func(t *testing.T) {
		r := s.call(t, http.MethodGet, "/api/accounts/42", tok, nil)
		if r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		auth := r.upstream(t).Headers["authorization"]
		if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") {
			t.Fatalf("upstream authorization %q", auth)
		}
		claims := verifyJWT(t, s.authz.httpURL, strings.TrimPrefix(auth[0], "Bearer "))
		if claims["sub"] == sub {
			t.Fatalf("the upstream sees the real subject %q", sub)
		}
		if want := expectedPairwise(pairwiseSecret, accountsSector, iss, sub); claims["sub"] != want {
			t.Errorf("sub %v, want the pairwise subject %s", claims["sub"], want)
		}
		if claims["pairwise_kid"] != pairwiseKeyID {
			t.Errorf("pairwise_kid %v, want %s", claims["pairwise_kid"], pairwiseKeyID)
		}
		again := s.call(t, http.MethodGet, "/api/accounts/43", tok, nil).upstream(t).Headers["authorization"]
		if len(again) != 1 || again[0] != auth[0] {
			t.Errorf("a second request got another JWT: the pairwise JWT is kept with the token")
		}
	})

	t.Run("x-fapi-interaction-id", func(t *testing.T) {
		const sent = "9b2f6c1e-3d4a-4f5b-8c6d-7e8f9a0b1c2d"
		for _, tc := range []struct{ name, header, want string }{
			{"echoed", sent, sent},
			{"generated when absent", "", ""},
			{"replaced when not a UUID", "not-a-uuid", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var hdr http.Header
				if tc.header != "" {
					hdr = http.Header{"X-Fapi-Interaction-Id": {tc.header}}
				}
				r := s.call(t, http.MethodGet, "/api/accounts/42", tok, hdr)
				if r.status != http.StatusOK {
					t.Fatalf("status %d: %s", r.status, r.body)
				}
				up := r.upstream(t).Headers["x-fapi-interaction-id"]
				client := r.header.Values("X-Fapi-Interaction-Id")
				if len(up) != 1 || len(client) != 1 || up[0] != client[0] {
					t.Fatalf("upstream saw %q, client got %q: want one id, the same", up, client)
				}
				if tc.want != "" && up[0] != tc.want {
					t.Errorf("id %q, want the client's %q", up[0], tc.want)
				}
				if _, err := uuid.Parse(up[0]); tc.want == "" && (err != nil || up[0] == tc.header) {
					t.Errorf("id %q, want a fresh UUID", up[0])
				}
			})
		}
	})

	t.Run("phantom-authz refuses callers without a client certificate", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stranger, err := tls.LoadX509KeyPair(certs.stranger.certFile, certs.stranger.keyFile)
		if err != nil {
			t.Fatal(err)
		}
		envoy, err := tls.LoadX509KeyPair(certs.envoy.certFile, certs.envoy.keyFile)
		if err != nil {
			t.Fatal(err)
		}
		tlsCfg := func(presented ...tls.Certificate) grpc.DialOption {
			return grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
				RootCAs: certs.ca.pool, ServerName: authzServerName, Certificates: presented}))
		}
		for name, opt := range map[string]grpc.DialOption{
			"plaintext":                 grpc.WithTransportCredentials(insecure.NewCredentials()),
			"TLS without a certificate": tlsCfg(),
			"certificate of another CA": tlsCfg(stranger),
		} {
			if err := grpcCheck(ctx, s.authz.grpcAddr, opt); err == nil {
				t.Errorf("%s: the Check RPC succeeded", name)
			}
		}
		if err := grpcCheck(ctx, s.authz.grpcAddr, tlsCfg(envoy)); err != nil {
			t.Errorf("Envoy's certificate: %v", err)
		}
	})
}

// grpcCheck makes one Check call to addr.
func grpcCheck(ctx context.Context, addr string, opt grpc.DialOption) error {
	conn, err := grpc.NewClient(addr, opt)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = authv3.NewAuthorizationClient(conn).Check(ctx, checkRequest("GET", "/api/accounts/1", ""))
	return err
}
