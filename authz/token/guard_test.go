package token

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phantom-authz/phantom-authz/authz/internal/logtest"
	"github.com/phantom-authz/phantom-authz/authz/internal/metrictest"
)

// faultyOAuth is an introspection endpoint that fails (500) until healed;
// every token it knows is active.
type faultyOAuth struct {
	*oauthServer
	failing atomic.Bool
}

func newFaultyOAuth(t *testing.T) *faultyOAuth {
	f := &faultyOAuth{}
	f.oauthServer = newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		if f.failing.Load() {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		writeJSON(w, map[string]any{"active": true, "sub": "alice", "client_id": "app", "exp": time.Now().Add(time.Hour).Unix()})
	})
	return f
}

// After failures in a row the breaker opens: the next token is refused at
// once without a call; after the cool-down one probe goes through, and its
// success closes the breaker. Each change is one log line and a metric.
func TestBreakerOpensAndRecovers(t *testing.T) {
	srv := newFaultyOAuth(t)
	srv.failing.Store(true)
	var logs logtest.Buffer
	m := metrictest.New(t)
	in := introspectionConfig(srv.oauthServer)
	in.Breaker = BreakerConfig{Failures: 3, Cooldown: 200 * time.Millisecond}
	r := mustNew(t, Config{Introspection: in, Logger: newTestLogger(&logs), Meter: m.Meter()})
	ctx := context.Background()

	for i := range 3 {
		_, err := r.Resolve(ctx, bearer(fmt.Sprintf("tok-%d", i)))
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("call %d against a failing server: %v, want ErrUnavailable", i, err)
		}
	}
	if got := srv.count.Load(); got != 3 {
		t.Fatalf("%d calls reached the server, want 3", got)
	}
	// Open: refused without calling.
	for i := range 5 {
		_, err := r.Resolve(ctx, bearer(fmt.Sprintf("open-%d", i)))
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "circuit breaker open") {
			t.Fatalf("while open: %v, want ErrUnavailable naming the breaker", err)
		}
	}
	if got := srv.count.Load(); got != 3 {
		t.Errorf("%d calls reached the server while the breaker was open, want still 3", got)
	}
	if got := m.Value(t, "phantom_authz.introspection.rejected", "reason", "circuit_open"); got != 5 {
		t.Errorf("rejected{reason=circuit_open} = %d, want 5", got)
	}
	if got := m.Value(t, "phantom_authz.introspection.breaker.state"); got != 2 {
		t.Errorf("breaker.state = %d, want 2 (open)", got)
	}
	if got := strings.Count(logs.String(), "circuit breaker open"); got != 1 {
		t.Errorf("%d log lines say the breaker opened, want 1:\n%s", got, logs.String())
	}
	if got := r.Stats().IntrospectionsFailed; got != 3 {
		t.Errorf("IntrospectionsFailed = %d, want 3 (refusals are not introspections)", got)
	}

	// The server heals; after the cool-down the probe closes the breaker.
	srv.failing.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; ; i++ {
		tok, err := r.Resolve(ctx, bearer(fmt.Sprintf("heal-%d", i)))
		if err == nil && tok.Subject == "alice" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not recovered 5s after the server healed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := m.Value(t, "phantom_authz.introspection.breaker.transitions", "from", "half-open", "to", "closed"); got != 1 {
		t.Errorf("transitions half-open→closed = %d, want 1", got)
	}
	if got := m.Value(t, "phantom_authz.introspection.breaker.state"); got != 0 {
		t.Errorf("breaker.state = %d after recovery, want 0 (closed)", got)
	}
	for _, line := range []string{"circuit breaker half-open", "circuit breaker closed"} {
		if got := strings.Count(logs.String(), line); got != 1 {
			t.Errorf("%d log lines %q, want 1", got, line)
		}
	}
}

// A probe that fails opens the breaker again for another cool-down; only
// one probe goes through at a time.
func TestBreakerProbeFails(t *testing.T) {
	srv := newFaultyOAuth(t)
	srv.failing.Store(true)
	m := metrictest.New(t)
	in := introspectionConfig(srv.oauthServer)
	in.Breaker = BreakerConfig{Failures: 1, Cooldown: 150 * time.Millisecond}
	r := mustNew(t, Config{Introspection: in, Meter: m.Meter()})
	ctx := context.Background()
	if _, err := r.Resolve(ctx, bearer("first")); !errors.Is(err, ErrUnavailable) {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the cool-down: nothing to poll
	if _, err := r.Resolve(ctx, bearer("probe")); err == nil || strings.Contains(err.Error(), "circuit breaker") {
		t.Fatalf("the probe: %v, want the server's failure", err)
	}
	if got := srv.count.Load(); got != 2 {
		t.Fatalf("%d calls, want 2 (the first and the probe)", got)
	}
	if _, err := r.Resolve(ctx, bearer("after-probe")); err == nil || !strings.Contains(err.Error(), "circuit breaker open") {
		t.Fatalf("after a failed probe: %v, want the breaker open again", err)
	}
	if got := m.Value(t, "phantom_authz.introspection.breaker.transitions", "from", "half-open", "to", "open"); got != 1 {
		t.Errorf("transitions half-open→open = %d, want 1", got)
	}
}

// Inactive answers, however many, are the OAuth server working: the
// breaker stays closed.
func TestBreakerIgnoresInactive(t *testing.T) {
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"active": false})
	})
	in := introspectionConfig(srv)
	in.Breaker = BreakerConfig{Failures: 2, Cooldown: time.Minute}
	r := mustNew(t, Config{Introspection: in})
	for i := range 10 {
		if _, err := r.Resolve(context.Background(), bearer(fmt.Sprintf("junk-%d", i))); !errors.Is(err, ErrInactive) {
			t.Fatalf("junk %d: %v, want ErrInactive", i, err)
		}
	}
	if got := srv.count.Load(); got != 10 {
		t.Errorf("%d calls, want 10", got)
	}
}

// At most max_concurrent calls are in flight; a call beyond waits for a
// place, and fails (saturated) when none frees up in time. Goroutines do
// not outlive the wait.
func TestConcurrencyBound(t *testing.T) {
	release := make(chan struct{})
	var inFlight, peak atomic.Int64
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		writeJSON(w, map[string]any{"active": true, "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	})
	m := metrictest.New(t)
	in := introspectionConfig(srv)
	in.MaxConcurrent = 2
	in.Timeout = 5 * time.Second
	r := mustNew(t, Config{Introspection: in, Meter: m.Meter()})
	// Waiting for a place is bounded by the timeout; shorter here so the
	// waiters give up while the two calls still hold their places.
	r.intro.guard.wait = 200 * time.Millisecond
	before := runtime.NumGoroutine()

	const callers = 20
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := r.Resolve(context.Background(), bearer(fmt.Sprintf("new-%d", i)))
			errs <- err
		}()
	}
	// 18 give up after 200ms; then the two in flight are answered.
	deadline := time.Now().Add(5 * time.Second)
	for m.Value(t, "phantom_authz.introspection.rejected", "reason", "saturated") < callers-2 {
		if time.Now().After(deadline) {
			t.Fatalf("rejected{saturated} = %d after 5s, want %d", m.Value(t, "phantom_authz.introspection.rejected", "reason", "saturated"), callers-2)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := m.Value(t, "phantom_authz.introspection.in_flight"); got != 2 {
		t.Errorf("in_flight = %d while two calls hang, want 2", got)
	}
	close(release)
	wg.Wait()
	close(errs)
	var ok, saturated int
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrUnavailable) && strings.Contains(err.Error(), "no free place"):
			saturated++
		default:
			t.Errorf("unexpected: %v", err)
		}
	}
	if ok != 2 || saturated != callers-2 {
		t.Errorf("%d answered, %d refused as saturated; want 2 and %d", ok, saturated, callers-2)
	}
	if p := peak.Load(); p != 2 {
		t.Errorf("peak concurrent calls at the server = %d, want 2", p)
	}
	if got := m.Value(t, "phantom_authz.introspection.in_flight"); got != 0 {
		t.Errorf("in_flight = %d after all answered, want 0", got)
	}
	// Saturation is not the server failing: the breaker stayed closed.
	if got := m.Value(t, "phantom_authz.introspection.breaker.state"); got != 0 {
		t.Errorf("breaker.state = %d, want 0 (closed)", got)
	}
	// Only the two kept-alive connections remain; closed, nothing is left.
	r.transport.CloseIdleConnections()
	waitGoroutines(t, before+2)
}

// waitGoroutines waits until at most limit goroutines run.
func waitGoroutines(t *testing.T, limit int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > limit {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines 5s after the load ended, want at most %d", runtime.NumGoroutine(), limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An outage with the breaker open costs no goroutines: a thousand new
// tokens are refused at once.
func TestBreakerOpenBoundsGoroutines(t *testing.T) {
	srv := newFaultyOAuth(t)
	srv.failing.Store(true)
	in := introspectionConfig(srv.oauthServer)
	in.Breaker = BreakerConfig{Failures: 1, Cooldown: time.Minute}
	r := mustNew(t, Config{Introspection: in})
	_, _ = r.Resolve(context.Background(), bearer("trip"))
	before := runtime.NumGoroutine()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.Resolve(context.Background(), bearer(fmt.Sprintf("t-%d", i))); !errors.Is(err, ErrUnavailable) {
				t.Errorf("token %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("1000 refusals took %s; an open breaker answers at once", d)
	}
	if got := srv.count.Load(); got != 1 {
		t.Errorf("%d calls reached the server, want 1", got)
	}
	waitGoroutines(t, before+2)
}

func TestGuardConfig(t *testing.T) {
	srv := newOAuthServer(t, func(http.ResponseWriter, *http.Request) {})
	for _, tc := range []struct {
		edit func(*IntrospectionConfig)
		want string
	}{
		{func(c *IntrospectionConfig) { c.MaxConcurrent = -1 }, "introspection.max_concurrent"},
		{func(c *IntrospectionConfig) { c.Breaker.Failures = -1 }, "introspection.circuit_breaker.failures"},
		{func(c *IntrospectionConfig) { c.Breaker.Cooldown = -time.Second }, "introspection.circuit_breaker.cooldown"},
	} {
		in := introspectionConfig(srv)
		tc.edit(in)
		if _, err := New(Config{Introspection: in}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one naming %s", err, tc.want)
		}
	}
	r := mustNew(t, Config{Introspection: introspectionConfig(srv)})
	if c := r.intro.cfg; c.MaxConcurrent != 64 || c.Breaker.Failures != 5 || c.Breaker.Cooldown != 5*time.Second {
		t.Errorf("defaults: max_concurrent %d, failures %d, cooldown %s; want 64, 5, 5s", c.MaxConcurrent, c.Breaker.Failures, c.Breaker.Cooldown)
	}
}
