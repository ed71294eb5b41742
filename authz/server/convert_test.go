package server_test

import (
	"maps"
	"reflect"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/server"
)

func TestToRequest(t *testing.T) {
	var req authv3.CheckRequest
	err := protojson.Unmarshal([]byte(`{"attributes":{
		"source":{"address":{"socketAddress":{"address":"10.0.0.1","portValue":4321}},"certificate":"-----BEGIN%20CERT"},
		"request":{"http":{"id":"r1","method":"POST","path":"/api/x?a=1","host":"api.example","scheme":"https",
			"headerMap":{"headers":[{"key":"DPoP","rawValue":"cDE="},{"key":"dpop","rawValue":"cDI="},{"key":"x-a","value":"1"}]}}},
		"contextExtensions":{"api":"demo"}}}`), &req)
	if err != nil {
		t.Fatal(err)
	}
	r := server.ToRequest(&req)
	if r.Method != "POST" || r.Path != "/api/x?a=1" || r.Source.Address != "10.0.0.1" || r.Source.Port != 4321 ||
		r.ContextExtensions["api"] != "demo" || r.Source.Certificate != "-----BEGIN%20CERT" {
		t.Errorf("request = %+v", r)
	}
	if len(r.RawHeaders) != 3 || r.RawHeaders[0] != (authz.Header{Key: "dpop", Value: "p1"}) {
		t.Errorf("raw headers = %v", r.RawHeaders)
	}
	if r.Headers["dpop"] != "p1,p2" || r.Headers["x-a"] != "1" {
		t.Errorf("headers = %v", r.Headers)
	}
}

// A client of the gRPC API other than Envoy may send header names in any
// case: the engine still sees them lower-case, names differing only in case
// join like repeated headers (so two Authorization headers are two), and a
// request from Envoy keeps its map as it came. Found by FuzzCheckRequest.
func TestToRequestLowerCasesHeaderNames(t *testing.T) {
	r := server.ToRequest(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Headers: map[string]string{
			"X-Role": "blocked", "X-JWT-Sub": "admin", "Authorization": "Bearer a", "authorization": "Bearer b",
		}},
	}}})
	want := map[string]string{"x-role": "blocked", "x-jwt-sub": "admin", "authorization": "Bearer a,Bearer b"}
	if !maps.Equal(r.Headers, want) {
		t.Errorf("headers = %q, want %q", r.Headers, want)
	}
	lower := map[string]string{"x-role": "user"}
	r = server.ToRequest(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Headers: lower},
	}}})
	if reflect.ValueOf(r.Headers).Pointer() != reflect.ValueOf(lower).Pointer() {
		t.Error("a lower-case header map was copied")
	}
}

func TestToRequestEmpty(t *testing.T) {
	r := server.ToRequest(&authv3.CheckRequest{})
	if r.Method != "" {
		t.Errorf("method = %q", r.Method)
	}
}

func TestToResponse(t *testing.T) {
	ok := server.ToResponse(authz.Decision{Allowed: true,
		Headers:       []authz.Header{{Key: "authorization", Value: "Bearer j"}},
		RemoveHeaders: []string{"x-user-id"}})
	if ok.GetStatus().GetCode() != int32(code.Code_OK) {
		t.Fatalf("status = %v", ok.GetStatus())
	}
	h := ok.GetOkResponse().GetHeaders()
	if len(h) != 1 || h[0].GetHeader().GetValue() != "Bearer j" ||
		h[0].GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
		t.Errorf("headers = %v", h)
	}
	if got := ok.GetOkResponse().GetHeadersToRemove(); len(got) != 1 || got[0] != "x-user-id" {
		t.Errorf("remove = %v", got)
	}

	for _, c := range []struct {
		status int
		code   code.Code
	}{{401, code.Code_UNAUTHENTICATED}, {403, code.Code_PERMISSION_DENIED}, {503, code.Code_PERMISSION_DENIED}, {400, code.Code_PERMISSION_DENIED}} {
		d := server.ToResponse(authz.Decision{Status: c.status, Body: "{}",
			Headers: []authz.Header{{Key: "www-authenticate", Value: "Bearer"}}})
		if d.GetStatus().GetCode() != int32(c.code) {
			t.Errorf("%d: rpc code = %v, want %v", c.status, d.GetStatus().GetCode(), c.code)
		}
		dr := d.GetDeniedResponse()
		if int(dr.GetStatus().GetCode()) != c.status || dr.GetBody() != "{}" ||
			dr.GetHeaders()[0].GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("%d: denied = %v", c.status, dr)
		}
	}
}
