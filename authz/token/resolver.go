package token

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/phantom-authz/phantom-authz/authz/credential"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"
)

// Resolver turns presented tokens into Tokens, through its cache, the
// configured issuers' JWKS or the OAuth server. It is safe for concurrent use.
type Resolver struct {
	intro   *introspector      // opaque tokens no prefix claims (the one-server form's introspection)
	issuers map[string]*issuer // JWTs verified by value, by iss
	// jwtIntro are the issuers whose JWTs are introspected; prefixes route
	// opaque tokens; strict refuses a JWT of an issuer not configured
	// (several servers) instead of introspecting it at intro.
	jwtIntro map[string]*introspector
	prefixes []prefixRoute
	strict   bool
	named    map[string]*namedServer // by authorization_servers[].name
	metas    []*metadata
	prepare  func(*Token) error
	now      func() time.Time
	log      *slog.Logger

	maxTTL      time.Duration
	inactiveTTL time.Duration
	cache       *ristretto.Cache[string, entry]
	flights     singleflight.Group
	stats       counters

	shared    interner
	transport *http.Transport // ours, when no HTTPClient was given
	keySets   []*keySet
	tracer    trace.Tracer // nil: no spans

	// l2 (nil: none) is the cache shared by replicas; publisher (nil:
	// none) tells them of revocations. lockTTL bounds the wait for another
	// replica's introspection.
	l2           SharedCache
	sharedSecret []byte       // authenticates l2's entries
	rejectLogged atomic.Int64 // last log of a rejected l2 entry, Unix ns
	publisher    RevocationPublisher
	lockTTL      time.Duration
	revocations  revocations

	mu     sync.Mutex // guards closed against flights starting
	closed bool
	active sync.WaitGroup // running flights
}

// entry is a cached answer: a Token, or nil for an inactive token. until is
// when it stops being used (Unix nanoseconds on the resolver's clock), so an
// entry past its token's exp is a miss even before ristretto evicts it.
type entry struct {
	tok   *Token
	until int64
}

// Stats are the resolver's counters since New.
type Stats struct {
	// Hits and Misses count Resolve calls answered from the cache or not.
	Hits, Misses uint64
	// Coalesced counts misses that waited for a resolution another call
	// started instead of starting their own.
	Coalesced uint64
	// Introspections by outcome: active; inactive (or 204, or an answer
	// refusing the token: 400 about it, a refresh token, another audience);
	// failed.
	IntrospectionsActive, IntrospectionsInactive, IntrospectionsFailed uint64
	// JWTsVerified and JWTsRejected count by-value verifications.
	JWTsVerified, JWTsRejected uint64
	// JWKSRefreshes counts successful JWKS fetches, JWKSFailures failed ones.
	JWKSRefreshes, JWKSFailures uint64
	// Evictions counts cached answers dropped to stay within the memory
	// budget; Expirations those dropped because their time was up.
	Evictions, Expirations uint64
	// CacheBytes is the cache's current cost, in bytes.
	CacheBytes int64
	// SharedHits and SharedMisses count lookups in the shared cache (after a
	// miss here) that found an answer or not.
	SharedHits, SharedMisses uint64
	// SharedRejected counts shared-cache values that failed authentication
	// (not written by a replica holding the secret): ignored, never trusted.
	SharedRejected uint64
	// LockWaits counts shared-cache misses that waited for another
	// replica's introspection of the same token.
	LockWaits uint64
	// RevokedLocal counts Revoke calls, RevokedRemote the revocations other
	// replicas published (ApplyRevocation).
	RevokedLocal, RevokedRemote uint64
}

type counters struct {
	hits, misses, coalesced                 atomic.Uint64
	introActive, introInactive, introFailed atomic.Uint64
	jwtVerified, jwtRejected                atomic.Uint64
	jwksRefreshes, jwksFailures             atomic.Uint64
	evictions, expirations                  atomic.Uint64
	l2Hits, l2Misses, lockWaits             atomic.Uint64
	l2Rejected                              atomic.Uint64
	revokedLocal, revokedRemote             atomic.Uint64
}

// New checks cfg and builds a Resolver. It does not contact the OAuth server
// or the JWKS endpoints; keys are fetched on first use.
func New(cfg Config) (*Resolver, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &Resolver{
		prepare:      cfg.Prepare,
		now:          cfg.Now,
		log:          cfg.Logger,
		maxTTL:       cfg.Cache.MaxTTL,
		inactiveTTL:  cfg.Cache.InactiveTTL,
		issuers:      make(map[string]*issuer, len(cfg.Issuers)),
		tracer:       cfg.Tracer,
		l2:           cfg.Shared,
		sharedSecret: cfg.SharedKey,
		publisher:    cfg.Publisher,
		lockTTL:      defaultTimeout,
	}
	if cfg.Introspection != nil {
		r.lockTTL = cfg.Introspection.Timeout
	}
	client := cfg.HTTPClient
	if client == nil {
		caFiles := map[string]string{"ca_file": cfg.CAFile}
		if cfg.Introspection != nil {
			caFiles["introspection.ca_file"] = cfg.Introspection.CAFile
		}
		for i, s := range cfg.Servers {
			if s.Introspection != nil {
				caFiles[fmt.Sprintf("authorization_servers[%d].introspection.ca_file", i)] = s.Introspection.CAFile
			}
		}
		client, r.transport, err = newHTTPClient(caFiles)
		if err != nil {
			return nil, err
		}
		if cfg.WrapTransport != nil {
			client.Transport = cfg.WrapTransport(client.Transport)
		}
	}
	introDuration, err := introspectionHistogram(cfg.Meter)
	if err != nil {
		return nil, err
	}
	if err := r.buildSources(cfg, client, introDuration); err != nil {
		return nil, err
	}

	// Ristretto wants about ten counters per item it holds; a cached token
	// costs a few KiB.
	counters := max(cfg.Cache.MaxCost/256, 1000)
	r.cache, err = ristretto.NewCache(&ristretto.Config[string, entry]{
		NumCounters: counters,
		MaxCost:     cfg.Cache.MaxCost,
		BufferItems: 64,
		KeyToHash:   keyHash,
		OnEvict:     r.evicted,
	})
	if err != nil {
		return nil, fmt.Errorf("token: cache: %w", err)
	}
	return r, nil
}

// keyHash is the cache's key: the SHA-256 of the token, of which ristretto
// keeps 128 bits (its key and conflict hashes, the TokenID) and never the
// token itself. The token is hashed in place, without a copy. A
// TokenID.cacheKey is those 128 bits already.
func keyHash(raw string) (uint64, uint64) {
	b := unsafe.Slice(unsafe.StringData(raw), len(raw))
	if len(b) == idKeyLen && b[0] == 0 {
		return binary.LittleEndian.Uint64(b[1:9]), binary.LittleEndian.Uint64(b[9:17])
	}
	sum := sha256.Sum256(b)
	return binary.LittleEndian.Uint64(sum[0:8]), binary.LittleEndian.Uint64(sum[8:16])
}

// Resolve returns the Token for cred's access token, or an error wrapping
// ErrInactive, ErrInvalid or ErrUnavailable (possibly also the context's
// error when ctx ends first). The Token may be shared with other callers and
// must not be modified.
func (r *Resolver) Resolve(ctx context.Context, cred credential.Credential) (*Token, error) {
	if r.tracer != nil {
		return r.resolveTraced(ctx, cred)
	}
	tok, _, err := r.resolve(ctx, cred)
	return tok, err
}

// resolve is Resolve; hit says the cache answered.
func (r *Resolver) resolve(ctx context.Context, cred credential.Credential) (*Token, bool, error) {
	raw := cred.Token
	if len(raw) == idKeyLen && raw[0] == 0 {
		// Not a token (see TokenID.cacheKey); never looked up.
		return nil, false, fmt.Errorf("%w: not a token", ErrInvalid)
	}
	if tok, err, ok := r.cached(raw); ok {
		r.stats.hits.Add(1)
		return tok, true, err
	}
	if raw == "" {
		r.stats.misses.Add(1)
		return nil, false, fmt.Errorf("%w: empty token", ErrInvalid)
	}
	return r.resolveMiss(ctx, raw)
}

// cached is the cache's answer for raw: ok is false on a miss (or an entry
// whose time is up); an inactive token is the error ErrInactive.
func (r *Resolver) cached(raw string) (tok *Token, err error, ok bool) {
	e, ok := r.cache.Get(raw)
	if !ok || r.now().UnixNano() >= e.until {
		return nil, nil, false
	}
	if e.tok == nil {
		return nil, ErrInactive, true
	}
	return e.tok, nil, true
}

// fromCache marks a flight's result taken from the cache (see resolveMiss).
type fromCache struct{ tok *Token }

// resolveMiss resolves raw once for all concurrent callers; hit says the
// cache answered after all. The shared work runs on a context detached from
// the caller's, so a caller that gives up does not fail the others; each
// step has its own timeout.
//
// A caller can miss the cache and lose the CPU while a flight for the same
// token finishes (singleflight then forgets the key): its own flight would
// resolve the token a second time. So a flight first looks in the cache
// again; the finished flight's answer is there (store waits until it is
// visible). One resolution per token holds under any scheduling.
func (r *Resolver) resolveMiss(ctx context.Context, raw string) (*Token, bool, error) {
	sum := sha256.Sum256([]byte(raw))
	leader := false
	key := string(sum[:])
	if ns, ok := ctx.Value(routeServerKey{}).(*namedServer); ok {
		// A route naming its server resolves apart: its refusal of another
		// server's token must not answer a request on that server's route.
		key += ns.issuer
	}
	// A well-formed JWS is parsed here once, for its iss (which server) and
	// its verification; c is nil for anything else.
	c, _ := parseCompact(raw)
	flight := func() (any, error) {
		leader = true
		if tok, err, ok := r.cached(raw); ok {
			return fromCache{tok}, err
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return nil, fmt.Errorf("%w: resolver closed", ErrUnavailable)
		}
		r.active.Add(1)
		r.mu.Unlock()
		defer r.active.Done()
		return r.load(context.WithoutCancel(ctx), raw, c)
	}
	var res singleflight.Result
	if r.cpuOnly(c) {
		// Nothing to wait for but the CPU: the flight runs on this
		// goroutine, whose stack has grown already. On one of its own (as
		// below) a verification grew a new stack by copying it, 4% of the
		// server's CPU under a stream of new JWTs (e2e/bench b1); and no
		// caller would give up before it ends anyway. (Should the key set
		// change in between and the key go, the lookup asks for a refresh:
		// the refresh that replaced the set began less than refreshInterval
		// ago unless a JWKS fetch may last longer than that (a timeout over
		// 30s), so it is refused as too recent and the token refused at
		// once. Otherwise the flight fetches the JWKS, and the callers that
		// joined it before the change wait for that, within the JWKS
		// timeout, instead of giving up with their context; later callers
		// see the key gone and take a flight they can leave. See
		// TestFlightReviewKeySetChangesUnderInlineFlight.)
		res.Val, res.Err, res.Shared = r.flights.Do(key, flight)
	} else {
		select {
		case res = <-r.flights.DoChan(key, flight):
		case <-ctx.Done():
			r.stats.misses.Add(1)
			return nil, false, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		}
	}
	tok, _ := res.Val.(*Token)
	fc, hit := res.Val.(fromCache)
	if hit {
		tok = fc.tok
	}
	switch {
	case hit && leader:
		r.stats.hits.Add(1)
	case leader:
		r.stats.misses.Add(1)
	default:
		r.stats.misses.Add(1)
		r.stats.coalesced.Add(1)
		if r.tracer != nil {
			trace.SpanFromContext(ctx).SetAttributes(attrCoalesced.Bool(true))
		}
	}
	if res.Err != nil {
		return nil, hit, res.Err
	}
	return tok, hit, nil
}

// cpuOnly reports whether resolving the token parsed as c takes nothing
// but CPU: a JWT by value whose issuer's key for it is at hand (no JWKS to
// fetch), with no shared cache to ask (a network round trip).
func (r *Resolver) cpuOnly(c *compact) bool {
	if c == nil || r.l2 != nil {
		return false
	}
	iss, _ := c.claims["iss"].(string)
	is := r.issuers[iss]
	if is == nil {
		return false
	}
	alg, ok := is.algs[c.header.Alg]
	return ok && is.keys.has(c.header.Kid, alg)
}

// load resolves raw and caches the answer: active tokens after Prepare, until
// the first of their exp, their JWT's exp and MaxTTL; inactive ones for
// InactiveTTL; failures never. A panic (in Prepare, say) fails this token
// closed instead of the process.
func (r *Resolver) load(ctx context.Context, raw string, c *compact) (tok *Token, err error) {
	defer func() {
		if p := recover(); p != nil {
			// The panic's value may be built from claims or the token: log
			// its type and the stack (addresses, no string contents) only.
			r.log.Error("token: panic while resolving a token",
				"panic_type", fmt.Sprintf("%T", p), "stack", string(debug.Stack()))
			tok, err = nil, fmt.Errorf("%w: internal error", ErrUnavailable)
		}
	}()
	var until time.Time // zero: no bound from the shared cache
	if r.l2 != nil {
		tok, until, err = r.sharedFetch(ctx, raw, c)
	} else {
		tok, err = r.fetch(ctx, raw, c)
	}
	now := r.now()
	if err == nil && tok.Kind == KindOpaque && !tok.Expiry.IsZero() && !now.Before(tok.Expiry) {
		// An answer (or a shared entry) that says active past the token's
		// exp is never served, not even once. (A JWT by value was checked
		// against exp with its issuer's skew.)
		err = fmt.Errorf("%w: expired", ErrInactive)
	}
	if errors.Is(err, ErrInactive) {
		if ttl := capTTL(r.inactiveTTL, now, until); ttl > 0 {
			r.store(raw, entry{until: now.Add(ttl).UnixNano()}, inactiveCost, ttl)
		}
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	if r.prepare != nil {
		if err := r.prepareTraced(ctx, tok); err != nil {
			return nil, fmt.Errorf("%w: prepare token: %w", ErrUnavailable, err)
		}
	}
	tok.shareable()
	if ttl := capTTL(r.ttl(tok, now), now, until); ttl > 0 {
		r.store(raw, entry{tok: tok, until: now.Add(ttl).UnixNano()}, tokenCost(tok), ttl)
	}
	// A revocation that came while this resolution ran wins, whichever
	// store ristretto applied last; so does one whose marker the cache
	// evicted (see forget). Also for a token cached for no time (a JWT
	// within its exp's skew).
	if r.revocations.has(IDOf(raw), r.now().UnixNano()) {
		r.markInactive(raw)
		return nil, ErrInactive
	}
	return tok, nil
}

// ttl is how long an active tok may be cached from now on: until the first
// of its exp, its JWT's exp and MaxTTL.
func (r *Resolver) ttl(tok *Token, now time.Time) time.Duration {
	until := now.Add(r.maxTTL)
	for _, t := range [...]time.Time{tok.Expiry, tok.JWTExpiry} {
		if !t.IsZero() && t.Before(until) {
			until = t
		}
	}
	return until.Sub(now)
}

// capTTL is ttl from now, shortened to end at until when that is set and
// earlier.
func capTTL(ttl time.Duration, now, until time.Time) time.Duration {
	if !until.IsZero() && until.Sub(now) < ttl {
		return until.Sub(now)
	}
	return ttl
}

// store sets the entry and waits until it is visible, so a caller arriving
// after the flight ends finds it instead of starting another.
func (r *Resolver) store(raw string, e entry, cost int64, ttl time.Duration) {
	if r.cache.SetWithTTL(raw, e, cost, ttl) {
		r.cache.Wait()
	}
}

// fetch resolves raw at the one authorization server it belongs to (see
// source): by value with its issuer's keys, or by introspection. c is raw
// parsed when it is a well-formed JWS, else nil.
func (r *Resolver) fetch(ctx context.Context, raw string, c *compact) (*Token, error) {
	is, in, err := r.source(ctx, raw, c)
	if err != nil {
		return nil, err
	}
	if is != nil {
		vctx, span := startSpan(r.tracer, ctx, "token.verify")
		tok, err := is.verify(vctx, raw, c)
		if err != nil {
			r.stats.jwtRejected.Add(1)
		} else {
			r.stats.jwtVerified.Add(1)
		}
		endSpan(span, err)
		return tok, err
	}
	return in.introspect(ctx, raw)
}

// Stats returns the counters.
func (r *Resolver) Stats() Stats {
	s := &r.stats
	return Stats{
		Hits:                   s.hits.Load(),
		Misses:                 s.misses.Load(),
		Coalesced:              s.coalesced.Load(),
		IntrospectionsActive:   s.introActive.Load(),
		IntrospectionsInactive: s.introInactive.Load(),
		IntrospectionsFailed:   s.introFailed.Load(),
		JWTsVerified:           s.jwtVerified.Load(),
		JWTsRejected:           s.jwtRejected.Load(),
		JWKSRefreshes:          s.jwksRefreshes.Load(),
		JWKSFailures:           s.jwksFailures.Load(),
		Evictions:              s.evictions.Load(),
		Expirations:            s.expirations.Load(),
		CacheBytes:             r.cache.MaxCost() - r.cache.RemainingCost(),
		SharedHits:             s.l2Hits.Load(),
		SharedMisses:           s.l2Misses.Load(),
		SharedRejected:         s.l2Rejected.Load(),
		LockWaits:              s.lockWaits.Load(),
		RevokedLocal:           s.revokedLocal.Load(),
		RevokedRemote:          s.revokedRemote.Load(),
	}
}

// Close waits for running resolutions and frees the cache. Call it after the
// last Resolve has returned: Resolve must not run concurrently with or after
// Close.
func (r *Resolver) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.mu.Unlock()
	r.active.Wait()
	for _, ks := range r.keySets {
		ks.close()
	}
	for _, m := range r.metas {
		m.close()
	}
	r.cache.Close()
	if r.transport != nil {
		r.transport.CloseIdleConnections()
	}
}
