package token

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

type countingTransport struct {
	next http.RoundTripper
	n    atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(r)
}

// A miss is a token.resolve span with the introspection and the token's
// preparation beneath it; a hit is a token.resolve span alone. Whether the
// cache answered is on the caller's span too. The transport hook carries
// the introspection call and its latency is recorded.
func TestResolveSpansAndMetrics(t *testing.T) {
	srv := newOAuthServer(t, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"active": true, "sub": "alice", "scope": "read"})
	})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	var tr *countingTransport
	r := mustNew(t, Config{
		Introspection: introspectionConfig(srv),
		Prepare:       func(*Token) error { return nil },
		Tracer:        tp.Tracer("test"),
		Meter:         mp.Meter("test"),
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			tr = &countingTransport{next: rt}
			return tr
		},
	})

	for i, wantHit := range []bool{false, true} {
		ctx, check := tp.Tracer("test").Start(context.Background(), "Check")
		if _, err := r.Resolve(ctx, bearer("opaque-abc")); err != nil {
			t.Fatal(err)
		}
		check.End()
		spans := rec.Ended()
		byName := map[string]sdktrace.ReadOnlySpan{}
		for _, s := range spans {
			if s.SpanContext().TraceID() == check.SpanContext().TraceID() {
				byName[s.Name()] = s
			}
		}
		resolve := byName["token.resolve"]
		if resolve == nil || resolve.Parent().SpanID() != check.SpanContext().SpanID() {
			t.Fatalf("call %d: no token.resolve span under Check: %v", i, byName)
		}
		for _, sp := range []sdktrace.ReadOnlySpan{resolve, byName["Check"]} {
			var hit, found bool
			for _, kv := range sp.Attributes() {
				if kv.Key == attrCacheHit {
					hit, found = kv.Value.AsBool(), true
				}
			}
			if !found || hit != wantHit {
				t.Errorf("call %d: %s cache.hit = %v (set %v), want %v", i, sp.Name(), hit, found, wantHit)
			}
		}
		for _, name := range []string{"token.introspect", "token.prepare"} {
			s := byName[name]
			if wantHit {
				if s != nil {
					t.Errorf("call %d: a cache hit made a %s span", i, name)
				}
				continue
			}
			if s == nil || s.Parent().SpanID() != resolve.SpanContext().SpanID() {
				t.Errorf("call %d: no %s span under token.resolve", i, name)
			}
		}
	}
	if tr == nil || tr.n.Load() != 1 {
		t.Errorf("the wrapped transport carried %v calls, want 1", tr)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var count uint64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if h, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == "phantom_authz.introspection.duration" {
				for _, p := range h.DataPoints {
					if v, _ := p.Attributes.Value("outcome"); v.AsString() == "active" {
						count += p.Count
					}
				}
			}
		}
	}
	if count != 1 {
		t.Errorf("introspection.duration{outcome=active} counted %d calls, want 1", count)
	}
	if st := r.Stats(); st.CacheBytes <= 0 || st.Hits != 1 || st.Misses != 1 {
		t.Errorf("stats %+v: want a non-empty cache, 1 hit, 1 miss", st)
	}
}
