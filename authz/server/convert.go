package server

import (
	"encoding/base64"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/route"
)

// ToRequest converts Envoy's CheckRequest into the engine's Request. A
// request without HTTP attributes (Envoy's network filter) converts to a
// Request with no Method and PartHTTP absent.
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
		Absent:            absent(in),
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
			} else if v != "" {
				r.RawHeaderStrings = true
			}
			r.RawHeaders = append(r.RawHeaders, authz.Header{Key: hv.GetKey(), Value: v})
			if prev, ok := joined[k]; ok {
				joined[k] = prev + "," + v
			} else {
				joined[k] = v
			}
		}
		// The engine's map is derived from the raw headers whenever they
		// are sent, so both views always agree and duplicates show as
		// joined values.
		r.HeadersJoined = len(h.GetHeaders()) == 0
		r.Headers = joined
	}
	r.RouteMetadata = routeSettings(a.GetRouteMetadataContext().GetFilterMetadata()[route.Namespace])
	if md := a.GetMetadataContext(); md != nil {
		r.MetadataContext = metadataValue(md)
	}
	if md := a.GetRouteMetadataContext(); md != nil {
		r.RouteMetadataContext = metadataValue(md)
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

// absent lists the parts of in that were not sent.
func absent(in *authv3.CheckRequest) authz.Parts {
	a := in.GetAttributes()
	var p authz.Parts
	if a == nil {
		p |= authz.PartAttributes
	}
	if a.GetRequest() == nil {
		p |= authz.PartRequest
	}
	if a.GetRequest().GetHttp() == nil {
		p |= authz.PartHTTP
	}
	return p
}

// emptyObject is the value of metadata Envoy sent empty; shared, never
// written.
var emptyObject = map[string]any{}

func metadataValue(md *corev3.Metadata) map[string]any {
	if len(md.GetFilterMetadata()) == 0 && len(md.GetTypedFilterMetadata()) == 0 {
		return emptyObject
	}
	return protomap(md.ProtoReflect())
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
	if addr := p.GetAddress(); addr != nil && !plainSocket(addr) {
		out.AddressValue = protomap(addr.ProtoReflect())
	}
	return out
}

// plainSocket reports whether addr is a TCP socket address with a port
// number and nothing else, which Peer's Address and Port hold whole.
func plainSocket(addr *corev3.Address) bool {
	sa := addr.GetSocketAddress()
	if sa == nil || sa.GetProtocol() != corev3.SocketAddress_TCP || sa.GetResolverName() != "" ||
		sa.GetIpv4Compat() || sa.GetNetworkNamespaceFilepath() != "" || sa.GetNamedPort() != "" {
		return false
	}
	_, isPort := sa.GetPortSpecifier().(*corev3.SocketAddress_PortValue)
	return isPort || sa.GetPortSpecifier() == nil
}

// protomap converts a message to plain Go values the way OPA-Envoy builds
// its policy input (not protojson): fields by JSON name, only those set;
// enums as numbers, 64-bit integers as numbers, bytes as base64, Structs
// as their maps, Any as its typeUrl and value.
func protomap(msg protoreflect.Message) map[string]any {
	if s, ok := msg.Interface().(*structpb.Struct); ok {
		return s.AsMap()
	}
	out := make(map[string]any, msg.Descriptor().Fields().Len())
	msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			m := make(map[string]any, v.Map().Len())
			vd := fd.MapValue()
			v.Map().Range(func(k protoreflect.MapKey, e protoreflect.Value) bool {
				m[k.String()] = protoValue(vd, e)
				return true
			})
			out[fd.JSONName()] = m
		case fd.IsList():
			l := make([]any, v.List().Len())
			for i := range l {
				l[i] = protoValue(fd, v.List().Get(i))
			}
			out[fd.JSONName()] = l
		default:
			out[fd.JSONName()] = protoValue(fd, v)
		}
		return true
	})
	return out
}

func protoValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return protomap(v.Message())
	case protoreflect.EnumKind:
		return int32(v.Enum())
	case protoreflect.BytesKind:
		return base64.StdEncoding.EncodeToString(v.Bytes())
	default:
		return v.Interface()
	}
}

// ToResponse converts the engine's Decision into Envoy's CheckResponse. A
// denial is a successful RPC whose status is UNAUTHENTICATED (HTTP 401) or
// PERMISSION_DENIED (anything else), never a gRPC error: Envoy treats errors
// as failures, not answers. The decision id goes into the dynamic metadata
// (decision_id, as OPA-Envoy puts it), whatever the policy put there.
func ToResponse(d authz.Decision) *authv3.CheckResponse {
	if d.Allowed {
		// The messages of an answer are made together: one allocation
		// instead of one each, on the path every allowed request takes.
		m := &struct {
			resp   authv3.CheckResponse
			status rpcstatus.Status
			wrap   authv3.CheckResponse_OkResponse
			ok     authv3.OkHttpResponse
			md     metadata
		}{}
		m.ok.Headers = headerOptions(d.Headers, toUpstream)
		m.ok.HeadersToRemove = d.RemoveHeaders
		m.ok.ResponseHeadersToAdd = headerOptions(d.ResponseHeaders, toClient)
		m.ok.QueryParametersToSet = queryParams(d.QueryParamsToSet)
		m.ok.QueryParametersToRemove = d.QueryParamsToRemove
		m.wrap.OkResponse = &m.ok
		m.status.Code = int32(code.Code_OK)
		m.resp.Status, m.resp.HttpResponse = &m.status, &m.wrap
		m.resp.DynamicMetadata = m.md.build(d.DynamicMetadata, d.DecisionID.String())
		return &m.resp
	}
	m := &struct {
		resp   authv3.CheckResponse
		status rpcstatus.Status
		wrap   authv3.CheckResponse_DeniedResponse
		denied authv3.DeniedHttpResponse
		code   typev3.HttpStatus
		md     metadata
	}{}
	m.status.Code = int32(code.Code_PERMISSION_DENIED)
	if d.Status == 401 {
		m.status.Code = int32(code.Code_UNAUTHENTICATED)
	}
	m.code.Code = typev3.StatusCode(d.Status)
	m.denied.Status, m.denied.Headers, m.denied.Body = &m.code, headerOptions(d.Headers, onDenial), d.Body
	m.wrap.DeniedResponse = &m.denied
	m.resp.Status, m.resp.HttpResponse = &m.status, &m.wrap
	m.resp.DynamicMetadata = m.md.build(d.DynamicMetadata, d.DecisionID.String())
	return &m.resp
}

// Where headers go: how Envoy (1.40, checked by e2e
// TestEnvoyDeliversDecisionsAsOPAEnvoyDoes) applies each list differs.
type headerMode uint8

const (
	// toUpstream: ok_response.headers. Envoy reads only the deprecated
	// append flag there: unset replaces the request's header (a client's
	// value never survives beside the policy's), true appends to it. So
	// the first value of a name replaces, the next ones append (Envoy joins
	// them with commas).
	toUpstream headerMode = iota
	// toClient: response_headers_to_add. Envoy honours append_action, but a
	// value appended after one that overwrote is lost: a name with one
	// value overwrites the upstream's, a name with several appends them all.
	toClient
	// onDenial: denied_response.headers make a fresh response, and every
	// value arrives even when each overwrites.
	onDenial
)

// appendTrue is the shared (never written) deprecated append flag.
var appendTrue = wrapperspb.Bool(true)

// headerOptions converts headers, all of them in two allocations, with the
// append actions that make Envoy deliver every value (see headerMode).
func headerOptions(hs []authz.Header, mode headerMode) []*corev3.HeaderValueOption {
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
		switch mode {
		case toUpstream:
			if repeated(hs[:i], h.Key) {
				o.opt.AppendAction = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
				o.opt.Append = appendTrue
			}
		case toClient:
			if repeated(hs[:i], h.Key) || repeated(hs[i+1:], h.Key) {
				o.opt.AppendAction = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			}
		}
		out[i] = &o.opt
	}
	return out
}

// repeated reports whether hs has a header called name.
func repeated(hs []authz.Header, name string) bool {
	for _, h := range hs {
		if strings.EqualFold(h.Key, name) {
			return true
		}
	}
	return false
}

func queryParams(ps []authz.Header) []*corev3.QueryParameter {
	if len(ps) == 0 {
		return nil
	}
	slab := make([]corev3.QueryParameter, len(ps))
	out := make([]*corev3.QueryParameter, len(ps))
	for i, p := range ps {
		slab[i].Key, slab[i].Value = p.Key, p.Value
		out[i] = &slab[i]
	}
	return out
}

// metadata holds the messages of a dynamic metadata struct that carries
// only the decision id, so the common answer makes them in one allocation
// with the response (and one for the map).
type metadata struct {
	s  structpb.Struct
	v  structpb.Value
	id structpb.Value_StringValue
}

// build returns the dynamic metadata: the policy's, with decision_id set to
// id (a policy's own decision_id is replaced, as OPA-Envoy does); nil when
// there is neither.
func (m *metadata) build(md map[string]any, id string) *structpb.Struct {
	if len(md) == 0 {
		if id == "" {
			return nil
		}
		m.id.StringValue = id
		m.v.Kind = &m.id
		m.s.Fields = map[string]*structpb.Value{"decision_id": &m.v}
		return &m.s
	}
	s, err := structpb.NewStruct(md)
	if err != nil {
		// The policy stage hands over JSON values only.
		s = &structpb.Struct{Fields: map[string]*structpb.Value{}}
	}
	if id != "" {
		s.Fields["decision_id"] = structpb.NewStringValue(id)
	}
	return s
}
