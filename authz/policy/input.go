package policy

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/route"
)

// The input is built directly as OPA AST values: no JSON round trip and no
// reflection per request. It has exactly the shape OPA-Envoy gives its
// policies: the v3 CheckRequest's set fields by their JSON names (not
// protojson: a Timestamp is {seconds, nanos}, an enum a number, bytes
// base64), plus parsed_path, parsed_query, parsed_body (null when none),
// truncated_body, version and source_principal; and our input.token and
// input.route. e2e/opaenvoy compares it, answer by answer, with OPA-Envoy's.
//
// Only the parts of it that the loaded policy set can read are built (see
// need): a policy that never looks at the headers does not pay for them.

// Terms shared by every input: object keys and common values. AST terms are
// immutable once built, so sharing them between concurrent evaluations is
// safe.
var (
	kAttributes      = ast.StringTerm("attributes")
	kSource          = ast.StringTerm("source")
	kDestination     = ast.StringTerm("destination")
	kAddress         = ast.StringTerm("address")
	kSocketAddress   = ast.StringTerm("socketAddress")
	kPortValue       = ast.StringTerm("portValue")
	kPrincipal       = ast.StringTerm("principal")
	kCertificate     = ast.StringTerm("certificate")
	kService         = ast.StringTerm("service")
	kLabels          = ast.StringTerm("labels")
	kRequest         = ast.StringTerm("request")
	kTime            = ast.StringTerm("time")
	kHTTP            = ast.StringTerm("http")
	kID              = ast.StringTerm("id")
	kMethod          = ast.StringTerm("method")
	kHeaders         = ast.StringTerm("headers")
	kHeaderMap       = ast.StringTerm("headerMap")
	kKey             = ast.StringTerm("key")
	kRawValue        = ast.StringTerm("rawValue")
	kPath            = ast.StringTerm("path")
	kHost            = ast.StringTerm("host")
	kScheme          = ast.StringTerm("scheme")
	kQuery           = ast.StringTerm("query")
	kFragment        = ast.StringTerm("fragment")
	kSize            = ast.StringTerm("size")
	kProtocol        = ast.StringTerm("protocol")
	kBody            = ast.StringTerm("body")
	kRawBody         = ast.StringTerm("rawBody")
	kContextExt      = ast.StringTerm("contextExtensions")
	kMetadataContext = ast.StringTerm("metadataContext")
	kFilterMetadata  = ast.StringTerm("filterMetadata")
	kTLSSession      = ast.StringTerm("tlsSession")
	kSNI             = ast.StringTerm("sni")
	kRouteMetadata   = ast.StringTerm("routeMetadataContext")
	kValue           = ast.StringTerm("value")
	kSeconds         = ast.StringTerm("seconds")
	kNanos           = ast.StringTerm("nanos")
	kSourcePrincipal = ast.StringTerm("source_principal")
	kParsedPath      = ast.StringTerm("parsed_path")
	kParsedQuery     = ast.StringTerm("parsed_query")
	kParsedBody      = ast.StringTerm("parsed_body")
	kTruncatedBody   = ast.StringTerm("truncated_body")
	kVersion         = ast.StringTerm("version")
	kToken           = ast.StringTerm("token")
	kRoute           = ast.StringTerm("route")
	kAPI             = ast.StringTerm("api")
	kName            = ast.StringTerm("name")
	kTemplate        = ast.StringTerm("template")
	kParams          = ast.StringTerm("params")
	kPublic          = ast.StringTerm("public")

	tTrue  = ast.BooleanTerm(true)
	tFalse = ast.BooleanTerm(false)

	// versionTerm is OPA-Envoy's input.version for the v3 API.
	versionTerm = ast.ObjectTerm(
		ast.Item(ast.StringTerm("ext_authz"), ast.StringTerm("v3")),
		ast.Item(ast.StringTerm("encoding"), ast.StringTerm("protojson")),
	)
	emptyObjectTerm = ast.ObjectTerm()
)

// interned holds terms for strings that recur in nearly every request
// (header names, methods, schemes, protocols), so building the input does not
// allocate them again. Read-only after init.
var interned = func() map[string]*ast.Term {
	m := map[string]*ast.Term{}
	for _, s := range []string{
		// Envoy's pseudo-headers and the usual request headers.
		":authority", ":method", ":path", ":scheme", "accept", "accept-encoding",
		"accept-language", "authorization", "cache-control", "connection",
		"content-length", "content-type", "cookie", "dpop", "host", "origin",
		"referer", "traceparent", "tracestate", "user-agent",
		"x-envoy-expected-rq-timeout-ms", "x-envoy-internal", "x-forwarded-client-cert",
		"x-forwarded-for", "x-forwarded-proto", "x-request-id", "x-b3-traceid",
		"x-b3-spanid", "x-b3-sampled", "x-real-ip",
		// Values.
		"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
		"http", "https", "HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3",
		"application/json", "*/*", "api", "v1", "v2",
	} {
		m[s] = ast.StringTerm(s)
	}
	return m
}()

// builder builds one input. Its terms come from a slab: one allocation for
// a dozen terms instead of one each.
type builder struct {
	slab []ast.Term
}

func (b *builder) term(v ast.Value) *ast.Term {
	if len(b.slab) == cap(b.slab) {
		b.slab = make([]ast.Term, 0, 16)
	}
	b.slab = append(b.slab, ast.Term{Value: v})
	return &b.slab[len(b.slab)-1]
}

// str returns the term for s, shared when s is a common string.
func (b *builder) str(s string) *ast.Term {
	if t, ok := interned[s]; ok {
		return t
	}
	return b.term(ast.String(s))
}

// fields collects an object's items on the stack before ast.NewObject copies
// them, so a small object costs the object itself and nothing more.
type fields struct {
	n     int
	items [16][2]*ast.Term
	more  [][2]*ast.Term
}

func (f *fields) add(k, v *ast.Term) {
	if f.n < len(f.items) {
		f.items[f.n] = [2]*ast.Term{k, v}
		f.n++
		return
	}
	f.more = append(f.more, [2]*ast.Term{k, v})
}

// str adds a string field if the policy reads it, leaving it out when empty
// as protojson does.
func (f *fields) str(b *builder, need *need, k *ast.Term, v string) {
	if v != "" && need.has(k) {
		f.add(k, b.str(v))
	}
}

// empty reports whether no field was added.
func (f *fields) empty() bool { return f.n == 0 }

func (b *builder) object(f *fields) *ast.Term {
	if len(f.more) == 0 {
		return b.term(ast.NewObject(f.items[:f.n]...))
	}
	return b.term(ast.NewObject(append(f.items[:f.n:f.n], f.more...)...))
}

// buildInput returns the policy input for r and tok, limited to what n (the
// loaded policy set) reads. A request OPA-Envoy refuses to turn into input
// (a malformed path, query, body or content-length) is refused here too, as
// authz.ErrInvalidInput, whatever the policies read: a request's fate must
// not depend on which fields a policy happens to use.
func buildInput(n *need, r *authz.Request, tok *tokenInput) (*ast.Term, error) {
	var b builder
	var in fields

	if a := n.child(kAttributes); a != nil && r.Absent&authz.PartAttributes == 0 {
		in.add(kAttributes, b.attributes(a, r))
	}

	path, query, _ := strings.Cut(r.Path, "?")
	if !validEscapes(path) {
		return nil, fmt.Errorf("%w: path is not valid URL encoding", authz.ErrInvalidInput)
	}
	if err := validQuery(query); err != nil {
		return nil, err
	}
	if n.has(kParsedPath) {
		t, err := b.parsedPath(path)
		if err != nil {
			return nil, err
		}
		in.add(kParsedPath, t)
	}
	if n.has(kParsedQuery) {
		in.add(kParsedQuery, parsedQuery(query))
	}

	parsed, truncated, err := body(r, n.has(kParsedBody), n.has(kTruncatedBody))
	if err != nil {
		return nil, err
	}
	if n.has(kParsedBody) {
		if parsed == nil {
			parsed = ast.InternedNullTerm
		}
		in.add(kParsedBody, parsed)
	}
	if n.has(kTruncatedBody) {
		in.add(kTruncatedBody, ast.InternedTerm(truncated))
	}
	if n.has(kVersion) {
		in.add(kVersion, versionTerm)
	}
	if r.Source.Principal != "" && n.has(kSourcePrincipal) {
		in.add(kSourcePrincipal, b.str(r.Source.Principal))
	}
	if tok != nil && n.has(kToken) {
		in.add(kToken, tok.term)
	}
	if r.Route.Matched() && n.has(kRoute) {
		in.add(kRoute, b.route(&r.Route))
	}
	return b.object(&in), nil
}

// route is input.route: the route the engine selected (name, api, template,
// the template's params, and public when it needs no credential), so
// policies need not parse paths again.
func (b *builder) route(rt *route.Route) *ast.Term {
	var f, p fields
	f.str(b, all, kName, rt.Name())
	f.str(b, all, kAPI, rt.API)
	f.str(b, all, kTemplate, rt.Template())
	for i := range rt.NumParams() {
		pr := rt.ParamAt(i)
		p.add(b.str(pr.Name), b.str(pr.Value))
	}
	f.add(kParams, b.object(&p))
	if rt.Public {
		f.add(kPublic, tTrue)
	}
	return b.object(&f)
}

func (b *builder) attributes(n *need, r *authz.Request) *ast.Term {
	var a fields
	if pn := n.child(kSource); pn != nil {
		if t := b.peer(pn, &r.Source); t != nil {
			a.add(kSource, t)
		}
	}
	if pn := n.child(kDestination); pn != nil {
		if t := b.peer(pn, &r.Destination); t != nil {
			a.add(kDestination, t)
		}
	}
	if rn := n.child(kRequest); rn != nil && r.Absent&authz.PartRequest == 0 {
		a.add(kRequest, b.request(rn, r))
	}
	if len(r.ContextExtensions) > 0 && n.has(kContextExt) {
		a.add(kContextExt, stringMap(r.ContextExtensions))
	}
	if r.MetadataContext != nil && n.has(kMetadataContext) {
		if t := metadataContext(r.MetadataContext); t != nil {
			a.add(kMetadataContext, t)
		}
	}
	if r.RouteMetadataContext != nil && n.has(kRouteMetadata) {
		if t := metadataContext(r.RouteMetadataContext); t != nil {
			a.add(kRouteMetadata, t)
		}
	}
	if r.TLSSNI != "" && n.has(kTLSSession) {
		a.add(kTLSSession, ast.ObjectTerm(ast.Item(kSNI, ast.StringTerm(r.TLSSNI))))
	}
	return b.object(&a)
}

// peer returns the protojson shape of an AttributeContext.Peer, or nil when
// it is empty.
func (b *builder) peer(n *need, p *authz.Peer) *ast.Term {
	var f fields
	if p.AddressValue != nil && n.has(kAddress) {
		if v, err := toValue(p.AddressValue, 0); err == nil {
			f.add(kAddress, ast.NewTerm(v))
		}
	} else if (p.Address != "" || p.Port != 0) && n.has(kAddress) {
		var sa fields
		sa.str(b, all, kAddress, p.Address)
		if p.Port != 0 {
			sa.add(kPortValue, ast.InternedTerm(int(p.Port)))
		}
		f.add(kAddress, ast.ObjectTerm(ast.Item(kSocketAddress, b.object(&sa))))
	}
	f.str(b, n, kService, p.Service)
	if len(p.Labels) > 0 && n.has(kLabels) {
		f.add(kLabels, stringMap(p.Labels))
	}
	f.str(b, n, kPrincipal, p.Principal)
	f.str(b, n, kCertificate, p.Certificate)
	if f.empty() {
		return nil
	}
	return b.object(&f)
}

func (b *builder) request(n *need, r *authz.Request) *ast.Term {
	var f fields
	if !r.Time.IsZero() && n.has(kTime) {
		f.add(kTime, timestamp(r.Time))
	}
	if hn := n.child(kHTTP); hn != nil && r.Absent&authz.PartHTTP == 0 {
		var h fields
		h.str(b, hn, kID, r.ID)
		h.str(b, hn, kMethod, r.Method)
		if hn.has(kHeaders) {
			if t := headers(r, hn.child(kHeaders)); t != nil {
				h.add(kHeaders, t)
			}
		}
		if len(r.RawHeaders) > 0 && hn.has(kHeaderMap) {
			h.add(kHeaderMap, headerMap(r.RawHeaders, r.RawHeaderStrings))
		}
		h.str(b, hn, kPath, r.Path)
		h.str(b, hn, kHost, r.Host)
		h.str(b, hn, kScheme, r.Scheme)
		h.str(b, hn, kQuery, r.Query)
		h.str(b, hn, kFragment, r.Fragment)
		if r.Size != 0 && hn.has(kSize) {
			h.add(kSize, ast.InternedTerm(r.Size))
		}
		h.str(b, hn, kProtocol, r.Protocol)
		h.str(b, hn, kBody, r.Body)
		if len(r.RawBody) > 0 && hn.has(kRawBody) {
			h.add(kRawBody, ast.StringTerm(base64.StdEncoding.EncodeToString(r.RawBody)))
		}
		f.add(kHTTP, b.object(&h))
	}
	return b.object(&f)
}

// headers returns the request headers as an object, nil when Envoy sent
// only the raw header list (OPA-Envoy's input then has no headers map
// either). When the policies name every header they read (n has only named
// children), only those are built.
func headers(r *authz.Request, n *need) *ast.Term {
	if r.HeadersJoined || len(r.Headers) == 0 {
		return nil
	}
	if n != nil && !n.all {
		items := make([][2]*ast.Term, 0, len(n.children))
		for k := range n.children {
			if v, ok := r.Headers[string(k.Value.(ast.String))]; ok {
				items = append(items, [2]*ast.Term{k, ast.StringTerm(v)})
			}
		}
		return ast.NewTerm(ast.NewObject(items...))
	}
	return stringMap(r.Headers)
}

// headerMap is the header_map as OPA-Envoy shows it: names as sent, values
// as value (a string) or rawValue (bytes, so base64), as Envoy sent them.
func headerMap(hs []authz.Header, strs bool) *ast.Term {
	list := make([]*ast.Term, len(hs))
	for i, h := range hs {
		if strs {
			list[i] = ast.ObjectTerm(ast.Item(kKey, ast.StringTerm(h.Key)), ast.Item(kValue, ast.StringTerm(h.Value)))
			continue
		}
		list[i] = ast.ObjectTerm(
			ast.Item(kKey, ast.StringTerm(h.Key)),
			ast.Item(kRawValue, ast.StringTerm(base64.StdEncoding.EncodeToString([]byte(h.Value)))),
		)
	}
	return ast.ObjectTerm(ast.Item(kHeaders, ast.ArrayTerm(list...)))
}

// stringMap converts a map of strings (headers, labels, context
// extensions) with one slab for its terms.
func stringMap(m map[string]string) *ast.Term {
	b := builder{slab: make([]ast.Term, 0, 2*len(m)+1)}
	items := make([][2]*ast.Term, 0, len(m))
	for k, v := range m {
		items = append(items, [2]*ast.Term{b.str(k), b.str(v)})
	}
	return b.term(ast.NewObject(items...))
}

// metadataContext is Envoy's Metadata as OPA-Envoy shows it
// (filterMetadata, typedFilterMetadata), which authz/server already built.
// A map of namespaces alone (a Request made by hand) is nested under
// filterMetadata.
func metadataContext(m map[string]any) *ast.Term {
	v, err := toValue(m, 0)
	if err != nil {
		// Only non-JSON values fail; Envoy's Struct cannot hold those.
		return nil
	}
	_, hasFilter := m["filterMetadata"]
	_, hasTyped := m["typedFilterMetadata"]
	if hasFilter || hasTyped || len(m) == 0 {
		return ast.NewTerm(v)
	}
	return ast.ObjectTerm(ast.Item(kFilterMetadata, ast.NewTerm(v)))
}

// timestamp is a google.protobuf.Timestamp as OPA-Envoy shows it: the
// message's fields, seconds and nanos, each left out when zero.
func timestamp(t time.Time) *ast.Term {
	var f fields
	if s := t.Unix(); s != 0 {
		f.add(kSeconds, ast.InternedTerm(s))
	}
	if ns := t.Nanosecond(); ns != 0 {
		f.add(kNanos, ast.InternedTerm(ns))
	}
	return ast.NewTerm(ast.NewObject(f.items[:f.n]...))
}

// parsedPath is OPA-Envoy's parsed_path: the path unescaped, leading slashes
// dropped, split on "/" ("/" gives [""]).
func (b *builder) parsedPath(path string) (*ast.Term, error) {
	p, err := url.PathUnescape(path)
	if err != nil {
		return nil, fmt.Errorf("%w: path is not valid URL encoding", authz.ErrInvalidInput)
	}
	p = strings.TrimLeft(p, "/")
	n := strings.Count(p, "/") + 1
	terms := make([]*ast.Term, 0, n)
	for {
		seg, rest, more := strings.Cut(p, "/")
		terms = append(terms, b.str(seg))
		if !more {
			break
		}
		p = rest
	}
	return b.term(ast.NewArray(terms...)), nil
}

// validEscapes reports whether every '%' in s starts a valid escape, the
// check url.PathUnescape makes, without allocating.
func validEscapes(s string) bool {
	for {
		i := strings.IndexByte(s, '%') // vectorised: most targets have none
		if i < 0 {
			return true
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return false
		}
		s = s[i+3:]
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// validTarget reports whether buildInput accepts the request target's path
// and query, without allocating.
func validTarget(target string) bool {
	path, query, _ := strings.Cut(target, "?")
	return validEscapes(path) && strings.IndexByte(query, ';') < 0 && validEscapes(query)
}

// validQuery returns the error url.ParseQuery would (OPA-Envoy answers 400
// for it), without allocating: a ';' separator, or a bad escape.
func validQuery(q string) error {
	if strings.IndexByte(q, ';') >= 0 {
		return fmt.Errorf("%w: invalid semicolon separator in query", authz.ErrInvalidInput)
	}
	if !validEscapes(q) {
		return fmt.Errorf("%w: query is not valid URL encoding", authz.ErrInvalidInput)
	}
	return nil
}

// parsedQuery is OPA-Envoy's parsed_query: every parameter with all its
// values (validQuery has checked it parses).
func parsedQuery(query string) *ast.Term {
	if query == "" {
		return emptyObjectTerm
	}
	values, _ := url.ParseQuery(query)
	return ast.NewTerm(stringLists(values))
}

func stringLists(values map[string][]string) ast.Object {
	items := make([][2]*ast.Term, 0, len(values))
	for k, vs := range values {
		list := make([]*ast.Term, len(vs))
		for i, v := range vs {
			list[i] = ast.StringTerm(v)
		}
		items = append(items, [2]*ast.Term{ast.StringTerm(k), ast.ArrayTerm(list...)})
	}
	return ast.NewObject(items...)
}

// body returns parsed_body (nil for null) and truncated_body exactly as
// OPA-Envoy computes them: it reads the headers map only (not a raw header
// list), trusts Envoy's x-envoy-auth-partial-body, and parses JSON, form
// and multipart bodies by a content-type that contains their media type. A
// body it cannot parse is an error (400), whether or not the policies read
// parsed_body.
func body(r *authz.Request, wantParsed, wantTruncated bool) (*ast.Term, bool, error) {
	if r.Body == "" && len(r.RawBody) == 0 && !wantTruncated {
		return nil, false, nil // the usual GET: nothing to parse or report
	}
	hs := r.Headers
	if r.HeadersJoined {
		hs = nil
	}
	if hs["x-envoy-auth-partial-body"] == "true" {
		return nil, true, nil
	}
	ct, ok := hs["content-type"]
	if !ok {
		return nil, false, nil
	}
	kind := ""
	for _, k := range [...]string{"application/json", "application/grpc", "application/x-www-form-urlencoded", "multipart/form-data"} {
		if strings.Contains(ct, k) {
			kind = k
			break
		}
	}
	if kind == "" || kind == "application/grpc" {
		// gRPC bodies need the service's descriptors, which OPA-Envoy
		// reads only when configured with them; phantom-authz has none.
		return nil, false, nil
	}
	payload := r.Body
	if payload == "" {
		payload = string(r.RawBody)
	}
	if payload == "" {
		return nil, false, nil
	}
	if cl, ok := hs["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, fmt.Errorf("%w: content-length is not a number", authz.ErrInvalidInput)
		}
		if n != -1 && n > int64(len(payload)) {
			return nil, true, nil
		}
	}
	var v any
	switch kind {
	case "application/json":
		if err := util.UnmarshalJSON([]byte(payload), &v); err != nil {
			return nil, false, fmt.Errorf("%w: request body is not valid JSON", authz.ErrInvalidInput)
		}
	case "application/x-www-form-urlencoded":
		q, err := url.ParseQuery(payload)
		if err != nil {
			return nil, false, fmt.Errorf("%w: request body is not a valid form", authz.ErrInvalidInput)
		}
		if !wantParsed {
			return nil, false, nil
		}
		return ast.NewTerm(stringLists(q)), false, nil
	case "multipart/form-data":
		var err error
		if v, err = multipartForm(ct, payload); err != nil {
			return nil, false, fmt.Errorf("%w: request body is not a valid multipart form", authz.ErrInvalidInput)
		}
		if v == nil {
			return nil, false, nil
		}
	}
	if !wantParsed {
		return nil, false, nil
	}
	t, err := ast.InterfaceToValue(v)
	if err != nil {
		return nil, false, fmt.Errorf("%w: request body: %w", authz.ErrInvalidInput, err)
	}
	return ast.NewTerm(t), false, nil
}

// multipartForm is OPA-Envoy's parse of a multipart/form-data body: each
// named part's values, a part typed application/json parsed as JSON; nil
// without a boundary.
func multipartForm(contentType, payload string) (any, error) {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, err
	}
	boundary, ok := params["boundary"]
	if !ok {
		return nil, nil
	}
	values := map[string][]any{}
	mr := multipart.NewReader(strings.NewReader(payload), boundary)
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		name := p.FormName()
		if name == "" {
			continue
		}
		value, err := io.ReadAll(p)
		if err != nil {
			return nil, err
		}
		if strings.Contains(p.Header.Get("Content-Type"), "application/json") {
			var j any
			if err := util.UnmarshalJSON(value, &j); err != nil {
				return nil, err
			}
			values[name] = append(values[name], j)
			continue
		}
		values[name] = append(values[name], string(value))
	}
	out := make(map[string]any, len(values))
	for k, v := range values {
		out[k] = v
	}
	return out, nil
}

// maxDepth bounds the nesting of claims and metadata converted to AST, so a
// pathological value cannot exhaust the stack.
const maxDepth = 64

// toValue converts plain Go values (what encoding/json produces, plus the
// common typed maps and slices) to AST without reflection. Anything else is
// an error: it never panics.
func toValue(x any, depth int) (ast.Value, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("value nested deeper than %d levels", maxDepth)
	}
	switch x := x.(type) {
	case nil:
		return ast.NullValue, nil
	case bool:
		return ast.InternedValue(x), nil
	case string:
		return ast.String(x), nil
	case json.Number:
		if _, err := strconv.ParseFloat(string(x), 64); err != nil {
			return nil, fmt.Errorf("invalid number %q", string(x))
		}
		return ast.Number(x), nil
	case float64:
		return floatValue(x)
	case float32:
		return floatValue(float64(x))
	case int:
		return ast.InternedValue(x), nil
	case int32:
		return ast.InternedValue(x), nil
	case int64:
		return ast.InternedValue(x), nil
	case uint32:
		return ast.InternedValue(x), nil
	case uint64:
		return ast.Number(strconv.FormatUint(x, 10)), nil
	case []any:
		list := make([]*ast.Term, len(x))
		for i, e := range x {
			v, err := toValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			list[i] = ast.NewTerm(v)
		}
		return ast.NewArray(list...), nil
	case []string:
		list := make([]*ast.Term, len(x))
		for i, e := range x {
			list[i] = ast.StringTerm(e)
		}
		return ast.NewArray(list...), nil
	case map[string]any:
		items := make([][2]*ast.Term, 0, len(x))
		for _, k := range sortedKeys(x) {
			v, err := toValue(x[k], depth+1)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			items = append(items, [2]*ast.Term{ast.StringTerm(k), ast.NewTerm(v)})
		}
		return ast.NewObject(items...), nil
	case map[string]string:
		return stringMap(x).Value, nil
	case ast.Value:
		return x, nil
	default:
		// Anything else (a struct, a typed slice) goes through its JSON form.
		v, err := ast.InterfaceToValue(x)
		if err != nil {
			return nil, fmt.Errorf("unsupported value of type %T: %w", x, err)
		}
		return v, nil
	}
}

func floatValue(f float64) (ast.Value, error) {
	if f != f || f > 1.7976931348623157e308 || f < -1.7976931348623157e308 {
		return nil, fmt.Errorf("number %v is not representable in JSON", f)
	}
	if f == float64(int64(f)) && f >= -1<<53 && f <= 1<<53 {
		return ast.InternedValue(int64(f)), nil
	}
	return ast.Number(strconv.FormatFloat(f, 'g', -1, 64)), nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
