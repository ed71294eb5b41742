package token

import (
	"context"
	"errors"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/phantom-authz/phantom-authz/authz/credential"
)

// Span attributes. None ever holds a token or a claim value.
const (
	attrCacheHit  = attribute.Key("phantom_authz.cache.hit")
	attrCoalesced = attribute.Key("phantom_authz.cache.coalesced")
	attrKind      = attribute.Key("phantom_authz.token.kind")
	attrOutcome   = attribute.Key("phantom_authz.outcome")
	attrResponse  = attribute.Key("phantom_authz.introspection.response")
	attrJWKSURI   = attribute.Key("phantom_authz.jwks.uri")
	attrMinted    = attribute.Key("phantom_authz.minted")
)

// noSpan is what startSpan returns without a tracer.
var noSpan = trace.SpanFromContext(context.Background())

// startSpan starts a child span of ctx's, or nothing when t is nil or
// ctx's span is not sampled (no span is started without a recording parent:
// a background refresh is not a trace of its own).
func startSpan(t trace.Tracer, ctx context.Context, name string) (context.Context, trace.Span) {
	if t == nil || !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, noSpan
	}
	return t.Start(ctx, name)
}

// endSpan marks span failed when err is an error of the service (not a
// token the client got wrong), then ends it.
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.SetAttributes(attrOutcome.String(outcome(err)))
		if errors.Is(err, ErrUnavailable) {
			span.SetStatus(codes.Error, "unavailable")
		}
	}
	span.End()
}

// outcome names a resolution's result for spans and metrics.
func outcome(err error) string {
	switch {
	case err == nil:
		return "active"
	case errors.Is(err, ErrInactive):
		return "inactive"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	default:
		return "failed"
	}
}

// resolveTraced is Resolve inside a "token.resolve" span (the cache lookup,
// and on a miss the introspection or verification beneath it). Whether the
// cache answered goes on that span and on the caller's (the check's).
func (r *Resolver) resolveTraced(ctx context.Context, cred credential.Credential) (*Token, error) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		tok, _, err := r.resolve(ctx, cred)
		return tok, err
	}
	ctx, span := r.tracer.Start(ctx, "token.resolve")
	tok, hit, err := r.resolve(ctx, cred)
	if span.IsRecording() {
		if tok != nil {
			span.SetAttributes(attrCacheHit.Bool(hit), attrOutcome.String(outcome(err)), attrKind.String(string(tok.Kind)))
		} else {
			span.SetAttributes(attrCacheHit.Bool(hit), attrOutcome.String(outcome(err)))
		}
		if errors.Is(err, ErrUnavailable) {
			span.SetStatus(codes.Error, "unavailable")
		}
	}
	span.End()
	parent.SetAttributes(attrCacheHit.Bool(hit))
	return tok, err
}

// prepareTraced runs Prepare inside a "token.prepare" span: minting the
// upstream JWT when the OAuth server gave none, and the policy input.
func (r *Resolver) prepareTraced(ctx context.Context, tok *Token) error {
	_, span := startSpan(r.tracer, ctx, "token.prepare")
	minting := tok.JWT == ""
	err := r.prepare(tok)
	if span.IsRecording() {
		span.SetAttributes(attrMinted.Bool(minting && tok.JWT != ""))
		if err != nil {
			span.SetStatus(codes.Error, "prepare failed")
		}
	}
	span.End()
	return err
}

// evicted counts what the cache drops: expired entries apart from those
// evicted to stay within the memory budget.
func (r *Resolver) evicted(item *ristretto.Item[entry]) {
	if !item.Expiration.IsZero() && !item.Expiration.After(time.Now()) {
		r.stats.expirations.Add(1)
		return
	}
	r.stats.evictions.Add(1)
}

// introspectionHistogram is the latency of introspection calls, by outcome;
// nil without a meter.
func introspectionHistogram(m metric.Meter) (metric.Float64Histogram, error) {
	if m == nil {
		return nil, nil
	}
	return m.Float64Histogram("phantom_authz.introspection.duration", metric.WithUnit("s"),
		metric.WithDescription("Time of one introspection call, by outcome (active, inactive, failed)."),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
}

// introspectionOutcomes are the histogram's attribute sets, built once.
var introspectionOutcomes = map[string]metric.RecordOption{
	"active":   metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "active"))),
	"inactive": metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "inactive"))),
	// The server answered about the token (400 about it, a refresh token,
	// another audience): as good as inactive.
	"invalid": metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "inactive"))),
	"failed":  metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "failed"))),
}
