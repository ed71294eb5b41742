package server_test

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/phantom-authz/phantom-authz/authz/server"
)

// The route's metadata under the phantom-authz namespace reaches the engine
// as strings, as context extensions do; other namespaces and the dynamic
// metadata never set route settings.
func TestRouteMetadata(t *testing.T) {
	ours, _ := structpb.NewStruct(map[string]any{"public": true, "api": "accounts", "dry_run": 1.0, "sender_constrained": []any{"x"}})
	theirs, _ := structpb.NewStruct(map[string]any{"public": true})
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request:              &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/"}},
		RouteMetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"phantom-authz": ours, "envoy-gateway": theirs}},
		MetadataContext:      &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"phantom-authz": theirs}},
	}}
	got := server.ToRequest(req).RouteMetadata
	if got["public"] != "true" || got["api"] != "accounts" || got["dry_run"] != "1" || len(got) != 4 {
		t.Errorf("route metadata %v", got)
	}
	if got["sender_constrained"] == "" || got["sender_constrained"] == "x" {
		t.Errorf("a list became %q; want a value no setting accepts", got["sender_constrained"])
	}
	req.Attributes.RouteMetadataContext = nil
	if got := server.ToRequest(req).RouteMetadata; got != nil {
		t.Errorf("dynamic metadata set route settings: %v", got)
	}
}
