package server_test

import (
	"encoding/json"
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
	// Names as sent (the policy's headerMap is OPA-Envoy's); the engine's
	// map is lower-case.
	if len(r.RawHeaders) != 3 || r.RawHeaders[0] != (authz.Header{Key: "DPoP", Value: "p1"}) || !r.HeadersJoined {
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

// The decision id always reaches Envoy as decision_id, even over a policy's
// own; query parameters are passed on; and header values are marked so that
// Envoy delivers every value and no client value beside them (what Envoy
// does with each mark: e2e TestEnvoyDeliversDecisionsAsOPAEnvoyDoes).
func TestToResponseOPAEnvoyFields(t *testing.T) {
	id := authz.DecisionID{0x2f, 0x1c, 0x9a, 0x3e, 0x6d, 0x7b, 0x4c, 0x1a, 0x9e, 0x2f, 0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f}
	const idText = "2f1c9a3e-6d7b-4c1a-9e2f-0a1b2c3d4e5f"
	ok := server.ToResponse(authz.Decision{Allowed: true, DecisionID: id,
		DynamicMetadata:     map[string]any{"decision_id": "mine", "user": "alice"},
		Headers:             []authz.Header{{Key: "x-multi", Value: "a"}, {Key: "X-Multi", Value: "b"}, {Key: "x-one", Value: "1"}},
		ResponseHeaders:     []authz.Header{{Key: "set-cookie", Value: "a=1"}, {Key: "set-cookie", Value: "b=2"}, {Key: "x-one", Value: "1"}},
		QueryParamsToSet:    []authz.Header{{Key: "foo", Value: "bar"}},
		QueryParamsToRemove: []string{"drop"},
	})
	md := ok.GetDynamicMetadata().GetFields()
	if md["decision_id"].GetStringValue() != idText || md["user"].GetStringValue() != "alice" {
		t.Errorf("dynamic metadata = %v", md)
	}
	type mark struct {
		action corev3.HeaderValueOption_HeaderAppendAction
		append bool
	}
	marks := func(hs []*corev3.HeaderValueOption) []mark {
		var out []mark
		for _, h := range hs {
			out = append(out, mark{h.GetAppendAction(), h.GetAppend().GetValue()})
		}
		return out
	}
	O, A := corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD, corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
	if got, want := marks(ok.GetOkResponse().GetHeaders()), []mark{{O, false}, {A, true}, {O, false}}; !reflect.DeepEqual(got, want) {
		t.Errorf("upstream header marks = %v, want %v", got, want)
	}
	if got, want := marks(ok.GetOkResponse().GetResponseHeadersToAdd()), []mark{{A, false}, {A, false}, {O, false}}; !reflect.DeepEqual(got, want) {
		t.Errorf("response header marks = %v, want %v", got, want)
	}
	q := ok.GetOkResponse()
	if len(q.GetQueryParametersToSet()) != 1 || q.GetQueryParametersToSet()[0].GetKey() != "foo" || q.GetQueryParametersToSet()[0].GetValue() != "bar" ||
		!reflect.DeepEqual(q.GetQueryParametersToRemove(), []string{"drop"}) {
		t.Errorf("query parameters = %v / %v", q.GetQueryParametersToSet(), q.GetQueryParametersToRemove())
	}

	denied := server.ToResponse(authz.Decision{Status: 418, DecisionID: id,
		Headers: []authz.Header{{Key: "set-cookie", Value: "a=1"}, {Key: "set-cookie", Value: "b=2"}}})
	if got, want := marks(denied.GetDeniedResponse().GetHeaders()), []mark{{O, false}, {O, false}}; !reflect.DeepEqual(got, want) {
		t.Errorf("denial header marks = %v, want %v", got, want)
	}
	if denied.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue() != idText || denied.GetDeniedResponse().GetStatus().GetCode() != 418 {
		t.Errorf("denial = %v", denied)
	}
}

// Envoy's network filter sends no HTTP attributes; pipes, typed metadata
// and route metadata reach the policy input as OPA-Envoy shows them.
func TestToRequestOPAEnvoyShapes(t *testing.T) {
	var req authv3.CheckRequest
	err := protojson.Unmarshal([]byte(`{"attributes":{
		"source":{"address":{"pipe":{"path":"/run/s.sock","mode":384}}},
		"destination":{"address":{"socketAddress":{"protocol":"UDP","address":"10.0.0.1","portValue":53}}},
		"metadataContext":{"typedFilterMetadata":{"ns":{"@type":"type.googleapis.com/google.protobuf.StringValue","value":"x"}}},
		"routeMetadataContext":{"filterMetadata":{"ns":{"a":1}}}}}`), &req)
	if err != nil {
		t.Fatal(err)
	}
	r := server.ToRequest(&req)
	if r.Absent != authz.PartRequest|authz.PartHTTP || r.Method != "" {
		t.Errorf("absent = %b", r.Absent)
	}
	if got, want := jsonString(t, r.Source.AddressValue), `{"pipe":{"mode":384,"path":"/run/s.sock"}}`; got != want {
		t.Errorf("source address = %s, want %s", got, want)
	}
	if got, want := jsonString(t, r.Destination.AddressValue), `{"socketAddress":{"address":"10.0.0.1","portValue":53,"protocol":1}}`; got != want {
		t.Errorf("destination address = %s, want %s", got, want)
	}
	if got, want := jsonString(t, r.MetadataContext), `{"typedFilterMetadata":{"ns":{"typeUrl":"type.googleapis.com/google.protobuf.StringValue","value":"CgF4"}}}`; got != want {
		t.Errorf("metadata = %s, want %s", got, want)
	}
	if got, want := jsonString(t, r.RouteMetadataContext), `{"filterMetadata":{"ns":{"a":1}}}`; got != want {
		t.Errorf("route metadata = %s, want %s", got, want)
	}
}

func jsonString(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
