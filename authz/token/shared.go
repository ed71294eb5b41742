package token

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
)

// Several replicas behind one load balancer share what they learn about
// tokens through a SharedCache (Redis, in authz/redisstore): the second level
// under each replica's in-process cache. A replica that misses its own cache
// asks the shared one before the OAuth server, and of several replicas asked
// about the same new token at once only the one holding the token's lock
// introspects; the others wait for its answer in the shared cache.
//
// The shared cache never sees a token, and what it holds is input, not
// authority: anyone who can write to Redis (another tenant under another
// key prefix, a compromised neighbour) could otherwise invent a token
// string, store claims of their choice for it and call the API with it. So
// entries are authenticated with a secret only the replicas hold
// (redis.cache_key_file, at least 32 bytes): a token's key is
// HMAC-SHA256(secret, label ‖ token), and its value is sealed (AES-256-GCM,
// the key bound in as additional data) with a key derived from the secret
// and the token (HKDF-SHA256, the secret as salt). Without the secret no
// one can name a token's entry or write a value that opens; without the
// token a dump of the store reveals nothing.
//
// A sealed value carries its absolute expiry, checked on every read, so an
// old value written back (to revive a token that expired or was revoked) is
// not served past it (at most MaxTTL after the introspection that sealed
// it); nor is a token whose exp has passed. Before it, an active value
// written back over a revocation marker is served by a replica that did not
// apply the revocation (one started since): nothing in the store can prove
// that a newer value was deleted. The replica that revoked the token
// remembers it for MaxTTL (see forget); one told of it, while its cache
// holds the marker. A value that fails
// authentication is ignored (the token is resolved as if it were absent),
// counted and logged at most once a minute, never trusted.
//
// The shared cache holds the token as the OAuth server answered (claims,
// the JWT it gave), before Prepare: every replica mints and prepares its
// own. It is an optimisation, never an authority: when it fails, each
// replica resolves on its own (the store reports and logs that), and a
// request is never denied because of it.

// SharedCache is a cache shared by replicas. Keys are 32-byte hashes; the
// store chooses how to name them. Every method may fail (the store is
// unreachable); the Resolver then carries on without it.
type SharedCache interface {
	// Get returns the value stored at key; ok is false when there is none.
	Get(ctx context.Context, key [32]byte) (value []byte, ok bool, err error)
	// Add stores value at key for ttl unless key already holds a value: an
	// answer never overwrites a revocation written meanwhile.
	Add(ctx context.Context, key [32]byte, value []byte, ttl time.Duration) error
	// Put stores value at key for ttl, replacing what is there.
	Put(ctx context.Context, key [32]byte, value []byte, ttl time.Duration) error
	// Lock takes the lock named key for at most ttl. held is false when
	// another holder has it; release (when held) gives it back early.
	Lock(ctx context.Context, key [32]byte, ttl time.Duration) (release func(), held bool, err error)
}

// RevocationPublisher tells the other replicas about a revoked token, by its
// TokenID only. The receiving side calls Resolver.ApplyRevocation.
type RevocationPublisher interface {
	PublishRevocation(ctx context.Context, id TokenID) error
}

// TokenID names a token without revealing it: the first 128 bits of its
// SHA-256, which is also what the in-process cache keys it by. It is what a
// revocation message carries.
type TokenID [16]byte

// IDOf returns raw's TokenID.
func IDOf(raw string) TokenID {
	sum := sha256.Sum256([]byte(raw))
	return TokenID(sum[:16])
}

// String is the ID in hexadecimal.
func (id TokenID) String() string { return fmt.Sprintf("%x", id[:]) }

// cacheKey is the in-process cache key that hashes (keyHash) exactly as the
// token with this ID does, so an entry can be replaced knowing only the ID.
// No token is 17 bytes starting with NUL (resolve refuses such a string).
func (id TokenID) cacheKey() string { return "\x00" + string(id[:]) }

// idKeyLen is the length of a cacheKey.
const idKeyLen = 1 + len(TokenID{})

// Domain separation of what is derived from a token for the shared cache.
const (
	sharedKeyLabel  = "phantom-authz shared token cache key v2\x00"
	sharedSealLabel = "phantom-authz shared token cache seal v2"
	sealVersion     = 2
	// MinSharedKey is the shortest shared-cache secret accepted, in bytes.
	MinSharedKey = 32
	// rejectLogEvery bounds the log lines about values that fail
	// authentication: someone writing junk must not flood the logs.
	rejectLogEvery = time.Minute
)

// sharedKey is the shared cache's key of raw: HMAC-SHA256(secret, label ‖ raw).
func (r *Resolver) sharedKey(raw string) [32]byte {
	h := hmac.New(sha256.New, r.sharedSecret)
	h.Write([]byte(sharedKeyLabel))
	h.Write([]byte(raw))
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// sealed is what the shared cache holds for a token, before sealing.
type sealed struct {
	// Until is when the entry stops being used, in Unix nanoseconds: an
	// absolute time, so that a value written back later is refused.
	Until int64 `json:"until"`
	// Inactive marks an inactive (or revoked) token; nothing else is set.
	Inactive bool           `json:"inactive,omitempty"`
	Kind     Kind           `json:"kind,omitempty"`
	Claims   map[string]any `json:"claims,omitempty"`
	JWT      string         `json:"jwt,omitempty"`
	// Issuer is the issuer of the authorization server that vouched for
	// the token (Token.Issuer): routes that name their server check it.
	Issuer string `json:"server_iss,omitempty"`
	// JWTExpiry is the JWT's exp in Unix nanoseconds; 0 for none.
	JWTExpiry int64 `json:"jwt_exp,omitempty"`
}

// aead returns the cipher of raw's shared-cache values. Its key is derived
// from the token and the replicas' secret (the HKDF salt), so no one
// without the secret can seal a value that opens.
func (r *Resolver) aead(raw string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, []byte(raw), r.sharedSecret, sharedSealLabel, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal encodes tok (nil: inactive), to be used until until, for the shared
// cache, sealed with raw's key and bound to key: version ‖ nonce ‖
// ciphertext.
func (r *Resolver) seal(raw string, key [32]byte, tok *Token, until time.Time) ([]byte, error) {
	v := sealed{Until: until.UnixNano(), Inactive: tok == nil}
	if tok != nil {
		claims, err := tok.ClaimMap()
		if err != nil {
			return nil, err
		}
		v.Kind, v.Claims, v.JWT, v.Issuer = tok.Kind, exactNumbers(claims).(map[string]any), tok.JWT, tok.Issuer
		if !tok.JWTExpiry.IsZero() {
			v.JWTExpiry = tok.JWTExpiry.UnixNano()
		}
	}
	plain, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	c, err := r.aead(raw)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+c.NonceSize(), 1+c.NonceSize()+len(plain)+c.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return c.Seal(out, out[1:], plain, key[:]), nil
}

// errNotOurs is a shared-cache value that fails authentication: not sealed
// for this token under this key by a replica holding the secret.
var errNotOurs = errors.New("does not open with the replicas' key for this token")

// opened is a shared-cache value read back.
type opened struct {
	tok     *Token    // nil: an inactive token
	until   time.Time // when it stops being used
	expired bool      // its time is up: a miss
}

// open reverses seal. The error wraps errNotOurs for a value that fails
// authentication; a value that opens is ours, and one whose time is up (its
// sealed expiry, the token's exp or its JWT's) is expired.
func (r *Resolver) open(raw string, key [32]byte, value []byte) (opened, error) {
	c, err := r.aead(raw)
	if err != nil {
		return opened{}, err
	}
	if len(value) < 1+c.NonceSize() || value[0] != sealVersion {
		return opened{}, fmt.Errorf("%w (unknown format)", errNotOurs)
	}
	plain, err := c.Open(nil, value[1:1+c.NonceSize()], value[1+c.NonceSize():], key[:])
	if err != nil {
		return opened{}, errNotOurs
	}
	var v sealed
	if err := decodeObject(plain, &v); err != nil {
		return opened{}, err
	}
	now := r.now()
	until := time.Unix(0, v.Until)
	if v.Until <= 0 || !now.Before(until) {
		return opened{expired: true}, nil
	}
	if v.Inactive {
		return opened{until: until}, nil
	}
	if v.Kind != KindOpaque && v.Kind != KindJWT {
		return opened{}, fmt.Errorf("unknown token kind %q", v.Kind)
	}
	tok, err := r.shared.newToken(v.Kind, v.Claims, claimsSource{})
	if err != nil {
		return opened{}, err
	}
	tok.JWT, tok.Issuer = v.JWT, v.Issuer
	if v.JWTExpiry != 0 {
		tok.JWTExpiry = time.Unix(0, v.JWTExpiry)
	}
	if r.ttl(tok, now) <= 0 {
		return opened{expired: true}, nil
	}
	return opened{tok: tok, until: until}, nil
}

// exactNumbers returns a copy of v in which every float64 is a json.Number
// that decodes (see normalize) to the same float64 again: integers of 2^53 and
// more are written with an exponent, integral values get ".0", so none comes
// back as a json.Number. json.Number values are kept as they are and come
// back unchanged. v itself (a Token's claims) is not modified.
func exactNumbers(v any) any {
	switch x := v.(type) {
	case float64:
		s := strconv.FormatFloat(x, 'g', -1, 64)
		if !strings.ContainsAny(s, ".eE") {
			s += ".0"
		}
		return json.Number(s)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = exactNumbers(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = exactNumbers(e)
		}
		return out
	}
	return v
}

// sharedFetch is fetch through the shared cache: its answer when it has
// one; otherwise, for a token to introspect, the token's lock, so that one
// replica introspects and the others wait for its answer; then the answer
// is shared. JWTs by value are not shared (verifying one here costs less
// than sharing would save): only a revocation of one is looked for. until
// (zero: none) bounds how long an answer from the shared cache is used.
func (r *Resolver) sharedFetch(ctx context.Context, raw string, c *compact) (tok *Token, until time.Time, err error) {
	ctx, span := startSpan(r.tracer, ctx, "token.shared")
	key := r.sharedKey(raw)
	tok, until, found, err := r.sharedGet(ctx, raw, key)
	waited := false
	defer func() {
		if span.IsRecording() {
			span.SetAttributes(attrSharedHit.Bool(found), attrSharedWait.Bool(waited))
		}
		span.End()
	}()
	if found {
		return tok, until, err
	}
	if r.byValue(raw, c) {
		tok, err = r.fetch(ctx, raw, c)
		return tok, time.Time{}, err
	}
	release, held, lerr := r.l2.Lock(ctx, key, r.lockTTL)
	if lerr == nil && !held {
		// Another replica is introspecting this token: wait for its answer,
		// taking over when its lock goes (it failed) or the wait is too long.
		waited = true
		r.stats.lockWaits.Add(1)
		deadline := time.Now().Add(r.lockTTL)
		for pause := 5 * time.Millisecond; time.Now().Before(deadline); pause = min(2*pause, 50*time.Millisecond) {
			time.Sleep(pause)
			if tok, until, found, err = r.sharedGet(ctx, raw, key); found {
				return tok, until, err
			}
			if release, held, lerr = r.l2.Lock(ctx, key, r.lockTTL); lerr != nil || held {
				break
			}
		}
	}
	if held {
		defer release()
		// Another replica may have shared its answer and released the lock
		// between our miss and our Lock: read it rather than introspect the
		// token a second time.
		if tok, until, found, err = r.sharedRecheck(ctx, raw, key); found {
			return tok, until, err
		}
	}
	tok, err = r.fetch(ctx, raw, c)
	r.sharedAdd(ctx, raw, key, tok, err)
	return tok, time.Time{}, err
}

// byValue reports whether raw is a JWT of a configured issuer, verified here
// rather than introspected.
func (r *Resolver) byValue(raw string, c *compact) bool {
	if len(r.issuers) == 0 {
		return false
	}
	iss, ok := issuerOf(raw, c)
	return ok && r.issuers[iss] != nil
}

// sharedGet looks raw up in the shared cache; found is false when it holds
// nothing usable (or cannot be asked). A found inactive token is the error
// ErrInactive. A value that fails authentication is ignored: counted, and
// logged at most once a minute.
func (r *Resolver) sharedGet(ctx context.Context, raw string, key [32]byte) (tok *Token, until time.Time, found bool, err error) {
	value, ok, gerr := r.l2.Get(ctx, key)
	if gerr != nil {
		return nil, time.Time{}, false, nil
	}
	if !ok {
		r.stats.l2Misses.Add(1)
		return nil, time.Time{}, false, nil
	}
	o, oerr := r.open(raw, key, value)
	switch {
	case errors.Is(oerr, errNotOurs):
		r.stats.l2Misses.Add(1)
		r.rejected(ctx, oerr)
		return nil, time.Time{}, false, nil
	case oerr != nil:
		// Ours, yet unreadable (a claim this version cannot decode): a miss.
		r.stats.l2Misses.Add(1)
		r.log.WarnContext(ctx, "token: shared cache holds an unreadable value; ignored", "err", oerr)
		return nil, time.Time{}, false, nil
	case o.expired:
		r.stats.l2Misses.Add(1)
		return nil, time.Time{}, false, nil
	}
	return r.sharedHit(o)
}

// sharedRecheck is sharedGet after the lock is taken: a usable answer is a
// hit; anything else was already counted and logged by the lookup before
// the lock, so it is passed over quietly.
func (r *Resolver) sharedRecheck(ctx context.Context, raw string, key [32]byte) (tok *Token, until time.Time, found bool, err error) {
	value, ok, gerr := r.l2.Get(ctx, key)
	if gerr != nil || !ok {
		return nil, time.Time{}, false, nil
	}
	o, oerr := r.open(raw, key, value)
	if oerr != nil || o.expired {
		return nil, time.Time{}, false, nil
	}
	return r.sharedHit(o)
}

// sharedHit counts a usable shared-cache answer and returns it as sharedGet
// does.
func (r *Resolver) sharedHit(o opened) (tok *Token, until time.Time, found bool, err error) {
	r.stats.l2Hits.Add(1)
	if o.tok == nil {
		return nil, o.until, true, ErrInactive
	}
	return o.tok, o.until, true, nil
}

// rejected counts a shared-cache value that failed authentication and logs
// it, at most once per rejectLogEvery.
func (r *Resolver) rejected(ctx context.Context, err error) {
	n := r.stats.l2Rejected.Add(1)
	now := time.Now().UnixNano()
	last := r.rejectLogged.Load()
	if last != 0 && now-last < int64(rejectLogEvery) || !r.rejectLogged.CompareAndSwap(last, now) {
		return
	}
	r.log.WarnContext(ctx, "token: shared cache entry failed authentication; ignored and the token resolved afresh "+
		"(something without redis.cache_key_file writes to Redis, or the replicas' keys differ)",
		"err", err, "rejected_total", n, "next_log_in", rejectLogEvery.String())
}

// sharedAdd shares a fetched answer: an active token until the first of its
// exp, its JWT's exp and MaxTTL; an inactive one for InactiveTTL; failures
// never.
func (r *Resolver) sharedAdd(ctx context.Context, raw string, key [32]byte, tok *Token, err error) {
	now := r.now()
	var ttl time.Duration
	switch {
	case err == nil:
		ttl = r.ttl(tok, now)
	case errors.Is(err, ErrInactive):
		tok, ttl = nil, r.inactiveTTL
	}
	if ttl <= 0 {
		return
	}
	value, serr := r.seal(raw, key, tok, now.Add(ttl))
	if serr != nil {
		return
	}
	_ = r.l2.Add(ctx, key, value, ttl)
}

// ErrNotShared wraps the failure to tell the other replicas of a revocation
// (the shared store is unreachable); this replica applied it.
var ErrNotShared = errors.New("token: revocation applied on this replica only")

// Revoke makes the token raw inactive here at once, and everywhere when
// replicas share a cache or a revocation channel: it replaces the cached
// answer with an inactive marker for MaxTTL (in this replica's cache and the
// shared one) and publishes the token's ID; for an ECDSA-signed JWT, the
// same for its twin (see sameToken). It never contacts the OAuth
// server, which stays the authority: revoke the token there too, or the
// token comes back as active once the marker expires. An error wraps
// ErrNotShared: this replica applied the revocation, the others may not
// have.
func (r *Resolver) Revoke(ctx context.Context, raw string) error {
	r.stats.revokedLocal.Add(1)
	var sharedErr, publishErr error
	for _, s := range sameToken(raw) {
		id := IDOf(s)
		r.forget(id, r.maxTTL)
		if r.l2 != nil {
			key := r.sharedKey(s)
			value, err := r.seal(s, key, nil, r.now().Add(r.maxTTL))
			if err == nil {
				err = r.l2.Put(ctx, key, value, r.maxTTL)
			}
			if err != nil && sharedErr == nil {
				sharedErr = err
			}
		}
		if r.publisher != nil {
			if err := r.publisher.PublishRevocation(ctx, id); err != nil && publishErr == nil {
				publishErr = err
			}
		}
	}
	var errs []string
	if sharedErr != nil {
		errs = append(errs, "shared cache: "+sharedErr.Error())
	}
	if publishErr != nil {
		errs = append(errs, "revocation channel: "+publishErr.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w (%s)", ErrNotShared, strings.Join(errs, "; "))
	}
	return nil
}

// sameToken is raw and, when raw is an ES256, ES384 or ES512 JWS, its twin:
// the same header and payload under the other valid signature of the same
// r, (r, N-s). ECDSA signatures are malleable, so whoever holds a token
// holds its twin and both verify; a revocation, which names a token by its
// hash, must name both. (RSA and EdDSA signatures have one valid encoding,
// and parseCompact admits one encoding of each.)
func sameToken(raw string) []string {
	c, err := parseCompact(raw)
	if err != nil {
		return []string{raw}
	}
	var curve elliptic.Curve
	switch c.header.Alg {
	case "ES256":
		curve = elliptic.P256()
	case "ES384":
		curve = elliptic.P384()
	case "ES512":
		curve = elliptic.P521()
	default:
		return []string{raw}
	}
	size := (curve.Params().BitSize + 7) / 8
	n := curve.Params().N
	if len(c.sig) != 2*size {
		return []string{raw}
	}
	s := new(big.Int).SetBytes(c.sig[size:])
	if s.Sign() == 0 || s.Cmp(n) >= 0 {
		return []string{raw}
	}
	sig := bytes.Clone(c.sig)
	s.Sub(n, s).FillBytes(sig[size:])
	return []string{raw, c.input + "." + b64.EncodeToString(sig)}
}

// ApplyRevocation makes the token with this ID inactive in this replica's
// cache for MaxTTL: what another replica's Revoke published.
func (r *Resolver) ApplyRevocation(id TokenID) {
	r.forget(id, 0)
	r.stats.revokedRemote.Add(1)
}

// forget replaces the cached answer of the token with this ID by an
// inactive marker, and remembers the revocation for the resolutions under
// way (see load) and for keep: the cache is bounded, and evicts the marker
// (or drops it under contention) like any entry, after which a JWT by value
// would verify again, with no OAuth server to say it is revoked. A
// revocation made here (Revoke, an authenticated call) is kept for MaxTTL,
// as its marker is meant to be; one another replica published is kept for
// revokedRetention only: its messages are not authenticated, so a flood of
// them must not grow the set for long, and the marker in the shared cache
// (Revoke's Put) answers for the rest of MaxTTL.
func (r *Resolver) forget(id TokenID, keep time.Duration) {
	now := r.now()
	keep = max(keep, revokedRetention) + 2*r.lockTTL
	r.revocations.add(id, now.UnixNano(), now.Add(keep).UnixNano())
	r.markInactive(id.cacheKey())
}

// markInactive stores the inactive marker for MaxTTL under key. Del first:
// it orders after any store still in ristretto's buffer, so that store
// cannot land after the marker.
func (r *Resolver) markInactive(key string) {
	r.cache.Del(key)
	r.store(key, entry{until: r.now().Add(r.maxTTL).UnixNano()}, inactiveCost, r.maxTTL)
}

// revokedRetention is how long a revocation is remembered apart from the
// marker at least: longer than any resolution lasts (its steps have
// timeouts), so one under way when the revocation came does not cache the
// token as active. Revoke's own are remembered for MaxTTL (see forget).
const revokedRetention = time.Minute

// revocations are the token IDs revoked lately.
type revocations struct {
	n     atomic.Int64 // len(until), read without the lock
	mu    sync.Mutex
	until map[TokenID]int64 // Unix nanoseconds
	swept int64
}

func (v *revocations) add(id TokenID, now, until int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.until == nil {
		v.until = make(map[TokenID]int64)
	}
	if until > v.until[id] { // a later, shorter one does not cut it short
		v.until[id] = until
	}
	// Sweep now and then: the map holds the revocations of the last
	// minute, and those made here within MaxTTL.
	if now-v.swept > int64(10*time.Second) {
		v.swept = now
		for k, u := range v.until {
			if u <= now {
				delete(v.until, k)
			}
		}
	}
	v.n.Store(int64(len(v.until)))
}

// has reports whether the token with this ID was revoked and the
// revocation is still remembered at now.
func (v *revocations) has(id TokenID, now int64) bool {
	if v.n.Load() == 0 {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	u, ok := v.until[id]
	return ok && now < u
}

// Span attributes of the shared cache.
const (
	attrSharedHit  = attribute.Key("phantom_authz.cache.shared.hit")
	attrSharedWait = attribute.Key("phantom_authz.cache.shared.waited")
)
