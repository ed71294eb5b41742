// Package opaenvoy proves, answer for answer, that policies written for
// OPA-Envoy run unchanged on phantom-authz: testdata holds requests and the
// whole CheckResponse real OPA-Envoy v1.19.1 gave to each (recorded by hand
// with ./gen, since OPA-Envoy cannot be installed in CI), and the test
// replays every request against phantom-authz's real gRPC server and engine,
// configured as an OPA-Envoy user would (no credential stages, the same
// policy and query), and compares the whole answers.
package opaenvoy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/policy"
	"github.com/phantom-authz/phantom-authz/authz/server"
)

type golden struct {
	Source   string `json:"source"`
	Query    string `json:"query"`
	OPAEnvoy string `json:"opa_envoy"`
	Cases    []struct {
		Name     string          `json:"name"`
		Request  json.RawMessage `json:"request"`
		Response json.RawMessage `json:"response"`
		Error    *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	} `json:"cases"`
}

// answer is a CheckResponse (or gRPC error) as generic JSON, normalised for
// comparison.
type answer = map[string]any

// difference is one way phantom-authz answers otherwise than OPA-Envoy on
// purpose. applies says whether it concerns an answer OPA-Envoy gave (with
// the request and phantom-authz's answer at hand); apply rewrites OPA-Envoy's
// answer into the one phantom-authz gives instead.
type difference struct {
	name, reason string
	applies      func(c *replay) bool
	apply        func(c *replay)
}

// replay is one request's comparison.
type replay struct {
	policy, name string
	request      map[string]any
	want, got    answer
	// wantError is the message of OPA-Envoy's gRPC error, if it answered one.
	wantError string
	// twin is OPA-Envoy's answer to another request of the same policy.
	twin func(name string) answer
}

// The deliberate differences: the one place they are listed (README.md's
// "OPA-Envoy compatibility" says the same). Every other answer must be
// identical to OPA-Envoy's.
var differences = []difference{
	{
		name: "header-name-case",
		reason: "Header names are case-insensitive (RFC 9110); Envoy always sends them lower-case, but a direct " +
			"gRPC caller may not: phantom-authz lower-cases them, so \"X-Role\" cannot slip past a policy that " +
			"reads x-role. OPA-Envoy keeps the case, and such a policy does not see the header.",
		applies: func(c *replay) bool { return hasMixedCaseHeaders(c.request) && c.twin(c.name+"-lowered") != nil },
		// Answered as OPA-Envoy answers the same request with lower-case names.
		apply: func(c *replay) { c.want = c.twin(c.name + "-lowered") },
	},
	{
		name: "http-status-delivered",
		reason: "OPA-Envoy refuses a denial status that Envoy's StatusCode enumeration does not name (418, 425, " +
			"451, 499, 599, ...): an error, so Envoy's status_on_error (403). Envoy delivers any status from 200 " +
			"to 599 as it is (e2e TestEnvoyDeliversDecisionsAsOPAEnvoyDoes), so phantom-authz sends the status the " +
			"policy asked for. It refuses (503) what is not a whole number from 200 to 599: a 1xx status, which " +
			"OPA-Envoy sends and after which Envoy leaves the client waiting for a final answer, 600 and above, " +
			"and 401.0 (as OPA-Envoy does).",
		applies: func(c *replay) bool {
			return strings.Contains(c.wantError, "invalid HTTP status code") && deniedStatusNumber(c.got) >= 200 ||
				deniedStatus(c.want) == "Continue"
		},
		apply: func(c *replay) {
			if deniedStatus(c.want) == "Continue" {
				c.want = errorAnswer()
				return
			}
			c.want = c.got // checked by the status switch: the status asked for, the policy's body
			if deniedBody(c.got) != fmt.Sprintf("status %d", deniedStatusNumber(c.got)) && !strings.HasPrefix(deniedBody(c.got), "<problem") {
				c.want = answer{"error": "the policy's status and body, got " + deniedBody(c.got)}
			}
		},
	},
	{
		name: "errors-deny-503",
		reason: "Where OPA-Envoy answers a gRPC error (the policy failed, has no decision, or gave a decision " +
			"it cannot read) and Envoy then answers its status_on_error (403 by default, or lets the request " +
			"through with failure_mode_allow), phantom-authz answers a denial: 503 with a problem+json body, " +
			"so the client is told to retry and no Envoy setting can turn a broken policy into an allow.",
		applies: func(c *replay) bool { return c.want["error"] != nil },
		apply:   func(c *replay) { c.want = errorAnswer() },
	},
	{
		name: "parse-errors-problem-json",
		reason: "A request OPA-Envoy cannot parse (malformed path, query, body or content-length) is 400 in both; " +
			"phantom-authz's 400 carries a problem+json body (RFC 9457, error invalid_request) instead of " +
			"OPA-Envoy's text, and the decision_id every phantom-authz answer carries.",
		applies: func(c *replay) bool {
			return deniedStatus(c.want) == "BadRequest" && deniedBody(c.want) != "" && strings.HasPrefix(deniedBody(c.want), "request_parse_error")
		},
		apply: func(c *replay) {
			c.want = answer{
				"status":          map[string]any{"code": 7.0},
				"deniedResponse":  map[string]any{"status": map[string]any{"code": "BadRequest"}, "headers": problemHeaders(), "body": problemMark(400)},
				"dynamicMetadata": map[string]any{"decision_id": uuidMark},
			}
		},
	},
	{
		name: "denial-body",
		reason: "A denial for which the policy wrote no body of its own (a false boolean, or an object without body) " +
			"gets a problem+json body (RFC 9457) naming the status; OPA-Envoy sends none. A policy's own body, " +
			"or its own content-type, is always kept as it is.",
		applies: func(c *replay) bool {
			return isDenied(c.want) && deniedBody(c.want) == "" && !hasHeaderJSON(c.want, "content-type")
		},
		apply: func(c *replay) {
			dr, _ := c.want["deniedResponse"].(map[string]any)
			if dr == nil {
				// A boolean false: Envoy answers 403.
				dr = map[string]any{"status": map[string]any{"code": "Forbidden"}}
				c.want["deniedResponse"] = dr
			}
			hs, _ := dr["headers"].([]any)
			dr["headers"] = append(hs, problemHeaders()...)
			dr["body"] = problemMark(statusNumber(dr))
		},
	},
	{
		name: "append-action",
		reason: "OPA-Envoy leaves every header's append action unset. Envoy (1.40, see e2e " +
			"TestEnvoyDeliversDecisionsAsOPAEnvoyDoes) then replaces the upstream request's header with each " +
			"value in turn, so of an array only the last value arrives. phantom-authz marks the first value " +
			"of a name OVERWRITE_IF_EXISTS_OR_ADD and the next ones append (Envoy joins them with commas): " +
			"every value arrives, and never a client's beside them. A response header to add with one value " +
			"overwrites the upstream's (OPA-Envoy's appends); a denial's headers are all marked overwrite " +
			"(every value still arrives).",
		applies: func(c *replay) bool { return rewriteAppend(c.want, false) },
		apply:   func(c *replay) { rewriteAppend(c.want, true) },
	},
	{
		name: "undefined-decision-403",
		reason: "A query without a value (no rule matched and no default) is an error in OPA-Envoy, which Envoy " +
			"answers with its status_on_error, 403 by default; phantom-authz denies it with 403 (a problem+json " +
			"body), whatever Envoy's failure settings.",
		applies: func(c *replay) bool { return c.wantError == "undefined decision" },
		apply: func(c *replay) {
			c.want = answer{
				"status":          map[string]any{"code": 7.0},
				"deniedResponse":  map[string]any{"status": map[string]any{"code": "Forbidden"}, "headers": problemHeaders(), "body": problemMark(403)},
				"dynamicMetadata": map[string]any{"decision_id": uuidMark},
			}
		},
	},
	{
		name: "phantom-fields",
		reason: "A denial may carry phantom-authz's own fields (error, scope, acr_values, max_age, reason): " +
			"with an OAuth error code it gets the RFC 6750 / RFC 9470 WWW-Authenticate challenge naming them " +
			"(and the problem+json body its detail). OPA-Envoy ignores these fields; they are read only on a " +
			"denial, and a value of another type is ignored, so they never make an error of a decision " +
			"OPA-Envoy accepts.",
		applies: func(c *replay) bool {
			_, denied := c.want["deniedResponse"].(map[string]any)
			return denied && strings.Contains(headerValue(c.got, "www-authenticate"), "error=") && headerValue(c.want, "www-authenticate") == ""
		},
		apply: func(c *replay) {
			dr := c.want["deniedResponse"].(map[string]any)
			hs, _ := dr["headers"].([]any)
			dr["headers"] = append(hs, map[string]any{
				"header":       map[string]any{"key": "www-authenticate", "value": headerValue(c.got, "www-authenticate")},
				"appendAction": "OVERWRITE_IF_EXISTS_OR_ADD",
			})
		},
	},
	{
		name: "input-route",
		reason: "The input is a superset of OPA-Envoy's: input.route is the route phantom-authz selected (here " +
			"from context_extensions api), and input.token the resolved token (absent here, without credential " +
			"stages). Only a policy that hands over the whole input sees the addition.",
		applies: func(c *replay) bool {
			return echoedInput(c.got)["route"] != nil && echoedInput(c.want) != nil && echoedInput(c.want)["route"] == nil
		},
		apply: func(c *replay) { echoedInput(c.want)["route"] = echoedInput(c.got)["route"] },
	},
	{
		name: "unauthenticated-code",
		reason: "A 401 denial carries gRPC status UNAUTHENTICATED instead of PERMISSION_DENIED; Envoy answers " +
			"the client the HTTP status of denied_response either way.",
		applies: func(c *replay) bool { return deniedStatus(c.want) == "Unauthorized" },
		apply:   func(c *replay) { c.want["status"] = map[string]any{"code": 16.0} },
	},
}

// errorAnswer is phantom-authz's answer to a policy that failed.
func errorAnswer() answer {
	return answer{
		"status":          map[string]any{"code": 7.0},
		"deniedResponse":  map[string]any{"status": map[string]any{"code": "ServiceUnavailable"}, "headers": problemHeaders(), "body": problemMark(503)},
		"dynamicMetadata": map[string]any{"decision_id": uuidMark},
	}
}

// deniedStatusNumber is the HTTP status of a's denial, 0 for none.
func deniedStatusNumber(a answer) int {
	dr, ok := a["deniedResponse"].(map[string]any)
	if !ok {
		return 0
	}
	return statusNumber(dr)
}

const uuidMark = "<uuid>"

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func problemHeaders() []any {
	return []any{map[string]any{"header": map[string]any{"key": "content-type", "value": "application/problem+json"}, "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"}}
}

func problemMark(status int) string { return fmt.Sprintf("<problem+json status %d>", status) }

func TestOPAEnvoyParity(t *testing.T) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	var identical, deliberate, total, policies int
	used := map[string]int{}
	for _, f := range files {
		var g golden
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &g); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		client := startPhantom(t, strings.TrimSuffix(f, ".json")+".rego", g.Query)
		policies++
		twin := func(n string) answer {
			for _, c := range g.Cases {
				if c.Name == n && c.Response != nil {
					return normalise(t, c.Response)
				}
			}
			return nil
		}
		for _, c := range g.Cases {
			total++
			r := &replay{policy: name, name: c.Name, twin: twin}
			if err := json.Unmarshal(c.Request, &r.request); err != nil {
				t.Fatal(err)
			}
			if c.Error != nil {
				r.want = answer{"error": c.Error.Code}
				r.wantError = c.Error.Message
			} else {
				r.want = normalise(t, c.Response)
			}
			var req authv3.CheckRequest
			if err := protojson.Unmarshal(c.Request, &req); err != nil {
				t.Fatalf("%s/%s: %v", name, c.Name, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			resp, err := client.Check(ctx, &req)
			cancel()
			if err != nil {
				r.got = answer{"error": err.Error()}
			} else {
				pj, _ := protojson.Marshal(resp)
				r.got = normalise(t, pj)
			}
			if reflect.DeepEqual(r.want, r.got) {
				identical++
				continue
			}
			var applied []string
			for _, d := range differences {
				if d.applies(r) {
					d.apply(r)
					applied = append(applied, d.name)
				}
			}
			sortLists(r.want)
			if len(applied) > 0 && reflect.DeepEqual(r.want, r.got) {
				deliberate++
				for _, a := range applied {
					used[a]++
				}
				continue
			}
			w, _ := json.Marshal(r.want)
			g, _ := json.Marshal(r.got)
			t.Errorf("%s/%s: differs from OPA-Envoy (after %v)\n opa-envoy: %s\n phantom:   %s", name, c.Name, applied, w, g)
		}
	}
	t.Logf("%d requests over %d policies: %d identical to OPA-Envoy, %d differ only as listed (%v), %d differ otherwise",
		total, policies, identical, deliberate, used, total-identical-deliberate)
	if total < 300 || policies < 15 {
		t.Errorf("corpus too small: %d requests, %d policies", total, policies)
	}
}

// startPhantom serves the policy with phantom-authz's real engine and gRPC
// server on loopback, as an OPA-Envoy user would run it: no credential
// stages, the policy alone decides.
func startPhantom(t *testing.T, regoFile, query string) authv3.AuthorizationClient {
	t.Helper()
	dir := t.TempDir()
	src, err := os.ReadFile(regoFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	pe, err := policy.New(policy.Config{Dir: dir, Query: query, Logger: quiet, EvalTimeout: -1})
	if err != nil {
		t.Fatalf("%s: %v", regoFile, err)
	}
	engine, err := authz.New(authz.Config{Decider: pe, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := server.NewGRPC(engine, health.NewServer())
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// normalise turns a protojson CheckResponse into generic JSON that compares
// equal whenever Envoy would act the same: header lists sorted by name (OPA-
// Envoy builds them from a map, in random order; values of one name keep
// their order), an empty okResponse dropped, decision ids checked to be UUIDs and then masked, and
// problem+json bodies checked and reduced to their status.
func normalise(t *testing.T, pj []byte) answer {
	t.Helper()
	var a answer
	if err := json.Unmarshal(pj, &a); err != nil {
		t.Fatal(err)
	}
	if ok, isMap := a["okResponse"].(map[string]any); isMap && len(ok) == 0 {
		// An OkHttpResponse that changes nothing: Envoy acts as without
		// one (OPA-Envoy sends none for a boolean decision).
		delete(a, "okResponse")
	}
	if md, ok := a["dynamicMetadata"].(map[string]any); ok {
		if id, ok := md["decision_id"].(string); ok {
			if uuidRE.MatchString(id) {
				md["decision_id"] = uuidMark
			} else {
				md["decision_id"] = "not a UUID: " + id
			}
		}
	}
	sortLists(a)
	if dr, ok := a["deniedResponse"].(map[string]any); ok && hasHeaderValue(a, "content-type", "application/problem+json") {
		var p struct {
			Status int    `json:"status"`
			Title  string `json:"title"`
		}
		body, _ := dr["body"].(string)
		if err := json.Unmarshal([]byte(body), &p); err == nil && p.Status == statusNumber(dr) && p.Title != "" {
			dr["body"] = problemMark(p.Status)
		}
	}
	return a
}

// sortLists sorts a's header and query parameter lists by name, keeping the
// order of the values of one name.
func sortLists(a answer) {
	for _, part := range []string{"okResponse", "deniedResponse"} {
		r, _ := a[part].(map[string]any)
		for _, k := range []string{"headers", "responseHeadersToAdd", "queryParametersToSet"} {
			if list, ok := r[k].([]any); ok {
				slices.SortStableFunc(list, func(x, y any) int { return strings.Compare(entryKey(x), entryKey(y)) })
			}
		}
	}
}

func entryKey(x any) string {
	e, _ := x.(map[string]any)
	if h, ok := e["header"].(map[string]any); ok {
		e = h
	}
	k, _ := e["key"].(string)
	return k
}

func isDenied(a answer) bool {
	st, _ := a["status"].(map[string]any)
	c, _ := st["code"].(float64)
	return a["error"] == nil && c != 0
}

func deniedStatus(a answer) string {
	dr, _ := a["deniedResponse"].(map[string]any)
	st, _ := dr["status"].(map[string]any)
	s, _ := st["code"].(string)
	return s
}

func deniedBody(a answer) string {
	dr, _ := a["deniedResponse"].(map[string]any)
	s, _ := dr["body"].(string)
	return s
}

// statusNumber is the HTTP status of a denied response (403 when unset).
func statusNumber(dr map[string]any) int {
	st, _ := dr["status"].(map[string]any)
	if n, ok := st["code"].(float64); ok {
		return int(n) // a status Envoy's enumeration does not name
	}
	name, _ := st["code"].(string)
	for code := 100; code < 600; code++ {
		if typev3.StatusCode_name[int32(code)] == name {
			return code
		}
	}
	return 403
}

func hasHeaderJSON(a answer, name string) bool {
	dr, _ := a["deniedResponse"].(map[string]any)
	hs, _ := dr["headers"].([]any)
	for _, h := range hs {
		if strings.EqualFold(entryKey(h), name) {
			return true
		}
	}
	return false
}

// echoedInput is the whole input a policy echoed in dynamic metadata.
func echoedInput(a answer) map[string]any {
	md, _ := a["dynamicMetadata"].(map[string]any)
	in, _ := md["input"].(map[string]any)
	return in
}

// headerValue is the value of a denial's header name, "" for none.
func headerValue(a answer, name string) string {
	dr, _ := a["deniedResponse"].(map[string]any)
	hs, _ := dr["headers"].([]any)
	for _, h := range hs {
		e, _ := h.(map[string]any)
		hv, _ := e["header"].(map[string]any)
		if strings.EqualFold(entryKey(h), name) {
			v, _ := hv["value"].(string)
			return v
		}
	}
	return ""
}

func hasHeaderValue(a answer, name, value string) bool {
	dr, _ := a["deniedResponse"].(map[string]any)
	hs, _ := dr["headers"].([]any)
	for _, h := range hs {
		e, _ := h.(map[string]any)
		hv, _ := e["header"].(map[string]any)
		if strings.EqualFold(entryKey(h), name) && hv["value"] == value {
			return true
		}
	}
	return false
}

// rewriteAppend reports whether a has header lists left with Envoy's default
// append action and, when apply, sets the actions phantom-authz uses (see
// the append-action difference).
func rewriteAppend(a answer, apply bool) bool {
	found := false
	for _, part := range []string{"okResponse", "deniedResponse"} {
		r, _ := a[part].(map[string]any)
		for _, k := range []string{"headers", "responseHeadersToAdd"} {
			list, _ := r[k].([]any)
			count := map[string]int{}
			for _, h := range list {
				count[strings.ToLower(entryKey(h))]++
			}
			seen := map[string]bool{}
			for _, h := range list {
				e, _ := h.(map[string]any)
				if _, set := e["appendAction"]; set {
					continue
				}
				key := strings.ToLower(entryKey(h))
				switch {
				case part == "okResponse" && k == "headers" && seen[key]:
					// appended: the deprecated flag, and APPEND (protojson's default)
					if apply {
						e["append"] = true
					}
					found = true
				case part == "okResponse" && k == "responseHeadersToAdd" && count[key] > 1:
					// appended, as OPA-Envoy has it
				default:
					if apply {
						e["appendAction"] = "OVERWRITE_IF_EXISTS_OR_ADD"
					}
					found = true
				}
				seen[key] = true
			}
		}
	}
	return found
}

func hasMixedCaseHeaders(req map[string]any) bool {
	a, _ := req["attributes"].(map[string]any)
	r, _ := a["request"].(map[string]any)
	h, _ := r["http"].(map[string]any)
	hs, _ := h["headers"].(map[string]any)
	for k := range hs {
		if strings.ToLower(k) != k {
			return true
		}
	}
	return false
}
