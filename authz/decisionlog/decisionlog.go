// Package decisionlog is the decision log: one structured record per
// decision the engine reaches, written as a JSON line or as an OpenTelemetry
// log record, and read back by `phantom-authz audit`.
//
// A record never holds a token, a secret or a claim value other than the
// client_id; the subject is kept only as a hash. Fields listed in the mask
// are left out of every record.
package decisionlog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otellog "go.opentelemetry.io/otel/log"
)

// Message is the msg of every decision record, which tells them apart from
// the other log lines a stream may mix in.
const Message = "decision"

// Record is one decision.
type Record struct {
	Time    time.Time
	TraceID string
	// Allowed is what the decision said; with DryRun the request passed
	// whatever it said.
	Allowed bool
	DryRun  bool
	// Status is the HTTP status of a denial (what it would have been, in
	// dry-run mode); 200 on allow.
	Status int
	// Reason is the engine's reason code ("allowed", "invalid_token", ...).
	Reason string
	// Route is the API Envoy names in the route's context_extensions (api).
	Route string
	// Method and Path (without the query string) of the request.
	Method, Path string
	// Auth is how the caller authenticated: none, opaque, jwt, dpop or mtls.
	Auth string
	// TokenKind is the resolved token's kind (opaque, jwt), "" without one.
	TokenKind string
	ClientID  string
	// SubHash is the SHA-256 of the token's sub (hex, 128 bits), so one
	// caller's decisions can be followed without naming them.
	SubHash        string
	PolicyRevision string
	// DefaultRule: the policy's default rule (or no rule at all) decided.
	DefaultRule bool
	Duration    time.Duration
	// DecisionID is the decision's UUID, the decision_id Envoy received as
	// dynamic metadata (and its access log can print).
	DecisionID string
}

// The record's field names, as written.
const (
	FieldTime           = "time"
	FieldDecisionID     = "decision_id"
	FieldTraceID        = "trace_id"
	FieldDecision       = "decision"
	FieldDryRun         = "dry_run"
	FieldStatus         = "status"
	FieldReason         = "reason"
	FieldRoute          = "route"
	FieldMethod         = "method"
	FieldPath           = "path"
	FieldAuth           = "auth"
	FieldTokenKind      = "token_kind"
	FieldClientID       = "client_id"
	FieldSubHash        = "sub_hash"
	FieldPolicyRevision = "policy_revision"
	FieldDefaultRule    = "default_rule"
	FieldDurationMS     = "duration_ms"
)

// Maskable are the fields a mask may name; time, decision_id, decision and
// dry_run are always written.
var Maskable = []string{
	FieldTraceID, FieldStatus, FieldReason, FieldRoute, FieldMethod, FieldPath, FieldAuth,
	FieldTokenKind, FieldClientID, FieldSubHash, FieldPolicyRevision, FieldDefaultRule, FieldDurationMS,
}

// HashSubject is the SubHash of sub ("" for none).
func HashSubject(sub string) string {
	if sub == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(sub))
	return hex.EncodeToString(sum[:16])
}

// Logger writes decision records. It is safe for concurrent use.
type Logger struct {
	mask map[string]bool
	json *slog.Logger   // JSON lines, or nil
	otel otellog.Logger // OTLP log records, or nil
}

// NewJSON writes one JSON line per record to w (msg "decision"), leaving out
// the fields in mask.
func NewJSON(w io.Writer, mask []string) (*Logger, error) {
	m, err := maskSet(mask)
	if err != nil {
		return nil, err
	}
	return &Logger{mask: m, json: slog.New(slog.NewJSONHandler(w, nil))}, nil
}

// NewOTLP emits one OpenTelemetry log record per decision through lp,
// leaving out the fields in mask.
func NewOTLP(lp otellog.LoggerProvider, scope string, mask []string) (*Logger, error) {
	m, err := maskSet(mask)
	if err != nil {
		return nil, err
	}
	return &Logger{mask: m, otel: lp.Logger(scope)}, nil
}

func maskSet(mask []string) (map[string]bool, error) {
	m := make(map[string]bool, len(mask))
	for _, f := range mask {
		if !slices.Contains(Maskable, f) {
			return nil, fmt.Errorf("decisionlog: mask: %q is not one of %s", f, strings.Join(Maskable, ", "))
		}
		m[f] = true
	}
	return m, nil
}

// Log writes rec.
func (l *Logger) Log(ctx context.Context, rec *Record) {
	decision := "deny"
	if rec.Allowed {
		decision = "allow"
	}
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs, slog.String(FieldDecisionID, rec.DecisionID), slog.String(FieldDecision, decision), slog.Bool(FieldDryRun, rec.DryRun))
	add := func(name string, v slog.Value) {
		if !l.mask[name] {
			attrs = append(attrs, slog.Attr{Key: name, Value: v})
		}
	}
	add(FieldTraceID, slog.StringValue(rec.TraceID))
	add(FieldStatus, slog.IntValue(rec.Status))
	add(FieldReason, slog.StringValue(rec.Reason))
	add(FieldRoute, slog.StringValue(rec.Route))
	add(FieldMethod, slog.StringValue(rec.Method))
	add(FieldPath, slog.StringValue(rec.Path))
	add(FieldAuth, slog.StringValue(rec.Auth))
	add(FieldTokenKind, slog.StringValue(rec.TokenKind))
	add(FieldClientID, slog.StringValue(rec.ClientID))
	add(FieldSubHash, slog.StringValue(rec.SubHash))
	add(FieldPolicyRevision, slog.StringValue(rec.PolicyRevision))
	add(FieldDefaultRule, slog.BoolValue(rec.DefaultRule))
	add(FieldDurationMS, slog.Float64Value(float64(rec.Duration.Microseconds())/1000))

	if l.json != nil {
		// The record's own time, not the time it is written.
		r := slog.NewRecord(rec.Time, slog.LevelInfo, Message, 0)
		r.AddAttrs(attrs...)
		_ = l.json.Handler().Handle(ctx, r)
	}
	if l.otel != nil {
		var r otellog.Record
		r.SetTimestamp(rec.Time)
		r.SetObservedTimestamp(time.Now())
		r.SetSeverity(otellog.SeverityInfo)
		r.SetSeverityText("INFO")
		r.SetEventName("phantom_authz." + Message)
		r.SetBody(attribute.StringValue(Message))
		for _, a := range attrs {
			r.AddAttributes(otelAttr(a))
		}
		l.otel.Emit(ctx, r)
	}
}

func otelAttr(a slog.Attr) attribute.KeyValue {
	switch a.Value.Kind() {
	case slog.KindBool:
		return attribute.Bool(a.Key, a.Value.Bool())
	case slog.KindInt64:
		return attribute.Int64(a.Key, a.Value.Int64())
	case slog.KindFloat64:
		return attribute.Float64(a.Key, a.Value.Float64())
	default:
		return attribute.String(a.Key, a.Value.String())
	}
}
