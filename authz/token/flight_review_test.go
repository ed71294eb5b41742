package token

// Attack review of the flights (resolveMiss): inline flights (a JWT whose
// key is at hand, singleflight.Do on the caller's goroutine) and flights on
// a goroutine of their own (DoChan). Every test is deterministic: blocking
// is done with channels, time with the fake clock; a time.After appears
// only as a failure detector (a test that passes never waits for it).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// stuck is how long a test waits for something that must happen at once
// before it reports a hang.
const stuck = 10 * time.Second

// onCallerGoroutine reports whether the calling code runs inside
// resolveMiss itself (an inline flight), not on a flight goroutine.
func onCallerGoroutine() bool {
	buf := make([]byte, 64<<10)
	return strings.Contains(string(buf[:runtime.Stack(buf, false)]), ".(*Resolver).resolveMiss(")
}

// hookProcessor calls onStart, synchronously, as each span starts: a way
// into the middle of a flight (token.verify starts just before the key
// lookup).
type hookProcessor struct{ onStart func(name string) }

func (h hookProcessor) OnStart(_ context.Context, s sdktrace.ReadWriteSpan) { h.onStart(s.Name()) }
func (hookProcessor) OnEnd(sdktrace.ReadOnlySpan)                           {}
func (hookProcessor) Shutdown(context.Context) error                        { return nil }
func (hookProcessor) ForceFlush(context.Context) error                      { return nil }

// gatedJWKS is a JWKS endpoint whose requests can be held: while gate is
// set, a request signals arrived and waits for release.
type gatedJWKS struct {
	*httptest.Server
	body    atomic.Pointer[[]byte]
	count   atomic.Int64
	gate    atomic.Bool
	arrived chan struct{}
	release chan struct{}
}

func newGatedJWKS(t *testing.T, keys ...signingKey) *gatedJWKS {
	s := &gatedJWKS{arrived: make(chan struct{}, 16), release: make(chan struct{})}
	s.set(t, keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.count.Add(1)
		if s.gate.Load() {
			s.arrived <- struct{}{}
			select {
			case <-s.release:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *gatedJWKS) set(t *testing.T, keys ...signingKey) {
	b := jwksJSON(t, keys...)
	s.body.Store(&b)
}

// (a) The leader of a flight on its own goroutine has a deadline already
// past when it asks: it gives up, its flight does not, and a caller that
// joins gets the answer.
func TestFlightReviewLeaderDeadlineDoesNotFailWaiters(t *testing.T) {
	release := make(chan struct{})
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		writeJSON(w, map[string]any{"active": true, "sub": "alice"})
	})
	r := mustNew(t, Config{Introspection: introspectionConfig(srv)})
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if _, err := r.Resolve(expired, bearer("opaque-deadline")); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("leader: err = %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	for srv.count.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	waiter := make(chan error, 1)
	go func() {
		_, err := r.Resolve(context.Background(), bearer("opaque-deadline"))
		waiter <- err
	}()
	close(release)
	if err := <-waiter; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if n := srv.count.Load(); n != 1 {
		t.Fatalf("%d introspections, want 1", n)
	}
}

// (a) An inline flight whose leader's context is canceled still answers
// the leader and every caller that joins it; verified and prepared once.
func TestFlightReviewInlineLeaderCanceled(t *testing.T) {
	testKeys(t)
	clk := newClock()
	jwks := newJWKSServer(t, keysES)
	entered, release := make(chan struct{}), make(chan struct{})
	var armed atomic.Bool
	var prepares atomic.Int64
	var inline atomic.Bool
	r := mustNew(t, Config{Issuers: []IssuerConfig{issuerConfig(jwks)}, Now: clk.Now,
		Prepare: func(*Token) error {
			if armed.CompareAndSwap(true, false) {
				prepares.Add(1)
				inline.Store(onCallerGoroutine())
				close(entered)
				<-release
			}
			return nil
		}})
	if _, err := r.Resolve(context.Background(), bearer(signJWT(t, keysES, nil, with(claimsAt(clk.Now()), "jti", "warm")))); err != nil {
		t.Fatal(err)
	}
	raw := signJWT(t, keysES, nil, with(claimsAt(clk.Now()), "jti", "canceled-leader"))
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	armed.Store(true)
	leader := make(chan error, 1)
	go func() {
		tok, err := r.Resolve(canceled, bearer(raw))
		if err == nil && tok.Subject != "alice" {
			err = fmt.Errorf("wrong token %+v", tok)
		}
		leader <- err
	}()
	<-entered
	const waiters = 16
	errs := make(chan error, waiters)
	for i := range waiters {
		go func() {
			ctx := context.Background()
			if i%2 == 0 {
				ctx = canceled
			}
			_, err := r.Resolve(ctx, bearer(raw))
			errs <- err
		}()
	}
	close(release)
	if err := <-leader; err != nil {
		t.Fatalf("leader: %v", err)
	}
	for range waiters {
		if err := <-errs; err != nil {
			t.Fatalf("waiter: %v", err)
		}
	}
	if !inline.Load() {
		t.Error("the flight did not run on the leader's goroutine")
	}
	if n := r.Stats().JWTsVerified; n != 2 || prepares.Load() != 1 {
		t.Errorf("%d verifications (want 2, one per JWT), %d prepares of the new JWT (want 1)", n, prepares.Load())
	}
}

// (a) A panic in an inline flight (Prepare) fails that resolution closed,
// for every caller, on the caller's goroutine without killing the process;
// nothing is cached, the next request resolves afresh.
func TestFlightReviewInlinePanicFailsClosed(t *testing.T) {
	testKeys(t)
	clk := newClock()
	jwks := newJWKSServer(t, keysES)
	var panics atomic.Int64
	var inline atomic.Bool
	var armed atomic.Bool
	r := mustNew(t, Config{Issuers: []IssuerConfig{issuerConfig(jwks)}, Now: clk.Now,
		Prepare: func(*Token) error {
			if armed.Load() {
				panics.Add(1)
				inline.Store(onCallerGoroutine())
				panic("boom")
			}
			return nil
		}})
	if _, err := r.Resolve(context.Background(), bearer(signJWT(t, keysES, nil, with(claimsAt(clk.Now()), "jti", "warm")))); err != nil {
		t.Fatal(err)
	}
	raw := signJWT(t, keysES, nil, with(claimsAt(clk.Now()), "jti", "panics"))
	armed.Store(true)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := r.Resolve(context.Background(), bearer(raw)); !errors.Is(err, ErrUnavailable) {
				t.Errorf("err = %v, want ErrUnavailable", err)
			}
		})
	}
	wg.Wait()
	if !inline.Load() {
		t.Error("the flight did not run inline")
	}
	armed.Store(false)
	if _, err := r.Resolve(context.Background(), bearer(raw)); err != nil {
		t.Fatalf("after the panic: %v (a failure was cached)", err)
	}
}

// (c) What a caller of an inline flight waits for when the key set changes
// under it (the comment in resolveMiss). The flight's key lookup no longer
// finds the key and asks for a refresh. (1) The refresh that replaced the
// set began less than refreshInterval ago (always so when the JWKS timeout
// is shorter than refreshInterval): no fetch, the token is refused at once.
// (2) It began longer ago (a fetch that lasted over 30s: timeout > 30s):
// the inline flight fetches the JWKS, within the JWKS timeout; callers
// arriving meanwhile see the key gone, take a goroutine flight, and can
// give up.
func TestFlightReviewKeySetChangesUnderInlineFlight(t *testing.T) {
	testKeys(t)
	for _, slowPrevious := range []bool{false, true} {
		t.Run(fmt.Sprintf("previous refresh lasted over 30s: %v", slowPrevious), func(t *testing.T) {
			clk := newClock()
			jwks := newGatedJWKS(t, keysES)
			var r *Resolver
			var armed, inline atomic.Bool
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(hookProcessor{onStart: func(name string) {
				if name != "token.verify" || !armed.CompareAndSwap(true, false) {
					return
				}
				inline.Store(onCallerGoroutine())
				// The issuer withdraws es-1; a refresh lands now.
				jwks.set(t, keysES2)
				clk.Advance(refreshInterval + time.Second)
				if _, err := r.issuers[testIssuer].keys.refresh(context.Background()); err != nil {
					t.Errorf("refresh in the hook: %v", err)
				}
				if slowPrevious {
					clk.Advance(refreshInterval + time.Second)
					jwks.gate.Store(true)
				}
			}}))
			tracer := tp.Tracer("review")
			ic := IssuerConfig{Issuer: testIssuer, JWKSURI: jwks.URL, Audiences: []string{"api"}, AllowInsecureHTTP: true}
			r = mustNew(t, Config{Issuers: []IssuerConfig{ic}, Now: clk.Now, Tracer: tracer})
			if _, err := r.Resolve(context.Background(), bearer(signJWT(t, keysES, nil, with(claimsAt(clk.Now()), "jti", "warm")))); err != nil {
				t.Fatal(err)
			}
			raw := signJWT(t, keysES, nil, with(claimsAt(clk.Now()), "jti", "rotated"))
			armed.Store(true)
			ctx, span := tracer.Start(context.Background(), "Check")
			defer span.End()
			leader := make(chan error, 1)
			go func() {
				_, err := r.Resolve(ctx, bearer(raw))
				leader <- err
			}()
			if slowPrevious {
				select {
				case <-jwks.arrived:
				case <-time.After(stuck):
					t.Fatal("the inline flight did not fetch the JWKS")
				}
				// A caller arriving now gives up with its context.
				canceled, cancel := context.WithCancel(context.Background())
				cancel()
				late := make(chan error, 1)
				go func() {
					_, err := r.Resolve(canceled, bearer(raw))
					late <- err
				}()
				select {
				case err := <-late:
					if !errors.Is(err, context.Canceled) {
						t.Errorf("late caller: err = %v, want context.Canceled", err)
					}
				case <-time.After(stuck):
					t.Fatal("a caller with a canceled context waited for the inline flight's JWKS fetch")
				}
				jwks.gate.Store(false)
				close(jwks.release)
			}
			select {
			case err := <-leader:
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("leader: err = %v, want ErrInvalid (es-1 withdrawn)", err)
				}
			case <-time.After(stuck):
				t.Fatal("the inline flight hangs")
			}
			if !inline.Load() {
				t.Error("the flight did not run inline")
			}
			want := int64(2) // the warm-up's fetch and the hook's
			if slowPrevious {
				want = 3 // and the inline flight's
			}
			if n := jwks.count.Load(); n != want {
				t.Errorf("%d JWKS fetches, want %d", n, want)
			}
		})
	}
}

// (b), (c), (d) Many callers, inline and goroutine flights on the same
// tokens, cancellations, tokens forged with a known kid, made-up kids, and
// the key set rotating underneath. Whatever the interleaving: a forged or
// made-up-kid token is never accepted, an accepted Token is the one its
// caller presented, and a token whose key never leaves the set is refused
// only to a caller that gave up. Run it with -race.
func TestFlightReviewFlightsUnderRotation(t *testing.T) {
	testKeys(t)
	clk := newClock()
	jwks := newJWKSServer(t, keysES, keysES2)
	r := mustNew(t, Config{Issuers: []IssuerConfig{issuerConfig(jwks)}, Now: clk.Now})
	if _, err := r.Resolve(context.Background(), bearer(signJWT(t, keysES2, nil, with(claimsAt(clk.Now()), "jti", "warm")))); err != nil {
		t.Fatal(err)
	}
	type presented struct {
		raw, jti string
		kind     string // stable (es-2, never withdrawn), rotating (es-1), forged, madeup
	}
	var toks []presented
	for i := range 6 {
		// exp a day away: the rotation below moves the clock 31s a turn.
		c := with(claimsAt(clk.Now()), "exp", clk.Now().Add(24*time.Hour).Unix())
		jti := fmt.Sprintf("t-%d", i)
		toks = append(toks,
			presented{signJWT(t, keysES2, nil, with(c, "jti", jti+"-stable", "sub", jti+"-stable")), jti + "-stable", "stable"},
			presented{signJWT(t, keysES, nil, with(c, "jti", jti+"-rot", "sub", jti+"-rot")), jti + "-rot", "rotating"},
			// Same claims as the stable one, es-2's kid, another key.
			presented{signJWT(t, signingKey{"es-2", jwa.ES256(), keysUnknown.key}, nil, with(c, "jti", jti+"-stable", "sub", jti+"-stable")), jti + "-stable", "forged"},
			presented{signJWT(t, signingKey{fmt.Sprintf("made-up-%d", i), jwa.ES256(), ecKey2}, nil, with(c, "jti", jti+"-m")), jti + "-m", "madeup"},
		)
	}
	stop := make(chan struct{})
	var rot sync.WaitGroup
	rot.Go(func() {
		ks := r.issuers[testIssuer].keys
		for i := 0; i < 1000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				jwks.set(t, keysES2)
			} else {
				jwks.set(t, keysES, keysES2)
			}
			clk.Advance(refreshInterval + time.Second)
			_, _ = ks.refresh(context.Background())
			runtime.Gosched()
		}
	})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for round := range 20 {
				for i := range toks {
					p := toks[(i+w*7+round)%len(toks)]
					ctx := context.Background()
					gaveUp := (i+w+round)%5 == 0
					if gaveUp {
						c, cancel := context.WithCancel(ctx)
						cancel()
						ctx = c
					}
					tok, err := r.Resolve(ctx, bearer(p.raw))
					switch {
					case err == nil && (p.kind == "forged" || p.kind == "madeup"):
						t.Errorf("%s token accepted", p.kind)
					case err == nil:
						if jti, _ := claimsOf(t, tok)["jti"].(string); jti != p.jti || tok.Subject != p.jti {
							t.Errorf("presented %s, got the Token of %s/%s", p.jti, jti, tok.Subject)
						}
					case p.kind == "stable" && !gaveUp:
						t.Errorf("stable token refused: %v", err)
					}
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	rot.Wait()
}

// (c) A stream of made-up kids, concurrently, fetches the JWKS no more
// than once per refreshInterval, while tokens whose key is at hand keep
// resolving.
func TestFlightReviewMadeUpKidFloodConcurrent(t *testing.T) {
	testKeys(t)
	clk := newClock()
	jwks := newJWKSServer(t, keysES)
	r := mustNew(t, Config{Issuers: []IssuerConfig{issuerConfig(jwks)}, Now: clk.Now})
	if _, err := r.Resolve(context.Background(), bearer(signJWT(t, keysES, nil, with(claimsAt(clk.Now()), "jti", "warm")))); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			k := signingKey{fmt.Sprintf("made-up-%d", i), jwa.ES256(), ecKey2}
			if _, err := r.Resolve(context.Background(), bearer(signJWT(t, k, nil, with(claimsAt(clk.Now()), "jti", fmt.Sprint(i))))); !errors.Is(err, ErrInvalid) {
				t.Errorf("made-up kid: err = %v, want ErrInvalid", err)
			}
			if _, err := r.Resolve(context.Background(), bearer(signJWT(t, keysES, nil, with(claimsAt(clk.Now()), "jti", fmt.Sprint("ok-", i))))); err != nil {
				t.Errorf("known kid: %v", err)
			}
		})
	}
	wg.Wait()
	if n := jwks.count.Load(); n != 1 {
		t.Errorf("%d JWKS fetches, want 1 (the clock did not move)", n)
	}
}

// (b) A route that names its server resolves apart, inline flights too: a
// request on another server's route is refused while the first route's
// inline flight for the same JWT is still running (it does not join it), and
// the flight's Token is not handed to it.
func TestFlightReviewRouteFlightsApart(t *testing.T) {
	testKeys(t)
	clk := newClock()
	jwksA := newJWKSServer(t, keysES)
	jwksB := newJWKSServer(t, keysES2)
	entered, release := make(chan struct{}), make(chan struct{})
	var armed atomic.Bool
	r := mustNew(t, Config{Now: clk.Now, Prepare: func(*Token) error {
		if armed.CompareAndSwap(true, false) {
			close(entered)
			<-release
		}
		return nil
	}, Servers: []ServerConfig{
		{Name: "a", Issuer: testIssuer, JWT: &IssuerConfig{JWKSURI: jwksA.URL, Audiences: []string{"api"}, AllowInsecureHTTP: true}},
		{Name: "b", Issuer: "https://b.example", JWT: &IssuerConfig{JWKSURI: jwksB.URL, Audiences: []string{"api"}, AllowInsecureHTTP: true}},
	}})
	if _, err := r.Resolve(context.Background(), bearer(signJWT(t, keysES, nil, with(claimsAt(clk.Now()), "jti", "warm")))); err != nil {
		t.Fatal(err)
	}
	raw := signJWT(t, keysES, nil, with(claimsAt(clk.Now()), "jti", "routed"))
	armed.Store(true)
	onA := make(chan error, 1)
	go func() {
		tok, err := r.ResolveAt(context.Background(), bearer(raw), "a")
		if err == nil && tok.Issuer != testIssuer {
			err = fmt.Errorf("issuer %q", tok.Issuer)
		}
		onA <- err
	}()
	<-entered
	onB := make(chan error, 1)
	go func() {
		_, err := r.ResolveAt(context.Background(), bearer(raw), "b")
		onB <- err
	}()
	select {
	case err := <-onB:
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("route b: err = %v, want ErrInvalid", err)
		}
	case <-time.After(stuck):
		t.Fatal("route b waited for route a's flight")
	}
	close(release)
	if err := <-onA; err != nil {
		t.Fatalf("route a: %v", err)
	}
	// Now cached: route b still refuses it.
	if _, err := r.ResolveAt(context.Background(), bearer(raw), "b"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("route b after the cache: err = %v", err)
	}
}

// panicTransport panics on the calls for which panics says so, else passes
// them on: a panic in the middle of an introspection (a parser's bug on an
// answer, a transport wrapper's).
type panicTransport struct {
	next   http.RoundTripper
	panics func(*http.Request) bool
}

func (p panicTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if p.panics(r) {
		panic("bug in the middle of an introspection")
	}
	return p.next.RoundTrip(r)
}

// (a) A panic during an introspection fails that token closed (load
// recovers it), and gives back what the call held: its place among the
// calls in flight and, when it was the half-open breaker's probe, the probe.
// Left held, max_concurrent panics saturate introspection for good, and one
// panicking probe keeps the breaker half-open with its probe "under way"
// forever: every new opaque token 503 until restart.
func TestFlightReviewPanicInIntrospectionReleasesGuard(t *testing.T) {
	t.Run("places among the calls in flight", func(t *testing.T) {
		srv := newOAuthServer(t, activeAnswer(time.Now().Add(time.Hour)))
		cfg := introspectionConfig(srv)
		cfg.MaxConcurrent = 2
		cfg.Timeout = 200 * time.Millisecond // how long a call waits for a place: only the failing run waits
		cfg.Breaker.Failures = 100
		r := mustNew(t, Config{Introspection: cfg, WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return panicTransport{next: rt, panics: func(r *http.Request) bool {
				body, _ := io.ReadAll(r.Body)
				r.Body = io.NopCloser(bytes.NewReader(body))
				return strings.Contains(string(body), "token=panic-")
			}}
		}})
		for i := range 3 {
			if _, err := r.Resolve(context.Background(), bearer(fmt.Sprint("panic-", i))); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("panicking introspection: err = %v, want ErrUnavailable", err)
			}
		}
		if _, err := r.Resolve(context.Background(), bearer("fine")); err != nil {
			t.Fatalf("after 3 panics with max_concurrent 2: %v", err)
		}
	})
	t.Run("half-open probe", func(t *testing.T) {
		var fail atomic.Bool
		fail.Store(true)
		srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
			if fail.Load() {
				http.Error(w, "down", http.StatusInternalServerError)
				return
			}
			activeAnswer(time.Now().Add(time.Hour))(w, r)
		})
		cfg := introspectionConfig(srv)
		cfg.Breaker = BreakerConfig{Failures: 1, Cooldown: time.Nanosecond} // half-open at once after opening
		var panicNext atomic.Bool
		r := mustNew(t, Config{Introspection: cfg, WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return panicTransport{next: rt, panics: func(*http.Request) bool { return panicNext.CompareAndSwap(true, false) }}
		}})
		if _, err := r.Resolve(context.Background(), bearer("opens")); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable (500)", err)
		}
		// The breaker is open, half-open by the next call: that probe panics.
		panicNext.Store(true)
		if _, err := r.Resolve(context.Background(), bearer("probe")); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("probe: err = %v, want ErrUnavailable", err)
		}
		// The server is back. The panicking probe counted as a failure: the
		// breaker opened again, and (cooldown 1ns) the next call probes.
		fail.Store(false)
		if _, err := r.Resolve(context.Background(), bearer("after")); err != nil {
			t.Fatalf("after a panicking probe, with the server back: %v", err)
		}
	})
}
