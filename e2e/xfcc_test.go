package e2e

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// Certificate-bound tokens (RFC 8705) behind a proxy that terminates the
// client's TLS (issue 15): a gateway Envoy ends TLS and tells the client
// certificate in x-forwarded-client-cert (forward_client_cert_details:
// SANITIZE_SET) to a second Envoy, the shipped envoy/envoy.yaml over mutual
// TLS, which calls phantom-authz. phantom-authz trusts the header only from
// the gateway's principal (binding.xfcc.trusted_principals).
//
//	client ─TLS─▶ gateway Envoy ─mTLS (gateway cert), XFCC─▶ inner Envoy ─▶ phantom-authz
//	client ─TLS + forged XFCC────────────────────────────────▶ inner Envoy

// The SPIFFE ids of the trusted gateway and of a proxy phantom-authz does
// not trust.
const (
	gatewayPrincipal = "spiffe://e2e.local/ns/edge/sa/gateway"
	rogueProxy       = "spiffe://e2e.local/ns/edge/sa/rogue-proxy"
)

// startGateway runs an Envoy that ends the client's TLS (client
// certificates requested, not required) and forwards everything to the
// inner Envoy at innerPort over mutual TLS, presenting cert. fcc is its
// forward_client_cert_details; details its set_current_client_cert_details.
// The edits change the config before it is written. It returns the
// gateway's https:// URL.
func startGateway(t *testing.T, p *pki, cert *leafCert, innerPort int, fcc string, details map[string]any, edits ...func(cfg map[string]any)) string {
	t.Helper()
	lis, adm := freePort(t), freePort(t)
	down := envoyTLSSocket("DownstreamTlsContext", p.server, p.ca)
	up := envoyTLSSocket("UpstreamTlsContext", cert, p.ca)
	up["typed_config"].(map[string]any)["sni"] = "localhost"
	hcm := map[string]any{
		"@type":                       "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
		"stat_prefix":                 "gateway",
		"forward_client_cert_details": fcc,
		"route_config": map[string]any{"virtual_hosts": []any{map[string]any{
			"name": "all", "domains": []any{"*"},
			"routes": []any{map[string]any{"match": map[string]any{"prefix": "/"}, "route": map[string]any{"cluster": "inner"}}},
		}}},
		"http_filters": []any{map[string]any{"name": "envoy.filters.http.router",
			"typed_config": map[string]any{"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}},
	}
	if details != nil {
		hcm["set_current_client_cert_details"] = details
	}
	addr := func(port int) map[string]any {
		return map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": port}}
	}
	cfg := map[string]any{
		"admin": map[string]any{"address": addr(adm)},
		"static_resources": map[string]any{
			"listeners": []any{map[string]any{
				"name": "gateway", "address": addr(lis),
				"filter_chains": []any{map[string]any{
					"transport_socket": down,
					"filters":          []any{map[string]any{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}},
				}},
			}},
			"clusters": []any{map[string]any{
				"name": "inner", "type": "STATIC", "connect_timeout": "1s", "transport_socket": up,
				"load_assignment": map[string]any{"cluster_name": "inner", "endpoints": []any{map[string]any{
					"lb_endpoints": []any{map[string]any{"endpoint": map[string]any{"address": addr(innerPort)}}},
				}}},
			}},
		},
	}
	for _, edit := range edits {
		edit(cfg)
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	e := &envoyProxy{url: fmt.Sprintf("https://localhost:%d", lis), adminURL: fmt.Sprintf("http://127.0.0.1:%d", adm)}
	e.process = startProcess(t, "envoy-gateway", nil, []int{lis, adm}, tools.envoy,
		"-c", path, "--disable-hot-restart", "--concurrency", "1", "-l", "info")
	e.waitHTTP(t, e.adminURL+"/ready", 30*time.Second)
	return e.url
}

// The inner Envoy passes the gateway's XFCC to ext_authz as it is
// (FORWARD_ONLY), or appends its own element about its peer, the gateway,
// as Istio's sidecars do (APPEND_FORWARD with the peer's URI, subject, DNS):
// phantom-authz must find the client's certificate either way.
func TestEnvoyXFCC(t *testing.T) {
	t.Parallel()
	needTools(t)
	for _, inner := range []struct {
		fcc     string
		details map[string]any
	}{
		{"FORWARD_ONLY", nil},
		{"APPEND_FORWARD", map[string]any{"subject": true, "uri": true, "dns": true}},
	} {
		t.Run("inner "+inner.fcc, func(t *testing.T) { testXFCC(t, inner.fcc, inner.details) })
	}
}

func testXFCC(t *testing.T, innerFCC string, innerDetails map[string]any) {
	p := newPKI(t)
	tokens := &boundTokens{tokens: map[string]map[string]any{}}
	as := httptest.NewServer(tokens)
	t.Cleanup(as.Close)
	authz := startAuthz(t, nil, authzOptions{introspectionURL: as.URL + "/introspect", set: map[string]any{
		"binding": map[string]any{"xfcc": map[string]any{"trusted_principals": []any{gatewayPrincipal}}},
	}})
	// The inner Envoy: the shipped config over mutual TLS, passing the XFCC
	// of a mutual-TLS peer on to ext_authz (its default, SANITIZE, would
	// remove it first).
	inner := startEnvoyTLS(t, authz.grpcPort, startDemo(t), p, func(cfg map[string]any) {
		hcm := at(cfg, "static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config").(map[string]any)
		hcm["forward_client_cert_details"] = innerFCC
		if innerDetails != nil {
			hcm["set_current_client_cert_details"] = innerDetails
		}
	})
	var innerPort int
	if _, err := fmt.Sscanf(inner, "https://localhost:%d", &innerPort); err != nil {
		t.Fatal(err)
	}
	gwCert := p.ca.client(t, "gateway", gatewayPrincipal)
	rogueCert := p.ca.client(t, "rogue-proxy", rogueProxy)
	gatewayCert := startGateway(t, p, gwCert, innerPort, "SANITIZE_SET", map[string]any{"cert": true})
	gatewayHash := startGateway(t, p, gwCert, innerPort, "SANITIZE_SET", map[string]any{})
	// A proxy phantom-authz does not trust, passing on whatever the client sent.
	rogue := startGateway(t, p, rogueCert, innerPort, "ALWAYS_FORWARD_ONLY", nil)

	const tok, unbound = "xfcc-bound-token", "xfcc-unbound-token"
	tokens.add(tok, map[string]any{"x5t#S256": p.x5tA})
	tokens.add(unbound, nil)
	sumA := sha256.Sum256(p.clientA.Certificate[0])
	forged := "Hash=" + hex.EncodeToString(sumA[:]) // what client A's certificate would give
	bearer := func(tok string, xfcc string) http.Header {
		h := http.Header{"Authorization": {"Bearer " + tok}}
		if xfcc != "" {
			h.Set("X-Forwarded-Client-Cert", xfcc)
		}
		return h
	}
	via := func(url string) *tlsStack { return &tlsStack{pki: p, tokens: tokens, authz: authz, url: url} }

	t.Run("trusted gateway, Cert: the bound certificate", func(t *testing.T) {
		s := via(gatewayCert)
		r := s.call(t, &p.clientA, "GET", "/api/accounts/1", bearer(tok, ""))
		claims := s.upstreamClaims(t, r, tok)
		if cnf, _ := claims["cnf"].(map[string]any); cnf["x5t#S256"] != p.x5tA {
			t.Errorf("upstream JWT cnf = %v, want the client certificate's thumbprint", claims["cnf"])
		}
		// From the trusted gateway the header is the gateway's: kept.
		if got := r.upstream(t).Headers["x-forwarded-client-cert"]; len(got) != 1 || !strings.Contains(got[0], "Cert=") {
			t.Errorf("upstream x-forwarded-client-cert = %q, want the gateway's", got)
		}
	})
	t.Run("trusted gateway, Hash only: the bound certificate", func(t *testing.T) {
		s := via(gatewayHash)
		s.upstreamClaims(t, s.call(t, &p.clientA, "GET", "/api/accounts/1", bearer(tok, "")), tok)
	})

	refusals := []struct {
		name, url string
		client    *tls.Certificate // nil: none
		xfcc      string
	}{
		{"trusted gateway (Cert), another certificate", gatewayCert, &p.clientB, ""},
		{"trusted gateway (Hash), another certificate", gatewayHash, &p.clientB, ""},
		{"trusted gateway, another certificate and a forged XFCC", gatewayCert, &p.clientB, forged},
		{"trusted gateway, no certificate and a forged XFCC", gatewayHash, nil, forged},
		{"client-sent XFCC straight to the inner Envoy", inner, &p.clientB, forged},
		{"client-sent XFCC through an untrusted proxy", rogue, &p.clientB, forged},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			r := via(tc.url).call(t, tc.client, "GET", "/api/accounts/1", bearer(tok, tc.xfcc))
			if pr := r.denial(t, http.StatusUnauthorized); pr.Error != "invalid_token" {
				t.Errorf("error %q (%s), want invalid_token", pr.Error, pr.Detail)
			}
		})
	}

	// A client-sent header never reaches the upstream, even on a request
	// that is allowed (an unbound token).
	for _, tc := range []struct{ name, url string }{{"straight to the inner Envoy", inner}, {"through an untrusted proxy", rogue}} {
		t.Run("client-sent XFCC stripped, "+tc.name, func(t *testing.T) {
			s := via(tc.url)
			r := s.call(t, &p.clientB, "GET", "/api/accounts/1", bearer(unbound, forged))
			s.upstreamClaims(t, r, unbound)
			if got := r.upstream(t).Headers["x-forwarded-client-cert"]; got != nil {
				t.Errorf("the client's x-forwarded-client-cert reached the upstream: %q", got)
			}
		})
	}
}

// Trust by address (binding.xfcc.trusted_addresses): the gateway connects to
// the inner Envoy from 127.0.0.2, clients from 127.0.0.1. The address is the
// TCP peer Envoy saw, so a client claiming the gateway's address in
// X-Forwarded-For gains nothing.
func TestEnvoyXFCCTrustedAddress(t *testing.T) {
	t.Parallel()
	needTools(t)
	const gatewayAddr = "127.0.0.2"
	p := newPKI(t)
	tokens := &boundTokens{tokens: map[string]map[string]any{}}
	as := httptest.NewServer(tokens)
	t.Cleanup(as.Close)
	authz := startAuthz(t, nil, authzOptions{introspectionURL: as.URL + "/introspect", set: map[string]any{
		"binding": map[string]any{"xfcc": map[string]any{"trusted_addresses": []any{gatewayAddr}}},
	}})
	inner := startEnvoyTLS(t, authz.grpcPort, startDemo(t), p, func(cfg map[string]any) {
		hcm := at(cfg, "static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config").(map[string]any)
		hcm["forward_client_cert_details"] = "FORWARD_ONLY"
	})
	var innerPort int
	if _, err := fmt.Sscanf(inner, "https://localhost:%d", &innerPort); err != nil {
		t.Fatal(err)
	}
	gateway := startGateway(t, p, p.ca.client(t, "address-gateway"), innerPort, "SANITIZE_SET", map[string]any{"cert": true},
		func(cfg map[string]any) {
			cluster := at(cfg, "static_resources", "clusters", 0).(map[string]any)
			cluster["upstream_bind_config"] = map[string]any{"source_address": map[string]any{"address": gatewayAddr, "port_value": 0}}
		})

	const tok, unbound = "xfcc-bound-token", "xfcc-unbound-token"
	tokens.add(tok, map[string]any{"x5t#S256": p.x5tA})
	tokens.add(unbound, nil)
	sumA := sha256.Sum256(p.clientA.Certificate[0])
	spoof := http.Header{
		"X-Forwarded-Client-Cert":  {"Hash=" + hex.EncodeToString(sumA[:])},
		"X-Forwarded-For":          {gatewayAddr},
		"X-Envoy-External-Address": {gatewayAddr},
	}
	with := func(tok string, extra http.Header) http.Header {
		h := http.Header{"Authorization": {"Bearer " + tok}}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	via := func(url string) *tlsStack { return &tlsStack{pki: p, tokens: tokens, authz: authz, url: url} }

	s := via(gateway)
	s.upstreamClaims(t, s.call(t, &p.clientA, "GET", "/api/accounts/1", with(tok, nil)), tok)
	if r := s.call(t, &p.clientB, "GET", "/api/accounts/1", with(tok, nil)); r.denial(t, http.StatusUnauthorized).Error != "invalid_token" {
		t.Errorf("another certificate through the trusted gateway: %s", r.body)
	}

	direct := via(inner)
	r := direct.call(t, &p.clientB, "GET", "/api/accounts/1", with(tok, spoof))
	if pr := r.denial(t, http.StatusUnauthorized); pr.Error != "invalid_token" {
		t.Errorf("forged XFCC and X-Forwarded-For straight to the inner Envoy: error %q", pr.Error)
	}
	r = direct.call(t, &p.clientB, "GET", "/api/accounts/1", with(unbound, spoof))
	direct.upstreamClaims(t, r, unbound)
	if got := r.upstream(t).Headers["x-forwarded-client-cert"]; got != nil {
		t.Errorf("the client's x-forwarded-client-cert reached the upstream: %q", got)
	}
}
