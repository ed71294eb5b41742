package token

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/semaphore"
)

// BreakerConfig is the circuit breaker toward the introspection endpoint: an
// OAuth server that keeps failing is not called for a while, so an outage
// costs each request an immediate 503 instead of a timeout, and nothing
// piles up waiting on it.
type BreakerConfig struct {
	// Failures is how many introspection calls in a row must fail (network
	// error, timeout, 5xx, another unexpected status, an answer that does
	// not parse) to open the breaker (default 5). Answers about one token
	// (inactive; 400 invalid_request or invalid_token; refused as not an
	// access token or for another audience) are successes.
	Failures int
	// Cooldown is how long the breaker stays open before one probe call is
	// let through (half-open); the probe's success closes it, its failure
	// opens it again (default 5s).
	Cooldown time.Duration
}

// Defaults of the introspection guard.
const (
	defaultMaxConcurrent   = 64
	defaultBreakerFailures = 5
	defaultBreakerCooldown = 5 * time.Second
)

// Reasons a call to the OAuth server is refused before it is made (metric
// attribute reason of phantom_authz.introspection.rejected).
const (
	rejectedOpen      = "circuit_open"
	rejectedSaturated = "saturated"
)

// guard bounds the introspection calls in flight (a semaphore) and stops
// calling an OAuth server that keeps failing (a circuit breaker). A call it
// refuses fails at once with ErrUnavailable and is not an introspection: it
// is counted and traced apart, and not logged one by one.
type guard struct {
	endpoint string // as it may be logged
	sem      *semaphore.Weighted
	// wait is how long a call waits for a place when all are taken: the
	// introspection timeout.
	wait     time.Duration
	cooldown time.Duration
	breaker  *gobreaker.TwoStepCircuitBreaker[struct{}]
	log      *slog.Logger

	// Metrics; nil without a meter.
	inFlight    metric.Int64UpDownCounter
	rejected    metric.Int64Counter
	transitions metric.Int64Counter
	state       metric.Int64Gauge
}

// Breaker states as the state gauge reports them.
var breakerStateValue = map[gobreaker.State]int64{
	gobreaker.StateClosed:   0,
	gobreaker.StateHalfOpen: 1,
	gobreaker.StateOpen:     2,
}

// rejectedAttrs are the attribute sets of the rejection counter, built once.
var rejectedAttrs = map[string]metric.AddOption{
	rejectedOpen:      metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", rejectedOpen))),
	rejectedSaturated: metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", rejectedSaturated))),
}

// newGuard builds the guard of an introspection endpoint (cfg has its
// defaults). m, when not nil, receives its metrics.
func newGuard(cfg IntrospectionConfig, m metric.Meter, log *slog.Logger) (*guard, error) {
	g := &guard{
		endpoint: loggable(cfg.Endpoint),
		sem:      semaphore.NewWeighted(int64(cfg.MaxConcurrent)),
		wait:     cfg.Timeout,
		cooldown: cfg.Breaker.Cooldown,
		log:      log,
	}
	if m != nil {
		var err error
		if g.inFlight, err = m.Int64UpDownCounter("phantom_authz.introspection.in_flight",
			metric.WithDescription("Introspection calls under way (at most introspection.max_concurrent).")); err != nil {
			return nil, err
		}
		if g.rejected, err = m.Int64Counter("phantom_authz.introspection.rejected",
			metric.WithDescription("Introspections refused without calling the OAuth server, by reason: circuit_open (the breaker is open), saturated (introspection.max_concurrent calls were under way for a whole timeout).")); err != nil {
			return nil, err
		}
		if g.transitions, err = m.Int64Counter("phantom_authz.introspection.breaker.transitions",
			metric.WithDescription("State changes of the circuit breaker toward the OAuth server, by from and to (closed, half-open, open).")); err != nil {
			return nil, err
		}
		if g.state, err = m.Int64Gauge("phantom_authz.introspection.breaker.state",
			metric.WithDescription("State of the circuit breaker toward the OAuth server as of its last change: 0 closed, 1 half-open, 2 open.")); err != nil {
			return nil, err
		}
		g.state.Record(context.Background(), 0)
	}
	failures := uint32(cfg.Breaker.Failures)
	g.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "introspection",
		MaxRequests: 1, // one probe at a time when half-open
		Timeout:     cfg.Breaker.Cooldown,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
		// An answer about the token (inactive; invalid: a 400 about it, a
		// refresh token, another audience) is the OAuth server working. Only
		// transport errors, timeouts, 5xx, other statuses and answers that
		// do not parse count.
		IsSuccessful: func(err error) bool {
			return err == nil || errors.Is(err, ErrInactive) || errors.Is(err, ErrInvalid)
		},
		OnStateChange: g.changed,
	})
	return g, nil
}

// changed reports a state change of the breaker: one log line and the
// metrics. The breaker calls it under its lock, so it does little.
func (g *guard) changed(_ string, from, to gobreaker.State) {
	switch to {
	case gobreaker.StateOpen:
		g.log.Warn("token: introspection circuit breaker open: the OAuth server keeps failing; new tokens are refused (503) without calling it",
			"endpoint", g.endpoint, "from", from.String(), "cooldown", g.cooldown.String())
	case gobreaker.StateHalfOpen:
		g.log.Info("token: introspection circuit breaker half-open: probing the OAuth server with one call", "endpoint", g.endpoint)
	case gobreaker.StateClosed:
		g.log.Info("token: introspection circuit breaker closed: the OAuth server answers again", "endpoint", g.endpoint)
	}
	if g.transitions != nil {
		ctx := context.Background()
		g.transitions.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(
			attribute.String("from", from.String()), attribute.String("to", to.String()))))
		g.state.Record(ctx, breakerStateValue[to])
	}
}

// enter waits for a place among the calls in flight and asks the breaker;
// on success the caller makes its call and then calls done with its error.
// A refusal wraps ErrUnavailable and names why.
func (g *guard) enter(ctx context.Context) (done func(error), err error) {
	// Fail fast while open: waiting for a place first would make each
	// request wait behind the calls still timing out.
	if g.breaker.State() == gobreaker.StateOpen {
		return nil, g.reject(ctx, rejectedOpen)
	}
	if !g.sem.TryAcquire(1) {
		wctx, cancel := context.WithTimeout(ctx, g.wait)
		err := g.sem.Acquire(wctx, 1)
		cancel()
		if err != nil {
			return nil, g.reject(ctx, rejectedSaturated)
		}
	}
	report, err := g.breaker.Allow()
	if err != nil {
		// Open, or half-open with its probe already under way.
		g.sem.Release(1)
		return nil, g.reject(ctx, rejectedOpen)
	}
	if g.inFlight != nil {
		g.inFlight.Add(ctx, 1)
	}
	return func(err error) {
		report(err)
		if g.inFlight != nil {
			g.inFlight.Add(ctx, -1)
		}
		g.sem.Release(1)
	}, nil
}

func (g *guard) reject(ctx context.Context, reason string) error {
	if g.rejected != nil {
		g.rejected.Add(ctx, 1, rejectedAttrs[reason])
	}
	if reason == rejectedOpen {
		return fmt.Errorf("%w: introspection: circuit breaker open after repeated failures of %s", ErrUnavailable, g.endpoint)
	}
	return fmt.Errorf("%w: introspection: no free place among the calls in flight to %s within %s", ErrUnavailable, g.endpoint, g.wait)
}
