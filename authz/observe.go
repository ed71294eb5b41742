package authz

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/phantom-authz/phantom-authz/authz/credential"
	"github.com/phantom-authz/phantom-authz/authz/decisionlog"
	"github.com/phantom-authz/phantom-authz/authz/route"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// DecisionLogger receives one record per decision (authz/decisionlog).
type DecisionLogger interface {
	Log(ctx context.Context, rec *decisionlog.Record)
}

// DryRun selects the requests whose decision is computed, logged and counted
// but not enforced: a denial lets the request through (OPA-Envoy's dry-run).
// Errors (5xx) still refuse: a request is never let through because a stage
// could not decide. Envoy can also mark a route with context_extensions
// dry_run: "true".
type DryRun struct {
	// All puts every route in dry-run mode.
	All bool
	// Routes are API names (context_extensions api) in dry-run mode.
	Routes []string
	// Paths are exact paths, or prefixes ending in "*", in dry-run mode.
	Paths []string
}

// Span and metric attribute keys.
const (
	attrDecision    = attribute.Key("phantom_authz.decision")
	attrReason      = attribute.Key("phantom_authz.reason")
	attrStatus      = attribute.Key("http.response.status_code")
	attrRoute       = attribute.Key("phantom_authz.route")
	attrDryRun      = attribute.Key("phantom_authz.dry_run")
	attrDecisionID  = attribute.Key("phantom_authz.decision_id")
	attrAuth        = attribute.Key("phantom_authz.auth")
	attrTokenKind   = attribute.Key("phantom_authz.token.kind")
	attrRevision    = attribute.Key("phantom_authz.policy.revision")
	attrDefaultRule = attribute.Key("phantom_authz.policy.default_rule")
	attrScheme      = attribute.Key("phantom_authz.credential.scheme")
	claimPrefix     = "phantom_authz.claim."
)

// observer is what the engine reports about each check: spans, metrics,
// the decision log. Each part is nil when off, and costs nothing then.
type observer struct {
	tracer     trace.Tracer
	checks     metric.Int64Counter
	duration   metric.Float64Histogram
	dlog       DecisionLogger
	revision   func() string
	safeClaims []string

	// Options are kept as slices, passed with ..., so recording does not
	// allocate one per call.
	checkAttrs sync.Map // key → []metric.AddOption
	durAllow   []metric.RecordOption
	durDeny    []metric.RecordOption
}

// checkState is what a check learned on the way, for the observer: never
// the token itself.
type checkState struct {
	// auth is how the caller authenticated as far as the credential shows:
	// none, opaque, jwt or dpop.
	auth string
	tok  *token.Token
	// err is the cause of a 5xx denial, for the error log line.
	err error
}

func newObserver(cfg Config) (*observer, error) {
	o := &observer{tracer: cfg.Tracer, dlog: cfg.DecisionLog, safeClaims: cfg.SafeClaims}
	if rv, ok := cfg.Decider.(interface{ Revision() string }); ok {
		o.revision = rv.Revision
	}
	if m := cfg.Meter; m != nil {
		var err error
		o.checks, err = m.Int64Counter("phantom_authz.checks",
			metric.WithDescription("Checks decided, by decision (allow, deny), HTTP status and dry-run."))
		if err != nil {
			return nil, err
		}
		o.duration, err = m.Float64Histogram("phantom_authz.check.duration", metric.WithUnit("s"),
			metric.WithDescription("Time to decide one check, by decision."),
			metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
		if err != nil {
			return nil, err
		}
		o.durAllow = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("decision", "allow")))}
		o.durDeny = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("decision", "deny")))}
	}
	return o, nil
}

// timed says whether a check's duration is needed.
func (o *observer) timed() bool { return o.duration != nil || o.dlog != nil }

// noSpan is the span of a stage when tracing is off.
var noSpan = trace.SpanFromContext(context.Background())

// startCheck returns the span of the check: the transport's (the gRPC
// server span, child of Envoy's) when there is one, else a new "Check". It
// reports whether the span is the observer's to end. A transport span that
// is not sampled records nothing, and neither do the stages beneath it.
func (o *observer) startCheck(ctx context.Context) (context.Context, trace.Span, bool) {
	if o.tracer == nil {
		return ctx, noSpan, false
	}
	// A local span that does not record is the transport's, not sampled; a
	// remote span context alone (extracted, no span of ours) gets a child.
	if s := trace.SpanFromContext(ctx); s.IsRecording() || s.SpanContext().IsValid() && !s.SpanContext().IsRemote() {
		return ctx, s, false
	}
	ctx, s := o.tracer.Start(ctx, "Check", trace.WithSpanKind(trace.SpanKindServer))
	return ctx, s, true
}

// stage starts the span of one stage, child of the check's; nothing when
// the check's span is not sampled.
func (o *observer) stage(ctx context.Context, name string) (context.Context, trace.Span) {
	if o.tracer == nil || !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, noSpan
	}
	return o.tracer.Start(ctx, name)
}

// endCredential ends the credential stage's span.
func endCredential(s trace.Span, cred credential.Credential, err error) {
	if s.IsRecording() {
		if err == nil {
			s.SetAttributes(attrScheme.String(string(cred.Scheme)))
		} else {
			s.SetAttributes(attrScheme.String("none"))
		}
	}
	s.End()
}

// endPolicy ends the policy stage's span.
func (o *observer) endPolicy(s trace.Span, d *Decision, err error) {
	if s.IsRecording() {
		if o.revision != nil {
			s.SetAttributes(attrDecision.String(decisionName(d.Allowed)), attrDefaultRule.Bool(d.DefaultRule),
				attrRevision.String(o.revision()))
		} else {
			s.SetAttributes(attrDecision.String(decisionName(d.Allowed)), attrDefaultRule.Bool(d.DefaultRule))
		}
		if err != nil {
			s.SetStatus(codes.Error, "policy evaluation failed")
		}
	}
	s.End()
}

// presentedAuth is how a credential authenticates before it is resolved: by
// its scheme, and for a bearer token by its shape.
func presentedAuth(cred credential.Credential) string {
	switch {
	case cred.Scheme == credential.SchemeDPoP:
		return "dpop"
	case strings.Count(cred.Token, ".") == 2:
		return "jwt"
	default:
		return "opaque"
	}
}

// authOf completes st.auth with what the resolved token says: a token bound
// to a client certificate (cnf x5t#S256, RFC 8705) is mTLS.
func authOf(st *checkState) string {
	if st.auth == "" {
		return "none"
	}
	if st.tok != nil {
		if st.auth != "dpop" {
			if v, _ := st.tok.Confirmation(); v != nil {
				cnf, _ := v.(map[string]any)
				if _, ok := cnf["x5t#S256"]; ok {
					return "mtls"
				}
			}
		}
		if st.auth != "dpop" {
			return string(st.tok.Kind)
		}
	}
	return st.auth
}

func decisionName(allowed bool) string {
	if allowed {
		return "allow"
	}
	return "deny"
}

// finish reports one finished check: the span's attributes, the metrics and
// the decision log record. d is the decision reached (before dry-run let it
// through).
func (o *observer) finish(ctx context.Context, span trace.Span, r *Request, d *Decision, st *checkState, start time.Time, dry bool) {
	var elapsed time.Duration
	if !start.IsZero() {
		elapsed = time.Since(start)
	}
	status := d.Status
	if d.Allowed {
		status = http.StatusOK
	}
	if span.IsRecording() {
		o.annotate(span, r, d, st, status, dry)
	}
	if o.checks != nil {
		o.checks.Add(ctx, 1, o.checkOptions(d.Allowed, status, dry)...)
		opts := o.durDeny
		if d.Allowed {
			opts = o.durAllow
		}
		o.duration.Record(ctx, elapsed.Seconds(), opts...)
	}
	if o.dlog != nil {
		rec := decisionlog.Record{
			Time:        start,
			Allowed:     d.Allowed,
			DryRun:      dry,
			Status:      status,
			Reason:      d.Reason,
			Route:       r.Route.API,
			Method:      r.Method,
			Path:        pathOnly(r.Path),
			Auth:        authOf(st),
			DefaultRule: d.DefaultRule,
			Duration:    elapsed,
			DecisionID:  d.DecisionID.String(),
		}
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			rec.TraceID = sc.TraceID().String()
		}
		if tok := st.tok; tok != nil {
			rec.TokenKind, rec.ClientID, rec.SubHash = string(tok.Kind), tok.ClientID, decisionlog.HashSubject(tok.Subject)
		}
		if o.revision != nil {
			rec.PolicyRevision = o.revision()
		}
		o.dlog.Log(ctx, &rec)
	}
}

// annotate sets the check span's attributes: never the token, and claim
// values only of the claims configured as safe.
func (o *observer) annotate(span trace.Span, r *Request, d *Decision, st *checkState, status int, dry bool) {
	// One SetAttributes call: each call grows the span's attribute slice.
	kv := make([]attribute.KeyValue, 0, 8+len(o.safeClaims))
	kv = append(kv,
		attrDecision.String(decisionName(d.Allowed)),
		attrStatus.Int(status),
		attrReason.String(d.Reason),
		attrAuth.String(authOf(st)),
		attrDryRun.Bool(dry),
		attrDecisionID.String(d.DecisionID.String()),
	)
	if route := r.Route.API; route != "" {
		kv = append(kv, attrRoute.String(route))
	}
	if o.revision != nil {
		kv = append(kv, attrRevision.String(o.revision()))
	}
	if tok := st.tok; tok != nil {
		kv = append(kv, attrTokenKind.String(string(tok.Kind)))
		var claims map[string]any
		if len(o.safeClaims) > 0 {
			claims, _ = tok.ClaimMap() // undecodable: no claim attributes
		}
		for _, c := range o.safeClaims {
			switch v := claims[c].(type) {
			case string:
				kv = append(kv, attribute.String(claimPrefix+c, v))
			case bool:
				kv = append(kv, attribute.Bool(claimPrefix+c, v))
			case float64:
				kv = append(kv, attribute.Float64(claimPrefix+c, v))
			}
		}
	}
	span.SetAttributes(kv...)
	if status >= 500 {
		span.SetStatus(codes.Error, d.Reason)
	}
}

// checkOptions is the metric attribute set of one (decision, status,
// dry-run), built once.
func (o *observer) checkOptions(allowed bool, status int, dry bool) []metric.AddOption {
	key := uint32(status) << 2
	if allowed {
		key |= 2
	}
	if dry {
		key |= 1
	}
	if v, ok := o.checkAttrs.Load(key); ok {
		return v.([]metric.AddOption)
	}
	opts := []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(
		attribute.String("decision", decisionName(allowed)),
		attribute.String("status", strconv.Itoa(status)),
		attribute.Bool("dry_run", dry),
	))}
	v, _ := o.checkAttrs.LoadOrStore(key, opts)
	return v.([]metric.AddOption)
}

// logDenial writes the one info line of a denial (an error line with the
// cause for a 5xx); the trace id comes with ctx.
func (e *Engine) logDenial(ctx context.Context, r *Request, d *Decision, st *checkState, dry bool) {
	level, msg := slog.LevelInfo, "denied"
	if dry {
		msg = "denied (dry run: let through)"
	}
	attrs := []slog.Attr{
		slog.String("reason", d.Reason), slog.Int("status", d.Status),
		slog.String("method", r.Method), slog.String("path", pathOnly(r.Path)),
		slog.String("route", r.Route.API), slog.String("request_id", r.ID),
	}
	if dry {
		attrs = append(attrs, slog.Bool("dry_run", true))
	}
	if d.Status >= 500 {
		level = slog.LevelError
		if st.err != nil {
			attrs = append(attrs, slog.String("err", st.err.Error()))
		}
	}
	e.cfg.Logger.LogAttrs(ctx, level, msg, attrs...)
}

// dryRun reports whether r's route is in dry-run mode.
func (e *Engine) dryRun(r *Request) bool {
	if r.Route.DryRun || e.cfg.DryRun.All {
		return true
	}
	if len(e.cfg.DryRun.Routes) > 0 {
		if api := r.Route.API; api != "" {
			for _, route := range e.cfg.DryRun.Routes {
				if route == api {
					return true
				}
			}
		}
	}
	if len(e.cfg.DryRun.Paths) > 0 {
		p, err := route.Normalize(pathOnly(r.Path))
		if err != nil {
			return false
		}
		for _, pat := range e.cfg.DryRun.Paths {
			if pre, ok := strings.CutSuffix(pat, "*"); ok && strings.HasPrefix(p, pre) || p == pat {
				return true
			}
		}
	}
	return false
}

// dryRunAllow is the decision a dry-run denial becomes: the request passes
// as OPA-Envoy's dry-run lets it, but phantom-authz's own guarantees hold:
// the upstream gets the JWT if the token resolved and never the client's
// credential, and owned headers are stripped. Reason and Status keep what
// would have happened.
func (e *Engine) dryRunAllow(r *Request, tok *token.Token, denied Decision) Decision {
	d := Decision{Allowed: true, DryRun: true, Status: denied.Status, Reason: denied.Reason, DecisionID: denied.DecisionID}
	// forward drops a credential that did not resolve, as on a public route.
	e.forward(r, tok, &d)
	if _, sent := r.Headers["dpop"]; sent && tok != nil {
		d.RemoveHeaders = append(d.RemoveHeaders, "dpop") // the proof stays here too
	}
	return d
}

// endBinding ends the bind stage's span.
func endBinding(s trace.Span, checked bool, denied *Decision) {
	if s.IsRecording() {
		if denied != nil {
			s.SetAttributes(attrDecision.String("deny"), attrReason.String(denied.Reason))
		} else {
			s.SetAttributes(attribute.Bool("phantom_authz.binding.checked", checked))
		}
	}
	s.End()
}
