package server

import (
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/route"
)

// ToRequest converts Envoy's CheckRequest into the engine's Request. A
// request without HTTP attributes converts to a Request with no Method, which
// the engine denies.
func ToRequest(in *authv3.CheckRequest) *authz.Request {
	a := in.GetAttributes()
	h := a.GetRequest().GetHttp()
	r := &authz.Request{
		ID:                h.GetId(),
		Method:            h.GetMethod(),
		Scheme:            h.GetScheme(),
		Host:              h.GetHost(),
		Path:              h.GetPath(),
		Protocol:          h.GetProtocol(),
		Fragment:          h.GetFragment(),
		Query:             h.GetQuery(),
		Headers:           lowerKeys(h.GetHeaders()),
		Body:              h.GetBody(),
		RawBody:           h.GetRawBody(),
		Size:              h.GetSize(),
		Source:            toPeer(a.GetSource()),
		Destination:       toPeer(a.GetDestination()),
		ContextExtensions: a.GetContextExtensions(),
		TLSSNI:            a.GetTlsSession().GetSni(),
	}
	if t := a.GetRequest().GetTime(); t != nil {
		r.Time = t.AsTime()
	}
	if hm := h.GetHeaderMap(); hm != nil && len(hm.GetHeaders()) > 0 {
		// encode_raw_headers: every occurrence arrives separately, so
		// duplicated headers (two Authorization, two DPoP) can be seen.
		r.RawHeaders = make([]authz.Header, 0, len(hm.GetHeaders()))
		joined := make(map[string]string, len(hm.GetHeaders()))
		for _, hv := range hm.GetHeaders() {
			k := strings.ToLower(hv.GetKey())
			v := hv.GetValue()
			if raw := hv.GetRawValue(); len(raw) > 0 {
				v = string(raw)
			}
			r.RawHeaders = append(r.RawHeaders, authz.Header{Key: k, Value: v})
			if prev, ok := joined[k]; ok {
				joined[k] = prev + "," + v
			} else {
				joined[k] = v
			}
		}
		// The map is derived from the raw headers whenever they are sent,
		// so both views always agree and duplicates show as joined values.
		r.Headers = joined
	}
	r.RouteMetadata = routeSettings(a.GetRouteMetadataContext().GetFilterMetadata()[route.Namespace])
	if md := a.GetMetadataContext().GetFilterMetadata(); len(md) > 0 {
		r.MetadataContext = make(map[string]any, len(md))
		for k, s := range md {
			r.MetadataContext[k] = s.AsMap()
		}
	}
	return r
}

// routeSettings converts the route's metadata under route.Namespace to the
// string form of context extensions: a bool is "true" or "false", a number
// its decimal form (which the route stage refuses where it wants a bool).
func routeSettings(s *structpb.Struct) map[string]string {
	if len(s.GetFields()) == 0 {
		return nil
	}
	out := make(map[string]string, len(s.GetFields()))
	for k, v := range s.GetFields() {
		switch x := v.GetKind().(type) {
		case *structpb.Value_StringValue:
			out[k] = x.StringValue
		case *structpb.Value_BoolValue:
			out[k] = strconv.FormatBool(x.BoolValue)
		case *structpb.Value_NumberValue:
			out[k] = strconv.FormatFloat(x.NumberValue, 'f', -1, 64)
		default:
			out[k] = v.String() // a list or object: never a valid setting
		}
	}
	return out
}

// lowerKeys returns headers with lower-case names, as Request promises and
// as the credential stage, the owned-header stripping and policies read
// them. Envoy sends them lower-case already, and then the map is returned
// as it is; another client of the gRPC API may not, and "X-Role" must not
// slip past a policy that reads x-role, nor "X-JWT-Sub" past the stripping.
// Names equal but for case are joined with commas like repeated headers, in
// the order of their names as sent (sorted), so the result is the same for
// the same request.
func lowerKeys(headers map[string]string) map[string]string {
	mixed := false
	for k := range headers {
		if hasUpper(k) {
			mixed = true
			break
		}
	}
	if !mixed {
		return headers
	}
	names := make([]string, 0, len(headers))
	for k := range headers {
		names = append(names, k)
	}
	slices.Sort(names)
	out := make(map[string]string, len(headers))
	for _, k := range names {
		lk := strings.ToLower(k)
		if prev, ok := out[lk]; ok {
			out[lk] = prev + "," + headers[k]
		} else {
			out[lk] = headers[k]
		}
	}
	return out
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return true
		}
	}
	return false
}

func toPeer(p *authv3.AttributeContext_Peer) authz.Peer {
	if p == nil {
		return authz.Peer{}
	}
	out := authz.Peer{
		Service:     p.GetService(),
		Labels:      p.GetLabels(),
		Principal:   p.GetPrincipal(),
		Certificate: p.GetCertificate(),
	}
	if sa := p.GetAddress().GetSocketAddress(); sa != nil {
		out.Address = sa.GetAddress()
		out.Port = sa.GetPortValue()
	}
	return out
}

// ToResponse converts the engine's Decision into Envoy's CheckResponse. A
// denial is a successful RPC whose status is UNAUTHENTICATED (HTTP 401) or
// PERMISSION_DENIED (anything else), never a gRPC error: Envoy treats errors
// as failures, not answers.
func ToResponse(d authz.Decision) *authv3.CheckResponse {
	if d.Allowed {
		// The messages of an answer are made together: one allocation
		// instead of one each, on the path every allowed request takes.
		m := &struct {
			resp   authv3.CheckResponse
			status rpcstatus.Status
			wrap   authv3.CheckResponse_OkResponse
			ok     authv3.OkHttpResponse
		}{}
		m.ok.Headers = headerOptions(d.Headers)
		m.ok.HeadersToRemove = d.RemoveHeaders
		m.ok.ResponseHeadersToAdd = headerOptions(d.ResponseHeaders)
		m.wrap.OkResponse = &m.ok
		m.status.Code = int32(code.Code_OK)
		m.resp.Status, m.resp.HttpResponse = &m.status, &m.wrap
		if md := toStruct(d.DynamicMetadata); md != nil {
			m.resp.DynamicMetadata = md
		}
		return &m.resp
	}
	resp := &authv3.CheckResponse{}
	if md := toStruct(d.DynamicMetadata); md != nil {
		resp.DynamicMetadata = md
	}
	c := code.Code_PERMISSION_DENIED
	if d.Status == 401 {
		c = code.Code_UNAUTHENTICATED
	}
	resp.Status = &rpcstatus.Status{Code: int32(c), Message: d.Reason}
	resp.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
		Headers: headerOptions(d.Headers),
		Body:    d.Body,
	}}
	return resp
}

// headerOptions converts headers, all of them in two allocations.
func headerOptions(hs []authz.Header) []*corev3.HeaderValueOption {
	if len(hs) == 0 {
		return nil
	}
	type option struct {
		opt corev3.HeaderValueOption
		val corev3.HeaderValue
	}
	slab := make([]option, len(hs))
	out := make([]*corev3.HeaderValueOption, len(hs))
	for i, h := range hs {
		o := &slab[i]
		o.val.Key, o.val.Value = h.Key, h.Value
		o.opt.Header = &o.val
		o.opt.AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		out[i] = &o.opt
	}
	return out
}

func toStruct(m map[string]any) *structpb.Struct {
	if len(m) == 0 {
		return nil
	}
	s, err := structpb.NewStruct(m)
	if err != nil {
		return nil
	}
	return s
}
