package policy_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/internal/logtest"
	"github.com/phantom-authz/phantom-authz/authz/policy"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// writeFiles writes name → content under dir, creating directories.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		// Write to a temporary file and rename, as editors and deployments
		// do, so a watcher never sees half a file.
		tmp := filepath.Join(filepath.Dir(p), ".tmp-"+filepath.Base(p))
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	}
}

// newEngine loads an engine from the given files.
func newEngine(t *testing.T, files map[string]string) *policy.Engine {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, files)
	e, err := policy.New(policy.Config{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func getRequest(path string, headers map[string]string) *authz.Request {
	h := map[string]string{":path": path, ":method": "GET", ":authority": "api.example.com"}
	for k, v := range headers {
		h[k] = v
	}
	return &authz.Request{
		ID: "req-1", Method: "GET", Scheme: "https", Host: "api.example.com",
		Path: path, Protocol: "HTTP/1.1", Headers: h, Size: -1,
	}
}

func activeToken(scopes ...string) *token.Token {
	return &token.Token{
		Active: true, Kind: token.KindOpaque, Scopes: scopes,
		ClientID: "web-app", Subject: "user-42",
		Claims: map[string]any{"client_id": "web-app", "sub": "user-42"},
	}
}

// A policy written for the OPA-Envoy plugin decides the same here.
func TestOPAEnvoyCompatibility(t *testing.T) {
	boolPolicy := `package envoy.authz

import input.attributes.request.http as http_request

default allow := false

allow if {
	http_request.headers.authorization == "Bearer let-me-in"
	input.parsed_path == ["api", "v1", "x"]
	input.parsed_query.lang == ["en", "fr"]
}
`
	objectPolicy := `package envoy.authz

default allow := {"allowed": false}

allow := {
	"allowed": true,
	"headers": {"X-User": "alice", "x-groups": ["a", "b"]},
	"request_headers_to_remove": ["X-Debug"],
	"response_headers_to_add": {"x-served-by": "authz"},
	"dynamic_metadata": {"user": "alice", "level": 3},
} if input.parsed_path[0] == "ok"

allow := {
	"allowed": false,
	"http_status": 401,
	"headers": [{"www-authenticate": "Bearer"}, {"x-why": "no"}],
	"body": "go away",
	"reason": "You need a token.",
	"error": "invalid_token",
	"scope": ["read", "write"],
} if input.parsed_path[0] == "nope"

allow := {"allowed": false, "http_status": 429} if input.parsed_path[0] == "slow"
`
	tests := []struct {
		name   string
		policy string
		req    *authz.Request
		want   authz.Decision
	}{
		{
			name:   "boolean true",
			policy: boolPolicy,
			req:    getRequest("/api/v1/x?lang=en&lang=fr", map[string]string{"authorization": "Bearer let-me-in"}),
			want:   authz.Decision{Allowed: true, Reason: "allowed"},
		},
		{
			name:   "boolean false",
			policy: boolPolicy,
			req:    getRequest("/api/v1/x?lang=en", map[string]string{"authorization": "Bearer let-me-in"}),
			want:   authz.Decision{Status: 403, Reason: "policy_denied", DefaultRule: true},
		},
		{
			name:   "object allow with header mutations",
			policy: objectPolicy,
			req:    getRequest("/ok", nil),
			want: authz.Decision{
				Allowed: true, Reason: "allowed",
				// Names as the policy wrote them, as OPA-Envoy sends them
				// (Envoy compares them without regard to case).
				Headers: []authz.Header{
					{Key: "X-User", Value: "alice"},
					{Key: "x-groups", Value: "a"}, {Key: "x-groups", Value: "b"},
				},
				RemoveHeaders:   []string{"X-Debug"},
				ResponseHeaders: []authz.Header{{Key: "x-served-by", Value: "authz"}},
				DynamicMetadata: map[string]any{"user": "alice", "level": json.Number("3")},
			},
		},
		{
			name:   "object deny with status, headers, body and our extensions",
			policy: objectPolicy,
			req:    getRequest("/nope", nil),
			want: authz.Decision{
				Status: 401, Reason: "policy_denied", Detail: "You need a token.",
				Error: "invalid_token", Scope: "read write",
				Headers: []authz.Header{{Key: "www-authenticate", Value: "Bearer"}, {Key: "x-why", Value: "no"}},
				Body:    "go away", PolicyBody: true,
			},
		},
		{
			name:   "object deny with own status",
			policy: objectPolicy,
			req:    getRequest("/slow", nil),
			want:   authz.Decision{Status: 429, Reason: "policy_denied"},
		},
		{
			name:   "object deny by default",
			policy: objectPolicy,
			req:    getRequest("/other", nil),
			want:   authz.Decision{Status: 403, Reason: "policy_denied", DefaultRule: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, map[string]string{"policy.rego": tt.policy})
			got, err := e.Decide(context.Background(), tt.req, nil)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("decision\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// fullRequest sets every field of a request.
func fullRequest() *authz.Request {
	return &authz.Request{
		ID: "req-7", Method: "POST", Scheme: "https", Host: "api.example.com",
		Path: "/api/a%20b/c?x=1&x=2&y=", Protocol: "HTTP/2", Fragment: "",
		Headers: map[string]string{
			"content-type":   "application/json; charset=utf-8",
			"content-length": "13",
			"authorization":  "Bearer abc",
		},
		Body:    `{"amount":12}`,
		RawBody: []byte(`{"amount":12}`),
		Size:    13,
		Time:    time.Date(2025, 3, 4, 5, 6, 7, 500_000_000, time.FixedZone("X", 3600)),
		Source: authz.Peer{
			Address: "203.0.113.7", Port: 51234, Principal: "spiffe://client",
			Labels: map[string]string{"app": "web"},
		},
		Destination:       authz.Peer{Address: "10.0.0.5", Port: 8443, Service: "api"},
		ContextExtensions: map[string]string{"api": "accounts"},
		MetadataContext:   map[string]any{"envoy.filters.http.jwt_authn": map[string]any{"sub": "u1"}},
		TLSSNI:            "api.example.com",
	}
}

// The input has the OPA-Envoy shape (protojson names, empty fields left
// out) plus input.token; a policy that reads only some fields sees the same
// values as one that reads the whole input.
func TestInputShape(t *testing.T) {
	// Returning the whole input makes the engine build all of it.
	whole := newEngine(t, map[string]string{"p.rego": `package envoy.authz
allow := {"allowed": true, "dynamic_metadata": {"input": input}}
`})
	// Reading single fields makes it build only those.
	fields := newEngine(t, map[string]string{"p.rego": `package envoy.authz
allow := {"allowed": true, "headers": {
	"x-port": json.marshal(input.attributes.source.address.socketAddress.portValue),
	"x-query": json.marshal(input.parsed_query),
	"x-path": json.marshal(input.parsed_path),
	"x-body": json.marshal(input.parsed_body),
	"x-truncated": json.marshal(input.truncated_body),
	"x-method": input.attributes.request.http.method,
	"x-scopes": json.marshal(input.token.scopes),
	"x-time": json.marshal(input.attributes.request.time),
}}
`})

	tok := activeToken("read", "write")
	tok.Expiry = time.Unix(1900000000, 0)
	tok.Claims = map[string]any{"sub": "user-42", "n": json.Number("1.5"), "cnf": map[string]any{"jkt": "abc"}}
	// The server that vouched for it (configured; the claims may say otherwise).
	tok.Issuer = "https://kc.example/realms/bank"

	wantInput := `{
		"attributes": {
			"source": {
				"address": {"socketAddress": {"address": "203.0.113.7", "portValue": 51234}},
				"principal": "spiffe://client",
				"labels": {"app": "web"}
			},
			"destination": {
				"address": {"socketAddress": {"address": "10.0.0.5", "portValue": 8443}},
				"service": "api"
			},
			"request": {
				"time": {"seconds": 1741061167, "nanos": 500000000},
				"http": {
					"id": "req-7", "method": "POST",
					"headers": {"content-type": "application/json; charset=utf-8", "content-length": "13", "authorization": "Bearer abc"},
					"path": "/api/a%20b/c?x=1&x=2&y=", "host": "api.example.com", "scheme": "https",
					"size": 13, "protocol": "HTTP/2",
					"body": "{\"amount\":12}", "rawBody": "eyJhbW91bnQiOjEyfQ=="
				}
			},
			"contextExtensions": {"api": "accounts"},
			"metadataContext": {"filterMetadata": {"envoy.filters.http.jwt_authn": {"sub": "u1"}}},
			"tlsSession": {"sni": "api.example.com"}
		},
		"parsed_path": ["api", "a b", "c"],
		"parsed_query": {"x": ["1", "2"], "y": [""]},
		"parsed_body": {"amount": 12},
		"truncated_body": false,
		"version": {"ext_authz": "v3", "encoding": "protojson"},
		"source_principal": "spiffe://client",
		"token": {
			"active": true, "kind": "opaque", "scopes": ["read", "write"],
			"claims": {"sub": "user-42", "n": 1.5, "cnf": {"jkt": "abc"}},
			"client_id": "web-app", "sub": "user-42", "exp": 1900000000,
			"cnf": {"jkt": "abc"}, "iss": "https://kc.example/realms/bank"
		}
	}`

	t.Run("whole input", func(t *testing.T) {
		d, err := whole.Decide(context.Background(), fullRequest(), tok)
		if err != nil {
			t.Fatal(err)
		}
		assertJSONEqual(t, d.DynamicMetadata["input"], wantInput)
	})

	t.Run("fields", func(t *testing.T) {
		d, err := fields.Decide(context.Background(), fullRequest(), tok)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, h := range d.Headers {
			got[h.Key] = h.Value
		}
		want := map[string]string{
			"x-port":      "51234",
			"x-query":     `{"x":["1","2"],"y":[""]}`,
			"x-path":      `["api","a b","c"]`,
			"x-body":      `{"amount":12}`,
			"x-truncated": "false",
			"x-method":    "POST",
			"x-scopes":    `["read","write"]`,
			"x-time":      `{"nanos":500000000,"seconds":1741061167}`,
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("headers\n got %v\nwant %v", got, want)
		}
	})

	// Edge cases of the parsed parts, as OPA-Envoy computes them.
	parsed := []struct {
		name       string
		req        func(r *authz.Request)
		wantFields string // JSON of selected input fields
	}{
		{"root path", func(r *authz.Request) { r.Path = "/" },
			`{"parsed_path": [""], "parsed_query": {}}`},
		{"double slash is a path, not an authority", func(r *authz.Request) { r.Path = "//admin/x?a=1" },
			`{"parsed_path": ["admin", "x"], "parsed_query": {"a": ["1"]}}`},
		// OPA-Envoy reads the path Envoy sends (with its query), never the
		// query field.
		{"query sent apart", func(r *authz.Request) { r.Path = "/p"; r.Query = "q=1" },
			`{"parsed_path": ["p"], "parsed_query": {}}`},
		{"fragment kept", func(r *authz.Request) { r.Path = "/p#f" },
			`{"parsed_path": ["p#f"], "parsed_query": {}}`},
		{"fragment in the query", func(r *authz.Request) { r.Path = "/p?a=1#f" },
			`{"parsed_path": ["p"], "parsed_query": {"a": ["1#f"]}}`},
		{"encoded slash splits", func(r *authz.Request) { r.Path = "/a%2Fb/c" },
			`{"parsed_path": ["a", "b", "c"], "parsed_query": {}}`},
	}
	pathEngine := newEngine(t, map[string]string{"p.rego": `package envoy.authz
allow := {"allowed": true, "dynamic_metadata": {"parsed_path": input.parsed_path, "parsed_query": input.parsed_query}}
`})
	for _, tt := range parsed {
		t.Run(tt.name, func(t *testing.T) {
			r := getRequest("/", nil)
			tt.req(r)
			d, err := pathEngine.Decide(context.Background(), r, nil)
			if err != nil {
				t.Fatal(err)
			}
			assertJSONEqual(t, d.DynamicMetadata, tt.wantFields)
		})
	}

	// Body handling, as OPA-Envoy's: JSON, form and multipart bodies by a
	// content-type that contains their media type; null otherwise, and when
	// Envoy truncated it.
	bodies := []struct {
		name        string
		contentType string
		length      string
		body        string
		want        string
	}{
		{"json", "application/json", "", `{"a":[1,true,null]}`, `{"body": {"a": [1, true, null]}, "truncated": false}`},
		{"+json", "application/merge-patch+json", "", `{"a":1}`, `{"body": null, "truncated": false}`},
		{"mixed-case json", "Application/JSON", "", `{"a":1}`, `{"body": null, "truncated": false}`},
		{"not json", "text/plain", "", `{"a":1}`, `{"body": null, "truncated": false}`},
		{"truncated", "application/json", "1000", `{"a":`, `{"body": null, "truncated": true}`},
		{"empty", "application/json", "", ``, `{"body": null, "truncated": false}`},
		{"form", "application/x-www-form-urlencoded", "", `a=1&a=2&b=x+y`, `{"body": {"a": ["1", "2"], "b": ["x y"]}, "truncated": false}`},
		{"multipart", "multipart/form-data; boundary=B", "",
			"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--B\r\nContent-Disposition: form-data; name=\"j\"\r\nContent-Type: application/json\r\n\r\n{\"k\":true}\r\n--B--\r\n",
			`{"body": {"a": ["1"], "j": [{"k": true}]}, "truncated": false}`},
	}
	bodyEngine := newEngine(t, map[string]string{"p.rego": `package envoy.authz
allow := {"allowed": true, "dynamic_metadata": object.union(
	{"truncated": input.truncated_body},
	{k: v | k := "body"; v := input.parsed_body},
)}
`})
	for _, tt := range bodies {
		t.Run("body "+tt.name, func(t *testing.T) {
			r := getRequest("/", map[string]string{"content-type": tt.contentType})
			if tt.length != "" {
				r.Headers["content-length"] = tt.length
			}
			r.Method, r.Body = "POST", tt.body
			d, err := bodyEngine.Decide(context.Background(), r, nil)
			if err != nil {
				t.Fatal(err)
			}
			assertJSONEqual(t, d.DynamicMetadata, tt.want)
		})
	}

	t.Run("no token", func(t *testing.T) {
		e := newEngine(t, map[string]string{"p.rego": `package envoy.authz
default allow := {"allowed": false, "reason": "no token"}
allow := {"allowed": true} if input.token
`})
		d, err := e.Decide(context.Background(), getRequest("/", nil), nil)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed || d.Detail != "no token" {
			t.Errorf("input.token must be absent without a token, got %+v", d)
		}
	})
}

// assertJSONEqual compares a Go value with a JSON document.
func assertJSONEqual(t *testing.T, got any, want string) {
	t.Helper()
	gb, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var g, w any
	if err := json.Unmarshal(gb, &g); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want JSON: %v", err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("JSON differs\n got %s\nwant %s", gb, strings.Join(strings.Fields(want), " "))
	}
}

// Requests the input cannot be built from, and policies whose answer is not
// a decision, never allow.
func TestBadInputAndMalformedDecisions(t *testing.T) {
	t.Run("body that is not JSON", func(t *testing.T) {
		e := newEngine(t, map[string]string{"p.rego": "package envoy.authz\nallow := true\n"})
		r := getRequest("/", map[string]string{"content-type": "application/json"})
		r.Body = "{not json"
		d, err := e.Decide(context.Background(), r, nil)
		if !errors.Is(err, authz.ErrInvalidInput) {
			t.Fatalf("want ErrInvalidInput, got %v", err)
		}
		if !strings.Contains(err.Error(), "request body is not valid JSON") {
			t.Errorf("error %q does not say what is wrong", err)
		}
		if d.Allowed {
			t.Error("allowed a request it could not read")
		}
	})

	t.Run("path with a bad escape", func(t *testing.T) {
		// Whether or not the policy reads the parsed path.
		for _, p := range []string{"allow := true if input.parsed_path", "allow := true"} {
			e := newEngine(t, map[string]string{"p.rego": "package envoy.authz\n" + p + "\n"})
			for _, path := range []string{"/a%zz", "/a%2", "/a%"} {
				d, err := e.Decide(context.Background(), getRequest(path, nil), nil)
				if !errors.Is(err, authz.ErrInvalidInput) || d.Allowed {
					t.Errorf("%s with %q: want ErrInvalidInput, got %+v, %v", path, p, d, err)
				}
			}
		}
	})

	t.Run("undefined decision denies", func(t *testing.T) {
		e := newEngine(t, map[string]string{"p.rego": "package envoy.authz\nallow if input.nothing\n"})
		d, err := e.Decide(context.Background(), getRequest("/", nil), nil)
		if err != nil {
			t.Fatal(err)
		}
		want := authz.Decision{Status: 403, Reason: "policy_denied", Detail: "no policy decision", DefaultRule: true}
		if !reflect.DeepEqual(d, want) {
			t.Errorf("got %+v, want %+v", d, want)
		}
	})

	malformed := []struct {
		name, rules string
	}{
		{"a string", `allow := "yes"`},
		{"allowed missing", `allow := {"http_status": 200}`},
		{"allowed not a boolean", `allow := {"allowed": "true"}`},
		{"status out of range", `allow := {"allowed": false, "http_status": 700}`},
		{"status not an integer", `allow := {"allowed": false, "http_status": 403.5}`},
		{"header value a number", `allow := {"allowed": true, "headers": {"x": 1}}`},
		{"headers a string", `allow := {"allowed": true, "headers": "x: 1"}`},
		{"remove not strings", `allow := {"allowed": true, "request_headers_to_remove": [1]}`},
		{"body not a string", `allow := {"allowed": false, "body": {"a": 1}}`},
		{"dynamic_metadata not an object", `allow := {"allowed": true, "dynamic_metadata": [1]}`},
		{"status 1xx (Envoy would leave the client waiting)", `allow := {"allowed": false, "http_status": 100}`},
		{"status 401.0 (as OPA-Envoy refuses it)", `allow := {"allowed": false, "http_status": 401.0}`},
		{"query_parameters_to_set a list", `allow := {"allowed": true, "query_parameters_to_set": [{"a": "1"}]}`},
		{"query_parameters_to_set a number", `allow := {"allowed": true, "query_parameters_to_set": {"a": 1}}`},
		{"query_parameters_to_remove a string", `allow := {"allowed": true, "query_parameters_to_remove": "a"}`},
		{"response_headers_to_add a boolean", `allow := {"allowed": true, "response_headers_to_add": {"a": true}}`},
		{"headers on a denial", `allow := {"allowed": false, "headers": {"x": 1}}`},
		{"a set of values", "allow contains true\nallow contains false"},
		{"conflicting rules", "allow := true if input.parsed_path\nallow := false if input.parsed_path"},
		{"builtin error in strict place", `allow := {"allowed": true, "headers": {"x": "1"}} if { x := 1 / 0; x > 0 }`},
	}
	// What OPA-Envoy ignores is ignored: fields that do not apply to the
	// outcome, fields it does not know, and our own fields of another type.
	// A policy written for OPA-Envoy never gets 503 where OPA-Envoy allowed.
	ignored := []struct {
		name, rules string
		want        authz.Decision
	}{
		{"unknown fields on an allow", `allow := {"allowed": true, "max_age": "1h", "reason": {"why": 1}, "error": 1, "whatever": [1]}`,
			authz.Decision{Allowed: true, Reason: "allowed"}},
		{"body and status on an allow", `allow := {"allowed": true, "body": 1, "http_status": "teapot"}`,
			authz.Decision{Allowed: true, Reason: "allowed"}},
		{"allow-only fields on a denial", `allow := {"allowed": false, "request_headers_to_remove": 1, "query_parameters_to_set": 2}`,
			authz.Decision{Status: 403, Reason: "policy_denied"}},
		{"scope a number", `allow := {"allowed": false, "scope": 1}`, authz.Decision{Status: 403, Reason: "policy_denied"}},
		{"acr_values not strings", `allow := {"allowed": false, "acr_values": ["urn:a", 2]}`, authz.Decision{Status: 403, Reason: "policy_denied"}},
		{"max_age a string", `allow := {"allowed": false, "max_age": "300"}`, authz.Decision{Status: 403, Reason: "policy_denied"}},
		{"max_age negative", `allow := {"allowed": false, "max_age": -1}`, authz.Decision{Status: 403, Reason: "policy_denied"}},
		{"status 418", `allow := {"allowed": false, "http_status": 418}`, authz.Decision{Status: 418, Reason: "policy_denied"}},
		{"status 599", `allow := {"allowed": false, "http_status": 599}`, authz.Decision{Status: 599, Reason: "policy_denied"}},
	}
	for _, tt := range ignored {
		t.Run("ignored: "+tt.name, func(t *testing.T) {
			e := newEngine(t, map[string]string{"p.rego": "package envoy.authz\n" + tt.rules + "\n"})
			d, err := e.Decide(context.Background(), getRequest("/", nil), nil)
			if err != nil || !reflect.DeepEqual(d, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", d, err, tt.want)
			}
		})
	}

	for _, tt := range malformed {
		t.Run("malformed: "+tt.name, func(t *testing.T) {
			e := newEngine(t, map[string]string{"p.rego": "package envoy.authz\n" + tt.rules + "\n"})
			d, err := e.Decide(context.Background(), getRequest("/", nil), nil)
			if d.Allowed {
				t.Fatalf("allowed on a malformed decision: %+v", d)
			}
			if tt.name == "builtin error in strict place" {
				// Builtin errors make the expression undefined, as in OPA
				// and OPA-Envoy: the request is denied, not errored.
				if err != nil || d.Status != 403 {
					t.Fatalf("want a plain denial, got %+v, %v", d, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want an error, got decision %+v", d)
			}
			if d.Reason != "policy_error" {
				t.Errorf("reason %q, want policy_error", d.Reason)
			}
		})
	}

	t.Run("deadline stops evaluation", func(t *testing.T) {
		e := newEngine(t, map[string]string{"p.rego": `package envoy.authz
allow if count([x | some x in numbers.range(1, 100000000); x % 7 == 0]) > 0
`})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		start := time.Now()
		d, err := e.Decide(ctx, getRequest("/", nil), nil)
		if err == nil || d.Allowed {
			t.Fatalf("want an error, got %+v, %v", d, err)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v does not wrap the deadline", err)
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("evaluation ran %v past its deadline", time.Since(start))
		}
	})
}

// Policies that do not load are refused with file:line.
func TestNewErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"syntax error", map[string]string{"p.rego": "package envoy.authz\n\nallow if {\n\tinput.x ==\n"}, []string{"p.rego:", "rego_parse_error"}},
		{"compile error", map[string]string{"p.rego": "package envoy.authz\n\nallow if undefined_rule\n"}, []string{"p.rego:3:", "undefined_rule"}},
		{"rego v0 syntax", map[string]string{"p.rego": "package envoy.authz\n\nallow { true }\n"}, []string{"p.rego:3:"}},
		{"bad JSON data", map[string]string{"p.rego": "package envoy.authz\nallow := true\n", "data.json": "{\n  \"a\": 1,\n  \"b\": ]\n}\n"}, []string{"data.json:3:"}},
		{"no policies", map[string]string{"data.json": "{}"}, []string{"no .rego files"}},
		{"bad query", map[string]string{"p.rego": "package envoy.authz\nallow := true\n"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tt.files)
			cfg := policy.Config{Dir: dir}
			if tt.name == "bad query" {
				cfg.Query = "data.envoy.authz.allow == true"
			}
			_, err := policy.New(cfg)
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}

	t.Run("test files and hidden files are not served", func(t *testing.T) {
		e := newEngine(t, map[string]string{
			"p.rego":          "package envoy.authz\nallow := true\n",
			"p_test.rego":     "package envoy.authz\ntest_x if { broken\n",
			".swp/x.rego":     "not rego at all",
			"README.md":       "# notes",
			"nested/data.yml": "limit: 3\n",
		})
		if !e.Ready() || e.Revision() == "" {
			t.Fatal("engine not ready")
		}
	})
}

// Changes to the policy directory take effect within 2 s without a failed
// request; a broken change is refused and the last good set keeps serving.
func TestHotReload(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"envoy/authz.rego": "package envoy.authz\n\nallow := {\"allowed\": false, \"reason\": data.msg}\n",
		"data.json":        `{"msg": "v1"}`,
	})
	var logs logtest.Buffer
	e, err := policy.New(policy.Config{
		Dir:    dir,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		// Polling is the fallback; notifications should do the work well
		// within the deadline, so keep polling slow.
		PollInterval: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() { e.Watch(ctx); close(watchDone) }()
	defer func() { cancel(); <-watchDone }()

	decide := func() authz.Decision {
		t.Helper()
		d, err := e.Decide(context.Background(), getRequest("/", nil), nil)
		if err != nil {
			t.Fatalf("a request failed during reload: %v", err)
		}
		return d
	}
	// waitFor polls until cond holds, deciding all along.
	waitFor := func(what string, cond func(authz.Decision) bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for {
			d := decide()
			if cond(d) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 2s; last decision %+v; reloads %v", what, d, fmtReloads(e))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if d := decide(); d.Allowed || d.Detail != "v1" {
		t.Fatalf("initial decision %+v", d)
	}
	rev1 := e.Revision()

	// A data change.
	// Give the watcher a moment to register, as a real deployment would.
	time.Sleep(50 * time.Millisecond)
	writeFiles(t, dir, map[string]string{"data.json": `{"msg": "v2"}`})
	waitFor("data change", func(d authz.Decision) bool { return d.Detail == "v2" })

	// A policy change in a subdirectory.
	writeFiles(t, dir, map[string]string{"envoy/authz.rego": "package envoy.authz\n\nallow := true\n"})
	waitFor("policy change", func(d authz.Decision) bool { return d.Allowed })
	if e.Revision() == rev1 {
		t.Error("revision did not change")
	}

	// A new directory created after Watch started is watched too.
	writeFiles(t, dir, map[string]string{"later/more/extra.rego": "package extra\n\nx := 1\n"})
	okBefore, _ := e.Reloads()
	deadline := time.Now().Add(2 * time.Second)
	for ok, _ := e.Reloads(); ok == okBefore; ok, _ = e.Reloads() {
		if time.Now().After(deadline) {
			t.Fatal("new directory not picked up within 2s")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// A broken change is refused: answers unchanged, counter up, log names
	// the file and line.
	_, failedBefore := e.Reloads()
	writeFiles(t, dir, map[string]string{"envoy/broken.rego": "package envoy.authz\n\nallow if {\n\tinput.x ==\n}\n"})
	deadline = time.Now().Add(2 * time.Second)
	for _, failed := e.Reloads(); failed == failedBefore; _, failed = e.Reloads() {
		if !decide().Allowed {
			t.Fatal("decision changed after a broken reload")
		}
		if time.Now().After(deadline) {
			t.Fatal("broken change not reported within 2s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !decide().Allowed {
		t.Fatal("decision changed after a broken reload")
	}
	fileLine := regexp.MustCompile(regexp.QuoteMeta(filepath.Join("envoy", "broken.rego")) + `:\d+: rego_parse_error`)
	if log := logs.String(); !strings.Contains(log, "level=ERROR") || !fileLine.MatchString(log) {
		t.Errorf("the refused reload is not logged at error level with its file:line and message:\n%s", log)
	}

	// Fixing it reloads.
	writeFiles(t, dir, map[string]string{"envoy/broken.rego": "package envoy.other\n\nallow := false\n"})
	writeFiles(t, dir, map[string]string{"envoy/authz.rego": "package envoy.authz\n\nallow := {\"allowed\": false, \"reason\": \"fixed\"}\n"})
	waitFor("fix", func(d authz.Decision) bool { return d.Detail == "fixed" })
	if _, failed := e.Reloads(); failed != failedBefore+1 {
		t.Errorf("failed reloads = %d, want %d (one per broken content)", failed, failedBefore+1)
	}
}

func fmtReloads(e *policy.Engine) string {
	ok, failed := e.Reloads()
	b, _ := json.Marshal(map[string]uint64{"ok": ok, "failed": failed})
	return string(b)
}

// A token's part of the input is built once; unprepared tokens work too,
// and claims of any JSON shape convert without panicking.
func TestPrepareToken(t *testing.T) {
	e := newEngine(t, map[string]string{"p.rego": `package envoy.authz
allow := {"allowed": true, "dynamic_metadata": {"token": input.token}} if input.token.active
`})
	tok := activeToken("read")
	tok.Claims = map[string]any{
		"num": json.Number("12345678901234567890"), "f": 1.25, "i": 7, "nil": nil,
		"list": []any{"a", 1.0, map[string]any{"deep": []any{true}}}, "strs": []string{"x"},
	}
	want := `{"active": true, "kind": "opaque", "scopes": ["read"], "client_id": "web-app", "sub": "user-42",
		"claims": {"num": 12345678901234567890, "f": 1.25, "i": 7, "nil": null, "list": ["a", 1, {"deep": [true]}], "strs": ["x"]}}`

	unprepared, err := e.Decide(context.Background(), getRequest("/", nil), tok)
	if err != nil {
		t.Fatal(err)
	}
	assertJSONEqual(t, unprepared.DynamicMetadata["token"], want)

	if err := e.PrepareToken(tok); err != nil {
		t.Fatal(err)
	}
	if tok.Prepared == nil {
		t.Fatal("PrepareToken stored nothing")
	}
	prepared, err := e.Decide(context.Background(), getRequest("/", nil), tok)
	if err != nil {
		t.Fatal(err)
	}
	assertJSONEqual(t, prepared.DynamicMetadata["token"], want)

	bad := []map[string]any{
		{"nan": math.NaN()},
		{"inf": math.Inf(1)},
		{"chan": make(chan int)},
		{"num": json.Number("12abc")},
	}
	for _, claims := range bad {
		tok := activeToken()
		tok.Claims = claims
		if err := e.PrepareToken(tok); err == nil {
			t.Errorf("claims %v: want an error", claims)
		}
		if d, err := e.Decide(context.Background(), getRequest("/", nil), tok); err == nil || d.Allowed {
			t.Errorf("claims %v: want an error and no allow, got %+v, %v", claims, d, err)
		}
	}

	deep := map[string]any{}
	cur := deep
	for range 200 {
		next := map[string]any{}
		cur["x"] = next
		cur = next
	}
	tok = activeToken()
	tok.Claims = deep
	if err := e.PrepareToken(tok); err == nil {
		t.Error("a claim nested 200 levels deep: want an error")
	}
}

// Decisions made concurrently (sharing the compiled set, its data and its
// pooled evaluators) are the same as made one by one.
func TestConcurrentDecide(t *testing.T) {
	e, err := policy.New(policy.Config{Dir: "../../policies", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	reader := activeToken("read")
	if err := e.PrepareToken(reader); err != nil {
		t.Fatal(err)
	}
	admin := activeToken("admin")
	admin.ClientID = "admin-console"
	cases := []struct {
		method, path string
		tok          *token.Token
		allowed      bool
		status       int
	}{
		{"GET", "/api/accounts/1", reader, true, 0},
		{"POST", "/api/accounts", reader, false, 403},
		{"GET", "/api/admin/users", admin, true, 0},
		{"GET", "/api/admin/users", reader, false, 403},
		{"GET", "/healthz", nil, true, 0},
		{"GET", "/api/accounts/1", nil, false, 401},
		{"GET", "/api/nothing/1", reader, false, 403},
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				c := cases[(g+i)%len(cases)]
				r := getRequest(c.path, nil)
				r.Method = c.method
				d, err := e.Decide(context.Background(), r, c.tok)
				if err != nil || d.Allowed != c.allowed || d.Status != c.status {
					t.Errorf("%s %s: got %+v, %v; want allowed=%v status=%d", c.method, c.path, d, err, c.allowed, c.status)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// A change no notification reports (here: made before Watch started) is
// found by the poll comparing content hashes.
func TestReloadByPolling(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"p.rego": "package envoy.authz\n\nallow := false\n"})
	e, err := policy.New(policy.Config{Dir: dir, Logger: slog.New(slog.DiscardHandler), PollInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"p.rego": "package envoy.authz\n\nallow := true\n"})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Watch(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(2 * time.Second)
	for {
		d, err := e.Decide(context.Background(), getRequest("/", nil), nil)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("change not found by polling within 2s (reloads %s)", fmtReloads(e))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ok, failed := e.Reloads(); ok != 1 || failed != 0 {
		t.Errorf("reloads ok=%d failed=%d, want 1 and 0", ok, failed)
	}
}

// The engine builds only the input fields a policy refers to; however a
// policy reaches a field (dynamic keys, the whole input bound or passed to a
// function or walked, imports, other packages), it must see its real value.
// A field wrongly left out would make `not input.x` true: an allow.
func TestInputReachedIndirectly(t *testing.T) {
	tests := []struct {
		name, rules string
	}{
		{"dynamic header name", `x := input.attributes.request.http.headers[lower("X-Blocked")]`},
		{"object.get on the whole input", `x := object.get(input, ["attributes", "request", "http", "headers", "x-blocked"], "none")`},
		{"bound to a variable", "x := h.request.http.headers[\"x-blocked\"] if h := input.attributes"},
		{"iterated", `x := [v | some k, v in input.attributes.request.http.headers; k == "x-blocked"][0]`},
		{"function argument", "f(r) := r.http.headers[\"x-blocked\"]\n\nx := f(input.attributes.request)"},
		{"walked", `x := [v | walk(input, [p, v]); p == ["attributes", "request", "http", "headers", "x-blocked"]][0]`},
		{"import alias", "import input.attributes.request as req\n\nx := req.http.headers[\"x-blocked\"]"},
		{"other package", "import data.lib\n\nx := lib.blocked(input)"},
		{"bracket keys", `x := input["attributes"]["request"]["http"]["headers"]["x-blocked"]`},
		{"variable key", `x := input.attributes.request.http[k]["x-blocked"] if k := concat("", ["head", "ers"])`},
		{"marshalled", `x := json.unmarshal(json.marshal(input.attributes.request)).http.headers["x-blocked"]`},
	}
	lib := "package lib\n\nblocked(req) := req.attributes.request.http.headers[\"x-blocked\"]\n"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, map[string]string{
				"lib.rego": lib,
				"p.rego":   "package envoy.authz\n\n" + tt.rules + "\n\nallow := {\"allowed\": false, \"headers\": {\"x\": x}}\n",
			})
			d, err := e.Decide(context.Background(), getRequest("/", map[string]string{"x-blocked": "yes"}), nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Headers) != 1 || d.Headers[0].Value != "yes" {
				t.Errorf("the policy did not see the header: %+v", d)
			}
		})
	}

	t.Run("absent field is not mistaken for missing", func(t *testing.T) {
		e := newEngine(t, map[string]string{"p.rego": `package envoy.authz

default allow := false

allow if not input.attributes.request.http.headers["x-blocked"]
`})
		d, err := e.Decide(context.Background(), getRequest("/", map[string]string{"x-blocked": "yes"}), nil)
		if err != nil || d.Allowed {
			t.Fatalf("want deny, got %+v, %v", d, err)
		}
	})
}
