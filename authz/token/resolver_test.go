package token

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// activeAnswer answers every introspection with an active token expiring at exp.
func activeAnswer(exp time.Time) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"active": true, "sub": "alice", "scope": "read", "exp": exp.Unix()})
	}
}

func TestCoalescing(t *testing.T) {
	release := make(chan struct{})
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		writeJSON(w, map[string]any{"active": true, "sub": "alice"})
	})
	r := mustNew(t, Config{Introspection: introspectionConfig(srv)})

	const callers = 200
	var wg sync.WaitGroup
	var failed atomic.Int64
	toks := make([]*Token, callers)
	for i := range callers {
		wg.Go(func() {
			tok, err := r.Resolve(context.Background(), bearer("opaque-new"))
			if err != nil {
				failed.Add(1)
			}
			toks[i] = tok
		})
	}
	// Let the first request reach the server, then release it.
	for srv.count.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()

	if n := srv.count.Load(); n != 1 {
		t.Fatalf("introspection server saw %d requests, want 1", n)
	}
	if failed.Load() != 0 {
		t.Fatalf("%d callers failed", failed.Load())
	}
	for _, tok := range toks {
		if tok != toks[0] {
			t.Fatal("callers got different tokens")
		}
	}
	st := r.Stats()
	if st.Coalesced+st.Hits != callers-1 || st.IntrospectionsActive != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestCanceledWaiterDoesNotCancelOthers(t *testing.T) {
	release := make(chan struct{})
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		writeJSON(w, map[string]any{"active": true, "sub": "alice"})
	})
	r := mustNew(t, Config{Introspection: introspectionConfig(srv)})

	// The first caller starts the introspection and then gives up.
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := r.Resolve(ctx, bearer("opaque-1"))
		first <- err
	}()
	for srv.count.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	second := make(chan error, 1)
	go func() {
		_, err := r.Resolve(context.Background(), bearer("opaque-1"))
		second <- err
	}()
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("canceled caller: err = %v", err)
	}
	close(release)
	if err := <-second; err != nil {
		t.Fatalf("other caller: err = %v", err)
	}
	if n := srv.count.Load(); n != 1 {
		t.Fatalf("server saw %d requests, want 1", n)
	}
}

func TestCache(t *testing.T) {
	clk := newClock()
	now := clk.Now()
	type step struct {
		advance   time.Duration
		wantErr   error
		wantCount int64 // requests at the server after this step
	}
	tests := []struct {
		name    string
		handle  http.HandlerFunc
		cache   CacheConfig
		prepare func(*Token) error
		steps   []step
	}{
		{
			name:   "second call is served from the cache",
			handle: activeAnswer(now.Add(time.Hour)),
			steps:  []step{{wantCount: 1}, {wantCount: 1}, {advance: time.Minute, wantCount: 1}},
		},
		{
			name:   "kept until exp, then refused though the server says active",
			handle: activeAnswer(now.Add(30 * time.Second)),
			steps: []step{{wantCount: 1}, {advance: 29 * time.Second, wantCount: 1},
				{advance: 2 * time.Second, wantErr: ErrInactive, wantCount: 2}},
		},
		{
			name:   "kept no longer than max_ttl",
			handle: activeAnswer(now.Add(time.Hour)),
			cache:  CacheConfig{MaxTTL: time.Minute},
			steps:  []step{{wantCount: 1}, {advance: 59 * time.Second, wantCount: 1}, {advance: 2 * time.Second, wantCount: 2}},
		},
		{
			name:   "kept no longer than the JWT to forward",
			handle: activeAnswer(now.Add(time.Hour)),
			prepare: func(tok *Token) error {
				tok.JWT, tok.JWTExpiry = "minted", now.Add(10*time.Second)
				return nil
			},
			steps: []step{{wantCount: 1}, {advance: 9 * time.Second, wantCount: 1}, {advance: 2 * time.Second, wantCount: 2}},
		},
		{
			name:   "expired by the server's word is refused, and remembered as inactive",
			handle: activeAnswer(now.Add(-time.Second)),
			steps:  []step{{wantErr: ErrInactive, wantCount: 1}, {wantErr: ErrInactive, wantCount: 1}},
		},
		{
			name: "inactive remembered for inactive_ttl",
			handle: func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, map[string]any{"active": false})
			},
			cache: CacheConfig{InactiveTTL: 10 * time.Second},
			steps: []step{
				{wantErr: ErrInactive, wantCount: 1},
				{advance: 9 * time.Second, wantErr: ErrInactive, wantCount: 1},
				{advance: 2 * time.Second, wantErr: ErrInactive, wantCount: 2},
			},
		},
		{
			name: "inactive not remembered when inactive_ttl is negative",
			handle: func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, map[string]any{"active": false})
			},
			cache: CacheConfig{InactiveTTL: -1},
			steps: []step{{wantErr: ErrInactive, wantCount: 1}, {wantErr: ErrInactive, wantCount: 2}},
		},
		{
			name: "unavailable is never cached",
			handle: func() http.HandlerFunc {
				var n atomic.Int64
				return func(w http.ResponseWriter, r *http.Request) {
					if n.Add(1) == 1 {
						http.Error(w, "boom", http.StatusInternalServerError)
						return
					}
					activeAnswer(now.Add(time.Hour))(w, r)
				}
			}(),
			steps: []step{{wantErr: ErrUnavailable, wantCount: 1}, {wantCount: 2}, {wantCount: 2}},
		},
		{
			name:    "a failed prepare is not cached",
			handle:  activeAnswer(now.Add(time.Hour)),
			prepare: func(*Token) error { return errors.New("mint failed") },
			steps:   []step{{wantErr: ErrUnavailable, wantCount: 1}, {wantErr: ErrUnavailable, wantCount: 2}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			srv := newOAuthServer(t, tt.handle)
			r := mustNew(t, Config{Introspection: introspectionConfig(srv), Cache: tt.cache, Prepare: tt.prepare, Now: clk.Now})
			for i, s := range tt.steps {
				clk.Advance(s.advance)
				tok, err := r.Resolve(context.Background(), bearer("opaque-1"))
				if !errors.Is(err, s.wantErr) || (err == nil && tok == nil) {
					t.Fatalf("step %d: tok, err = %v, %v; want err %v", i, tok, err, s.wantErr)
				}
				if n := srv.count.Load(); n != s.wantCount {
					t.Fatalf("step %d: server saw %d requests, want %d", i, n, s.wantCount)
				}
			}
		})
	}
}

func TestPrepareRunsOncePerToken(t *testing.T) {
	srv := newOAuthServer(t, activeAnswer(time.Now().Add(time.Hour)))
	var calls atomic.Int64
	r := mustNew(t, Config{Introspection: introspectionConfig(srv), Prepare: func(tok *Token) error {
		calls.Add(1)
		tok.Prepared = "input"
		return nil
	}})
	for range 3 {
		tok, err := r.Resolve(context.Background(), bearer("opaque-1"))
		if err != nil || tok.Prepared != "input" {
			t.Fatalf("tok, err = %+v, %v", tok, err)
		}
	}
	if calls.Load() != 1 {
		t.Fatalf("Prepare ran %d times, want 1", calls.Load())
	}
	// The cause stays visible to the caller.
	cause := errors.New("policy input")
	r2 := mustNew(t, Config{Introspection: introspectionConfig(srv), Prepare: func(*Token) error { return cause }})
	if _, err := r2.Resolve(context.Background(), bearer("opaque-1")); !errors.Is(err, ErrUnavailable) || !errors.Is(err, cause) {
		t.Fatalf("err = %v", err)
	}
}

func TestPreparePanicFailsClosed(t *testing.T) {
	srv := newOAuthServer(t, activeAnswer(time.Now().Add(time.Hour)))
	var logs bytes.Buffer
	// A panic whose value carries the token must not put it in the logs.
	r := mustNew(t, Config{Introspection: introspectionConfig(srv), Logger: newTestLogger(&logs),
		Prepare: func(tok *Token) error { panic("bug with opaque-secret-1") }})
	if _, err := r.Resolve(context.Background(), bearer("opaque-secret-1")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if !strings.Contains(logs.String(), "panic while resolving") {
		t.Fatalf("no log line for the panic: %s", logs.String())
	}
	if strings.Contains(logs.String(), "opaque-secret-1") {
		t.Fatalf("the panic value reached the logs: %s", logs.String())
	}
}

func TestSharedClaims(t *testing.T) {
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		writeJSON(w, map[string]any{"active": true, "iss": "https://as.example", "aud": []string{"a", "b"},
			"scope": "read write", "sub": r.PostForm.Get("token") + "-user", "exp": 1 << 40, "big": 1<<53 + 1})
	})
	r := mustNew(t, Config{Introspection: introspectionConfig(srv)})
	t1, err1 := r.Resolve(context.Background(), bearer("one"))
	t2, err2 := r.Resolve(context.Background(), bearer("two"))
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if t1.Subject != "one-user" || t2.Subject != "two-user" || claimsOf(t, t1)["iss"] != claimsOf(t, t2)["iss"] {
		t.Fatalf("claims: %v / %v", claimsOf(t, t1), claimsOf(t, t2))
	}
	if &t1.Scopes[0] != &t2.Scopes[0] {
		t.Error("equal scope strings are not shared")
	}
	if _, ok := claimsOf(t, t1)["exp"].(float64); !ok {
		t.Errorf("exp is %T, want float64", claimsOf(t, t1)["exp"])
	}
	if n, ok := claimsOf(t, t1)["big"].(interface{ String() string }); !ok || n.String() != "9007199254740993" {
		t.Errorf("big = %v (%T), want json.Number 9007199254740993", claimsOf(t, t1)["big"], claimsOf(t, t1)["big"])
	}
}

func TestServerDownCachedTokensStillResolve(t *testing.T) {
	srv := newOAuthServer(t, activeAnswer(time.Now().Add(time.Hour)))
	r := mustNew(t, Config{Introspection: introspectionConfig(srv)})
	if _, err := r.Resolve(context.Background(), bearer("known")); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if _, err := r.Resolve(context.Background(), bearer("known")); err != nil {
		t.Fatalf("cached token: %v", err)
	}
	if _, err := r.Resolve(context.Background(), bearer("new")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("new token: err = %v, want ErrUnavailable", err)
	}
}

func TestNoIntrospection(t *testing.T) {
	r := mustNew(t, Config{Issuers: []IssuerConfig{{
		Issuer: "https://as.example", JWKSURI: "https://as.example/jwks", Audiences: []string{"api"},
	}}})
	for _, raw := range []string{"opaque-1", "", "a.b.c"} {
		if _, err := r.Resolve(context.Background(), bearer(raw)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: err = %v, want ErrInvalid", raw, err)
		}
	}
}

func TestResolveAfterClose(t *testing.T) {
	srv := newOAuthServer(t, activeAnswer(time.Now().Add(time.Hour)))
	r, err := New(Config{Introspection: introspectionConfig(srv)})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	r.Close() // idempotent
	if _, err := r.Resolve(context.Background(), bearer("opaque-1")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if srv.count.Load() != 0 {
		t.Fatal("a closed resolver introspected")
	}
}
