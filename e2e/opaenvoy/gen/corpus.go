package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// policy is one policy of the corpus and the requests sent to it.
type policy struct {
	name, source, query, rego string
	// common: every request of commonRequests is sent too.
	common bool
	extra  []request
}

type request struct{ name, req string }

func (p policy) cases() []request {
	var out []request
	if p.common {
		out = append(out, commonRequests()...)
	}
	return append(out, p.extra...)
}

// m is a JSON object under construction.
type m = map[string]any

// baseRequest is what Envoy's HTTP ext_authz filter sends for a plain GET
// (sockets, time, the usual headers), for the builders below to change.
func baseRequest(method, path string, headers map[string]string) m {
	h := map[string]string{
		":authority": "example.com", ":method": method, ":path": path, ":scheme": "http",
		"user-agent": "curl/8.5.0", "accept": "*/*", "x-request-id": "4f6c9a0e-9b1f-4c53-8a8f-2f3f3e1c0a11",
		"x-forwarded-proto": "http",
	}
	maps.Copy(h, headers)
	for k, v := range h {
		if v == "" {
			delete(h, k)
		}
	}
	return m{"attributes": m{
		"source":      m{"address": m{"socketAddress": m{"address": "10.0.0.5", "portValue": 51234}}},
		"destination": m{"address": m{"socketAddress": m{"address": "10.0.0.9", "portValue": 8080}}},
		"request": m{
			"time": "2026-01-02T03:04:05.123456789Z",
			"http": m{
				"id": "13359530607844510314", "method": method, "headers": h,
				"path": path, "host": "example.com", "scheme": "http", "protocol": "HTTP/1.1",
			},
		},
	}}
}

func httpOf(r m) m { return r["attributes"].(m)["request"].(m)["http"].(m) }
func attrs(r m) m  { return r["attributes"].(m) }

func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func get(name, path string, headers map[string]string) request {
	return request{name, js(baseRequest("GET", path, headers))}
}

// withBody is a request with a body (and the headers to go with it).
func withBody(name, method, path, body string, headers map[string]string) request {
	r := baseRequest(method, path, headers)
	httpOf(r)["body"] = body
	httpOf(r)["size"] = len(body)
	return request{name, js(r)}
}

func edit(name string, r m, f func(r m)) request {
	f(r)
	return request{name, js(r)}
}

// hs256 signs claims with the secret of OPA-Envoy's tutorial ("secret").
func hs256(claims m) string {
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body := enc.EncodeToString([]byte(js(claims)))
	mac := hmac.New(sha256.New, []byte("secret"))
	mac.Write([]byte(head + "." + body))
	return head + "." + body + "." + enc.EncodeToString(mac.Sum(nil))
}

// The tutorial's tokens (valid until 2041), and a few of our own.
var (
	guestToken   = hs256(m{"exp": 2241081539, "nbf": 1514851139, "role": "guest", "sub": "YWxpY2U="})
	adminToken   = hs256(m{"exp": 2241081539, "nbf": 1514851139, "role": "admin", "sub": "Ym9i"})
	expiredToken = hs256(m{"exp": 1514851200, "nbf": 1514851139, "role": "admin", "sub": "Ym9i"})
	badSigToken  = guestToken[:len(guestToken)-4] + "AAAA"
)

func bearer(t string) map[string]string { return map[string]string{"authorization": "Bearer " + t} }

// commonRequests cover every field of OPA-Envoy's input: every policy that
// reads the request gets all of them.
func commonRequests() []request {
	multipart := "--XyZ\r\nContent-Disposition: form-data; name=\"firstname\"\r\n\r\nalice\r\n" +
		"--XyZ\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"a\":[1,2]}\r\n" +
		"--XyZ\r\nContent-Disposition: form-data; name=\"firstname\"\r\n\r\nbob\r\n--XyZ--\r\n"
	jsonCT := map[string]string{"content-type": "application/json"}
	person := `{"firstname": "alice", "lastname": "smith", "dept": {"it": "eng"}}`
	out := []request{
		get("get-people", "/people", nil),
		get("get-people-guest", "/people", bearer(guestToken)),
		get("get-people-admin", "/people", bearer(adminToken)),
		get("get-people-expired", "/people", bearer(expiredToken)),
		get("get-people-bad-signature", "/people", bearer(badSigToken)),
		get("get-people-not-a-jwt", "/people", map[string]string{"authorization": "Bearer abc.def"}),
		get("get-people-basic-alice", "/productpage", map[string]string{"authorization": "Basic " + base64.URLEncoding.EncodeToString([]byte("alice:password"))}),
		get("get-products-basic-bob", "/api/v1/products", map[string]string{"authorization": "Basic " + base64.URLEncoding.EncodeToString([]byte("bob:password"))}),
		get("get-health", "/health", nil),
		get("get-root", "/", nil),
		get("get-my-test-path", "/my/test/path?a=1&a=2&x=y", nil),
		get("query-repeated", "/people?a=1&b=2&a=3", nil),
		get("query-empty-value", "/people?flag&empty=", nil),
		get("query-escaped", "/people?name=J%C3%B6rg&q=a+b&x=%2F", nil),
		get("query-semicolon", "/x?a=1;b=2", nil),
		get("query-bad-escape", "/x?a=%zz", nil),
		get("query-and-fragment", "/people?x=1#frag", nil),
		get("path-fragment", "/people#frag", nil),
		get("path-bad-escape", "/a%zz/b", nil),
		get("path-escapes", "/a%20b/c%2Fd/%E2%82%AC", nil),
		get("path-double-slash", "//admin/x", nil),
		get("path-trailing-slash", "/people/", nil),
		get("path-dot-segments", "/people/../admin", nil),
		get("role-admin-header", "/admin", map[string]string{"x-role": "admin"}),
		withBody("post-json", "POST", "/people", person, map[string]string{"content-type": "application/json", "content-length": fmt.Sprint(len(person))}),
		withBody("post-json-admin", "POST", "/people", `{"firstname": "charlie", "lastname": "brown"}`, map[string]string{"content-type": "application/json", "authorization": "Bearer " + adminToken}),
		withBody("post-json-admin-self", "POST", "/people", `{"firstname": "Bob", "lastname": "x"}`, map[string]string{"content-type": "application/json", "authorization": "Bearer " + adminToken}),
		withBody("post-json-admin-partial", "POST", "/people", `{"firstname": "charlie"`, map[string]string{"content-type": "application/json", "authorization": "Bearer " + adminToken, "x-envoy-auth-partial-body": "true"}),
		withBody("post-json-charset", "POST", "/people", person, map[string]string{"content-type": "application/json; charset=utf-8"}),
		withBody("post-json-mixed-case-type", "POST", "/people", person, map[string]string{"content-type": "Application/JSON"}),
		withBody("post-json-plus-json", "PATCH", "/people/1", `{"firstname": "alice"}`, map[string]string{"content-type": "application/merge-patch+json"}),
		withBody("post-json-truncated-length", "POST", "/people", `{"firstname": "al`, map[string]string{"content-type": "application/json", "content-length": "400"}),
		withBody("post-json-length-not-number", "POST", "/people", person, map[string]string{"content-type": "application/json", "content-length": "abc"}),
		withBody("post-json-invalid", "POST", "/people", `{"firstname": `, jsonCT),
		withBody("post-json-array", "POST", "/people", `[1, "two", {"three": 3}]`, jsonCT),
		withBody("post-json-big-number", "POST", "/people", `{"n": 12345678901234567890, "f": 1.5e300}`, jsonCT),
		withBody("post-json-no-content-type", "POST", "/people", person, nil),
		withBody("post-form", "POST", "/login", "name=alice&name=bob&scope=read+write&x=%2F", map[string]string{"content-type": "application/x-www-form-urlencoded"}),
		withBody("post-form-bad", "POST", "/login", "a=%zz", map[string]string{"content-type": "application/x-www-form-urlencoded"}),
		withBody("post-form-truncated", "POST", "/login", "name=al", map[string]string{"content-type": "application/x-www-form-urlencoded", "content-length": "100"}),
		withBody("post-multipart", "POST", "/upload", multipart, map[string]string{"content-type": "multipart/form-data; boundary=XyZ"}),
		withBody("post-multipart-no-boundary", "POST", "/upload", multipart, map[string]string{"content-type": "multipart/form-data"}),
		withBody("post-text", "POST", "/notes", "hello", map[string]string{"content-type": "text/plain"}),
		withBody("post-grpc", "POST", "/test.KitchenSink/Ping", "\x00\x00\x00\x00\x00", map[string]string{"content-type": "application/grpc"}),
		edit("raw-body-json", baseRequest("POST", "/people", jsonCT), func(r m) {
			httpOf(r)["rawBody"] = base64.StdEncoding.EncodeToString([]byte(person))
		}),
		edit("raw-body-form", baseRequest("POST", "/login", map[string]string{"content-type": "application/x-www-form-urlencoded"}), func(r m) {
			httpOf(r)["rawBody"] = base64.StdEncoding.EncodeToString([]byte("name=carol"))
		}),
		edit("header-map-only", baseRequest("GET", "/people", nil), func(r m) {
			h := httpOf(r)
			var list []m
			for _, k := range slices.Sorted(maps.Keys(h["headers"].(map[string]string))) {
				list = append(list, m{"key": k, "rawValue": base64.StdEncoding.EncodeToString([]byte(h["headers"].(map[string]string)[k]))})
			}
			list = append(list, m{"key": "x-role", "rawValue": base64.StdEncoding.EncodeToString([]byte("admin"))},
				m{"key": "x-role", "rawValue": base64.StdEncoding.EncodeToString([]byte("guest"))})
			delete(h, "headers")
			h["headerMap"] = m{"headers": list}
		}),
		edit("header-map-json-body", baseRequest("POST", "/people", nil), func(r m) {
			h := httpOf(r)
			h["headerMap"] = m{"headers": []m{{"key": "content-type", "value": "application/json"}, {"key": ":path", "value": "/people"}}}
			delete(h, "headers")
			h["body"] = person
		}),
		get("header-mixed-case", "/people", map[string]string{"X-Role": "admin", "Content-Type": "application/json"}),
		// The same request as Envoy would send it: header-mixed-case is
		// answered as this one (see the test's differences).
		get("header-mixed-case-lowered", "/people", map[string]string{"x-role": "admin", "content-type": "application/json"}),
		edit("size-unknown", baseRequest("GET", "/people", nil), func(r m) { httpOf(r)["size"] = -1 }),
		edit("size-and-fragment-fields", baseRequest("GET", "/people", nil), func(r m) {
			httpOf(r)["size"] = 42
			httpOf(r)["fragment"] = "top"
			httpOf(r)["query"] = "a=1"
			httpOf(r)["protocol"] = "HTTP/2"
		}),
		edit("time-whole-seconds", baseRequest("GET", "/people", nil), func(r m) {
			attrs(r)["request"].(m)["time"] = "2026-01-02T03:04:05Z"
		}),
		edit("no-time", baseRequest("GET", "/people", nil), func(r m) { delete(attrs(r)["request"].(m), "time") }),
		edit("spiffe-peers", baseRequest("GET", "/people", nil), func(r m) {
			attrs(r)["source"].(m)["principal"] = "spiffe://test-domain/test"
			attrs(r)["source"].(m)["certificate"] = "-----BEGIN%20CERTIFICATE-----%0AMIIB%0A-----END%20CERTIFICATE-----%0A"
			attrs(r)["source"].(m)["labels"] = m{"app": "frontend", "version": "v1"}
			attrs(r)["source"].(m)["service"] = "frontend.default.svc.cluster.local"
			attrs(r)["destination"].(m)["principal"] = "spiffe://test-domain/api"
			attrs(r)["destination"].(m)["service"] = "api"
		}),
		edit("spiffe-other-domain", baseRequest("GET", "/people", nil), func(r m) {
			attrs(r)["source"].(m)["principal"] = "spiffe://evil-domain/test"
		}),
		edit("pipe-addresses", baseRequest("GET", "/people", nil), func(r m) {
			attrs(r)["source"].(m)["address"] = m{"pipe": m{"path": "/var/run/envoy.sock", "mode": 384}}
			attrs(r)["destination"].(m)["address"] = m{"pipe": m{"path": "@abstract"}}
		}),
		edit("socket-udp-named-port", baseRequest("GET", "/people", nil), func(r m) {
			attrs(r)["source"].(m)["address"] = m{"socketAddress": m{"protocol": "UDP", "address": "::1", "portValue": 53, "ipv4Compat": true}}
			attrs(r)["destination"].(m)["address"] = m{"socketAddress": m{"address": "10.0.0.9", "namedPort": "http", "resolverName": "dns"}}
		}),
		edit("envoy-internal-address", baseRequest("GET", "/people", nil), func(r m) {
			attrs(r)["destination"].(m)["address"] = m{"envoyInternalAddress": m{"serverListenerName": "internal", "endpointId": "e1"}}
		}),
		edit("context-extensions", baseRequest("GET", "/people", nil), func(r m) {
			attrs(r)["contextExtensions"] = m{"virtual_host": "public", "api": "people"}
		}),
		edit("metadata-context", baseRequest("GET", "/people", nil), func(r m) {
			attrs(r)["metadataContext"] = m{
				"filterMetadata":      m{"envoy.filters.http.header_to_metadata": m{"policy_type": "ingress", "n": 3, "list": []any{"a", true, nil}}},
				"typedFilterMetadata": m{"envoy.filters.http.rbac": m{"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "shadow"}},
			}
		}),
		edit("route-metadata-context", baseRequest("GET", "/people", nil), func(r m) {
			attrs(r)["routeMetadataContext"] = m{"filterMetadata": m{"envoy.filters.http.ext_authz": m{"route": "people", "public": true}}}
		}),
		edit("tls-session", baseRequest("GET", "/people", nil), func(r m) {
			attrs(r)["tlsSession"] = m{"sni": "api.example.com"}
			httpOf(r)["scheme"] = "https"
		}),
		edit("network-l4", m{"attributes": m{}}, func(r m) {
			b := baseRequest("GET", "/", nil)
			attrs(r)["source"] = attrs(b)["source"]
			attrs(r)["destination"] = attrs(b)["destination"]
		}),
		edit("network-l4-tls", m{"attributes": m{}}, func(r m) {
			b := baseRequest("GET", "/", nil)
			attrs(r)["source"] = m{"address": attrs(b)["source"].(m)["address"], "principal": "spiffe://test-domain/test"}
			attrs(r)["destination"] = attrs(b)["destination"]
			attrs(r)["tlsSession"] = m{"sni": "db.example.com"}
		}),
		{"empty-check-request", "{}"},
		{"request-without-http", `{"attributes": {"request": {"time": "2026-01-02T03:04:05Z"}}}`},
	}
	return out
}

// header switches a decision-table policy to one of its cases.
func caseRequests(names ...string) []request {
	out := make([]request, len(names))
	for i, n := range names {
		out[i] = get("case-"+n, "/my/test/path", map[string]string{"x-case": n})
	}
	return out
}

// decisionTable is a policy whose decision is chosen by the x-case header.
func decisionTable(query string, cases map[string]string) (string, []request) {
	var b strings.Builder
	b.WriteString("package envoy.authz\n\nc := input.attributes.request.http.headers[\"x-case\"]\n\n")
	names := slices.Sorted(maps.Keys(cases))
	for _, n := range names {
		fmt.Fprintf(&b, "%s := %s if c == %q\n\n", query, cases[n], n)
	}
	return b.String(), caseRequests(names...)
}

func corpus() []policy {
	objRego, objCases := decisionTable("result", map[string]string{
		"allow-headers":              `{"allowed": true, "headers": {"x-ext-auth-allow": "yes", "X-Validated-By": "security-checkpoint"}}`,
		"allow-header-array":         `{"allowed": true, "headers": {"set-cookie": ["a=1", "b=2"], "x-one": "1"}}`,
		"allow-header-list":          `{"allowed": true, "headers": [{"x-a": "1"}, {"x-a": "2", "x-b": ["3", "4"]}]}`,
		"allow-header-number":        `{"allowed": true, "headers": {"x-n": 1}}`,
		"allow-header-array-number":  `{"allowed": true, "headers": {"x-n": ["a", 1]}}`,
		"allow-header-list-string":   `{"allowed": true, "headers": ["x-a"]}`,
		"allow-headers-string":       `{"allowed": true, "headers": "x-a: 1"}`,
		"allow-empty-header-value":   `{"allowed": true, "headers": {"x-empty": ""}}`,
		"allow-remove":               `{"allowed": true, "request_headers_to_remove": ["one-auth-header", "Another-Auth-Header"]}`,
		"allow-remove-string":        `{"allowed": true, "request_headers_to_remove": "foo"}`,
		"allow-remove-number":        `{"allowed": true, "request_headers_to_remove": ["foo", 1]}`,
		"allow-remove-set":           `{"allowed": true, "request_headers_to_remove": {"b", "a"}}`,
		"allow-response-headers":     `{"allowed": true, "response_headers_to_add": {"x-foo": "bar", "cache-control": ["no-store", "private"]}}`,
		"allow-response-headers-bad": `{"allowed": true, "response_headers_to_add": {"x-foo": true}}`,
		"allow-query-set":            `{"allowed": true, "query_parameters_to_set": {"foo": "bar", "baz": ["qux", "quux"]}}`,
		"allow-query-set-empty":      `{"allowed": true, "query_parameters_to_set": {}}`,
		"allow-query-set-list":       `{"allowed": true, "query_parameters_to_set": [{"foo": "bar"}]}`,
		"allow-query-set-number":     `{"allowed": true, "query_parameters_to_set": {"foo": 1}}`,
		"allow-query-set-array-num":  `{"allowed": true, "query_parameters_to_set": {"foo": ["a", 2]}}`,
		"allow-query-remove":         `{"allowed": true, "query_parameters_to_remove": ["foo", "bar"]}`,
		"allow-query-remove-string":  `{"allowed": true, "query_parameters_to_remove": "foo"}`,
		"allow-query-remove-number":  `{"allowed": true, "query_parameters_to_remove": [1]}`,
		"allow-all-fields": `{"allowed": true, "headers": {"x-a": "1"}, "request_headers_to_remove": ["x-b"], "response_headers_to_add": {"x-c": "3"},
			"query_parameters_to_set": {"d": "4"}, "query_parameters_to_remove": ["e"], "dynamic_metadata": {"f": {"g": [1, "h", null, true]}}}`,
		"allow-dynamic-metadata":             `{"allowed": true, "dynamic_metadata": {"foo": "bar", "bar": "baz"}}`,
		"allow-dynamic-metadata-decision-id": `{"allowed": true, "dynamic_metadata": {"decision_id": "mine"}}`,
		"allow-dynamic-metadata-string":      `{"allowed": true, "dynamic_metadata": "x"}`,
		"allow-dynamic-metadata-empty":       `{"allowed": true, "dynamic_metadata": {}}`,
		"allow-unknown-fields":               `{"allowed": true, "max_age": "1h", "reason": {"why": "x"}, "error": 1, "scope": 2, "acr_values": true, "whatever": [1]}`,
		"allow-body-and-status":              `{"allowed": true, "body": 1, "http_status": "teapot"}`,
		"allow-body-string-status-200":       `{"allowed": true, "body": "ok", "http_status": 200}`,
		"allow-false-string":                 `{"allowed": "true"}`,
		"allow-missing":                      `{"headers": {"x-a": "1"}}`,
		"allow-null":                         `{"allowed": null}`,
		"deny-plain":                         `{"allowed": false}`,
		"deny-status-401":                    `{"allowed": false, "http_status": 401}`,
		"deny-status-401-body":               `{"allowed": false, "http_status": 401, "body": "Authentication Failed"}`,
		"deny-status-401-www-auth":           `{"allowed": false, "http_status": 401, "headers": {"www-authenticate": "Basic realm=\"x\""}}`,
		"deny-own-content-type":              `{"allowed": false, "http_status": 403, "headers": {"content-type": "text/plain"}, "body": "Unauthorized Request"}`,
		"deny-own-content-type-no-body":      `{"allowed": false, "headers": {"content-type": "text/plain"}}`,
		"deny-body-json":                     `{"allowed": false, "body": "{\"error\": \"nope\"}", "headers": {"content-type": "application/json"}}`,
		"deny-body-number":                   `{"allowed": false, "body": 1}`,
		"deny-body-empty":                    `{"allowed": false, "body": ""}`,
		"deny-status-302":                    `{"allowed": false, "http_status": 302, "headers": {"location": "https://login.example.com/"}}`,
		"deny-status-200":                    `{"allowed": false, "http_status": 200}`,
		"deny-status-100":                    `{"allowed": false, "http_status": 100}`,
		"deny-status-418":                    `{"allowed": false, "http_status": 418}`,
		"deny-status-429":                    `{"allowed": false, "http_status": 429, "headers": {"retry-after": "10"}}`,
		"deny-status-451":                    `{"allowed": false, "http_status": 451}`,
		"deny-status-499":                    `{"allowed": false, "http_status": 499}`,
		"deny-status-503":                    `{"allowed": false, "http_status": 503}`,
		"deny-status-599":                    `{"allowed": false, "http_status": 599}`,
		"deny-status-600":                    `{"allowed": false, "http_status": 600}`,
		"deny-status-float":                  `{"allowed": false, "http_status": 401.0}`,
		"deny-status-fraction":               `{"allowed": false, "http_status": 401.5}`,
		"deny-status-string":                 `{"allowed": false, "http_status": "401"}`,
		"deny-status-negative":               `{"allowed": false, "http_status": -1}`,
		"deny-with-allow-fields":             `{"allowed": false, "request_headers_to_remove": 1, "query_parameters_to_set": 2, "response_headers_to_add": 3}`,
		"deny-headers-bad":                   `{"allowed": false, "headers": {"x": 1}}`,
		"deny-dynamic-metadata":              `{"allowed": false, "dynamic_metadata": {"reason": "blocked"}}`,
		"deny-dynamic-metadata-bad":          `{"allowed": false, "dynamic_metadata": [1]}`,
		"deny-header-array":                  `{"allowed": false, "headers": {"set-cookie": ["a=1", "b=2"]}, "http_status": 401}`,
		"deny-unknown-fields":                `{"allowed": false, "max_age": "1h", "reason": {"why": "x"}}`,
		"deny-phantom-fields":                `{"allowed": false, "http_status": 401, "error": "invalid_token", "reason": "The token expired", "scope": ["read"]}`,
	})
	typeRego, typeCases := decisionTable("result", map[string]string{
		"number": `1`,
		"string": `"allow"`,
		"null":   `null`,
		"array":  `[true]`,
		"set":    `{true}`,
		"true":   `true`,
		"false":  `false`,
		"empty":  `{}`,
	})
	return []policy{
		{name: "tutorial_jwt", source: "OPA-Envoy quick_start.yaml (the Envoy tutorial's policy)", query: "data.envoy.authz.allow", common: true, rego: tutorialJWT},
		{name: "istio_bookinfo", source: "OPA-Envoy examples/istio/quick_start.yaml", query: "data.istio.authz.allow", common: true, rego: istioBookinfo},
		{name: "spiffe", source: "OPA-Envoy internal_test.go testAuthzServerWithSpiffeDecision", query: "data.envoy.authz.result", common: true, rego: spiffe},
		{name: "rbac_boolean", source: "OPA-Envoy internal_test.go (roles, parsed_path, parsed_query, parsed_body)", query: "data.envoy.authz.allow", common: true, rego: rbacBoolean},
		{name: "object_readme", source: "OPA-Envoy docs: example policy with an object decision", query: "data.envoy.authz.result", common: true, rego: objectReadme},
		{name: "headers_remove", source: "OPA-Envoy internal_test.go TestCheckAllowObjectDecisionReqHeadersToRemove", query: "data.envoy.authz.result", common: true, rego: headersRemove},
		{name: "dynamic_metadata", source: "OPA-Envoy internal_test.go TestCheckAllowObjectDecisionDynamicMetadata", query: "data.envoy.authz.result", common: true, rego: dynamicMetadata},
		{name: "jwt_decode", source: "OPA docs (Envoy): io.jwt.decode of the bearer token", query: "data.envoy.authz.allow", common: true, rego: jwtDecode},
		{name: "echo_input", source: "written here: the whole input, back as dynamic metadata", query: "data.envoy.authz.result", common: true, rego: echoInput},
		{name: "echo_fields", source: "written here: each input field by name, back as dynamic metadata", query: "data.envoy.authz.result", common: true, rego: echoFields},
		{name: "body", source: "written here: parsed_body, truncated_body, not parsed_body", query: "data.envoy.authz.result", common: true, rego: bodyPolicy},
		{name: "network", source: "written here: source and destination only (Envoy's network filter)", query: "data.envoy.authz.allow", common: true, rego: network},
		{name: "metadata", source: "OPA-Envoy docs: metadataContext, contextExtensions, tlsSession", query: "data.envoy.authz.allow", common: true, rego: metadata},
		{name: "version", source: "OPA-Envoy internal_test.go TestVersionInfoInputV3", query: "data.envoy.authz.allow", common: true, rego: version},
		{name: "grpc_example", source: "OPA-Envoy examples/grpc/policy.rego", query: "data.envoy.authz.allow", common: true, rego: grpcExample},
		{name: "undefined", source: "written here: no default, so most requests have no decision", query: "data.envoy.authz.allow", common: true, rego: undefined},
		{name: "decisions", source: "written here: every field of the object decision, good and bad values", query: "data.envoy.authz.result", rego: objRego, extra: objCases},
		{name: "decision_types", source: "written here: decisions that are not objects", query: "data.envoy.authz.result", rego: typeRego, extra: typeCases},
		{name: "conflict", source: "OPA-Envoy internal_test.go TestCheckWithLoggerError (eval_conflict_error)", query: "data.envoy.authz.allow", rego: conflict,
			extra: []request{get("get-people", "/people", nil), get("get-root", "/", nil)}},
		{name: "status_switch", source: "written here: a denial status taken from the request", query: "data.envoy.authz.result", rego: statusSwitch,
			extra: statusRequests()},
	}
}

func statusRequests() []request {
	var out []request
	for _, s := range []string{"400", "401", "403", "404", "407", "418", "425", "429", "431", "451", "499", "500", "501", "502", "503", "504", "511", "599", "306", "999"} {
		out = append(out, get("status-"+s, "/status?code="+s, nil))
	}
	return out
}

const tutorialJWT = `
package envoy.authz

import input.attributes.request.http as http_request

default allow := false

token := {"valid": valid, "payload": payload} if {
    [_, encoded] := split(http_request.headers.authorization, " ")
    [valid, _, payload] := io.jwt.decode_verify(encoded, {"secret": "secret"})
}

allow if {
    is_token_valid
    action_allowed
}

is_token_valid if {
  token.valid
  now := time.now_ns() / 1000000000
  token.payload.nbf <= now
  now < token.payload.exp
}

action_allowed if {
  http_request.method == "GET"
  token.payload.role == "guest"
  glob.match("/people*", [], http_request.path)
}

action_allowed if {
  http_request.method == "GET"
  token.payload.role == "admin"
  glob.match("/people*", [], http_request.path)
}

action_allowed if {
  http_request.method == "POST"
  token.payload.role == "admin"
  glob.match("/people", [], http_request.path)
  lower(input.parsed_body.firstname) != base64url.decode(token.payload.sub)
}
`

const istioBookinfo = `
package istio.authz

import input.attributes.request.http as http_request
import input.parsed_path

default allow = false

allow if {
    parsed_path[0] == "health"
    http_request.method == "GET"
}

allow if {
    roles_for_user[r]
    required_roles[r]
}

roles_for_user contains r if {
    r := user_roles[user_name][_]
}

required_roles contains r if {
    perm := role_perms[r][_]
    perm.method = http_request.method
    perm.path = http_request.path
}

user_name = parsed if {
    [_, encoded] := split(http_request.headers.authorization, " ")
    [parsed, _] := split(base64url.decode(encoded), ":")
}

user_roles = {
    "alice": ["guest"],
    "bob": ["admin"]
}

role_perms = {
    "guest": [
        {"method": "GET",  "path": "/productpage"},
    ],
    "admin": [
        {"method": "GET",  "path": "/productpage"},
        {"method": "GET",  "path": "/api/v1/products"},
    ],
}
`

const spiffe = `
package envoy.authz

default allow = false

missingId := true if not input.source_principal

allow if {
	not missingId
	input.source_principal == "spiffe://test-domain/test"
}

result.allowed = allow
`

const rbacBoolean = `
package envoy.authz

import input.attributes.request.http as http_request

default allow = false

allow if {
	roles_for_user[r]
	required_roles[r]
}

allow if {
	input.parsed_path = ["my", "test", "path"]
	input.parsed_query.a = ["1", "2"]
	input.parsed_query.x = ["y"]
}

allow if {
	input.parsed_body.firstname == "alice"
	input.parsed_body.dept.it == "eng"
}

allow if {
	http_request.headers["x-role"] == "admin"
}

roles_for_user contains r if {
	r := user_roles[user_name][_]
}

required_roles contains r if {
	perm := role_perms[r][_]
	perm.method = http_request.method
	perm.path = http_request.path
}

user_name = parsed if {
	[_, encoded] := split(http_request.headers.authorization, " ")
	[parsed, _] := split(base64url.decode(encoded), ":")
}

user_roles = {
	"alice": ["guest"],
	"bob": ["admin"]
}

role_perms = {
	"guest": [
		{"method": "GET",  "path": "/productpage"},
	],
	"admin": [
		{"method": "GET",  "path": "/productpage"},
		{"method": "GET",  "path": "/api/v1/products"},
	],
}
`

const objectReadme = `
package envoy.authz

import input.attributes.request.http as http_request

default allow := false

allow if {
    is_token_valid
    action_allowed
}

token := {"valid": valid, "payload": payload} if {
    [_, encoded] := split(http_request.headers.authorization, " ")
    [valid, _, payload] := io.jwt.decode_verify(encoded, {"secret": "secret"})
}

is_token_valid if {
    token.valid
    now := time.now_ns() / 1000000000
    token.payload.nbf <= now
    now < token.payload.exp
}

action_allowed if {
    http_request.method == "GET"
    glob.match("/people*", [], http_request.path)
}

headers["x-ext-auth-allow"] := "yes"
headers["x-validated-by"] := "security-checkpoint"

request_headers_to_remove := ["one-auth-header", "another-auth-header"]

response_headers_to_add["x-foo"] := "bar"

query_parameters_to_remove := ["foo", "bar"]

query_parameters_to_set := {"foo": "bar", "baz": ["qux", "quux"]}

status_code := 200 if {
    allow
} else := 401 if {
    not is_token_valid
} else := 403

body := "Authentication Failed" if status_code == 401

body := "Unauthorized Request" if status_code == 403

dynamic_metadata["test"] := "test"

result["allowed"] := allow
result["headers"] := headers
result["response_headers_to_add"] := response_headers_to_add
result["request_headers_to_remove"] := request_headers_to_remove
result["query_parameters_to_remove"] := query_parameters_to_remove
result["query_parameters_to_set"] := query_parameters_to_set
result["body"] := body
result["http_status"] := status_code
result["dynamic_metadata"] := dynamic_metadata
`

const headersRemove = `
package envoy.authz

default allow = false

allow if {
	input.parsed_path = ["my", "test", "path"]
}

allow if {
	input.parsed_path[0] == "people"
}

headers["x"] = "hello"
headers["y"] = "world"

request_headers_to_remove := ["foo", "bar"]

result["allowed"] = allow
result["headers"] = headers
result["request_headers_to_remove"] = request_headers_to_remove
`

const dynamicMetadata = `
package envoy.authz

default allow = false

allow if {
	input.parsed_path = ["my", "test", "path"]
}

allow if {
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/people")
}

dynamic_metadata["foo"] = "bar"
dynamic_metadata["bar"] = "baz"
dynamic_metadata["path"] = input.parsed_path

result["allowed"] = allow
result["dynamic_metadata"] = dynamic_metadata
`

const jwtDecode = `
package envoy.authz

import input.attributes.request.http as http_request

default allow := false

claims := payload if {
	v := http_request.headers.authorization
	startswith(v, "Bearer ")
	t := substring(v, count("Bearer "), -1)
	[_, payload, _] := io.jwt.decode(t)
}

allow if claims.role == "admin"

allow if {
	claims.role == "guest"
	http_request.method == "GET"
}
`

const echoInput = `
package envoy.authz

result := {"allowed": true, "dynamic_metadata": {"input": input}}
`

const echoFields = `
package envoy.authz

import input.attributes.request.http as h

f["time"] := input.attributes.request.time
f["id"] := h.id
f["method"] := h.method
f["path"] := h.path
f["host"] := h.host
f["scheme"] := h.scheme
f["query"] := h.query
f["fragment"] := h.fragment
f["size"] := h.size
f["protocol"] := h.protocol
f["body"] := h.body
f["raw_body"] := h.rawBody
f["user_agent"] := h.headers["user-agent"]
f["x_role"] := h.headers["x-role"]
f["content_type"] := h.headers["content-type"]
f["header_map"] := h.headerMap
f["parsed_path"] := input.parsed_path
f["parsed_query"] := input.parsed_query
f["parsed_body"] := input.parsed_body
f["no_parsed_body"] := true if not input.parsed_body
f["truncated_body"] := input.truncated_body
f["version"] := input.version
f["source_principal"] := input.source_principal
f["source"] := input.attributes.source
f["destination_address"] := input.attributes.destination.address
f["destination_principal"] := input.attributes.destination.principal
f["context_extensions"] := input.attributes.contextExtensions
f["metadata"] := input.attributes.metadataContext
f["route_metadata"] := input.attributes.routeMetadataContext
f["tls"] := input.attributes.tlsSession

result := {"allowed": true, "dynamic_metadata": f}
`

const bodyPolicy = `
package envoy.authz

default allow := false

allow if input.parsed_body.firstname == "alice"

allow if input.parsed_body.name[0] == "alice"

allow if input.parsed_body.firstname[1] == "bob"

allow if not input.parsed_body

result := {"allowed": allow, "dynamic_metadata": {"truncated": input.truncated_body}} if input.truncated_body

result := {"allowed": allow} if not input.truncated_body
`

const network = `
package envoy.authz

default allow := false

allow if {
	input.attributes.source.address.socketAddress.address == "10.0.0.5"
	input.attributes.destination.address.socketAddress.portValue == 8080
	not input.attributes.request.http.headers["x-role"]
}

allow if input.attributes.source.principal == "spiffe://test-domain/test"
`

const metadata = `
package envoy.authz

default allow := false

allow if input.attributes.metadataContext.filterMetadata["envoy.filters.http.header_to_metadata"].policy_type == "ingress"

allow if input.attributes.routeMetadataContext.filterMetadata["envoy.filters.http.ext_authz"].route == "people"

allow if input.attributes.contextExtensions.virtual_host == "public"

allow if input.attributes.tlsSession.sni == "api.example.com"

allow if input.attributes.request.http.size == -1

allow if input.attributes.source.address.pipe.path == "/var/run/envoy.sock"

allow if input.attributes.source.address.socketAddress.protocol == 1

allow if input.attributes.request.time.nanos == 0
`

const version = `
package envoy.authz

allow if {
	input.version.ext_authz == "v3"
	input.version.encoding == "protojson"
}
`

const grpcExample = `
package envoy.authz

default allow = false

allow if {
  input.parsed_path = ["test.KitchenSink", "Ping"]
}

allow if {
  input.parsed_path = ["people"]
}
`

const undefined = `
package envoy.authz

allow if input.attributes.request.http.method == "POST"
`

const conflict = `
package envoy.authz

allow := false if input.attributes.request.http.method == "GET"

allow := true if input.attributes.request.http.method == "GET"
`

const statusSwitch = `
package envoy.authz

code := to_number(input.parsed_query.code[0])

result := {"allowed": false, "http_status": code, "body": sprintf("status %d", [code])}
`
