package authz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/credential"
	"github.com/phantom-authz/phantom-authz/authz/decisionlog"
	"github.com/phantom-authz/phantom-authz/authz/telemetry"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// claimsResolver resolves every token to one carrying claims, some safe to
// show and some not.
type claimsResolver struct{}

func (claimsResolver) Resolve(_ context.Context, c credential.Credential) (*token.Token, error) {
	if c.Token != "opaque-secret-token" {
		return nil, token.ErrInactive
	}
	return &token.Token{Active: true, Kind: token.KindOpaque, Scopes: []string{"read"}, ClientID: "web-app", Subject: "alice",
		Claims: map[string]any{"acr": "urn:gold", "email": "alice@example.com", "sub": "alice"}, JWT: "h.p.s"}, nil
}

func newTracer(t *testing.T) (*tracetest.SpanRecorder, trace.Tracer) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return rec, tp.Tracer("test")
}

func spanNamed(spans []sdktrace.ReadOnlySpan, name string) sdktrace.ReadOnlySpan {
	for _, s := range spans {
		if s.Name() == name {
			return s
		}
	}
	return nil
}

func attrs(s sdktrace.ReadOnlySpan) map[string]attribute.Value {
	m := map[string]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[string(kv.Key)] = kv.Value
	}
	return m
}

// One check is one span with the decision on it and a child span per stage;
// neither the token nor an unlisted claim value appears on any span.
func TestCheckSpans(t *testing.T) {
	rec, tracer := newTracer(t)
	e, err := authz.New(authz.Config{Decider: &fakeDecider{}, Resolver: claimsResolver{}, Tracer: tracer, SafeClaims: []string{"acr"}})
	if err != nil {
		t.Fatal(err)
	}
	r := request(map[string]string{"authorization": "Bearer opaque-secret-token"})
	r.ContextExtensions = map[string]string{"api": "accounts"}
	if d := e.Check(context.Background(), r); !d.Allowed {
		t.Fatalf("denied: %+v", d)
	}
	spans := rec.Ended()
	check := spanNamed(spans, "Check")
	if check == nil {
		t.Fatalf("no Check span among %d", len(spans))
	}
	for _, name := range []string{"credential", "policy.evaluate"} {
		s := spanNamed(spans, name)
		if s == nil {
			t.Fatalf("no %s span", name)
		}
		if s.Parent().SpanID() != check.SpanContext().SpanID() || s.SpanContext().TraceID() != check.SpanContext().TraceID() {
			t.Errorf("%s is not a child of Check", name)
		}
	}
	a := attrs(check)
	want := map[string]string{
		"phantom_authz.decision": "allow", "phantom_authz.reason": "allowed", "phantom_authz.auth": "opaque",
		"phantom_authz.token.kind": "opaque", "phantom_authz.route": "accounts", "phantom_authz.claim.acr": "urn:gold",
	}
	for k, v := range want {
		if a[k].Emit() != v {
			t.Errorf("Check %s = %q, want %q", k, a[k].Emit(), v)
		}
	}
	if a["http.response.status_code"].AsInt64() != 200 {
		t.Errorf("status attribute %v", a["http.response.status_code"])
	}
	if id := a["phantom_authz.decision_id"].Emit(); len(id) != 36 {
		t.Errorf("decision id attribute %q", id)
	}
	for _, s := range spans {
		for _, kv := range s.Attributes() {
			if v := kv.Value.Emit(); strings.Contains(v, "opaque-secret-token") || strings.Contains(v, "alice") {
				t.Errorf("span %s attribute %s = %q leaks the token or a claim", s.Name(), kv.Key, v)
			}
		}
	}

	// Under a transport's recording span (otelgrpc's), the engine annotates
	// that span instead of starting its own.
	rec2, tracer2 := newTracer(t)
	e2, _ := authz.New(authz.Config{Decider: &fakeDecider{}, Resolver: claimsResolver{}, Tracer: tracer2})
	ctx, server := tracer2.Start(context.Background(), "envoy.service.auth.v3.Authorization/Check")
	e2.Check(ctx, request(map[string]string{}))
	server.End()
	if s := spanNamed(rec2.Ended(), "Check"); s != nil {
		t.Error("a Check span was started under the transport's span")
	}
	srv := spanNamed(rec2.Ended(), "envoy.service.auth.v3.Authorization/Check")
	if a := attrs(srv); a["phantom_authz.decision"].Emit() != "deny" || a["phantom_authz.reason"].Emit() != "missing_token" ||
		a["phantom_authz.auth"].Emit() != "none" || a["http.response.status_code"].AsInt64() != 401 {
		t.Errorf("transport span attributes %v", a)
	}
}

// Checks are counted by decision and status, and timed.
func TestCheckMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	e, err := authz.New(authz.Config{Decider: &fakeDecider{}, Resolver: fakeResolver{"tok-read": nil}, Meter: mp.Meter("test")})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"Bearer tok-read", "Bearer tok-read", ""} {
		hs := map[string]string{}
		if h != "" {
			hs["authorization"] = h
		}
		e.Check(context.Background(), request(hs))
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int64{}
	var timed uint64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch data := m.Data.(type) {
			case metricdata.Sum[int64]:
				if m.Name != "phantom_authz.checks" {
					continue
				}
				for _, p := range data.DataPoints {
					d, _ := p.Attributes.Value("decision")
					s, _ := p.Attributes.Value("status")
					dry, _ := p.Attributes.Value("dry_run")
					counts[d.Emit()+" "+s.Emit()+" "+dry.Emit()] += p.Value
				}
			case metricdata.Histogram[float64]:
				if m.Name == "phantom_authz.check.duration" {
					for _, p := range data.DataPoints {
						timed += p.Count
					}
				}
			}
		}
	}
	if counts["allow 200 false"] != 2 || counts["deny 401 false"] != 1 || len(counts) != 2 {
		t.Errorf("checks = %v, want 2 allow 200 and 1 deny 401", counts)
	}
	if timed != 3 {
		t.Errorf("check.duration counted %d checks, want 3", timed)
	}
}

// Dry-run keeps OPA-Envoy's meaning: the decision is computed, logged and
// counted, and the request passes; errors still refuse, and phantom-authz's
// own guarantees (no client credential upstream, owned headers stripped)
// hold.
func TestDryRun(t *testing.T) {
	resolver := fakeResolver{"tok-read": nil, "tok-write": nil, "tok-down": token.ErrUnavailable}
	tests := []struct {
		name       string
		cfg        authz.DryRun
		ext        map[string]string
		path       string
		auth       string
		dry        bool // let through by dry-run
		status     int  // the status the decision had (or has)
		jwt        bool // the upstream gets the JWT
		dropsCreds bool // authorization removed
	}{
		{name: "context extension, policy denies", ext: map[string]string{"dry_run": "true"}, auth: "Bearer tok-write", dry: true, status: 403, jwt: true},
		{name: "context extension, no token", ext: map[string]string{"dry_run": "true"}, dry: true, status: 401},
		{name: "context extension, bad token", ext: map[string]string{"dry_run": "true"}, auth: "Bearer junk", dry: true, status: 401, dropsCreds: true},
		{name: "errors still refuse", ext: map[string]string{"dry_run": "true"}, auth: "Bearer tok-down", status: 503},
		{name: "allow is untouched", ext: map[string]string{"dry_run": "true"}, auth: "Bearer tok-read", status: 200, jwt: true},
		{name: "configured route", cfg: authz.DryRun{Routes: []string{"beta"}}, ext: map[string]string{"api": "beta"}, auth: "Bearer tok-write", dry: true, status: 403, jwt: true},
		{name: "configured path prefix", cfg: authz.DryRun{Paths: []string{"/beta/*"}}, path: "/beta/x?q=1", auth: "Bearer tok-write", dry: true, status: 403, jwt: true},
		{name: "other route enforced", cfg: authz.DryRun{Routes: []string{"beta"}, Paths: []string{"/beta/*"}}, ext: map[string]string{"api": "accounts"}, auth: "Bearer tok-write", status: 403},
		{name: "all", cfg: authz.DryRun{All: true}, auth: "Bearer tok-write", dry: true, status: 403, jwt: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			dl, _ := decisionlog.NewJSON(&logs, nil)
			e, err := authz.New(authz.Config{Decider: &fakeDecider{}, Resolver: resolver, DryRun: tc.cfg, DecisionLog: dl,
				OwnedHeaders: []string{"x-user-*"}, Logger: telemetry.NewLogger(&logs, "info", "json")})
			if err != nil {
				t.Fatal(err)
			}
			hs := map[string]string{"x-user-id": "admin"}
			if tc.auth != "" {
				hs["authorization"] = tc.auth
			}
			r := request(hs)
			if tc.path != "" {
				r.Path = tc.path
			}
			r.ContextExtensions = tc.ext
			d := e.Check(context.Background(), r)
			wantAllowed := tc.dry || tc.status == 200
			if d.Allowed != wantAllowed || d.DryRun != tc.dry {
				t.Fatalf("allowed=%v dry_run=%v, want %v %v (%+v)", d.Allowed, d.DryRun, wantAllowed, tc.dry, d)
			}
			if tc.dry && d.Status != tc.status {
				t.Errorf("dry-run decision keeps status %d, want %d", d.Status, tc.status)
			}
			if d.Allowed {
				if got := header(d, "authorization") == "Bearer header.payload.sig"; got != tc.jwt {
					t.Errorf("JWT forwarded = %v, want %v (%+v)", got, tc.jwt, d)
				}
				removed := strings.Join(d.RemoveHeaders, ",")
				if !strings.Contains(removed, "x-user-id") {
					t.Errorf("owned header not stripped: %v", d.RemoveHeaders)
				}
				if tc.dropsCreds && !strings.Contains(removed, "authorization") {
					t.Errorf("the unresolved credential is passed upstream: %v", d.RemoveHeaders)
				}
			}
			var rec map[string]any
			for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == decisionlog.Message {
					rec = m
				}
			}
			if rec == nil {
				t.Fatalf("no decision record in %s", logs.String())
			}
			wantDecision := "deny"
			if tc.status == 200 {
				wantDecision = "allow"
			}
			if rec["decision"] != wantDecision || rec["dry_run"] != tc.dry || rec["status"] != float64(tc.status) {
				t.Errorf("decision record %v, want decision %s dry_run %v status %d", rec, wantDecision, tc.dry, tc.status)
			}
			if tc.dry && !strings.Contains(logs.String(), `"msg":"denied (dry run: let through)"`) {
				t.Errorf("no dry-run denial line in %s", logs.String())
			}
		})
	}
}

// A decision record holds what an audit needs and nothing secret: the sub
// only hashed, masked fields left out, the trace id of the check.
func TestDecisionLogRecord(t *testing.T) {
	var out bytes.Buffer
	dl, err := decisionlog.NewJSON(&out, []string{decisionlog.FieldPath})
	if err != nil {
		t.Fatal(err)
	}
	_, tracer := newTracer(t)
	e, _ := authz.New(authz.Config{Decider: &fakeDecider{}, Resolver: claimsResolver{}, DecisionLog: dl, Tracer: tracer})
	r := request(map[string]string{"authorization": "Bearer opaque-secret-token"})
	r.ContextExtensions = map[string]string{"api": "accounts"}
	d := e.Check(context.Background(), r)

	var rec map[string]any
	if err := json.Unmarshal(out.Bytes(), &rec); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	want := map[string]any{
		"msg": "decision", "decision": "allow", "dry_run": false, "status": float64(200), "reason": "allowed",
		"route": "accounts", "method": "GET", "auth": "opaque", "token_kind": "opaque", "client_id": "web-app",
		"sub_hash": decisionlog.HashSubject("alice"), "default_rule": false,
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("record %s = %v, want %v", k, rec[k], v)
		}
	}
	if _, ok := rec["path"]; ok {
		t.Error("masked field path was written")
	}
	if id, _ := rec["trace_id"].(string); len(id) != 32 {
		t.Errorf("trace_id %q", rec["trace_id"])
	}
	// The id Envoy receives as dynamic metadata decision_id, a fresh UUID
	// per decision, joins Envoy's access log to this record.
	if _, err := uuid.Parse(d.DecisionID.String()); err != nil || rec["decision_id"] != d.DecisionID.String() {
		t.Errorf("decision_id %v, decision's %q", rec["decision_id"], d.DecisionID)
	}
	if again := e.Check(context.Background(), r); again.DecisionID == d.DecisionID {
		t.Error("two decisions share an id")
	}
	if s := out.String(); strings.Contains(s, "opaque-secret-token") || strings.Contains(s, "alice") {
		t.Errorf("the record leaks the token or the subject: %s", s)
	}
}

// The check follows the sampling decision it is given: under an unsampled
// transport span nothing is recorded; under a remote parent alone (no
// transport instrumentation) the check's own span continues the trace.
func TestCheckSpansFollowSampling(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	defer tp.Shutdown(context.Background())
	e, _ := authz.New(authz.Config{Decider: &fakeDecider{}, Resolver: claimsResolver{}, Tracer: tp.Tracer("test")})
	r := request(map[string]string{"authorization": "Bearer opaque-secret-token"})

	unsampled := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}})
	ctx := trace.ContextWithSpan(context.Background(), noopSpan{Span: noop.Span{}, sc: unsampled})
	e.Check(ctx, r)
	if n := len(rec.Ended()); n != 0 {
		t.Errorf("%d spans recorded under an unsampled transport span", n)
	}

	remote := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{3}, SpanID: trace.SpanID{4}, TraceFlags: trace.FlagsSampled, Remote: true})
	e.Check(trace.ContextWithRemoteSpanContext(context.Background(), remote), r)
	check := spanNamed(rec.Ended(), "Check")
	if check == nil || check.SpanContext().TraceID() != remote.TraceID() || check.Parent().SpanID() != remote.SpanID() {
		t.Errorf("no Check span continuing the remote trace: %v", check)
	}
}

// noopSpan is a local span that records nothing, as an unsampled otelgrpc
// span is.
type noopSpan struct {
	trace.Span
	sc trace.SpanContext
}

func (s noopSpan) SpanContext() trace.SpanContext { return s.sc }
func (s noopSpan) IsRecording() bool              { return false }
