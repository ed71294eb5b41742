package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	otellog "go.opentelemetry.io/otel/log"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of every span and instrument
// phantom-authz makes.
const ScopeName = "github.com/phantom-authz/phantom-authz"

// Config says which signals to set up. The standard OTEL_* environment
// variables configure the exporters (endpoint, protocol, headers, sampler,
// resource attributes) and win over Config where both speak.
type Config struct {
	// ServiceName is service.name (OTEL_SERVICE_NAME wins). Default "phantom-authz".
	ServiceName string
	// Version is service.version.
	Version string
	// Tracing exports spans through the exporter OTEL_TRACES_EXPORTER names
	// (default otlp). OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true
	// turns it off; OTEL_TRACES_EXPORTER set to an exporter turns it on.
	Tracing bool
	// Metrics serves the instruments in Prometheus format (MetricsHandler).
	Metrics bool
	// Logs sets up an OTLP log exporter (OTEL_LOGS_EXPORTER, default otlp)
	// for the decision log.
	Logs bool
}

// Telemetry holds the providers phantom-authz reports through. Providers of
// signals that are off are no-ops, and Tracer and Meter return nil for them,
// so stages can skip the work altogether.
type Telemetry struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// LoggerProvider is the OTLP log pipeline; nil unless Config.Logs.
	LoggerProvider otellog.LoggerProvider
	// Propagator reads and writes trace context: W3C traceparent and
	// baggage, and B3 (single and multi header), unless OTEL_PROPAGATORS
	// says otherwise.
	Propagator propagation.TextMapPropagator
	// MetricsHandler serves GET /metrics; nil when metrics are off.
	MetricsHandler http.Handler

	tracing  bool
	metrics  bool
	shutdown []func(context.Context) error
}

// Setup builds the providers cfg and the environment ask for. Call Shutdown
// before exiting, so buffered spans and log records are flushed.
func Setup(ctx context.Context, cfg Config) (*Telemetry, error) {
	t := &Telemetry{
		TracerProvider: noop.NewTracerProvider(),
		MeterProvider:  metricnoop.NewMeterProvider(),
	}
	var err error
	if t.Propagator, err = propagators(os.Getenv("OTEL_PROPAGATORS")); err != nil {
		return nil, err
	}
	res, err := newResource(ctx, cfg)
	if err != nil {
		return nil, err
	}

	if tracingOn(cfg.Tracing) {
		exp, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("telemetry: traces exporter: %w", err)
		}
		if !autoexport.IsNoneSpanExporter(exp) {
			// The sampler is OTEL_TRACES_SAMPLER's, by default
			// parentbased_always_on: Envoy's sampling decision holds.
			tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
			t.TracerProvider, t.tracing = tp, true
			t.shutdown = append(t.shutdown, tp.Shutdown)
		}
	}

	if cfg.Metrics {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		exp, err := otelprom.New(
			otelprom.WithRegisterer(reg),
			otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
			otelprom.WithoutScopeInfo(),
		)
		if err != nil {
			return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
		}
		// The Prometheus text format carries no exemplars: do not collect them.
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res),
			sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter))
		t.MeterProvider, t.metrics = mp, true
		t.MetricsHandler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
		t.shutdown = append(t.shutdown, mp.Shutdown)
	}

	if cfg.Logs {
		exp, err := autoexport.NewLogExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("telemetry: logs exporter: %w", err)
		}
		lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewBatchProcessor(exp)), sdklog.WithResource(res))
		t.LoggerProvider = lp
		t.shutdown = append(t.shutdown, lp.Shutdown)
	}
	return t, nil
}

// tracingOn applies the environment over the configuration.
func tracingOn(configured bool) bool {
	if strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	switch exp := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")); exp {
	case "":
		return configured
	case "none":
		return false
	default:
		return true
	}
}

func newResource(ctx context.Context, cfg Config) (*resource.Resource, error) {
	name := cfg.ServiceName
	if name == "" {
		name = "phantom-authz"
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(name)}
	if cfg.Version != "" {
		attrs = append(attrs, semconv.ServiceVersion(cfg.Version))
	}
	// Later options win: OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME
	// override the configured name.
	res, err := resource.New(ctx,
		resource.WithAttributes(attrs...),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithFromEnv(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	return res, nil
}

// propagators reads OTEL_PROPAGATORS (tracecontext, baggage, b3, b3multi,
// none); unset means tracecontext, baggage and B3, so Envoy's traceparent
// and Zipkin-style B3 headers both continue the trace.
func propagators(env string) (propagation.TextMapPropagator, error) {
	if strings.TrimSpace(env) == "" {
		env = "b3,tracecontext,baggage"
	}
	var ps []propagation.TextMapPropagator
	for _, name := range strings.Split(env, ",") {
		switch strings.TrimSpace(name) {
		case "tracecontext":
			ps = append(ps, propagation.TraceContext{})
		case "baggage":
			ps = append(ps, propagation.Baggage{})
		case "b3":
			ps = append(ps, b3.New(b3.WithInjectEncoding(b3.B3SingleHeader)))
		case "b3multi":
			ps = append(ps, b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader)))
		case "none":
			return propagation.NewCompositeTextMapPropagator(), nil
		case "":
		default:
			return nil, fmt.Errorf("telemetry: OTEL_PROPAGATORS: %q is not one of tracecontext, baggage, b3, b3multi, none", strings.TrimSpace(name))
		}
	}
	// Extraction runs in order and the last propagator that finds a context
	// wins: listing b3 before tracecontext lets traceparent win when a
	// request carries both.
	return propagation.NewCompositeTextMapPropagator(ps...), nil
}

// Tracer is phantom-authz's tracer, or nil when tracing is off (or t is nil).
func (t *Telemetry) Tracer() trace.Tracer {
	if t == nil || !t.tracing {
		return nil
	}
	return t.TracerProvider.Tracer(ScopeName)
}

// Meter is phantom-authz's meter, or nil when metrics are off (or t is nil).
func (t *Telemetry) Meter() metric.Meter {
	if t == nil || !t.metrics {
		return nil
	}
	return t.MeterProvider.Meter(ScopeName)
}

// Tracing reports whether spans are exported.
func (t *Telemetry) Tracing() bool { return t != nil && t.tracing }

// Shutdown flushes and stops every provider, within ctx.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for i := len(t.shutdown) - 1; i >= 0; i-- {
		errs = append(errs, t.shutdown[i](ctx))
	}
	t.shutdown = nil
	return errors.Join(errs...)
}
