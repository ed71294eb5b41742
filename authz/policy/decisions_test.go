package policy_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/policy"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// newEngineCfg loads an engine from files with cfg (Dir and Logger set here).
func newEngineCfg(t *testing.T, cfg policy.Config, files map[string]string) (*policy.Engine, string) {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, files)
	cfg.Dir, cfg.Logger = dir, slog.New(slog.DiscardHandler)
	e, err := policy.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e, dir
}

// decideN decides r with tok n times, pausing between calls so the cache
// (which admits entries asynchronously) has taken the first answer, and
// returns the answers.
func decideN(t *testing.T, e *policy.Engine, r *authz.Request, tok *token.Token, n int) []authz.Decision {
	t.Helper()
	var out []authz.Decision
	for range n {
		d, err := e.Decide(context.Background(), r, tok)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
		time.Sleep(5 * time.Millisecond)
	}
	return out
}

func header(d authz.Decision, name string) string {
	for _, h := range d.Headers {
		if h.Key == name {
			return h.Value
		}
	}
	return ""
}

// echoPolicy answers with every field it reads, so a decision served for
// the wrong request shows.
const echoPolicy = `package envoy.authz

allow := {"allowed": true, "headers": {
	"x-method": input.attributes.request.http.method,
	"x-path": input.attributes.request.http.path,
	"x-host": host,
	"x-api": api,
	"x-tenant": tenant,
	"x-seg": seg,
	"x-lang": json.marshal(lang),
	"x-port": json.marshal(port),
	"x-sub": sub,
}}

default host := ""
host := input.attributes.request.http.host

default api := ""
api := input.attributes.contextExtensions.api

default tenant := "(none)"
tenant := input.attributes.request.http.headers["x-tenant"]

default seg := ""
seg := input.parsed_path[0]

default lang := []
lang := input.parsed_query.lang

default port := 0
port := input.attributes.source.address.socketAddress.portValue

default sub := "(no token)"
sub := input.token.sub
`

// A cached decision is never served for a request that differs in a field
// the policy reads, nor for another token; one that differs only in fields
// the policy does not read gets the same answer.
func TestDecisionCacheKeys(t *testing.T) {
	e, _ := newEngineCfg(t, policy.Config{}, map[string]string{"p.rego": echoPolicy})
	tokA, tokB := activeToken("read"), activeToken("read")
	tokB.Subject = "user-43"
	for _, tok := range []*token.Token{tokA, tokB} {
		if err := e.PrepareToken(tok); err != nil {
			t.Fatal(err)
		}
	}
	base := func() *authz.Request {
		r := getRequest("/api/x?lang=en", map[string]string{"x-tenant": "t1"})
		r.Source = authz.Peer{Address: "10.0.0.1", Port: 1234}
		r.ContextExtensions = map[string]string{"api": "accounts"}
		return r
	}
	want := map[string]string{
		"x-method": "GET", "x-path": "/api/x?lang=en", "x-host": "api.example.com", "x-api": "accounts",
		"x-tenant": "t1", "x-seg": "api", "x-lang": `["en"]`, "x-port": "1234", "x-sub": "user-42",
	}
	check := func(name string, r *authz.Request, tok *token.Token, changes map[string]string) {
		t.Helper()
		w := map[string]string{}
		for k, v := range want {
			w[k] = v
		}
		for k, v := range changes {
			w[k] = v
		}
		// Twice: the second answer may come from the cache.
		for i, d := range decideN(t, e, r, tok, 2) {
			got := map[string]string{}
			for _, h := range d.Headers {
				got[h.Key] = h.Value
			}
			if !reflect.DeepEqual(got, w) {
				t.Errorf("%s (call %d):\n got %v\nwant %v", name, i+1, got, w)
			}
		}
	}
	check("base", base(), tokA, nil)
	if !policy.DecisionCached(e, base(), tokA) {
		t.Fatal("the base request's decision was not cached")
	}
	cases := []struct {
		name    string
		mutate  func(r *authz.Request)
		tok     *token.Token
		changes map[string]string
	}{
		{"method", func(r *authz.Request) { r.Method = "POST" }, tokA, map[string]string{"x-method": "POST"}},
		{"path", func(r *authz.Request) { r.Path = "/v2/x?lang=en" }, tokA, map[string]string{"x-path": "/v2/x?lang=en", "x-seg": "v2"}},
		{"query", func(r *authz.Request) { r.Path = "/api/x?lang=fr" }, tokA, map[string]string{"x-path": "/api/x?lang=fr", "x-lang": `["fr"]`}},
		{"host", func(r *authz.Request) { r.Host = "other.example.com" }, tokA, map[string]string{"x-host": "other.example.com"}},
		{"context extension", func(r *authz.Request) { r.ContextExtensions = map[string]string{"api": "admin"} }, tokA, map[string]string{"x-api": "admin"}},
		{"no context extension", func(r *authz.Request) { r.ContextExtensions = nil }, tokA, map[string]string{"x-api": ""}},
		{"header read", func(r *authz.Request) { r.Headers["x-tenant"] = "t2" }, tokA, map[string]string{"x-tenant": "t2"}},
		{"header empty", func(r *authz.Request) { r.Headers["x-tenant"] = "" }, tokA, map[string]string{"x-tenant": ""}},
		{"header absent", func(r *authz.Request) { delete(r.Headers, "x-tenant") }, tokA, map[string]string{"x-tenant": "(none)"}},
		{"source port", func(r *authz.Request) { r.Source.Port = 4321 }, tokA, map[string]string{"x-port": "4321"}},
		{"another token", func(*authz.Request) {}, tokB, map[string]string{"x-sub": "user-43"}},
		{"no token", func(*authz.Request) {}, nil, map[string]string{"x-sub": "(no token)"}},
		{"header not read", func(r *authz.Request) { r.Headers["x-other"] = "1"; r.ID = "req-2" }, tokA, nil},
	}
	for _, c := range cases {
		r := base()
		c.mutate(r)
		check(c.name, r, c.tok, c.changes)
		// And back: the base request still gets its own answer.
		check(c.name+", then base again", base(), tokA, nil)
	}
}

// A reload never serves a decision of the previous policy set.
func TestDecisionCacheReload(t *testing.T) {
	e, dir := newEngineCfg(t, policy.Config{PollInterval: 20 * time.Millisecond},
		map[string]string{"p.rego": "package envoy.authz\n\nallow := input.attributes.request.http.method == \"GET\"\n"})
	r := getRequest("/", nil)
	for _, d := range decideN(t, e, r, nil, 3) {
		if !d.Allowed {
			t.Fatalf("before reload: want allow, got %+v", d)
		}
	}
	writeFiles(t, dir, map[string]string{"p.rego": "package envoy.authz\n\nallow := input.attributes.request.http.method == \"POST\"\n"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Watch(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(3 * time.Second)
	for ok, _ := e.Reloads(); ok == 0; ok, _ = e.Reloads() {
		if time.Now().After(deadline) {
			t.Fatal("no reload")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, d := range decideN(t, e, r, nil, 3) {
		if d.Allowed {
			t.Fatalf("after reload: a decision of the old policy was served: %+v", d)
		}
	}
}

// A decision that called a non-deterministic builtin, or in which a builtin
// failed, is made again for every request.
func TestDecisionCacheNondeterministic(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"n": %d}`, calls.Add(1))
	}))
	defer srv.Close()

	tests := []struct {
		name, rules string
		differ      bool // each answer differs
	}{
		{"time.now_ns", `allow := {"allowed": true, "headers": {"x": sprintf("%d", [time.now_ns()])}}`, true},
		{"http.send", `allow := {"allowed": true, "headers": {"x": sprintf("%v", [http.send({"method": "GET", "url": "` + srv.URL + `"}).body.n])}}`, true},
		{"rand.intn", `allow := {"allowed": true, "headers": {"x": sprintf("%d-%d", [rand.intn(input.attributes.request.http.id, 1000000000), time.now_ns()])}}`, true},
		// http.send to nowhere fails: the failure is not recorded as a
		// call, but the failed builtin keeps it out of the cache.
		{"failed http.send", `default allow := {"allowed": false}
allow := {"allowed": true} if http.send({"method": "GET", "url": "http://127.0.0.1:1/", "timeout": "50ms"})`, false},
		// Only the branch taken counts: a request that does not reach the
		// clock is cached.
		{"clock on another branch", `allow := {"allowed": true, "headers": {"x": "static"}} if input.attributes.request.http.method == "GET"
else := {"allowed": true, "headers": {"x": sprintf("%d", [time.now_ns()])}}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := newEngineCfg(t, policy.Config{}, map[string]string{"p.rego": "package envoy.authz\n\n" + tt.rules + "\n"})
			ds := decideN(t, e, getRequest("/", nil), nil, 3)
			if tt.differ {
				seen := map[string]bool{}
				for _, d := range ds {
					seen[header(d, "x")] = true
				}
				if len(seen) != len(ds) {
					t.Errorf("answers repeat, a cached decision was served: %+v", ds)
				}
			}
		})
	}

	// The internal view: which of them were cached.
	t.Run("cached or not", func(t *testing.T) {
		for _, tt := range tests {
			e, _ := newEngineCfg(t, policy.Config{}, map[string]string{"p.rego": "package envoy.authz\n\n" + tt.rules + "\n"})
			r := getRequest("/", nil)
			decideN(t, e, r, nil, 2)
			wantCached := tt.name == "clock on another branch"
			if got := policy.DecisionCached(e, r, nil); got != wantCached {
				t.Errorf("%s: cached = %v, want %v", tt.name, got, wantCached)
			}
		}
	})
}

// Policy sets whose decisions can never be cached: they read the whole
// input, or fields unique to every request.
func TestDecisionCacheNotKeyable(t *testing.T) {
	for _, rules := range []string{
		`allow := {"allowed": true, "dynamic_metadata": {"in": input}} if input`,
		`allow if input.attributes.request.http.id`,
		`allow if input.attributes.request.time`,
		`allow if count(input.attributes.request.http.headers) > 0`,
		`allow if input.attributes.request.http.headers[lower("X")]`,
		`allow if input.attributes.request.http.body`,
		`allow if crypto.x509.parse_and_verify_certificates("x")`,
	} {
		e, _ := newEngineCfg(t, policy.Config{}, map[string]string{"p.rego": "package envoy.authz\n\ndefault allow := false\n\n" + rules + "\n"})
		r := getRequest("/", nil)
		r.Time = time.Unix(1700000000, 0)
		decideN(t, e, r, nil, 2)
		if policy.DecisionCached(e, r, nil) {
			t.Errorf("%s: a decision was cached", rules)
		}
	}
}

// The engine appends its own headers to a decision: callers appending to
// the same cached decision must not write into each other's headers (one
// request's JWT in another's answer).
func TestDecisionCacheCopies(t *testing.T) {
	e, _ := newEngineCfg(t, policy.Config{}, map[string]string{"p.rego": `package envoy.authz

allow := {"allowed": true, "headers": {"x-a": "1", "x-b": "2", "x-c": "3"}, "request_headers_to_remove": ["x-d", "x-e", "x-f"]}
`})
	r := getRequest("/", nil)
	decideN(t, e, r, nil, 2)
	var ds []authz.Decision
	for i := range 3 {
		d, err := e.Decide(context.Background(), r, nil)
		if err != nil {
			t.Fatal(err)
		}
		d.Headers = append(d.Headers, authz.Header{Key: "authorization", Value: fmt.Sprint(i)})
		d.RemoveHeaders = append(d.RemoveHeaders, fmt.Sprint(i))
		ds = append(ds, d)
	}
	for i, d := range ds {
		if len(d.Headers) != 4 || d.Headers[3].Value != fmt.Sprint(i) || len(d.RemoveHeaders) != 4 || d.RemoveHeaders[3] != fmt.Sprint(i) {
			t.Errorf("decision %d was changed by another caller: %+v", i, d)
		}
	}

	// The same, concurrently (the race detector sees shared writes).
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				d, err := e.Decide(context.Background(), r, nil)
				if err != nil {
					t.Error(err)
					return
				}
				v := fmt.Sprint(g, i)
				d.Headers = append(d.Headers, authz.Header{Key: "authorization", Value: v})
				d.ResponseHeaders = append(d.ResponseHeaders, authz.Header{Key: "x-id", Value: v})
				d.RemoveHeaders = append(d.RemoveHeaders, v)
				if d.Headers[3].Value != v || d.RemoveHeaders[3] != v || d.ResponseHeaders[0].Value != v {
					t.Errorf("another caller's header in this decision: %+v", d)
					return
				}
			}
		})
	}
	wg.Wait()
}

// Property: for random requests, a decision made with the cache is the one
// made without it, whichever fields the policy reads.
func TestDecisionCacheMatchesUncached(t *testing.T) {
	policies := map[string]string{
		"echo": echoPolicy,
		"parsed only": `package envoy.authz
allow := {"allowed": true, "headers": {"x": json.marshal([input.parsed_path, input.parsed_query])}}
`,
		"whole maps": `package envoy.authz
allow := {"allowed": true, "headers": {"x": json.marshal([ce, labels, tenant])}}
default ce := {}
ce := input.attributes.contextExtensions
default labels := {}
labels := input.attributes.destination.labels
default tenant := "-"
tenant := input.attributes.request.http.headers["x-tenant"]
`,
		"peer": `package envoy.authz
allow := {"allowed": true, "headers": {"x": json.marshal(src)}}
default src := {}
src := input.attributes.source
`,
	}
	for name, pol := range policies {
		t.Run(name, func(t *testing.T) {
			files := map[string]string{"p.rego": pol}
			cached, _ := newEngineCfg(t, policy.Config{}, files)
			uncached, _ := newEngineCfg(t, policy.Config{DecisionCacheBytes: -1}, files)
			toks := []*token.Token{nil, activeToken("read"), activeToken("write")}
			toks[2].Subject = "user-7"
			for _, tok := range toks[1:] {
				if err := cached.PrepareToken(tok); err != nil {
					t.Fatal(err)
				}
			}
			pick := func(rng *rand.Rand, vs ...string) string { return vs[rng.IntN(len(vs))] }
			maybeMap := func(rng *rand.Rand) map[string]string {
				switch rng.IntN(4) {
				case 0:
					return nil
				case 1:
					return map[string]string{"api": pick(rng, "", "accounts", "admin")}
				case 2:
					return map[string]string{"api": "accounts", "v": pick(rng, "1", "2")}
				}
				return map[string]string{"v": "accounts"}
			}
			rng := rand.New(rand.NewPCG(1, 2))
			hits := 0
			for i := range 3000 {
				r := getRequest(pick(rng, "/", "/api/x", "/api/x?lang=en", "/api/x?lang=fr", "/v2/y", "//api", "/a%2Fb"), nil)
				r.Query = pick(rng, "", "lang=de")
				r.Method = pick(rng, "GET", "POST")
				r.Host = pick(rng, "", "a", "b")
				if v := pick(rng, "", "t1", "t2", "-"); v != "-" {
					r.Headers["x-tenant"] = v
				}
				r.Headers["x-unread"] = pick(rng, "1", "2")
				if rng.IntN(4) == 0 {
					// Only the raw list, as with encode_raw_headers.
					r.RawHeaders = []authz.Header{{Key: "x-tenant", Value: pick(rng, "t1", "t3")}}
					r.Headers = nil
				}
				r.ID = pick(rng, "r1", "r2")
				r.Source = authz.Peer{Address: pick(rng, "", "10.0.0.1"), Port: uint32(rng.IntN(3)), Principal: pick(rng, "", "p"),
					Labels: maybeMap(rng)}
				r.Destination.Labels = maybeMap(rng)
				r.ContextExtensions = maybeMap(rng)
				tok := toks[rng.IntN(len(toks))]
				if policy.DecisionCached(cached, r, tok) {
					hits++
				}
				got, err1 := cached.Decide(context.Background(), r, tok)
				want, err2 := uncached.Decide(context.Background(), r, tok)
				if (err1 == nil) != (err2 == nil) || !reflect.DeepEqual(got, want) {
					t.Fatalf("request %d %+v:\ncached   %+v %v\nuncached %+v %v", i, r, got, err1, want, err2)
				}
			}
			if hits < 100 {
				t.Errorf("only %d of 3000 decisions came from the cache", hits)
			}
		})
	}
}

// A request the builder refuses (bad escapes in the path, a JSON body that
// does not parse) is refused even when a decision for its key is cached,
// and a body the policy reads is never answered from the cache.
func TestDecisionCacheInvalidInput(t *testing.T) {
	e, _ := newEngineCfg(t, policy.Config{}, map[string]string{"p.rego": `package envoy.authz

allow := {"allowed": true, "headers": {"x": json.marshal(amount)}} if input.attributes.request.http.method
default amount := 0
amount := input.parsed_body.amount
`})
	ok := getRequest("/ok", map[string]string{"content-type": "application/json"})
	decideN(t, e, ok, nil, 2)
	if !policy.DecisionCached(e, ok, nil) {
		t.Fatal("not cached")
	}
	badPath := getRequest("/a%zz", map[string]string{"content-type": "application/json"})
	if _, err := e.Decide(context.Background(), badPath, nil); !errors.Is(err, authz.ErrInvalidInput) {
		t.Errorf("bad escape: want ErrInvalidInput, got %v", err)
	}
	for _, body := range []string{`{"amount": 5}`, `{"amount": 7}`} {
		r := getRequest("/ok", map[string]string{"content-type": "application/json"})
		r.Body = body
		for _, d := range decideN(t, e, r, nil, 2) {
			if want := body[len(`{"amount": `) : len(body)-1]; header(d, "x") != want {
				t.Errorf("body %s: got %+v", body, d)
			}
		}
	}
	badBody := getRequest("/ok", map[string]string{"content-type": "application/json"})
	badBody.Body = "{"
	if _, err := e.Decide(context.Background(), badBody, nil); !errors.Is(err, authz.ErrInvalidInput) {
		t.Errorf("bad body: want ErrInvalidInput, got %v", err)
	}
}

// A key too long for the cache's buffer is not cached, and two requests
// that differ only past its end get their own decisions.
func TestDecisionCacheLongKey(t *testing.T) {
	e, _ := newEngineCfg(t, policy.Config{}, map[string]string{"p.rego": echoPolicy})
	long := strings.Repeat("t", 2000)
	for _, v := range []string{long + "1", long + "2"} {
		r := getRequest("/", map[string]string{"x-tenant": v})
		for _, d := range decideN(t, e, r, nil, 2) {
			if header(d, "x-tenant") != v {
				t.Fatalf("x-tenant %q...: got a decision for %q...", v[len(v)-3:], header(d, "x-tenant")[len(v)-3:])
			}
		}
		if policy.DecisionCached(e, r, nil) {
			t.Error("a key longer than the buffer was cached")
		}
	}
}

// The shipped policies keep their decisions cacheable: a typical API call
// with a token is answered from the cache the second time. A change to
// policies/ that reads the whole input, or every header, fails here: it
// would make every request evaluate again (see decisions.go).
func TestShippedPoliciesCacheable(t *testing.T) {
	e, err := policy.New(policy.Config{Dir: "../../policies", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	tok := activeToken("read")
	if err := e.PrepareToken(tok); err != nil {
		t.Fatal(err)
	}
	r := getRequest("/api/accounts/1", map[string]string{"authorization": "Bearer x", "x-request-id": "r-1"})
	r.ContextExtensions = map[string]string{"api": "accounts"}
	for _, d := range decideN(t, e, r, tok, 2) {
		if !d.Allowed {
			t.Fatalf("want allow, got %+v", d)
		}
	}
	if !policy.DecisionCached(e, r, tok) {
		t.Error("the shipped policies' decision was not cached")
	}
}

// The fields OPA-Envoy's input has beyond the request line (Envoy's
// partial-body mark, source_principal, a pipe address, a header list sent
// only raw) take part in the decision
// key: a cached answer for one request is never served for another that
// differs only there.
func TestDecisionCacheOPAEnvoyFields(t *testing.T) {
	tests := []struct {
		name        string
		rule        string
		first, then func() *authz.Request
	}{
		{"partial-body mark", `allow if input.truncated_body`,
			func() *authz.Request { return getRequest("/x", nil) },
			func() *authz.Request { return getRequest("/x", map[string]string{"x-envoy-auth-partial-body": "true"}) }},
		{"source_principal", `allow if input.source_principal == "spiffe://a"`,
			func() *authz.Request { r := getRequest("/x", nil); r.Source.Principal = "spiffe://b"; return r },
			func() *authz.Request { r := getRequest("/x", nil); r.Source.Principal = "spiffe://a"; return r }},
		{"pipe address", `allow if input.attributes.source.address.pipe.path == "/s"`,
			func() *authz.Request { return getRequest("/x", nil) },
			func() *authz.Request {
				r := getRequest("/x", nil)
				r.Source.AddressValue = map[string]any{"pipe": map[string]any{"path": "/s"}}
				return r
			}},
		{"raw header list only", `allow if not input.attributes.request.http.headers["x-a"]`,
			func() *authz.Request { return getRequest("/x", map[string]string{"x-a": "1"}) },
			func() *authz.Request {
				r := getRequest("/x", map[string]string{"x-a": "1"})
				r.RawHeaders, r.HeadersJoined = []authz.Header{{Key: "x-a", Value: "1"}}, true
				return r
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, map[string]string{"p.rego": "package envoy.authz\n\ndefault allow := false\n\n" + tt.rule + "\n"})
			for i, d := range decideN(t, e, tt.first(), nil, 3) {
				if d.Allowed {
					t.Fatalf("first request, decision %d: allowed", i)
				}
			}
			if d := decideN(t, e, tt.then(), nil, 1)[0]; !d.Allowed {
				t.Fatalf("the other request got the first one's cached denial: %+v", d)
			}
		})
	}
}

// Envoy as envoy/envoy.yaml ships it (encode_raw_headers) sends the headers
// only as a list: the input then has no headers map, so a policy naming a
// header sees it absent whatever its value, and the decision is cached
// (before, every such check was evaluated).
func TestDecisionCacheRawHeadersOnly(t *testing.T) {
	e := newEngine(t, map[string]string{"p.rego": "package envoy.authz\n\ndefault allow := false\n\n" +
		`allow if not input.attributes.request.http.headers["x-a"]` + "\n"})
	joined := func(v string) *authz.Request {
		r := getRequest("/x", map[string]string{"x-a": v})
		r.RawHeaders, r.HeadersJoined = []authz.Header{{Key: "x-a", Value: v}}, true
		return r
	}
	for i, d := range decideN(t, e, joined("1"), nil, 2) {
		if !d.Allowed {
			t.Fatalf("decision %d: the header list is not input.attributes.request.http.headers, want allow, got %+v", i, d)
		}
	}
	if !policy.DecisionCached(e, joined("2"), nil) {
		t.Error("a request with its headers only as a list was not served from the decision cache")
	}
	if d := decideN(t, e, getRequest("/x", map[string]string{"x-a": "1"}), nil, 1)[0]; d.Allowed {
		t.Errorf("the same header in the headers map got the raw-only request's cached allow: %+v", d)
	}
}
