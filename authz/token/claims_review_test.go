package token

// Attack review of claims kept as JSON and decoded on demand (Token.ClaimMap,
// Token.Confirmation), through the in-process cache and the shared cache.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

// JSON escapes of UTF-16 surrogates that are not a pair (\ud800 alone, a low
// surrogate first) are not characters: encoding/json reads each as U+FFFD, as
// it does invalid UTF-8 bytes, which decodeObject refuses for that reason.
// Left in, the policy and a minted JWT see "bob\ufffd" where the token
// carried "bob\ud800", and two tokens that differ only there ("bob\ud800",
// "bob\udbff") read as the same subject.
func TestReviewLoneSurrogateEscapesRefused(t *testing.T) {
	clk := newClock()
	r := reviewResolver(t, clk)
	exp := clk.Now().Add(time.Minute).Unix()
	for _, sub := range []string{`bob\ud800`, `bob\udbff`, `bob\udc00`, `bob\ud800\u0041`, `\udfff\ud800`, `bob\ud800\ud800`} {
		payload := fmt.Sprintf(`{"iss":%q,"aud":"api","exp":%d,"sub":"%s"}`, testIssuer, exp, sub)
		raw := compactSign(t, "ES256", ecKey, esHeader(), payload)
		tok, err := r.Resolve(context.Background(), bearer(raw))
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("sub %s: err = %v, subject %q; want ErrInvalid", sub, err, subjectOf(tok))
		}
	}
	// A pair is a character (U+1F600), and an escaped backslash before
	// "ud800" is text: both stay accepted.
	for sub, want := range map[string]string{`bob\ud83d\ude00`: "bob\U0001F600", `bob\\ud800`: `bob\ud800`} {
		payload := fmt.Sprintf(`{"iss":%q,"aud":"api","exp":%d,"sub":"%s"}`, testIssuer, exp, sub)
		raw := compactSign(t, "ES256", ecKey, esHeader(), payload)
		tok, err := r.Resolve(context.Background(), bearer(raw))
		if err != nil || tok.Subject != want || claimsOf(t, tok)["sub"] != want {
			t.Errorf("sub %s: err = %v, subject %q; want %q", sub, err, subjectOf(tok), want)
		}
	}
}

func subjectOf(tok *Token) string {
	if tok == nil {
		return ""
	}
	return tok.Subject
}

// The same for an introspection answer: refused as nonsense (503), as an
// answer that is not valid UTF-8 is.
func TestReviewLoneSurrogateInAnswerRefused(t *testing.T) {
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"active":true,"sub":"alice","tenant":"acme\udc00","exp":%d}`, time.Now().Add(time.Hour).Unix())
	})
	r := mustNew(t, Config{Introspection: introspectionConfig(srv)})
	tok, err := r.Resolve(context.Background(), bearer("opaque-surrogate"))
	if !errors.Is(err, ErrUnavailable) {
		var tenant any
		if tok != nil {
			tenant = claimsOf(t, tok)["tenant"]
		}
		t.Errorf("err = %v, tenant %q; want ErrUnavailable", err, tenant)
	}
}

func TestReviewValidSurrogates(t *testing.T) {
	for in, ok := range map[string]bool{
		`{}`: true, `{"a":"\ud83d\ude00"}`: true, `{"a":"\\ud800"}`: true, `{"a":"\\\ud800"}`: false,
		`{"a":"\u00e9\ud800"}`: false, `{"a":"\ud800x"}`: false, `{"a":"\ud800\n"}`: false,
		`{"a":"\ud800\u00e9"}`: false, `{"a":"\uDBFF\uDFFF"}`: true, `{"\udc00":1}`: false,
		`{"a":"\ud800`: false, `{"a":"\u"}`: false,
	} {
		var v map[string]any
		if err := decodeObject([]byte(in), &v); (err == nil) != ok {
			t.Errorf("%s: err = %v, want ok %v", in, err, ok)
		}
	}
}

// A cnf-bound token keeps its binding through the shared cache: the replica
// that reads the entry sees the same cnf (Confirmation, and the claims the
// policy reads) as the one that introspected it; a token without cnf stays
// without.
func TestReviewSharedKeepsConfirmation(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		switch r.PostForm.Get("token") {
		case "dpop-bound":
			writeJSON(w, map[string]any{"active": true, "sub": "alice", "exp": exp, "cnf": map[string]any{"jkt": "jkt-alice"}})
		case "mtls-bound":
			writeJSON(w, map[string]any{"active": true, "sub": "bob", "exp": exp, "cnf": map[string]any{"x5t#S256": "x5t-bob"}})
		case "null-cnf":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"active":true,"sub":"carol","exp":%d,"cnf":null}`, exp)
		default:
			writeJSON(w, map[string]any{"active": true, "sub": "dave", "exp": exp})
		}
	})
	shared := newFakeShared()
	cfg := Config{Introspection: introspectionConfig(srv), Shared: shared, SharedKey: testSharedKey}
	r1, r2 := mustNew(t, cfg), mustNew(t, cfg)
	for _, raw := range []string{"dpop-bound", "mtls-bound", "null-cnf", "bearer"} {
		t1, err := r1.Resolve(context.Background(), bearer(raw))
		if err != nil {
			t.Fatal(err)
		}
		t2, err := r2.Resolve(context.Background(), bearer(raw))
		if err != nil {
			t.Fatal(err)
		}
		c1, ok1 := t1.Confirmation()
		c2, ok2 := t2.Confirmation()
		if ok1 != ok2 || !reflect.DeepEqual(c1, c2) || !reflect.DeepEqual(c2, claimsOf(t, t2)["cnf"]) {
			t.Errorf("%s: cnf %v (%v) introspected, %v (%v) from the shared cache, claims %v", raw, c1, ok1, c2, ok2, claimsOf(t, t2)["cnf"])
		}
	}
	if n := srv.count.Load(); n != 4 {
		t.Errorf("%d introspections, want 4 (the second replica reads the shared cache)", n)
	}
}

// What someone who can write to Redis may do with sealed values: put one
// token's value at another's key, cut it short, change its version byte,
// give it an older format's. None makes one token's claims appear for
// another: each is refused, and the token introspected.
func TestReviewSharedValuesMovedOrMangled(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		switch tok := r.PostForm.Get("token"); tok {
		case "admin-token":
			writeJSON(w, map[string]any{"active": true, "sub": "admin", "scope": "admin", "exp": exp, "cnf": map[string]any{"jkt": "admin-key"}})
		default:
			writeJSON(w, map[string]any{"active": true, "sub": "mallory", "scope": "read", "exp": exp})
		}
	})
	shared := newFakeShared()
	cfg := Config{Introspection: introspectionConfig(srv), Shared: shared, SharedKey: testSharedKey}
	r1 := mustNew(t, cfg)
	for _, raw := range []string{"admin-token", "mallory-token"} {
		if _, err := r1.Resolve(context.Background(), bearer(raw)); err != nil {
			t.Fatal(err)
		}
	}
	adminKey, malloryKey := r1.sharedKey("admin-token"), r1.sharedKey("mallory-token")
	adminValue := bytes.Clone(shared.values[adminKey])
	mangled := map[string][]byte{
		"another token's value": adminValue,
		"truncated":             adminValue[:len(adminValue)-1],
		"header only":           adminValue[:13],
		"version 1":             append([]byte{1}, adminValue[1:]...),
		"version 3":             append([]byte{3}, adminValue[1:]...),
		"empty":                 {},
	}
	for name, v := range mangled {
		shared.mu.Lock()
		shared.values[malloryKey] = v
		shared.mu.Unlock()
		r := mustNew(t, cfg)
		tok, err := r.Resolve(context.Background(), bearer("mallory-token"))
		if err != nil || tok.Subject != "mallory" || slicesContain(tok.Scopes, "admin") {
			t.Errorf("%s: token %+v, err %v; want mallory's own claims", name, tok, err)
		}
		if _, has := tok.Confirmation(); has {
			t.Errorf("%s: mallory's token has a cnf", name)
		}
		if st := r.Stats(); st.SharedHits != 0 {
			t.Errorf("%s: a shared hit: %+v", name, st)
		}
	}
}

// A cached token is read by every request presenting it: ClaimMap,
// Confirmation, the sector JWTs, concurrently, while other tokens are
// resolved and the cache written (run with -race). Each caller gets a map
// of its own: changing it changes nothing another caller sees.
func TestReviewConcurrentClaimReads(t *testing.T) {
	clk := newClock()
	var prepared sync.Map
	r := reviewResolver(t, clk, func(c *Config) {
		c.Prepare = func(tok *Token) error {
			// Prepare reads the claims as the engine does (mint, policy).
			m, err := tok.ClaimMap()
			if err != nil {
				return err
			}
			prepared.Store(tok, m["sub"])
			tok.Prepared = "p"
			return nil
		}
	})
	now := clk.Now()
	raws := make([]string, 4)
	for i := range raws {
		c := with(claimsAt(now), "sub", fmt.Sprintf("user-%d", i), "cnf", map[string]any{"jkt": fmt.Sprintf("key-%d", i)},
			"nested", map[string]any{"list": []any{1, "x", map[string]any{"y": 2}}})
		raws[i] = signJWT(t, keysES, nil, c)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 200 {
				i := (g + n) % len(raws)
				tok, err := r.Resolve(context.Background(), bearer(raws[i]))
				if err != nil {
					errs <- err
					return
				}
				m, err := tok.ClaimMap()
				if err != nil {
					errs <- err
					return
				}
				want := fmt.Sprintf("user-%d", i)
				cnf, _ := tok.Confirmation()
				jkt, _ := cnf.(map[string]any)["jkt"].(string)
				if m["sub"] != want || tok.Subject != want || jkt != fmt.Sprintf("key-%d", i) {
					errs <- fmt.Errorf("token %d: sub %v/%q, jkt %q", i, m["sub"], tok.Subject, jkt)
					return
				}
				// The caller's own map: scribbling on it is invisible to others.
				m["sub"] = "admin"
				m["nested"].(map[string]any)["list"].([]any)[0] = "changed"
				delete(m, "cnf")
				tok.SetSectorJWT("s", "jwt", time.Now().Add(time.Minute))
				_, _ = tok.SectorJWT("s", time.Now())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, raw := range raws {
		tok, _ := r.Resolve(context.Background(), bearer(raw))
		m := claimsOf(t, tok)
		if m["sub"] != fmt.Sprintf("user-%d", i) || m["nested"].(map[string]any)["list"].([]any)[0] != float64(1) || m["cnf"] == nil {
			t.Errorf("token %d: claims %v after callers changed their copies", i, m)
		}
		if s, _ := prepared.Load(tok); s != fmt.Sprintf("user-%d", i) {
			t.Errorf("token %d prepared with sub %v", i, s)
		}
	}
}

// The claims of a JSON answer are the answer's bytes, copied: the body's
// buffer written over afterwards changes nothing (fromJSON reads one a
// server gave; a caller could reuse its buffer).
func TestReviewAnswerBufferNotAliased(t *testing.T) {
	in := &introspector{shared: &interner{}, now: time.Now}
	body := []byte(fmt.Sprintf(`{"active":true,"sub":"alice","scope":"read","exp":%d}`, time.Now().Add(time.Hour).Unix()))
	tok, err := in.fromJSON(body, true)
	if err != nil {
		t.Fatal(err)
	}
	tok.shareable()
	copy(body, strings.Repeat(" ", len(body)))
	copy(body, `{"active":true,"sub":"admin","scope":"admin"}`)
	if m := claimsOf(t, tok); m["sub"] != "alice" || m["scope"] != "read" {
		t.Errorf("claims %v after the answer's buffer was reused", m)
	}
}

// Property: a JSON string decodeObject accepts decodes to U+FFFD only where
// the text itself writes U+FFFD; so no two accepted texts differing in an
// escape read as the same string. Random escapes, deterministic seed.
func TestReviewSurrogateProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	parts := []string{`\ud800`, `\udbff`, `\udc00`, `\udfff`, `\ud83d`, `\ude00`, `\\`, `\u0041`, `\n`, `a`, `é`, `\"`, `\u00e9`, `u`, `d800`}
	for range 20000 {
		var b strings.Builder
		for range 1 + rng.IntN(6) {
			b.WriteString(parts[rng.IntN(len(parts))])
		}
		in := `{"s":"` + b.String() + `"}`
		var v map[string]any
		if err := decodeObject([]byte(in), &v); err != nil {
			continue
		}
		if s, _ := v["s"].(string); strings.ContainsRune(s, utf8.RuneError) {
			t.Fatalf("%s accepted, read as %q", in, s)
		}
	}
}

// An old active entry written back over the revocation marker, within
// cache.max_ttl of the introspection that sealed it: the replica that
// revoked the token, and one told of it (while its cache holds the marker),
// refuse it; a replica that never heard of it (started since, or the
// message lost)
// serves it until the entry's sealed expiry, never later. No value in Redis
// can tell a replica that a newer one was deleted: the bound is the
// original entry's own (at most max_ttl after the introspection).
func TestReviewRevokedEntryWrittenBackWithinMaxTTL(t *testing.T) {
	clk := newClock()
	var revoked atomic.Bool
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		if revoked.Load() {
			writeJSON(w, map[string]any{"active": false})
			return
		}
		writeJSON(w, map[string]any{"active": true, "sub": "alice", "exp": clk.Now().Add(time.Hour).Unix()})
	})
	shared := newFakeShared()
	cfg := Config{Introspection: introspectionConfig(srv), Shared: shared, SharedKey: testSharedKey, Now: clk.Now,
		Cache: CacheConfig{MaxTTL: 5 * time.Minute}}
	ctx := context.Background()
	r1, r2 := mustNew(t, cfg), mustNew(t, cfg)
	if _, err := r1.Resolve(ctx, bearer("tok")); err != nil {
		t.Fatal(err)
	}
	shared.mu.Lock()
	snapshot := maps.Clone(shared.values)
	shared.mu.Unlock()

	revoked.Store(true)
	if err := r1.Revoke(ctx, "tok"); err != nil {
		t.Fatal(err)
	}
	r2.ApplyRevocation(IDOf("tok")) // the published revocation
	clk.Advance(2 * time.Minute)    // past revokedRetention: the marker alone decides
	shared.mu.Lock()
	maps.Copy(shared.values, snapshot)
	shared.mu.Unlock()

	for name, r := range map[string]*Resolver{"revoking replica": r1, "replica told of it": r2} {
		if tok, err := r.Resolve(ctx, bearer("tok")); !errors.Is(err, ErrInactive) {
			t.Errorf("%s: err = %v (token %+v), want ErrInactive", name, err, tok)
		}
	}
	if _, err := mustNew(t, cfg).Resolve(ctx, bearer("tok")); err == nil {
		t.Log("a replica started after the revocation serves the written-back entry until its sealed expiry (documented)")
	}
	clk.Advance(3 * time.Minute) // the entry's sealed expiry
	if tok, err := mustNew(t, cfg).Resolve(ctx, bearer("tok")); !errors.Is(err, ErrInactive) {
		t.Errorf("past the entry's sealed expiry: err = %v (token %+v), want ErrInactive", err, tok)
	}
}

// A JWT by value has no authority to ask again: without Redis, its
// revocation (POST /admin/revoke) is the inactive marker in this replica's
// cache, "for cache.max_ttl". The cache is bounded: under load the marker is
// evicted like any entry (or its set dropped by ristretto under
// contention), and a minute later (revokedRetention) the revoked JWT
// verified again and was cached as active. A JWT within its exp's skew
// (cached for no time at all) skipped the revocation check altogether.
func TestReviewRevokedJWTOutlivesItsMarker(t *testing.T) {
	for name, c := range map[string]struct{ life, later time.Duration }{
		"valid an hour":                     {time.Hour, 3 * time.Minute},
		"in its exp's skew":                 {2*time.Minute + 30*time.Second, 3 * time.Minute},
		"in its exp's skew, a moment later": {20 * time.Second, 50 * time.Second},
	} {
		clk := newClock()
		r := reviewResolver(t, clk, func(c *Config) { c.Cache.MaxTTL = 10 * time.Minute })
		now := clk.Now()
		ctx := context.Background()
		victim := signJWT(t, keysES, nil, with(claimsAt(now), "exp", now.Add(c.life).Unix()))
		if _, err := r.Resolve(ctx, bearer(victim)); err != nil {
			t.Fatal(err)
		}
		if err := r.Revoke(ctx, victim); err != nil {
			t.Fatal(err)
		}
		// The marker evicted, as a full cache evicts any entry.
		for _, s := range sameToken(victim) {
			r.cache.Del(IDOf(s).cacheKey())
		}
		r.cache.Wait()
		clk.Advance(c.later)
		for range 2 {
			if tok, err := r.Resolve(ctx, bearer(victim)); !errors.Is(err, ErrInactive) {
				t.Errorf("%s: revoked JWT, %v later, its marker evicted: err = %v (token %v), want ErrInactive", name, c.later, err, tok != nil)
			}
		}
	}
}

// The same through introspection and the shared cache: two replicas, each
// token resolved by one and read from the shared cache by the other, many
// goroutines reading claims and cnf while flights and shared reads build
// Tokens (run with -race). No token's claims or cnf appear for another.
func TestReviewConcurrentSharedClaimReads(t *testing.T) {
	exp := time.Now().Add(time.Hour).Unix()
	srv := newOAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		tok := r.PostForm.Get("token")
		time.Sleep(time.Millisecond)
		writeJSON(w, map[string]any{"active": true, "sub": "sub-" + tok, "scope": "s-" + tok, "exp": exp,
			"cnf": map[string]any{"jkt": "jkt-" + tok}, "big": json.Number("12345678901234567890")})
	})
	shared := newFakeShared()
	cfg := Config{Introspection: introspectionConfig(srv), Shared: shared, SharedKey: testSharedKey,
		Prepare: func(tok *Token) error { _, err := tok.ClaimMap(); return err }}
	rs := []*Resolver{mustNew(t, cfg), mustNew(t, cfg)}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 100 {
				raw := fmt.Sprintf("t%d", (g+n)%8)
				tok, err := rs[(g+n)%2].Resolve(context.Background(), bearer(raw))
				if err != nil {
					errs <- err
					return
				}
				m, err := tok.ClaimMap()
				cnf, _ := tok.Confirmation()
				jkt, _ := cnf.(map[string]any)["jkt"].(string)
				if err != nil || m["sub"] != "sub-"+raw || tok.Subject != "sub-"+raw || jkt != "jkt-"+raw ||
					len(tok.Scopes) != 1 || tok.Scopes[0] != "s-"+raw || m["big"] != json.Number("12345678901234567890") {
					errs <- fmt.Errorf("%s: claims %v, cnf %v, scopes %v, err %v", raw, m, cnf, tok.Scopes, err)
					return
				}
				m["sub"] = "admin"
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
