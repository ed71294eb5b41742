package server_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/mint"
	"github.com/phantom-authz/phantom-authz/authz/policy"
	"github.com/phantom-authz/phantom-authz/authz/server"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// rpcRequest is the CheckRequest e2e/bench sends, encoded.
func rpcRequest(b *testing.B) []byte {
	b.Helper()
	addr := func(ip string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: addr("203.0.113.7", 51234)},
		Destination: &authv3.AttributeContext_Peer{Address: addr("10.0.0.5", 8443)},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "9f1c6a52-3b2e-4c4e-9a57-0d3c1c2f8e11", Method: "GET",
			Headers: map[string]string{
				":authority": "api.example.com", ":method": "GET", ":path": "/api/accounts/123", ":scheme": "https",
				"accept": "application/json", "user-agent": "bench/1.0", "x-forwarded-proto": "https",
				"x-request-id": "9f1c6a52-3b2e-4c4e-9a57-0d3c1c2f8e11", "x-forwarded-for": "203.0.113.7",
				"x-envoy-expected-rq-timeout-ms": "15000", "authorization": "Bearer 2YotnFZFEjr1zCsicMWpAA",
			},
			Path: "/api/accounts/123", Host: "api.example.com", Scheme: "https", Protocol: "HTTP/1.1",
		}},
		ContextExtensions: map[string]string{"api": "accounts"},
	}}
	raw, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	return raw
}

// BenchmarkRPCNoop is what every ext_authz server pays per check besides
// the transport: decode the request, encode a pre-built answer (what
// cmd/noop-authz does).
func BenchmarkRPCNoop(b *testing.B) {
	raw := rpcRequest(b)
	resp := &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: "authorization", Value: "Bearer " + string(make([]byte, 593))},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}},
		}},
	}
	b.ReportAllocs()
	for b.Loop() {
		req := &authv3.CheckRequest{}
		if err := proto.Unmarshal(raw, req); err != nil {
			b.Fatal(err)
		}
		if _, err := proto.Marshal(resp); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRPCCachedOpaque is the same for phantom-authz on its hot path
// (scenario a of e2e/bench): decode, convert, a cached opaque token, the
// default policy, the JWT injected, convert back, encode.
func BenchmarkRPCCachedOpaque(b *testing.B) {
	introspect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"active": true, "scope": "openid read write", "client_id": "web-app", "sub": "user-42",
			"exp": time.Now().Add(time.Hour).Unix(), "iss": "https://login.example.com",
		})
	}))
	defer introspect.Close()
	quiet := slog.New(slog.DiscardHandler)
	pol, err := policy.New(policy.Config{Dir: "../../policies", Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	m, err := mint.New(mint.Config{Issuer: "https://phantom-authz.local", Audience: []string{"api"}, Generate: true, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	var e *authz.Engine
	res, err := token.New(token.Config{
		Introspection: &token.IntrospectionConfig{Endpoint: introspect.URL, ClientID: "pa", ClientSecret: "s", AllowInsecureHTTP: true},
		Prepare:       func(t *token.Token) error { return e.PrepareToken(t) },
		Logger:        quiet,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer res.Close()
	e, err = authz.New(authz.Config{Decider: pol, Resolver: res, Minter: m, OwnedHeaders: []string{"x-jwt-*", "x-user-*"}, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	srv := &server.Authorization{Checker: e}
	raw := rpcRequest(b)
	ctx := context.Background()
	check := func() {
		req := &authv3.CheckRequest{}
		if err := proto.Unmarshal(raw, req); err != nil {
			b.Fatal(err)
		}
		resp, err := srv.Check(ctx, req)
		if err != nil || resp.GetStatus().GetCode() != 0 {
			b.Fatalf("want allow, got %v, %v", resp, err)
		}
		if _, err := proto.Marshal(resp); err != nil {
			b.Fatal(err)
		}
	}
	check()
	time.Sleep(10 * time.Millisecond) // the decision cache admits asynchronously
	b.ReportAllocs()
	for b.Loop() {
		check()
	}
}
