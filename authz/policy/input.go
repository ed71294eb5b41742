package policy

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/route"
)

// The input is built directly as OPA AST values: no JSON round trip and no
// reflection per request. It has the shape OPA-Envoy gives its policies
// (protojson of the v3 CheckRequest plus parsed_path, parsed_query,
// parsed_body, truncated_body and version), and our input.token.
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
// loaded policy set) reads.
func buildInput(n *need, r *authz.Request, tok *tokenInput) (*ast.Term, error) {
	var b builder
	var in fields

	if a := n.child(kAttributes); a != nil {
		in.add(kAttributes, b.attributes(a, r))
	}

	path, query := splitTarget(r)
	// Checked whether or not the policy reads parsed_path, so that a
	// request's fate does not depend on which fields a policy happens to use.
	if !validEscapes(path) {
		return nil, fmt.Errorf("%w: path is not valid URL encoding", authz.ErrInvalidInput)
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

	parsed, truncated, err := body(r, n.has(kParsedBody))
	if err != nil {
		return nil, err
	}
	if parsed != nil {
		in.add(kParsedBody, parsed)
	}
	if n.has(kTruncatedBody) {
		in.add(kTruncatedBody, ast.InternedTerm(truncated))
	}
	if n.has(kVersion) {
		in.add(kVersion, versionTerm)
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
	f.str(b, all, kName, rt.Name)
	f.str(b, all, kAPI, rt.API)
	f.str(b, all, kTemplate, rt.Template)
	for _, pr := range rt.Params() {
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
	if rn := n.child(kRequest); rn != nil {
		a.add(kRequest, b.request(rn, r))
	}
	if len(r.ContextExtensions) > 0 && n.has(kContextExt) {
		a.add(kContextExt, stringMap(r.ContextExtensions))
	}
	if len(r.MetadataContext) > 0 && n.has(kMetadataContext) {
		if t := metadataContext(r.MetadataContext); t != nil {
			a.add(kMetadataContext, t)
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
	if (p.Address != "" || p.Port != 0) && n.has(kAddress) {
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
		f.add(kTime, ast.StringTerm(timestamp(r.Time)))
	}
	if hn := n.child(kHTTP); hn != nil {
		var h fields
		h.str(b, hn, kID, r.ID)
		h.str(b, hn, kMethod, r.Method)
		if hn.has(kHeaders) {
			if t := headers(r, hn.child(kHeaders)); t != nil {
				h.add(kHeaders, t)
			}
		}
		if len(r.RawHeaders) > 0 && hn.has(kHeaderMap) {
			h.add(kHeaderMap, headerMap(r.RawHeaders))
		}
		h.str(b, hn, kPath, r.Path)
		h.str(b, hn, kHost, r.Host)
		h.str(b, hn, kScheme, r.Scheme)
		h.str(b, hn, kQuery, r.Query)
		h.str(b, hn, kFragment, r.Fragment)
		if r.Size > 0 && hn.has(kSize) {
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

// headers returns the request headers as an object. When Envoy sent only the
// raw header list, repeated headers are joined with commas as Envoy does for
// the headers map. When the policies name every header they read (n has
// only named children), only those are built.
func headers(r *authz.Request, n *need) *ast.Term {
	if n != nil && !n.all && len(r.Headers) > 0 {
		items := make([][2]*ast.Term, 0, len(n.children))
		for k := range n.children {
			if v, ok := r.Headers[string(k.Value.(ast.String))]; ok {
				items = append(items, [2]*ast.Term{k, ast.StringTerm(v)})
			}
		}
		return ast.NewTerm(ast.NewObject(items...))
	}
	if len(r.Headers) > 0 {
		return stringMap(r.Headers)
	}
	if len(r.RawHeaders) == 0 {
		return nil
	}
	joined := make(map[string]string, len(r.RawHeaders))
	for _, h := range r.RawHeaders {
		k := strings.ToLower(h.Key)
		if prev, ok := joined[k]; ok {
			joined[k] = prev + "," + h.Value
		} else {
			joined[k] = h.Value
		}
	}
	return stringMap(joined)
}

// headerMap is protojson's HeaderMap: values are bytes, so base64.
func headerMap(hs []authz.Header) *ast.Term {
	list := make([]*ast.Term, len(hs))
	for i, h := range hs {
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

// metadataContext is protojson's Metadata: authz.Request carries the filter
// metadata by namespace, which protojson nests under "filterMetadata". A map
// that already has that shape is taken as is.
func metadataContext(m map[string]any) *ast.Term {
	v, err := toValue(m, 0)
	if err != nil {
		// Only non-JSON values fail; Envoy's Struct cannot hold those.
		return nil
	}
	_, hasFilter := m["filterMetadata"]
	_, hasTyped := m["typedFilterMetadata"]
	if hasFilter || hasTyped {
		return ast.NewTerm(v)
	}
	return ast.ObjectTerm(ast.Item(kFilterMetadata, ast.NewTerm(v)))
}

// timestamp formats t as protojson formats a google.protobuf.Timestamp:
// UTC, with 0, 3, 6 or 9 fractional digits.
func timestamp(t time.Time) string {
	t = t.UTC()
	s := t.Format("2006-01-02T15:04:05")
	ns := t.Nanosecond()
	switch {
	case ns == 0:
	case ns%1_000_000 == 0:
		s += fmt.Sprintf(".%03d", ns/1_000_000)
	case ns%1_000 == 0:
		s += fmt.Sprintf(".%06d", ns/1_000)
	default:
		s += fmt.Sprintf(".%09d", ns)
	}
	return s + "Z"
}

// splitTarget splits the request target into its path and query the way
// url.Parse does for OPA-Envoy (the fragment, if any, is dropped). Unlike
// url.Parse it never reads a leading "//" as an authority: "//admin/x" is the
// path Envoy forwards, so the policy must see it as such.
func splitTarget(r *authz.Request) (path, query string) {
	target := r.Path
	if i := strings.IndexByte(target, '#'); i >= 0 {
		target = target[:i]
	}
	path, query, found := strings.Cut(target, "?")
	if !found {
		query = r.Query
	}
	return path, query
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
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return false
		}
		i += 2
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// parsedQuery is OPA-Envoy's parsed_query: every parameter with all its
// values. Malformed pairs are left out, as url.URL.Query does.
func parsedQuery(query string) *ast.Term {
	if query == "" {
		return emptyObjectTerm
	}
	values, _ := url.ParseQuery(query)
	items := make([][2]*ast.Term, 0, len(values))
	for k, vs := range values {
		list := make([]*ast.Term, len(vs))
		for i, v := range vs {
			list[i] = ast.StringTerm(v)
		}
		items = append(items, [2]*ast.Term{ast.StringTerm(k), ast.ArrayTerm(list...)})
	}
	return ast.NewTerm(ast.NewObject(items...))
}

// body returns parsed_body (nil when absent) and truncated_body. A JSON body
// is checked whether or not the policy reads it, so that a request's fate
// does not depend on which fields a policy happens to use.
func body(r *authz.Request, wantParsed bool) (*ast.Term, bool, error) {
	b := r.Body
	if b == "" && len(r.RawBody) > 0 {
		b = string(r.RawBody)
	}
	if b == "" {
		return nil, false, nil
	}
	truncated := false
	if cl := r.Headers["content-length"]; cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n > int64(len(b)) {
			truncated = true
		}
	}
	if truncated || !isJSON(r.Headers["content-type"]) {
		return nil, truncated, nil
	}
	if !json.Valid([]byte(b)) {
		return nil, false, fmt.Errorf("%w: request body is not valid JSON", authz.ErrInvalidInput)
	}
	if !wantParsed {
		return nil, false, nil
	}
	v, err := ast.ValueFromReader(strings.NewReader(b))
	if err != nil {
		return nil, false, fmt.Errorf("%w: request body is not valid JSON", authz.ErrInvalidInput)
	}
	return ast.NewTerm(v), false, nil
}

// isJSON reports whether a Content-Type is application/json or a +json type.
func isJSON(contentType string) bool {
	if contentType == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
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
