// Package redisstore shares what phantom-authz replicas must agree on
// through Redis: the second-level token cache (token.SharedCache), the DPoP
// replay store (binding.ReplayStore, SET NX PX: atomic across replicas) and
// the revocation channel (pub/sub).
//
// Redis is a shared optimisation for the cache and a shared memory for the
// replay store. When it fails, the cache falls back to each replica's own
// (never a denial because of Redis), and the replay store fails closed
// unless a fallback is given. A failure is logged once when Redis goes and
// once when it comes back, not per request; after one, Redis is left alone
// for a pause (one second by default) so a dead server does not add its
// timeout to every check. Keys and messages never hold a token: tokens are
// named by hashes, and cached values are sealed by authz/token.
package redisstore

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Config configures a Store.
type Config struct {
	// URL is redis://[user:password@]host:port/db, or rediss:// for TLS.
	URL string
	// Password, when set, replaces the URL's.
	Password string
	// CAFile is a PEM bundle that replaces the system roots for rediss://.
	CAFile string
	// KeyPrefix starts every key (default "phantom-authz:"), so several
	// deployments can share one Redis.
	KeyPrefix string
	// Timeout bounds each operation: dial, read, write (default 100ms).
	Timeout time.Duration
	// Channel is the revocation channel (default "phantom-authz:revocations").
	Channel string
	// Pause is how long Redis is left alone after a failure (default 1s).
	Pause time.Duration
	// Logger receives the transitions (Redis down, back); nil discards them.
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultKeyPrefix = "phantom-authz:"
	DefaultTimeout   = 100 * time.Millisecond
	DefaultChannel   = "phantom-authz:revocations"
	DefaultPause     = time.Second
)

// Store is a connection pool to Redis and what phantom-authz keeps there.
// It is safe for concurrent use.
type Store struct {
	client  *redis.Client
	prefix  string
	channel string
	timeout time.Duration
	// origin tells this process's revocation messages from the others'.
	origin string
	log    *slog.Logger
	health health
	unlock *redis.Script

	// failOpen is set when a replay store falls back to memory (for the log).
	failOpen   atomic.Bool
	fallbacks  atomic.Uint64
	subscribed atomic.Bool
	received   atomic.Uint64
}

// Operations, as the error counters and Stats name them.
const (
	OpGet       = "get"
	OpAdd       = "add"
	OpPut       = "put"
	OpLock      = "lock"
	OpUnlock    = "unlock"
	OpPublish   = "publish"
	OpSubscribe = "subscribe"
	OpReplay    = "replay"
	OpPing      = "ping"
)

// Ops lists every operation, in the order Stats reports them.
var Ops = [...]string{OpGet, OpAdd, OpPut, OpLock, OpUnlock, OpPublish, OpSubscribe, OpReplay, OpPing}

// ErrDown is returned without asking Redis during the pause after a failure.
var ErrDown = errors.New("redis unreachable (paused after a failure)")

// New parses cfg and builds a Store. It does not connect: the first
// operation does (Ping checks at start-up).
func New(cfg Config) (*Store, error) {
	opts, err := redis.ParseURL(cfg.URL)
	if err != nil {
		// go-redis's message may quote the URL, password included.
		return nil, fmt.Errorf("redisstore: url %s: not a redis:// or rediss:// URL", Redacted(cfg.URL))
	}
	if cfg.Password != "" {
		opts.Password = cfg.Password
	}
	if cfg.CAFile != "" {
		if opts.TLSConfig == nil {
			return nil, errors.New("redisstore: ca_file needs a rediss:// url")
		}
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redisstore: ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redisstore: ca_file %s holds no PEM certificate", cfg.CAFile)
		}
		opts.TLSConfig.RootCAs = pool
	}
	if opts.TLSConfig != nil {
		opts.TLSConfig.MinVersion = tls.VersionTLS12
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = DefaultKeyPrefix
	}
	if cfg.Channel == "" {
		cfg.Channel = DefaultChannel
	}
	if cfg.Pause <= 0 {
		cfg.Pause = DefaultPause
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout, opts.PoolTimeout = cfg.Timeout, cfg.Timeout, cfg.Timeout, cfg.Timeout
	opts.ContextTimeoutEnabled = true
	// No retries, one dial attempt: a failure pauses Redis instead (see
	// health), so a dead server costs one timeout, not several.
	opts.MaxRetries = -1
	opts.DialerRetries = 1
	opts.DisableIdentity = true
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}

	var origin [8]byte
	_, _ = rand.Read(origin[:])
	s := &Store{
		client:  redis.NewClient(opts),
		prefix:  cfg.KeyPrefix,
		channel: cfg.Channel,
		timeout: cfg.Timeout,
		origin:  hex.EncodeToString(origin[:]),
		log:     cfg.Logger,
		unlock: redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) end
return 0`),
	}
	s.health = health{pause: cfg.Pause, store: s}
	return s, nil
}

// Redacted is raw with its password, if any, replaced by "xxxxx": how a
// Redis URL may be logged.
func Redacted(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.do(ctx, OpPing, func(ctx context.Context) error {
		return s.client.Ping(ctx).Err()
	})
}

// Close closes the connections (and ends a subscription).
func (s *Store) Close() error { return s.client.Close() }

// Stats are a Store's counters since New.
type Stats struct {
	// Errors counts failed operations by name (Ops). Operations skipped
	// during a pause are not counted.
	Errors map[string]uint64
	// Up is false from a failure until an operation succeeds again.
	Up bool
	// ReplayFallbacks counts DPoP replay checks the fallback store answered
	// because Redis could not.
	ReplayFallbacks uint64
	// Subscribed says the revocation channel is subscribed; Received counts
	// the revocations received from other replicas.
	Subscribed bool
	Received   uint64
}

// Stats returns the counters.
func (s *Store) Stats() Stats {
	st := Stats{
		Errors:          make(map[string]uint64, len(Ops)),
		Up:              !s.health.down.Load(),
		ReplayFallbacks: s.fallbacks.Load(),
		Subscribed:      s.subscribed.Load(),
		Received:        s.received.Load(),
	}
	for i, op := range Ops {
		st.Errors[op] = s.health.errors[i].Load()
	}
	return st
}

// do runs op against Redis, within the timeout, unless Redis is paused, and
// records the outcome. redis.Nil (no such key) is an answer, not a failure.
func (s *Store) do(ctx context.Context, op string, f func(context.Context) error) error {
	if s.health.paused() {
		return ErrDown
	}
	octx, cancel := context.WithTimeout(ctx, s.timeout)
	err := f(octx)
	cancel()
	switch {
	case err == nil || errors.Is(err, redis.Nil):
		s.health.ok()
	case ctx.Err() != nil:
		// The caller gave up; Redis is not at fault.
	default:
		s.health.failed(op, err)
	}
	return err
}

// key names a hash under the prefix: prefix + kind + ":" + hex.
func (s *Store) key(kind string, h []byte) string {
	b := make([]byte, 0, len(s.prefix)+len(kind)+1+2*len(h))
	b = append(b, s.prefix...)
	b = append(b, kind...)
	b = append(b, ':')
	return string(hex.AppendEncode(b, h))
}

// health is Redis as the store last saw it, and the error counters.
type health struct {
	pause   time.Duration
	store   *Store
	retryAt atomic.Int64 // Unix nanoseconds; 0: not paused
	down    atomic.Bool
	errors  [len(Ops)]atomic.Uint64 // by index in Ops
}

// paused reports whether Redis is to be left alone. When a pause ends, one
// caller probes Redis and the others keep away until it has answered.
func (h *health) paused() bool {
	t := h.retryAt.Load()
	if t == 0 {
		return false
	}
	now := time.Now().UnixNano()
	if now < t {
		return true
	}
	return !h.retryAt.CompareAndSwap(t, now+int64(h.pause))
}

func (h *health) ok() {
	if h.retryAt.Load() != 0 {
		h.retryAt.Store(0)
	}
	if h.down.Load() && h.down.CompareAndSwap(true, false) {
		h.store.log.Info("redis: reachable again; shared token cache, replay store and revocations back on")
	}
}

func (h *health) failed(op string, err error) {
	for i, o := range Ops {
		if o == op {
			h.errors[i].Add(1)
		}
	}
	h.retryAt.Store(time.Now().Add(h.pause).UnixNano())
	if h.down.CompareAndSwap(false, true) {
		replay := "DPoP-bound requests are refused (503)"
		if h.store.failOpen.Load() {
			replay = "DPoP replays are checked by this replica alone (replay_fail_open)"
		}
		// go-redis errors name the address and the cause, never the password.
		h.store.log.Warn("redis: unreachable; tokens are cached by each replica alone, "+replay+", until it returns",
			"op", op, "err", err, "retry_in", h.pause.String())
	}
}
