package decisionlog_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/trace"

	"github.com/phantom-authz/phantom-authz/authz/decisionlog"
)

// memExporter keeps the log records it is given.
type memExporter struct {
	mu      sync.Mutex
	records []sdklog.Record
}

func (m *memExporter) Export(_ context.Context, rs []sdklog.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range rs {
		m.records = append(m.records, r.Clone())
	}
	return nil
}
func (m *memExporter) Shutdown(context.Context) error   { return nil }
func (m *memExporter) ForceFlush(context.Context) error { return nil }

// With output otlp, a decision is an OpenTelemetry log record: the same
// fields as attributes, masked ones left out, tied to the check's trace.
func TestOTLPRecord(t *testing.T) {
	exp := &memExporter{}
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewSimpleProcessor(exp)))
	defer lp.Shutdown(context.Background())
	l, err := decisionlog.NewOTLP(lp, "test", []string{decisionlog.FieldSubHash})
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{9}, SpanID: trace.SpanID{8}, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	l.Log(ctx, &decisionlog.Record{Time: at, TraceID: sc.TraceID().String(), Allowed: true, Status: 200, Reason: "allowed",
		Route: "accounts", Method: "GET", Path: "/api/accounts/1", Auth: "opaque", ClientID: "web-app", SubHash: "abc"})

	if len(exp.records) != 1 {
		t.Fatalf("%d records exported, want 1", len(exp.records))
	}
	r := exp.records[0]
	if r.Body().AsString() != decisionlog.Message || r.EventName() != "phantom_authz.decision" || !r.Timestamp().Equal(at) {
		t.Errorf("record body %q event %q time %v", r.Body().AsString(), r.EventName(), r.Timestamp())
	}
	if r.TraceID() != sc.TraceID() || r.SpanID() != sc.SpanID() {
		t.Errorf("record not tied to the trace: %s %s", r.TraceID(), r.SpanID())
	}
	got := map[string]attribute.Value{}
	r.WalkAttributes(func(kv attribute.KeyValue) bool { got[string(kv.Key)] = kv.Value; return true })
	if got["decision"].AsString() != "allow" || got["status"].AsInt64() != 200 || got["route"].AsString() != "accounts" ||
		got["client_id"].AsString() != "web-app" || got["dry_run"].AsBool() {
		t.Errorf("attributes %v", got)
	}
	if _, ok := got["sub_hash"]; ok {
		t.Error("masked field sub_hash exported")
	}
}
