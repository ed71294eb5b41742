package policy

import (
	"context"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// benchRequest is a typical API call as Envoy describes it.
func benchRequest() *authz.Request {
	return &authz.Request{
		ID:       "9f1c6a52-3b2e-4c4e-9a57-0d3c1c2f8e11",
		Method:   "GET",
		Scheme:   "https",
		Host:     "api.example.com",
		Path:     "/api/accounts/123",
		Protocol: "HTTP/1.1",
		Size:     -1,
		Headers: map[string]string{
			":authority":        "api.example.com",
			":method":           "GET",
			":path":             "/api/accounts/123",
			":scheme":           "https",
			"accept":            "application/json",
			"authorization":     "Bearer 2YotnFZFEjr1zCsicMWpAA",
			"user-agent":        "curl/8.7.1",
			"x-forwarded-proto": "https",
			"x-request-id":      "9f1c6a52-3b2e-4c4e-9a57-0d3c1c2f8e11",
			"x-forwarded-for":   "203.0.113.7",
		},
		Source:      authz.Peer{Address: "203.0.113.7", Port: 51234},
		Destination: authz.Peer{Address: "10.0.0.5", Port: 8443},
		Time:        time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func benchToken() *token.Token {
	return &token.Token{
		Active:   true,
		Kind:     token.KindOpaque,
		Scopes:   []string{"openid", "read", "write"},
		ClientID: "web-app",
		Subject:  "user-42",
		Expiry:   time.Unix(1900000000, 0),
		Claims: map[string]any{
			"iss": "https://login.example.com", "sub": "user-42", "client_id": "web-app",
			"scope": "openid read write", "exp": float64(1900000000), "aud": []any{"api"},
		},
	}
}

// BenchmarkDecide measures one allow decision of the default policy: a
// prepared token, ten headers, GET /api/accounts/123. The request repeats,
// so after the first it is answered from the decision cache.
func BenchmarkDecide(b *testing.B) { benchDecide(b, Config{Dir: "../../policies"}) }

// BenchmarkDecideUncached is the same decision evaluated every time: what a
// request the decision cache has not seen costs (input built as AST,
// pooled evaluator, the policy evaluated).
func BenchmarkDecideUncached(b *testing.B) {
	benchDecide(b, Config{Dir: "../../policies", DecisionCacheBytes: -1})
}

func benchDecide(b *testing.B, cfg Config) {
	e, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	tok := benchToken()
	if err := e.PrepareToken(tok); err != nil {
		b.Fatal(err)
	}
	r := benchRequest()
	ctx := context.Background()
	d, err := e.Decide(ctx, r, tok)
	if err != nil || !d.Allowed {
		b.Fatalf("want allow, got %+v, %v", d, err)
	}
	e.decisions.wait()
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		if _, err := e.Decide(ctx, r, tok); err != nil {
			b.Fatal(err)
		}
	}
	if cpu := cpuTime() - start; cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkDecideRegoReference is the same decision the straightforward way,
// kept as the reference BenchmarkDecide is measured against:
// rego.PrepareForEval, the whole input built per request, OPA's default
// store, caches, metrics and result conversion.
func BenchmarkDecideRegoReference(b *testing.B) {
	res, err := loader.NewFileLoader().WithRegoVersion(ast.RegoV1).Filtered([]string{"../../policies"}, loaderFilter)
	if err != nil {
		b.Fatal(err)
	}
	store, err := res.Store()
	if err != nil {
		b.Fatal(err)
	}
	opts := []func(*rego.Rego){rego.Query(DefaultQuery), rego.Store(store)}
	for _, m := range res.ParsedModules() {
		opts = append(opts, rego.ParsedModule(m))
	}
	lib, err := Library()
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range lib {
		opts = append(opts, rego.ParsedModule(m))
	}
	pq, err := rego.New(opts...).PrepareForEval(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	tok, err := newTokenInput(benchToken())
	if err != nil {
		b.Fatal(err)
	}
	r := benchRequest()
	ctx := context.Background()
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		in, err := buildInput(all, r, tok)
		if err != nil {
			b.Fatal(err)
		}
		rs, err := pq.Eval(ctx, rego.EvalParsedInput(in.Value))
		if err != nil || len(rs) != 1 {
			b.Fatal(err)
		}
		if d, ok := rs[0].Expressions[0].Value.(map[string]any); !ok || d["allowed"] != true {
			b.Fatalf("want allow, got %v", rs[0].Expressions[0].Value)
		}
	}
	if cpu := cpuTime() - start; cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}
