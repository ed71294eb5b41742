package authz_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/decisionlog"
	"github.com/phantom-authz/phantom-authz/authz/mint"
	"github.com/phantom-authz/phantom-authz/authz/policy"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// BenchmarkEngineCachedOpaqueTelemetry is BenchmarkEngineCachedOpaque with
// each kind of telemetry on, to measure what it costs on the hot path.
// "tracing" exports every span through a batch processor to an exporter
// that drops them, under a server span as otelgrpc makes one.
func BenchmarkEngineCachedOpaqueTelemetry(b *testing.B) {
	introspect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"active": true, "scope": "openid read write", "client_id": "web-app", "sub": "user-42",
			"exp": time.Now().Add(time.Hour).Unix(), "iss": "https://login.example.com",
		})
	}))
	defer introspect.Close()

	sampled := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	defer sampled.Shutdown(context.Background())
	// Envoy (or the sampler) decided not to sample: spans exist but record nothing.
	unsampled := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	defer unsampled.Shutdown(context.Background())
	// As authz/telemetry builds it for the Prometheus exporter.
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()),
		sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter))
	dl, _ := decisionlog.NewJSON(io.Discard, nil)

	for _, tc := range []struct {
		name      string
		tracing   bool
		unsampled bool
		metrics   bool
		dlog      bool
	}{
		{name: "off"},
		{name: "metrics", metrics: true},
		{name: "tracing-unsampled", tracing: true, unsampled: true},
		{name: "tracing", tracing: true},
		{name: "tracing+metrics", tracing: true, metrics: true},
		{name: "all+decision_log", tracing: true, metrics: true, dlog: true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tp := sampled
			if tc.unsampled {
				tp = unsampled
			}
			pol, err := policy.New(policy.Config{Dir: "../policies"})
			if err != nil {
				b.Fatal(err)
			}
			m, err := mint.New(mint.Config{Issuer: "https://phantom-authz.local", Audience: []string{"api"}, Generate: true})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			cfg := authz.Config{Decider: pol, Minter: m, OwnedHeaders: []string{"x-jwt-*", "x-user-*"}}
			tcfg := token.Config{
				Introspection: &token.IntrospectionConfig{Endpoint: introspect.URL, ClientID: "pa", ClientSecret: "s", AllowInsecureHTTP: true},
			}
			if tc.tracing {
				cfg.Tracer, tcfg.Tracer = tp.Tracer("bench"), tp.Tracer("bench")
			}
			if tc.metrics {
				cfg.Meter, tcfg.Meter = mp.Meter("bench"), mp.Meter("bench")
			}
			if tc.dlog {
				cfg.DecisionLog = dl
			}
			var e *authz.Engine
			tcfg.Prepare = func(t *token.Token) error { return e.PrepareToken(t) }
			res, err := token.New(tcfg)
			if err != nil {
				b.Fatal(err)
			}
			defer res.Close()
			cfg.Resolver = res
			if e, err = authz.New(cfg); err != nil {
				b.Fatal(err)
			}
			r := benchRequest("Bearer 2YotnFZFEjr1zCsicMWpAA")
			ctx := context.Background()
			check := func() bool {
				c := ctx
				if tc.tracing {
					var span trace.Span
					c, span = tp.Tracer("otelgrpc").Start(ctx, "envoy.service.auth.v3.Authorization/Check", trace.WithSpanKind(trace.SpanKindServer))
					defer span.End()
				}
				return e.Check(c, r).Allowed
			}
			if !check() {
				b.Fatal("want allow")
			}
			b.ReportAllocs()
			for b.Loop() {
				if !check() {
					b.Fatal("denied")
				}
			}
		})
	}
}
