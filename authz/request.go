// Package authz is the core of phantom-authz: the Request it decides on, the
// Decision it reaches, and the Engine that runs the stages (credential →
// resolve → decide → respond) in order. It knows nothing of Envoy's protobufs;
// authz/server translates at the edge.
package authz

import (
	"time"

	"github.com/phantom-authz/phantom-authz/authz/route"
)

// Request is one HTTP request as Envoy describes it in a CheckRequest,
// free of protobuf types. Field names follow Envoy's AttributeContext so the
// policy input can be rebuilt in the shape OPA-Envoy policies expect.
type Request struct {
	// ID is Envoy's x-request-id for the request.
	ID string
	// Method, Scheme, Host, Path (with the query, as Envoy sends it),
	// Protocol (e.g. "HTTP/1.1"), Fragment.
	Method, Scheme, Host, Path, Protocol, Fragment string
	// Query is the query string without '?', when Envoy sends it apart.
	Query string
	// Headers are the request headers, keys lower-case; Envoy joins repeated
	// headers with commas.
	Headers map[string]string
	// RawHeaders are the headers in order, one entry per occurrence, names
	// as sent, when Envoy sends them with encode_raw_headers (header_map);
	// nil otherwise. RawHeaderStrings: their values came as value rather
	// than raw_value. HeadersJoined: Envoy sent only header_map, and
	// Headers were joined from it (the policy input then has no headers map,
	// as OPA-Envoy's has none).
	RawHeaders       []Header
	RawHeaderStrings bool
	HeadersJoined    bool
	// Body is the request body Envoy buffered (possibly truncated), RawBody
	// the same bytes when Envoy sends them raw.
	Body    string
	RawBody []byte
	// Size is the body size Envoy reports, or -1 when unknown.
	Size int64
	// Time is when Envoy received the request (zero when not sent).
	Time time.Time

	// Source is the downstream peer (the client), Destination the listener.
	Source, Destination Peer
	// ContextExtensions are the per-route values set in Envoy's config
	// (check_settings.context_extensions); policies use them to tell routes apart.
	ContextExtensions map[string]string
	// RouteMetadata are the settings of Envoy's route metadata under the
	// "phantom-authz" namespace (route_metadata_context), as strings.
	RouteMetadata map[string]string
	// MetadataContext and RouteMetadataContext are Envoy's metadata of the
	// request and of its route in the policy input's shape (filterMetadata:
	// namespace → plain Go values; typedFilterMetadata: namespace → typeUrl
	// and base64 value), nil when not sent.
	MetadataContext      map[string]any
	RouteMetadataContext map[string]any
	// TLSSNI is the server name the client asked for in the TLS handshake.
	TLSSNI string
	// Absent lists the parts of Envoy's CheckRequest that were not sent
	// (a network filter's request has no HTTP part); zero: all were.
	Absent Parts

	// Route is the route the Engine selected for the request (its route
	// table, route metadata, context extensions), before any other stage
	// ran; whatever a caller puts here is replaced.
	Route route.Route
}

// Parts is a set of the parts of a CheckRequest.
type Parts uint8

// The parts of a CheckRequest that may be absent.
const (
	PartAttributes Parts = 1 << iota
	PartRequest
	PartHTTP
)

// Peer is one side of the connection.
type Peer struct {
	// Address and Port of a socket address; empty/0 when Envoy sent another kind.
	Address string
	Port    uint32
	// Service, Labels and Principal as Envoy reports them.
	Service   string
	Labels    map[string]string
	Principal string
	// Certificate is the URL-encoded PEM of the peer's certificate, sent when
	// Envoy's include_peer_certificate is on.
	Certificate string
	// AddressValue is the address in the policy input's shape when it is
	// not a plain socket address and port (a pipe, an internal address, a
	// UDP socket, a named port); nil otherwise.
	AddressValue map[string]any
}

// Header is one header name and value.
type Header struct {
	Key, Value string
}

// Header returns the value of the (lower-case) header name, or "".
func (r *Request) Header(name string) string { return r.Headers[name] }
