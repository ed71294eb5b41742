package authz_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/binding"
	"github.com/phantom-authz/phantom-authz/authz/mint"
	"github.com/phantom-authz/phantom-authz/authz/policy"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// The cold paths: what a check costs when the token cache cannot answer it.
// Each benchmark wires the engine as cmd/phantom-authz does with its
// defaults (default policy and decision cache, generated minting key, the
// in-memory DPoP replay store) and hands every operation something the
// caches have never seen; the credentials are signed before the timer
// starts, as e2e/bench signs them before the load. Profile one with
//
//	go test -run '^$' -bench EngineCold/new-jwt -cpuprofile cpu.out -memprofile mem.out ./authz/
//	go tool pprof -top cpu.out

const coldIssuer = "https://idp.bench.local"

// coldCallers is how many goroutines call the engine at once in the cold
// benchmarks (-cold-callers; e2e/bench loads the server with 32): one
// measures a check alone, many add what concurrency costs (goroutine
// hand-offs, contention, the garbage collector's share).
var coldCallers = 1

func init() {
	flag.IntVar(&coldCallers, "cold-callers", 1, "concurrent callers in BenchmarkEngineCold")
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// coldEngine is an engine whose introspection endpoint answers every token
// active (with cnf.jkt = jkt for tokens starting "dpop-"), and whose JWT
// issuer signs with key.
func coldEngine(b *testing.B, key *ecdsa.PrivateKey, jkt string) *authz.Engine {
	b.Helper()
	pub, err := jwk.Import(&key.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	_ = pub.Set(jwk.KeyIDKey, "bench-es256")
	_ = pub.Set(jwk.AlgorithmKey, "ES256")
	set, err := json.Marshal(map[string]any{"keys": []any{pub}})
	if err != nil {
		b.Fatal(err)
	}
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/jwks" {
			w.Header().Set("Content-Type", "application/jwk-set+json")
			_, _ = w.Write(set)
			return
		}
		tok := r.PostFormValue("token")
		now := time.Now().Unix()
		cnf := ""
		if len(tok) > 5 && tok[:5] == "dpop-" {
			cnf = fmt.Sprintf(`,"cnf":{"jkt":%q}`, jkt)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"active":true,"scope":"openid read write","client_id":"web-app","sub":%q,`+
			`"iss":%q,"token_type":"Bearer","iat":%d,"exp":%d%s}`, "user-"+tok, coldIssuer, now, now+3600, cnf)
	}))
	b.Cleanup(idp.Close)
	pol, err := policy.New(policy.Config{Dir: "../policies", Logger: quietLog})
	if err != nil {
		b.Fatal(err)
	}
	m, err := mint.New(mint.Config{Issuer: "https://phantom-authz.local", Audience: []string{"api"}, Generate: true, Logger: quietLog})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close() })
	bd, err := binding.New(binding.Config{})
	if err != nil {
		b.Fatal(err)
	}
	var e *authz.Engine
	res, err := token.New(token.Config{
		Introspection: &token.IntrospectionConfig{Endpoint: idp.URL + "/introspect", ClientID: "pa", ClientSecret: "s", AllowInsecureHTTP: true},
		Issuers: []token.IssuerConfig{{Issuer: coldIssuer, JWKSURI: idp.URL + "/jwks", Audiences: []string{"api"},
			Algorithms: []string{"ES256"}, Type: "at+jwt", AllowInsecureHTTP: true}},
		Prepare: func(t *token.Token) error { return e.PrepareToken(t) },
		Logger:  quietLog,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(res.Close)
	e, err = authz.New(authz.Config{Decider: pol, Resolver: res, Minter: m, Binder: bd, Logger: quietLog,
		OwnedHeaders: []string{"x-jwt-*", "x-user-*"}})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// signCompact signs header and claims (JSON) with ES256.
func signCompact(b *testing.B, key *ecdsa.PrivateKey, header, claims string) string {
	enc := base64.RawURLEncoding
	input := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims))
	sig, err := jwsbb.Sign(key, "ES256", []byte(input), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	return input + "." + enc.EncodeToString(sig)
}

// BenchmarkEngineCold has one sub-benchmark per cold path of e2e/bench
// (b1, c, e) and the cached path (a) beside them, on the same engine.
func BenchmarkEngineCold(b *testing.B) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	client := newDPoPClient(b)
	ctx := context.Background()

	// a: one opaque token, cached after the first check.
	b.Run("cached", func(b *testing.B) {
		e := coldEngine(b, key, client.jkt)
		runAllow(b, e, benchRequest("Bearer cached-token-0001"))
	})

	// b1: a by-value ES256 JWT never seen before: one verification, the
	// claims, a policy evaluation the decision cache has not seen, admission
	// to the token cache.
	b.Run("new-jwt", func(b *testing.B) {
		e := coldEngine(b, key, client.jkt)
		hdr := `{"alg":"ES256","kid":"bench-es256","typ":"at+jwt"}`
		now := time.Now().Unix()
		jwts := make([]string, b.N+1)
		for i := range jwts {
			jwts[i] = signCompact(b, key, hdr, fmt.Sprintf(`{"iss":%q,"sub":"svc-%06d","aud":"api","client_id":"batch-svc",`+
				`"scope":"read write","iat":%d,"exp":%d,"jti":"b1-%010d"}`, coldIssuer, i%1000000, now, now+3600, i))
		}
		reqs := make([]*authz.Request, len(jwts))
		for i, j := range jwts {
			reqs[i] = benchRequest("Bearer " + j)
		}
		runAllowEach(b, ctx, e, reqs)
	})

	// c: an opaque token never seen before: introspection (an HTTP exchange
	// with the httptest server, whose CPU is in the figures too), minting
	// (one ES256 signature), a policy evaluation, admission to the cache.
	b.Run("new-opaque", func(b *testing.B) {
		e := coldEngine(b, key, client.jkt)
		reqs := make([]*authz.Request, b.N+1)
		for i := range reqs {
			reqs[i] = benchRequest("Bearer opaque-" + strconv.Itoa(1000000+i))
		}
		runAllowEach(b, ctx, e, reqs)
	})

	// e: one DPoP-bound opaque token (cached), a new proof each time: one
	// verification, the proof's claims, the replay store.
	b.Run("new-dpop-proof", func(b *testing.B) {
		e := coldEngine(b, key, client.jkt)
		const tok = "dpop-token-0001"
		reqs := make([]*authz.Request, b.N+1)
		for i := range reqs {
			reqs[i] = benchRequest("DPoP " + tok)
			reqs[i].Headers["dpop"] = client.proof(b, "GET", "https://api.example.com/api/accounts/123", tok, nil)
		}
		runAllowEach(b, ctx, e, reqs)
	})
}

// runAllowEach checks reqs[0] untimed (the JWKS fetch, the first
// introspection), then reqs[1:], one per operation. retained-B/op is the
// heap still in use afterwards (after a GC) per operation: for a new token
// each time, what the caches keep per token (token, decision).
func runAllowEach(b *testing.B, ctx context.Context, e *authz.Engine, reqs []*authz.Request) {
	b.Helper()
	if d := e.Check(ctx, reqs[0]); !d.Allowed {
		b.Fatalf("want allow, got %+v", d)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	b.ResetTimer()
	if coldCallers > 1 {
		// As e2e/bench loads the server: coldCallers concurrent callers.
		var next atomic.Int64
		var wg sync.WaitGroup
		for range coldCallers {
			wg.Go(func() {
				for i := int(next.Add(1)); i <= b.N; i = int(next.Add(1)) {
					if d := e.Check(ctx, reqs[i]); !d.Allowed {
						b.Errorf("denied: %+v", d)
						return
					}
				}
			})
		}
		wg.Wait()
	} else {
		for i := 1; i <= b.N; i++ {
			if d := e.Check(ctx, reqs[i]); !d.Allowed {
				b.Fatalf("denied: %+v", d)
			}
		}
	}
	b.StopTimer()
	time.Sleep(50 * time.Millisecond) // ristretto admits asynchronously
	runtime.GC()
	runtime.ReadMemStats(&after)
	// The requests themselves are held by reqs in both readings.
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "retained-B/op")
	runtime.KeepAlive(reqs)
}
