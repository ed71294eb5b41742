package main

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/binding"
	"github.com/phantom-authz/phantom-authz/authz/config"
	"github.com/phantom-authz/phantom-authz/authz/decisionlog"
	"github.com/phantom-authz/phantom-authz/authz/telemetry"
)

// setupTelemetry builds the providers the configuration and the OTEL_*
// environment ask for. Export failures (a collector down) are logged as
// warnings through log, not printed by OpenTelemetry's default handler.
func setupTelemetry(ctx context.Context, cfg config.Config, log *slog.Logger) (*telemetry.Telemetry, error) {
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("telemetry: export failed", "err", err)
	}))
	dl := cfg.Telemetry.DecisionLog
	return telemetry.Setup(ctx, telemetry.Config{
		ServiceName: cfg.Telemetry.Tracing.ServiceName,
		Version:     version,
		Tracing:     cfg.Telemetry.Tracing.Enabled,
		Metrics:     cfg.Telemetry.Metrics.Enabled,
		Logs:        dl.Enabled && dl.Output == "otlp",
	})
}

// observeEngine hands the engine its tracer, meter, decision log and dry-run
// routes. tel is nil for commands that report nothing (check).
func observeEngine(ecfg *authz.Config, cfg config.Config, tel *telemetry.Telemetry) error {
	ecfg.DryRun = authz.DryRun{All: cfg.DryRun.All, Routes: cfg.DryRun.Routes, Paths: cfg.DryRun.Paths}
	if tel == nil {
		return nil
	}
	ecfg.Tracer, ecfg.Meter = tel.Tracer(), tel.Meter()
	ecfg.SafeClaims = cfg.Telemetry.Tracing.SafeClaims
	dl := cfg.Telemetry.DecisionLog
	if !dl.Enabled {
		return nil
	}
	var (
		log *decisionlog.Logger
		err error
	)
	if dl.Output == "otlp" {
		log, err = decisionlog.NewOTLP(tel.LoggerProvider, telemetry.ScopeName, dl.Mask)
	} else {
		// Stdout, apart from the service's own logs on stderr.
		log, err = decisionlog.NewJSON(os.Stdout, dl.Mask)
	}
	if err != nil {
		return err
	}
	ecfg.DecisionLog = log
	return nil
}

// grpcOptions instruments the gRPC server when tracing is on: the otelgrpc
// stats handler makes the server span of each Check, child of the span
// Envoy sends in traceparent (or B3) metadata.
func grpcOptions(tel *telemetry.Telemetry) []grpc.ServerOption {
	if !tel.Tracing() {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(tel.TracerProvider),
		otelgrpc.WithMeterProvider(tel.MeterProvider),
		otelgrpc.WithPropagators(tel.Propagator),
		// Health checks and reflection are not worth a trace.
		otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
			return info.FullMethodName == "/envoy.service.auth.v3.Authorization/Check"
		}),
	))}
}

// wrapTransport instruments the HTTP client of introspection and JWKS
// calls: a client span per call, trace context passed to the OAuth server.
func wrapTransport(tel *telemetry.Telemetry) func(http.RoundTripper) http.RoundTripper {
	if !tel.Tracing() {
		return nil
	}
	return func(rt http.RoundTripper) http.RoundTripper {
		return otelhttp.NewTransport(rt,
			otelhttp.WithTracerProvider(tel.TracerProvider),
			otelhttp.WithMeterProvider(tel.MeterProvider),
			otelhttp.WithPropagators(tel.Propagator))
	}
}

// registerStageMetrics exposes the counters the stages keep themselves
// (token cache and introspection, policy reloads) as observable instruments,
// read at each scrape: nothing is counted twice on the request path.
func registerStageMetrics(m metric.Meter, s *stack) error {
	if m == nil {
		return nil
	}
	newCounter := func(name, desc string) (metric.Int64ObservableCounter, error) {
		return m.Int64ObservableCounter(name, metric.WithDescription(desc))
	}
	reloads, err := newCounter("phantom_authz.policy.reloads", "Policy reloads, by outcome (ok, failed: the last good set kept serving).")
	if err != nil {
		return err
	}
	evalTimeouts, err := newCounter("phantom_authz.policy.eval_timeouts", "Policy evaluations stopped at policy.eval_timeout (the request denied with 503).")
	if err != nil {
		return err
	}
	insts := []metric.Observable{reloads, evalTimeouts}
	var replays metric.Int64ObservableCounter
	if s.replays != nil {
		if replays, err = newCounter("phantom_authz.dpop.replays_refused", "DPoP proofs refused because they had been used before (RFC 9449 §11.1)."); err != nil {
			return err
		}
		insts = append(insts, replays)
	}
	var (
		hits, misses, evictions, expirations, intro, coalesced, jwks, jwtVerify metric.Int64ObservableCounter
		size                                                                    metric.Int64ObservableGauge
	)
	if s.resolver != nil {
		for _, c := range []struct {
			dst        *metric.Int64ObservableCounter
			name, desc string
		}{
			{&hits, "phantom_authz.cache.hits", "Token lookups answered by the cache."},
			{&misses, "phantom_authz.cache.misses", "Token lookups the cache could not answer."},
			{&evictions, "phantom_authz.cache.evictions", "Cached tokens evicted to stay within cache.max_bytes."},
			{&expirations, "phantom_authz.cache.expirations", "Cached tokens dropped when their time was up."},
			{&intro, "phantom_authz.introspections", "Introspection calls, by outcome (active, inactive, failed)."},
			{&coalesced, "phantom_authz.coalesced_waits", "Cache misses that waited for another request's introspection instead of making their own."},
			{&jwks, "phantom_authz.jwks.refreshes", "JWKS fetches, by outcome (ok, failed)."},
			{&jwtVerify, "phantom_authz.jwt.verifications", "JWTs verified by value, by outcome (ok, rejected)."},
		} {
			if *c.dst, err = newCounter(c.name, c.desc); err != nil {
				return err
			}
			insts = append(insts, *c.dst)
		}
		if size, err = m.Int64ObservableGauge("phantom_authz.cache.size", metric.WithUnit("By"),
			metric.WithDescription("Memory the token cache holds, as its cost accounting counts it.")); err != nil {
			return err
		}
		insts = append(insts, size)
	}
	outcome := func(v string) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", v)))
	}
	ok, failed, active, inactive, rejected := outcome("ok"), outcome("failed"), outcome("active"), outcome("inactive"), outcome("rejected")
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		okN, failedN := s.policy.Reloads()
		o.ObserveInt64(reloads, int64(okN), ok)
		o.ObserveInt64(reloads, int64(failedN), failed)
		o.ObserveInt64(evalTimeouts, int64(s.policy.EvalTimeouts()))
		if s.replays != nil {
			o.ObserveInt64(replays, int64(s.replays.refused.Load()))
		}
		if s.resolver == nil {
			return nil
		}
		st := s.resolver.Stats()
		o.ObserveInt64(hits, int64(st.Hits))
		o.ObserveInt64(misses, int64(st.Misses))
		o.ObserveInt64(evictions, int64(st.Evictions))
		o.ObserveInt64(expirations, int64(st.Expirations))
		o.ObserveInt64(intro, int64(st.IntrospectionsActive), active)
		o.ObserveInt64(intro, int64(st.IntrospectionsInactive), inactive)
		o.ObserveInt64(intro, int64(st.IntrospectionsFailed), failed)
		o.ObserveInt64(coalesced, int64(st.Coalesced))
		o.ObserveInt64(jwks, int64(st.JWKSRefreshes), ok)
		o.ObserveInt64(jwks, int64(st.JWKSFailures), failed)
		o.ObserveInt64(jwtVerify, int64(st.JWTsVerified), ok)
		o.ObserveInt64(jwtVerify, int64(st.JWTsRejected), rejected)
		o.ObserveInt64(size, st.CacheBytes)
		return nil
	}, insts...)
	return err
}

// extraHandlers are the HTTP server's telemetry endpoints: GET /metrics
// when metrics are on.
func extraHandlers(tel *telemetry.Telemetry) map[string]http.Handler {
	if tel.MetricsHandler == nil {
		return nil
	}
	return map[string]http.Handler{"GET /metrics": tel.MetricsHandler}
}

// replayCounter is a DPoP replay store that counts the proofs it refuses as
// replays (phantom_authz.dpop.replays_refused).
type replayCounter struct {
	binding.ReplayStore
	refused atomic.Uint64
}

// Use implements binding.ReplayStore.
func (c *replayCounter) Use(ctx context.Context, key string, until time.Time) (bool, error) {
	fresh, err := c.ReplayStore.Use(ctx, key, until)
	if err == nil && !fresh {
		c.refused.Add(1)
	}
	return fresh, err
}

// countReplays wraps the bind stage's replay store with the stack's counter.
func (s *stack) countReplays(rs binding.ReplayStore) binding.ReplayStore {
	s.replays = &replayCounter{ReplayStore: rs}
	return s.replays
}
