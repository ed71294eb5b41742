package policy

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
)

// The straightforward way: rego.PrepareForEval, the whole input built per
// request, default store, caches and metrics.
func BenchmarkZZBaseline(b *testing.B) {
	res, err := loader.NewFileLoader().WithRegoVersion(ast.RegoV1).Filtered([]string{"../../policies"}, loaderFilter)
	if err != nil {
		b.Fatal(err)
	}
	opts := []func(*rego.Rego){rego.Query("data.envoy.authz.allow"), rego.Store(mustStore(res))}
	for _, m := range res.ParsedModules() {
		opts = append(opts, rego.ParsedModule(m))
	}
	pq, err := rego.New(opts...).PrepareForEval(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	tok := benchToken()
	r := benchRequest()
	ctx := context.Background()
	b.ReportAllocs()
	start := cpuTime()
	ti, _ := newTokenInput(tok)
	for b.Loop() {
		in, err := buildInput(all, r, ti)
		if err != nil {
			b.Fatal(err)
		}
		rs, err := pq.Eval(ctx, rego.EvalParsedInput(in.Value))
		if err != nil || len(rs) != 1 {
			b.Fatal(err)
		}
		if m, ok := rs[0].Expressions[0].Value.(map[string]any); !ok || m["allowed"] != true {
			b.Fatalf("%v", rs[0].Expressions[0].Value)
		}
	}
	b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

func mustStore(res *loader.Result) storage.Store {
	s, _ := res.Store()
	return s
}
