package token

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"github.com/phantom-authz/phantom-authz/authz/internal/logtest"
	"math"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeShared is an in-memory SharedCache (expiry ignored: tests are short).
type fakeShared struct {
	mu     sync.Mutex
	values map[[32]byte][]byte
	locks  map[[32]byte]bool
	fail   bool
}

func newFakeShared() *fakeShared {
	return &fakeShared{values: map[[32]byte][]byte{}, locks: map[[32]byte]bool{}}
}

var errFakeDown = errors.New("fake shared cache down")

func (f *fakeShared) Get(_ context.Context, key [32]byte) ([]byte, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return nil, false, errFakeDown
	}
	v, ok := f.values[key]
	return v, ok, nil
}

func (f *fakeShared) Add(_ context.Context, key [32]byte, value []byte, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errFakeDown
	}
	if _, ok := f.values[key]; !ok {
		f.values[key] = value
	}
	return nil
}

func (f *fakeShared) Put(_ context.Context, key [32]byte, value []byte, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errFakeDown
	}
	f.values[key] = value
	return nil
}

func (f *fakeShared) Lock(_ context.Context, key [32]byte, _ time.Duration) (func(), bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return nil, false, errFakeDown
	}
	if f.locks[key] {
		return nil, false, nil
	}
	f.locks[key] = true
	return func() {
		f.mu.Lock()
		delete(f.locks, key)
		f.mu.Unlock()
	}, true, nil
}

// dump is every key and value, for "the token is nowhere" checks.
func (f *fakeShared) dump() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b bytes.Buffer
	for k, v := range f.values {
		b.Write(k[:])
		b.Write(v)
	}
	return b.Bytes()
}

// trickyAnswer is an introspection answer whose numbers and strings must
// survive the shared cache exactly as the resolver decodes them.
const trickyAnswer = `{"active":true,"sub":"alice","client_id":"shop","scope":"read write",
"exp":%EXP%,"iat":1800000000,"big":12345678901234567890,"neg_big":-9007199254740993,
"two53":9007199254740992,"f20":1e20,"f20int":100000000000000000000,"half":0.5,"tiny":1e-7,
"negzero":-0.0,"zero":0,"e6":1000000,"huge":1.7976931348623157e308,
"nested":{"list":[1,2.5,"x",null,true,{"deep":123456789012345678901234567890}]},
"text":"caf\u00e9 <&> \"q\" \u2028","cnf":{"jkt":"0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}`

func TestSharedClaimsRoundTrip(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	body := strings.ReplaceAll(trickyAnswer, "%EXP%", strconv.FormatInt(exp, 10))
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	})
	shared := newFakeShared()
	r1 := mustNew(t, Config{Introspection: introspectionConfig(srv), Shared: shared, SharedKey: testSharedKey})
	r2 := mustNew(t, Config{Introspection: introspectionConfig(srv), Shared: shared, SharedKey: testSharedKey})
	const raw = "opaque-tricky-claims-token"
	t1, err := r1.Resolve(context.Background(), bearer(raw))
	if err != nil {
		t.Fatal(err)
	}
	t2, err := r2.Resolve(context.Background(), bearer(raw))
	if err != nil {
		t.Fatal(err)
	}
	if n := srv.count.Load(); n != 1 {
		t.Fatalf("%d introspections, want 1 (the second resolver reads the shared cache)", n)
	}
	if st := r2.Stats(); st.SharedHits != 1 || st.IntrospectionsActive != 0 {
		t.Errorf("second resolver stats = %+v", st)
	}
	if !reflect.DeepEqual(claimsOf(t, t1), claimsOf(t, t2)) {
		t.Errorf("claims differ:\n%#v\n%#v", claimsOf(t, t1), claimsOf(t, t2))
	}
	for k, v := range claimsOf(t, t1) {
		if reflect.TypeOf(v) != reflect.TypeOf(claimsOf(t, t2)[k]) {
			t.Errorf("claim %s: %T became %T", k, v, claimsOf(t, t2)[k])
		}
	}
	for name, want := range map[string]any{
		"big": json.Number("12345678901234567890"), "neg_big": json.Number("-9007199254740993"),
		"two53": float64(1 << 53), "f20": 1e20, "f20int": json.Number("100000000000000000000"), "half": 0.5,
	} {
		if got := claimsOf(t, t2)[name]; got != want {
			t.Errorf("claim %s = %#v, want %#v", name, got, want)
		}
	}
	if z, ok := claimsOf(t, t2)["negzero"].(float64); !ok || !math.Signbit(z) {
		t.Errorf("negzero = %#v, want -0.0", claimsOf(t, t2)["negzero"])
	}
	if t1.Subject != t2.Subject || t1.ClientID != t2.ClientID || !t1.Expiry.Equal(t2.Expiry) ||
		!reflect.DeepEqual(t1.Scopes, t2.Scopes) || t2.Kind != KindOpaque || !t2.Active {
		t.Errorf("tokens differ: %+v vs %+v", t1, t2)
	}
	// The shared cache holds neither the token nor any claim in clear.
	dump := shared.dump()
	for _, s := range []string{raw, "alice", "shop", "caf", "0ZcOCORZNYy"} {
		if bytes.Contains(dump, []byte(s)) {
			t.Errorf("the shared cache shows %q", s)
		}
	}
}

// A phantom-token answer keeps its JWT and the JWT's exp.
func TestSharedKeepsUpstreamJWT(t *testing.T) {
	stub := &phantomServer{now: time.Now()}
	shared := newFakeShared()
	newR := func() *Resolver {
		return mustNew(t, Config{
			Introspection: &IntrospectionConfig{Endpoint: "https://as.example/introspect", ClientID: "gw", ClientSecret: "s", Response: ResponseJWT},
			HTTPClient:    &http.Client{Transport: stub},
			Shared:        shared,
			SharedKey:     testSharedKey,
		})
	}
	t1, err := newR().Resolve(context.Background(), bearer("opaque-phantom"))
	if err != nil {
		t.Fatal(err)
	}
	t2, err := newR().Resolve(context.Background(), bearer("opaque-phantom"))
	if err != nil {
		t.Fatal(err)
	}
	if stub.calls.Load() != 1 {
		t.Fatalf("%d introspections, want 1", stub.calls.Load())
	}
	if t2.JWT != t1.JWT || t2.JWT == "" || !t2.JWTExpiry.Equal(t1.JWTExpiry) || !reflect.DeepEqual(claimsOf(t, t1), claimsOf(t, t2)) {
		t.Errorf("JWT not kept: %q %v vs %q %v", t1.JWT, t1.JWTExpiry, t2.JWT, t2.JWTExpiry)
	}
}

// Inactive answers are shared too (for inactive_ttl).
func TestSharedInactive(t *testing.T) {
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, map[string]any{"active": false}) })
	shared := newFakeShared()
	for i := range 2 {
		r := mustNew(t, Config{Introspection: introspectionConfig(srv), Shared: shared, SharedKey: testSharedKey})
		if _, err := r.Resolve(context.Background(), bearer("junk")); !errors.Is(err, ErrInactive) {
			t.Fatalf("resolver %d: err = %v, want ErrInactive", i, err)
		}
	}
	if n := srv.count.Load(); n != 1 {
		t.Errorf("%d introspections, want 1", n)
	}
}

// A shared cache that fails changes nothing: each resolver introspects.
func TestSharedDownFallsBackToLocal(t *testing.T) {
	srv := newOAuthServer(t, activeAnswer(time.Now().Add(time.Hour)))
	shared := newFakeShared()
	shared.fail = true
	for i := range 2 {
		r := mustNew(t, Config{Introspection: introspectionConfig(srv), Shared: shared, SharedKey: testSharedKey})
		if _, err := r.Resolve(context.Background(), bearer("tok")); err != nil {
			t.Fatalf("resolver %d: %v", i, err)
		}
	}
	if n := srv.count.Load(); n != 2 {
		t.Errorf("%d introspections, want 2", n)
	}
}

// A value sealed for another token under this token's key (a replica's
// entry moved by someone with write access to Redis) is ignored.
func TestSharedForeignValueIgnored(t *testing.T) {
	srv := newOAuthServer(t, activeAnswer(time.Now().Add(time.Hour)))
	shared := newFakeShared()
	var logs logtest.Buffer
	r := mustNew(t, Config{Introspection: introspectionConfig(srv), Shared: shared, SharedKey: testSharedKey, Logger: newTestLogger(&logs)})
	key := r.sharedKey("victim")
	moved, err := r.seal("attacker-knows-this-one", r.sharedKey("attacker-knows-this-one"), nil, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	shared.values[key] = moved
	if _, err := r.Resolve(context.Background(), bearer("victim")); err != nil {
		t.Fatalf("err = %v, want the introspected (active) token", err)
	}
	if srv.count.Load() != 1 || !strings.Contains(logs.String(), "failed authentication") || r.Stats().SharedRejected != 1 {
		t.Errorf("introspections %d, rejected %d, logs %s", srv.count.Load(), r.Stats().SharedRejected, logs.String())
	}
}

func TestRevokeLocal(t *testing.T) {
	srv := newOAuthServer(t, activeAnswer(time.Now().Add(time.Hour)))
	pub := &fakePublisher{}
	shared := newFakeShared()
	r := mustNew(t, Config{Introspection: introspectionConfig(srv), Shared: shared, SharedKey: testSharedKey, Publisher: pub})
	ctx := context.Background()
	if _, err := r.Resolve(ctx, bearer("tok-1")); err != nil {
		t.Fatal(err)
	}
	if err := r.Revoke(ctx, "tok-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve(ctx, bearer("tok-1")); !errors.Is(err, ErrInactive) {
		t.Fatalf("after Revoke: err = %v, want ErrInactive", err)
	}
	if len(pub.ids) != 1 || pub.ids[0] != IDOf("tok-1") {
		t.Errorf("published %v", pub.ids)
	}
	// A replica that never saw the token finds the marker in the shared cache.
	r2 := mustNew(t, Config{Introspection: introspectionConfig(srv), Shared: shared, SharedKey: testSharedKey})
	if _, err := r2.Resolve(ctx, bearer("tok-1")); !errors.Is(err, ErrInactive) {
		t.Fatalf("other replica: err = %v, want ErrInactive", err)
	}
	if n := srv.count.Load(); n != 1 {
		t.Errorf("%d introspections, want 1", n)
	}
	if st := r.Stats(); st.RevokedLocal != 1 || st.RevokedRemote != 0 {
		t.Errorf("stats = %+v", st)
	}
	// A failure to share is reported, and the revocation holds here.
	shared.fail = true
	pub.err = errFakeDown
	if _, err := r.Resolve(ctx, bearer("tok-2")); err != nil {
		t.Fatal(err)
	}
	if err := r.Revoke(ctx, "tok-2"); !errors.Is(err, ErrNotShared) {
		t.Errorf("Revoke with the store down: err = %v, want ErrNotShared", err)
	}
	if _, err := r.Resolve(ctx, bearer("tok-2")); !errors.Is(err, ErrInactive) {
		t.Errorf("after Revoke: err = %v, want ErrInactive", err)
	}
}

func TestApplyRevocation(t *testing.T) {
	srv := newOAuthServer(t, activeAnswer(time.Now().Add(time.Hour)))
	r := mustNew(t, Config{Introspection: introspectionConfig(srv)})
	ctx := context.Background()
	if _, err := r.Resolve(ctx, bearer("tok-a")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve(ctx, bearer("tok-b")); err != nil {
		t.Fatal(err)
	}
	r.ApplyRevocation(IDOf("tok-a"))
	if _, err := r.Resolve(ctx, bearer("tok-a")); !errors.Is(err, ErrInactive) {
		t.Errorf("revoked token: err = %v, want ErrInactive", err)
	}
	if _, err := r.Resolve(ctx, bearer("tok-b")); err != nil {
		t.Errorf("other token: %v", err)
	}
	if n := srv.count.Load(); n != 2 {
		t.Errorf("%d introspections, want 2", n)
	}
	if st := r.Stats(); st.RevokedRemote != 1 {
		t.Errorf("stats = %+v", st)
	}
	// The ID's cache key is not a token anyone can present.
	if _, err := r.Resolve(ctx, bearer(IDOf("tok-b").cacheKey())); !errors.Is(err, ErrInvalid) {
		t.Errorf("an ID's cache key as a token: err = %v, want ErrInvalid", err)
	}
}

// A revocation that arrives while the token is being introspected wins.
func TestRevokeDuringResolution(t *testing.T) {
	release := make(chan struct{})
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		writeJSON(w, map[string]any{"active": true, "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	})
	r := mustNew(t, Config{Introspection: introspectionConfig(srv)})
	done := make(chan error, 1)
	go func() {
		_, err := r.Resolve(context.Background(), bearer("racing"))
		done <- err
	}()
	for srv.count.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	r.ApplyRevocation(IDOf("racing"))
	close(release)
	if err := <-done; !errors.Is(err, ErrInactive) {
		t.Errorf("resolution under way: err = %v, want ErrInactive", err)
	}
	if _, err := r.Resolve(context.Background(), bearer("racing")); !errors.Is(err, ErrInactive) {
		t.Errorf("afterwards: err = %v, want ErrInactive", err)
	}
}

type fakePublisher struct {
	mu  sync.Mutex
	ids []TokenID
	err error
}

func (p *fakePublisher) PublishRevocation(_ context.Context, id TokenID) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ids = append(p.ids, id)
	return p.err
}

func TestExactNumbers(t *testing.T) {
	for _, f := range []float64{0, 1, -1, 0.5, 1e20, 1e21, 1e-7, 123456789, 9007199254740992, 1.7976931348623157e308, 5e-324, math.Copysign(0, -1)} {
		n := exactNumbers(f).(json.Number)
		got, ok := number(n).(float64)
		if !ok || got != f || math.Signbit(got) != math.Signbit(f) {
			t.Errorf("%v → %q → %#v", f, n, number(n))
		}
	}
}

// lockHook is a SharedCache whose first Lock runs before() first: the
// moment where another replica can finish its whole flight (take the
// lock, introspect, share the answer, release) between this replica's miss
// and its own Lock.
type lockHook struct {
	*fakeShared
	once   sync.Once
	before func()
}

func (h *lockHook) Lock(ctx context.Context, key [32]byte, ttl time.Duration) (func(), bool, error) {
	h.once.Do(h.before)
	return h.fakeShared.Lock(ctx, key, ttl)
}

// A replica that misses the shared cache and then wins the lock only
// because another replica has just answered and released it must read that
// answer, not introspect the token a second time.
func TestSharedLockAfterAnotherReplicaAnswered(t *testing.T) {
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"active":true,"sub":"alice","scope":"read","exp":` +
			strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) + `}`))
	})
	shared := newFakeShared()
	r1 := mustNew(t, Config{Introspection: introspectionConfig(srv), Shared: shared, SharedKey: testSharedKey})
	const raw = "opaque-answered-meanwhile"
	hooked := &lockHook{fakeShared: shared, before: func() {
		if _, err := r1.Resolve(context.Background(), bearer(raw)); err != nil {
			t.Errorf("first replica: %v", err)
		}
	}}
	r2 := mustNew(t, Config{Introspection: introspectionConfig(srv), Shared: hooked, SharedKey: testSharedKey})
	tok, err := r2.Resolve(context.Background(), bearer(raw))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Subject != "alice" {
		t.Errorf("sub %q, want alice", tok.Subject)
	}
	if n := srv.count.Load(); n != 1 {
		t.Errorf("introspection server saw %d requests, want 1", n)
	}
	if st := r2.Stats(); st.SharedHits != 1 || st.IntrospectionsActive != 0 {
		t.Errorf("second replica stats = %+v", st)
	}
}
