package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// The OTEL_* variables win over the configuration, as users expect.
func TestTracingSwitch(t *testing.T) {
	tests := []struct {
		configured       bool
		exporter, sdkOff string
		want             bool
	}{
		{configured: true, want: true},
		{configured: false, want: false},
		{configured: false, exporter: "otlp", want: true},
		{configured: true, exporter: "none", want: false},
		{configured: true, sdkOff: "true", want: false},
	}
	for _, tc := range tests {
		t.Setenv("OTEL_TRACES_EXPORTER", tc.exporter)
		t.Setenv("OTEL_SDK_DISABLED", tc.sdkOff)
		if got := tracingOn(tc.configured); got != tc.want {
			t.Errorf("configured %v, OTEL_TRACES_EXPORTER=%q, OTEL_SDK_DISABLED=%q: tracing %v, want %v",
				tc.configured, tc.exporter, tc.sdkOff, got, tc.want)
		}
	}
}

// Envoy's traceparent and Zipkin-style B3 both continue a trace; with
// both, traceparent wins.
func TestPropagators(t *testing.T) {
	p, err := propagators("")
	if err != nil {
		t.Fatal(err)
	}
	const (
		w3c = "0af7651916cd43dd8448eb211c80319c"
		b3t = "463ac35c9f6413ad48485a3953bb6124"
	)
	extract := func(h map[string]string) string {
		return trace.SpanContextFromContext(p.Extract(context.Background(), propagation.MapCarrier(h))).TraceID().String()
	}
	if got := extract(map[string]string{"traceparent": "00-" + w3c + "-b7ad6b7169203331-01"}); got != w3c {
		t.Errorf("traceparent: trace %s", got)
	}
	if got := extract(map[string]string{"b3": b3t + "-0020000000000001-1"}); got != b3t {
		t.Errorf("b3 single header: trace %s", got)
	}
	if got := extract(map[string]string{"x-b3-traceid": b3t, "x-b3-spanid": "0020000000000001", "x-b3-sampled": "1"}); got != b3t {
		t.Errorf("b3 multi header: trace %s", got)
	}
	if got := extract(map[string]string{"traceparent": "00-" + w3c + "-b7ad6b7169203331-01", "b3": b3t + "-0020000000000001-1"}); got != w3c {
		t.Errorf("both: trace %s, want traceparent's", got)
	}
	if _, err := propagators("tracecontext,jaeger"); err == nil {
		t.Error("an unknown propagator was accepted")
	}
}

// A line logged about a traced request carries its trace and span ids.
func TestLoggerAddsTraceID(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, "info", "json")
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled,
	})
	log.InfoContext(trace.ContextWithSpanContext(context.Background(), sc), "denied", "reason", "missing_token")
	log.Info("no context")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var first, second map[string]any
	_ = json.Unmarshal([]byte(lines[0]), &first)
	_ = json.Unmarshal([]byte(lines[1]), &second)
	if first["trace_id"] != sc.TraceID().String() || first["span_id"] != sc.SpanID().String() {
		t.Errorf("traced line %s", lines[0])
	}
	if _, ok := second["trace_id"]; ok {
		t.Errorf("untraced line has a trace id: %s", lines[1])
	}
}

// Metrics on: a Prometheus handler serving what the meter records; off:
// a nil meter and no handler.
func TestSetupMetrics(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	tel, err := Setup(context.Background(), Config{Metrics: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	if tel.Tracer() != nil || tel.Tracing() {
		t.Error("tracing on without being asked")
	}
	c, _ := tel.Meter().Int64Counter("phantom_authz.test_things")
	c.Add(context.Background(), 3)
	srv := httptest.NewServer(tel.MetricsHandler)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "phantom_authz_test_things_total 3") || !strings.Contains(string(b), "go_goroutines") {
		t.Errorf("/metrics:\n%s", b)
	}

	off, err := Setup(context.Background(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if off.Meter() != nil || off.MetricsHandler != nil || off.Tracer() != nil {
		t.Error("signals on without being asked")
	}
	var none *Telemetry
	if none.Tracer() != nil || none.Meter() != nil || none.Tracing() {
		t.Error("a nil Telemetry reports signals")
	}
}
