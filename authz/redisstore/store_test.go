package redisstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/phantom-authz/phantom-authz/authz/binding"
	"github.com/phantom-authz/phantom-authz/authz/credential"
	"github.com/phantom-authz/phantom-authz/authz/internal/logtest"
	"github.com/phantom-authz/phantom-authz/authz/redisstore"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

const password = "redis-pa55word-for-tests"

// newRedis starts a fake Redis requiring password.
func newRedis(t *testing.T) *miniredis.Miniredis {
	t.Helper()
	mr := miniredis.NewMiniRedis()
	mr.RequireAuth(password)
	if err := mr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mr.Close)
	return mr
}

// newStore is a Store on mr, logging to logs (when not nil).
func newStore(t *testing.T, mr *miniredis.Miniredis, logs *logtest.Buffer) *redisstore.Store {
	t.Helper()
	cfg := redisstore.Config{
		URL:       "redis://" + mr.Addr() + "/0",
		Password:  password,
		KeyPrefix: "test:",
		Timeout:   200 * time.Millisecond,
		Channel:   "test:revocations",
		Pause:     100 * time.Millisecond,
	}
	if logs != nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	}
	s, err := redisstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// eventually polls cond for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func TestNewRefusesBadURLWithoutShowingPassword(t *testing.T) {
	_, err := redisstore.New(redisstore.Config{URL: "http://user:hunter2pw@127.0.0.1:1/0"})
	if err == nil || strings.Contains(err.Error(), "hunter2pw") {
		t.Errorf("err = %v", err)
	}
	if got := redisstore.Redacted("redis://user:hunter2pw@host:6379/0"); strings.Contains(got, "hunter2pw") || !strings.Contains(got, "host:6379") {
		t.Errorf("Redacted = %q", got)
	}
}

func TestWrongPasswordIsAnError(t *testing.T) {
	mr := newRedis(t)
	s, err := redisstore.New(redisstore.Config{URL: "redis://" + mr.Addr(), Password: "wrong-password"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ping(context.Background()); err == nil {
		t.Fatal("Ping with a wrong password succeeded")
	} else if strings.Contains(err.Error(), "wrong-password") {
		t.Errorf("error shows the password: %v", err)
	}
}

// Of two replicas (two clients), only the first to record a proof accepts it.
func TestReplaySetNXAcrossClients(t *testing.T) {
	mr := newRedis(t)
	a, b := newStore(t, mr, nil).ReplayStore(nil), newStore(t, mr, nil).ReplayStore(nil)
	ctx := context.Background()
	until := time.Now().Add(time.Minute)
	key := string(bytes.Repeat([]byte{7}, 32))
	if fresh, err := a.Use(ctx, key, until); err != nil || !fresh {
		t.Fatalf("first use: %v %v", fresh, err)
	}
	if fresh, err := b.Use(ctx, key, until); err != nil || fresh {
		t.Fatalf("replay on the other client: fresh=%v err=%v, want a replay", fresh, err)
	}
	if fresh, err := a.Use(ctx, key, until); err != nil || fresh {
		t.Fatalf("replay on the same client: fresh=%v err=%v", fresh, err)
	}
	other := string(bytes.Repeat([]byte{8}, 32))
	if fresh, err := b.Use(ctx, other, until); err != nil || !fresh {
		t.Fatalf("another proof: %v %v", fresh, err)
	}
	// The key is a hash under the prefix, with the proof's lifetime.
	for _, k := range mr.Keys() {
		if !strings.HasPrefix(k, "test:dpop:") {
			t.Errorf("key %q", k)
		}
		if ttl := mr.TTL(k); ttl <= 0 || ttl > time.Minute {
			t.Errorf("key %s: ttl %s", k, ttl)
		}
	}
}

func TestReplayExpiry(t *testing.T) {
	mr := newRedis(t)
	r := newStore(t, mr, nil).ReplayStore(nil)
	ctx := context.Background()
	key := "a-proof-key-of-any-length"
	if fresh, _ := r.Use(ctx, key, time.Now().Add(2*time.Second)); !fresh {
		t.Fatal("first use refused")
	}
	mr.FastForward(time.Second)
	if fresh, _ := r.Use(ctx, key, time.Now().Add(2*time.Second)); fresh {
		t.Fatal("replay within the window accepted")
	}
	mr.FastForward(2 * time.Second)
	if fresh, err := r.Use(ctx, key, time.Now().Add(2*time.Second)); err != nil || !fresh {
		t.Fatalf("after expiry: %v %v, want fresh", fresh, err)
	}
}

// Redis down: the replay store fails closed (an error, which binding turns
// into 503), once logged; the pause spares Redis the next attempts.
func TestReplayFailsClosed(t *testing.T) {
	mr := newRedis(t)
	var logs logtest.Buffer
	s := newStore(t, mr, &logs)
	r := s.ReplayStore(nil)
	mr.Close()
	ctx := context.Background()
	for i := range 5 {
		fresh, err := r.Use(ctx, "proof", time.Now().Add(time.Minute))
		if err == nil || fresh {
			t.Fatalf("use %d with Redis down: fresh=%v err=%v, want an error", i, fresh, err)
		}
	}
	st := s.Stats()
	if st.Errors[redisstore.OpReplay] != 1 || st.Up {
		t.Errorf("stats = %+v, want one replay error (the others paused) and down", st)
	}
	if n := logs.Count("redis: unreachable"); n != 1 || !strings.Contains(logs.String(), "refused (503)") {
		t.Errorf("%d down lines, want 1: %s", n, logs.String())
	}
}

// replay_fail_open: the in-memory store answers while Redis is down.
func TestReplayFailOpen(t *testing.T) {
	mr := newRedis(t)
	var logs logtest.Buffer
	s := newStore(t, mr, &logs)
	r := s.ReplayStore(binding.NewMemoryReplay(0))
	ctx := context.Background()
	if fresh, err := r.Use(ctx, "before", time.Now().Add(time.Minute)); err != nil || !fresh {
		t.Fatal(fresh, err)
	}
	mr.Close()
	if fresh, err := r.Use(ctx, "during", time.Now().Add(time.Minute)); err != nil || !fresh {
		t.Fatalf("first use, Redis down: %v %v", fresh, err)
	}
	if fresh, err := r.Use(ctx, "during", time.Now().Add(time.Minute)); err != nil || fresh {
		t.Fatalf("replay, Redis down: fresh=%v err=%v, want refused by memory", fresh, err)
	}
	if st := s.Stats(); st.ReplayFallbacks != 2 {
		t.Errorf("fallbacks = %d, want 2", st.ReplayFallbacks)
	}
	if logs.Count("redis: unreachable") != 1 || !strings.Contains(logs.String(), "replay_fail_open") {
		t.Errorf("logs: %s", logs.String())
	}
}

// oauth is an introspection endpoint that counts calls per token.
type oauth struct {
	*httptest.Server
	calls   atomic.Int64
	release chan struct{} // when not nil, answers wait for it
}

func newOAuth(t *testing.T, block bool) *oauth {
	o := &oauth{}
	if block {
		o.release = make(chan struct{})
	}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.calls.Add(1)
		if o.release != nil {
			<-o.release
		}
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"active": true, "sub": "alice", "client_id": "shop", "scope": "read",
			"exp": time.Now().Add(time.Hour).Unix(), "big": json.Number("123456789012345678901"),
		})
	}))
	t.Cleanup(o.Close)
	return o
}

// newResolver is one replica's resolver on store s (nil: none).
func newResolver(t *testing.T, o *oauth, s *redisstore.Store) *token.Resolver {
	t.Helper()
	cfg := token.Config{Introspection: &token.IntrospectionConfig{
		Endpoint: o.URL, ClientID: "gw", ClientSecret: "secret", AllowInsecureHTTP: true, Timeout: time.Second,
	}}
	if s != nil {
		cfg.Shared, cfg.Publisher = s, s
		cfg.SharedKey = []byte("redisstore-test-cache-key-0123456789abcdef")
	}
	r, err := token.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func bearer(tok string) credential.Credential {
	return credential.Credential{Scheme: credential.SchemeBearer, Token: tok}
}

// The second replica finds the first's answer in Redis and does not
// introspect; Redis holds neither the token nor its claims in clear.
func TestSharedCacheAcrossResolvers(t *testing.T) {
	mr := newRedis(t)
	o := newOAuth(t, false)
	r1, r2 := newResolver(t, o, newStore(t, mr, nil)), newResolver(t, o, newStore(t, mr, nil))
	const raw = "opaque-shared-token-0001"
	ctx := context.Background()
	t1, err := r1.Resolve(ctx, bearer(raw))
	if err != nil {
		t.Fatal(err)
	}
	t2, err := r2.Resolve(ctx, bearer(raw))
	if err != nil {
		t.Fatal(err)
	}
	if n := o.calls.Load(); n != 1 {
		t.Fatalf("%d introspections, want 1", n)
	}
	if st := r2.Stats(); st.SharedHits != 1 || st.IntrospectionsActive != 0 {
		t.Errorf("second resolver: %+v", st)
	}
	if t2.Subject != "alice" || claimsOf(t, t2)["big"] != claimsOf(t, t1)["big"] || claimsOf(t, t2)["exp"] != claimsOf(t, t1)["exp"] {
		t.Errorf("claims %v, want %v", claimsOf(t, t2), claimsOf(t, t1))
	}
	for _, k := range mr.Keys() {
		v, _ := mr.Get(k)
		for _, secret := range []string{raw, "alice", "shop"} {
			if strings.Contains(k, secret) || strings.Contains(v, secret) {
				t.Errorf("Redis shows %q in %s", secret, k)
			}
		}
		if strings.HasPrefix(k, "test:token:") {
			if ttl := mr.TTL(k); ttl <= 0 || ttl > 5*time.Minute {
				t.Errorf("%s: ttl %s, want up to cache.max_ttl", k, ttl)
			}
		}
	}
}

// Two replicas asked about the same new token at once: one introspects,
// the other waits for its answer in Redis.
func TestLockCoalescesAcrossResolvers(t *testing.T) {
	mr := newRedis(t)
	o := newOAuth(t, true)
	r1, r2 := newResolver(t, o, newStore(t, mr, nil)), newResolver(t, o, newStore(t, mr, nil))
	const raw = "opaque-new-token-at-once"
	errs := make(chan error, 2)
	go func() { _, err := r1.Resolve(context.Background(), bearer(raw)); errs <- err }()
	eventually(t, 2*time.Second, "first introspection", func() bool { return o.calls.Load() == 1 })
	go func() { _, err := r2.Resolve(context.Background(), bearer(raw)); errs <- err }()
	eventually(t, 2*time.Second, "second replica waiting", func() bool { return r2.Stats().LockWaits == 1 })
	close(o.release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := o.calls.Load(); n != 1 {
		t.Errorf("%d introspections across two replicas, want 1", n)
	}
	if st := r2.Stats(); st.SharedHits != 1 || st.IntrospectionsActive != 0 {
		t.Errorf("waiting replica: %+v", st)
	}
}

// A revocation through one replica reaches another's cache over pub/sub.
func TestRevocationReachesOtherResolver(t *testing.T) {
	mr := newRedis(t)
	o := newOAuth(t, false)
	s1, s2 := newStore(t, mr, nil), newStore(t, mr, nil)
	r1, r2 := newResolver(t, o, s1), newResolver(t, o, s2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s1.Subscribe(ctx, r1.ApplyRevocation)
	s2.Subscribe(ctx, r2.ApplyRevocation)
	if !s2.Stats().Subscribed {
		t.Fatal("not subscribed")
	}
	const raw = "opaque-to-revoke-everywhere"
	for _, r := range []*token.Resolver{r1, r2} {
		if _, err := r.Resolve(ctx, bearer(raw)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r1.Revoke(ctx, raw); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, time.Second, "revocation on the other replica", func() bool {
		_, err := r2.Resolve(ctx, bearer(raw))
		return errors.Is(err, token.ErrInactive)
	})
	t.Logf("revocation applied on the other replica after %s", took)
	if st := r2.Stats(); st.RevokedRemote != 1 {
		t.Errorf("remote stats %+v", st)
	}
	if st := r1.Stats(); st.RevokedLocal != 1 || st.RevokedRemote != 0 {
		t.Errorf("local stats %+v (its own message must be skipped)", st)
	}
	// A third replica, started after, finds the marker in Redis.
	r3 := newResolver(t, o, newStore(t, mr, nil))
	if _, err := r3.Resolve(ctx, bearer(raw)); !errors.Is(err, token.ErrInactive) {
		t.Errorf("new replica: err = %v, want inactive", err)
	}
	if n := o.calls.Load(); n != 1 {
		t.Errorf("%d introspections, want 1", n)
	}
}

// Redis stopped mid-run: tokens resolve locally, one log line and the
// error metric; back when Redis returns, with the revocation channel.
func TestRedisStoppedMidRun(t *testing.T) {
	mr := newRedis(t)
	o := newOAuth(t, false)
	var logs logtest.Buffer
	s := newStore(t, mr, &logs)
	r := newResolver(t, o, s)
	other := newStore(t, mr, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Subscribe(ctx, r.ApplyRevocation)
	if _, err := r.Resolve(ctx, bearer("before")); err != nil {
		t.Fatal(err)
	}

	mr.Close()
	start := time.Now()
	for i := range 20 {
		if _, err := r.Resolve(ctx, bearer("during-"+string(rune('a'+i)))); err != nil {
			t.Fatalf("resolve %d with Redis down: %v", i, err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("20 new tokens with Redis down took %s: the pause is not sparing Redis", d)
	}
	st := s.Stats()
	if st.Up || st.Errors[redisstore.OpGet] == 0 || st.Errors[redisstore.OpGet] > 3 {
		t.Errorf("stats with Redis down = %+v, want down, a few get errors", st)
	}
	if n := logs.Count("redis: unreachable"); n != 1 {
		t.Errorf("%d down lines, want 1: %s", n, logs.String())
	}
	if strings.Contains(logs.String(), password) {
		t.Error("the password is in the logs")
	}

	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "Redis back", func() bool {
		_, _ = r.Resolve(ctx, bearer("after-"+time.Now().String()))
		return s.Stats().Up
	})
	if n := logs.Count("redis: reachable again"); n != 1 {
		t.Errorf("%d back lines, want 1: %s", n, logs.String())
	}
	// The subscription is back too: another replica's revocation arrives.
	if _, err := r.Resolve(ctx, bearer("revoked-after")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "revocation after Redis returned", func() bool {
		_ = other.PublishRevocation(ctx, token.IDOf("revoked-after"))
		_, err := r.Resolve(ctx, bearer("revoked-after"))
		return errors.Is(err, token.ErrInactive)
	})
}

// claimsOf is tok's claims, decoded.
func claimsOf(t testing.TB, tok *token.Token) map[string]any {
	t.Helper()
	m, err := tok.ClaimMap()
	if err != nil {
		t.Fatal(err)
	}
	return m
}
