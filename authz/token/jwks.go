package token

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

const (
	// refreshInterval is the least time between two JWKS fetches prompted by
	// an unknown kid: a stream of tokens with made-up kids must not turn
	// phantom-authz into a load generator against the issuer.
	refreshInterval = 30 * time.Second
	// emptyRetryInterval is the least time between fetches while no key set
	// was ever fetched.
	emptyRetryInterval = 5 * time.Second
	// keysMaxAge is how old a key set may get before it is refreshed in the
	// background, so keys the issuer withdrew stop being accepted.
	keysMaxAge = time.Hour
	// maxBody bounds what is read from the OAuth server and JWKS endpoints.
	maxBody = 1 << 20
	// minRSABits is the shortest RSA key trusted or used (FAPI 2.0 §5.4).
	minRSABits = 2048
)

// Errors of a key lookup; callers map them to ErrInvalid or ErrUnavailable.
var (
	errNoKeys     = errors.New("no key set could be fetched")
	errUnknownKey = errors.New("no key matches")
)

// keySet is a JWKS fetched from one URI and kept: refreshed when a token
// names a kid it does not hold (at most once per refreshInterval, one fetch
// shared by all who ask) and when it grows old; a failed fetch keeps the
// last good keys.
type keySet struct {
	uri   string
	where string // uri as it may be logged
	// meta, when uri is empty, is the server's metadata, which names the
	// JWKS URI (discovery).
	meta    *metadata
	client  *http.Client
	timeout time.Duration
	now     func() time.Time
	log     *slog.Logger
	stats   *counters
	tracer  trace.Tracer // nil: no spans

	keys kept[publicKeys]
}

// publicKeys is one fetched key set, immutable once stored.
type publicKeys struct {
	fetched time.Time
	keys    []publicKey
}

type publicKey struct {
	kid string
	alg string // the JWK's alg, "" when it names none
	key any    // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// match returns the keys that may have signed with alg under kid; a token
// without kid may be signed by any key of the set.
func (p *publicKeys) match(kid string, alg jwa.SignatureAlgorithm) []any {
	var out []any
	for _, k := range p.keys {
		if kid != "" && k.kid != kid {
			continue
		}
		if k.alg != "" && k.alg != alg.String() || !fits(k.key, alg.String()) {
			continue
		}
		out = append(out, k.key)
	}
	return out
}

// fits reports whether key may verify alg: its type, and for ECDSA its
// curve (RFC 7518 §3.4: ES256 is P-256, ES384 P-384, ES512 P-521). A
// signature by the set's P-384 key must not pass as ES256.
func fits(key any, alg string) bool {
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return k.Curve == elliptic.P256()
		case "ES384":
			return k.Curve == elliptic.P384()
		case "ES512":
			return k.Curve == elliptic.P521()
		}
		return false
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case ed25519.PublicKey:
		return alg == "EdDSA" || alg == "Ed25519"
	}
	return false
}

// has reports whether the keys at hand include one for kid and alg.
func (ks *keySet) has(kid string, alg jwa.SignatureAlgorithm) bool {
	cur := ks.keys.load()
	return cur != nil && len(cur.match(kid, alg)) > 0
}

// lookup returns the candidate keys for kid and alg, refreshing the set when
// it holds none (errUnknownKey) or when none was ever fetched (errNoKeys).
func (ks *keySet) lookup(ctx context.Context, kid string, alg jwa.SignatureAlgorithm) ([]any, error) {
	cur := ks.keys.load()
	if cur != nil {
		if found := cur.match(kid, alg); len(found) > 0 {
			if ks.now().Sub(cur.fetched) > keysMaxAge {
				ks.refreshInBackground()
			}
			return found, nil
		}
	}
	cur, err := ks.refresh(ctx)
	if cur == nil {
		return nil, fmt.Errorf("%w from %s: %v", errNoKeys, ks.where, err)
	}
	if found := cur.match(kid, alg); len(found) > 0 {
		return found, nil
	}
	return nil, fmt.Errorf("%w kid %q and alg %s", errUnknownKey, kid, alg)
}

// refresh fetches the set again unless it was tried too recently, and
// returns the keys to use: the new ones, or the last good ones.
func (ks *keySet) refresh(ctx context.Context) (*publicKeys, error) {
	return ks.keys.refresh(ctx, ks.now(), ks.timeout, func(ctx context.Context) (*publicKeys, error) {
		next, err := ks.fetch(ctx)
		if err != nil {
			ks.stats.jwksFailures.Add(1)
			ks.log.Warn("token: JWKS fetch failed; keeping the last good keys", "jwks_uri", ks.where, "err", err)
			return nil, err
		}
		ks.stats.jwksRefreshes.Add(1)
		return next, nil
	})
}

func (ks *keySet) refreshInBackground() {
	ks.keys.inBackground(func(ctx context.Context) { _, _ = ks.refresh(ctx) })
}

func (ks *keySet) close() { ks.keys.close() }

// fetch GETs and parses the key set. Symmetric keys, encryption keys and key
// types jwx does not know are left out: they can verify nothing here.
func (ks *keySet) fetch(ctx context.Context) (keys *publicKeys, err error) {
	ctx, span := startSpan(ks.tracer, ctx, "jwks.fetch")
	if span.IsRecording() {
		span.SetAttributes(attrJWKSURI.String(ks.where))
	}
	defer func() {
		if err != nil && span.IsRecording() {
			span.SetStatus(codes.Error, "JWKS fetch failed")
		}
		span.End()
	}()
	uri := ks.uri
	if uri == "" && ks.meta != nil {
		md, err := ks.meta.get(ctx)
		if err != nil {
			return nil, err
		}
		if uri = md.jwksURI; uri == "" {
			return nil, fmt.Errorf("the metadata of %s names no jwks_uri", ks.meta.issuer)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, scrubURL(err, ks.where)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	req.Header.Set("User-Agent", userAgent)
	resp, err := ks.client.Do(req)
	if err != nil {
		return nil, scrubURL(err, ks.where)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	body, err := readBody(resp.Body)
	if err != nil {
		return nil, err
	}
	set, err := jwk.Parse(body, jwk.WithStrictKeySetParsing(false))
	if err != nil {
		return nil, fmt.Errorf("not a JWK set: %w", err)
	}
	out := &publicKeys{fetched: ks.now()}
	for i := range set.Len() {
		k, _ := set.Key(i)
		if _, unsupported := k.(jwk.UnsupportedKey); unsupported {
			continue
		}
		if use, ok := k.KeyUsage(); ok && use != "" && use != "sig" {
			continue
		}
		// key_ops (RFC 7517 §4.3) without verify: not a verification key
		// either (an encryption key's private half may be a decryption
		// oracle, and an RSA1_5 one can be made to sign).
		if ops, ok := k.KeyOps(); ok && len(ops) > 0 && !slices.Contains(ops, jwk.KeyOpVerify) {
			continue
		}
		pub, err := jwk.PublicRawKeyOf(k)
		if err != nil {
			continue // symmetric or unusable
		}
		switch pk := pub.(type) {
		case *rsa.PublicKey:
			// FAPI 2.0 §5.4 and NIST SP 800-131A: RSA under 2048 bits
			// verifies nothing, whatever the issuer publishes. jwx's own
			// minimum (a process-wide setting) leaves such keys out
			// already; this holds whatever that setting becomes.
			if bits := pk.N.BitLen(); bits < minRSABits {
				kid, _ := k.KeyID()
				ks.log.Warn("token: JWKS key refused: RSA key too short", "jwks_uri", ks.where, "kid", kid, "bits", bits)
				continue
			}
		case *ecdsa.PublicKey, ed25519.PublicKey:
		default:
			continue
		}
		pk := publicKey{key: pub}
		pk.kid, _ = k.KeyID()
		if alg, ok := k.Algorithm(); ok {
			pk.alg = alg.String()
		}
		out.keys = append(out.keys, pk)
	}
	if len(out.keys) == 0 {
		return nil, errors.New("the JWK set holds no signature verification key")
	}
	return out, nil
}

// verify checks the signature of the compact JWS raw (already parsed as c)
// against the set, for an algorithm in algs. crit and b64 headers are refused
// (we understand no extension); key-carrying headers are ignored.
func (ks *keySet) verify(ctx context.Context, c *compact, algs algSet) error {
	alg, ok := algs[c.header.Alg]
	if !ok {
		return fmt.Errorf("alg %q is not allowed", c.header.Alg)
	}
	if c.header.Crit != nil {
		return errors.New("crit header names extensions this service does not understand")
	}
	if c.header.B64 != nil {
		return errors.New("b64 header is not supported")
	}
	keys, err := ks.lookup(ctx, c.header.Kid, alg)
	if err != nil {
		return err
	}
	// alg, crit and b64 are checked above and the signature decoded by
	// parseCompact: what is left of jws.VerifyCompactFast is the signature
	// over the signing input (read, never written: no copy).
	input := unsafe.Slice(unsafe.StringData(c.input), len(c.input))
	for _, k := range keys {
		if err := jwsbb.Verify(k, alg.String(), input, c.sig); err == nil {
			return nil
		}
	}
	return errors.New("signature does not verify")
}

const userAgent = "phantom-authz"

// readBody reads at most maxBody bytes; a longer body is an error, as is a
// connection that breaks mid-body.
func readBody(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if len(b) > maxBody {
		return nil, fmt.Errorf("answer larger than %d bytes", maxBody)
	}
	return b, nil
}

// drainClose lets the connection be reused when the rest of the body is small.
func drainClose(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 4<<10)
	_ = body.Close()
}

// mediaType is the type/subtype of a Content-Type, lower-cased.
func mediaType(h http.Header) string {
	mt, _, _ := strings.Cut(h.Get("Content-Type"), ";")
	return strings.ToLower(strings.TrimSpace(mt))
}
