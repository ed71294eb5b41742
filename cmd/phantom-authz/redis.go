package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/phantom-authz/phantom-authz/authz/binding"
	"github.com/phantom-authz/phantom-authz/authz/config"
	"github.com/phantom-authz/phantom-authz/authz/redisstore"
	"github.com/phantom-authz/phantom-authz/authz/server"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// openRedis builds the store redis.url names; nil without one. Redis being
// unreachable at start is not fatal: it is logged (once) and the replica
// works alone until Redis answers.
func openRedis(cfg config.Config, log *slog.Logger) (*redisstore.Store, error) {
	rc := cfg.Redis
	if rc.URL == "" {
		return nil, nil
	}
	// go-redis's own messages (dial retries, pub/sub reconnects) repeat
	// what the store reports once per transition: debug level.
	redis.SetLogger(goRedisLogger{log})
	st, err := redisstore.New(redisstore.Config{
		URL:       rc.URL,
		Password:  rc.Password,
		CAFile:    rc.CAFile,
		KeyPrefix: rc.KeyPrefix,
		Timeout:   rc.Timeout.D(),
		Channel:   rc.RevocationChannel,
		Logger:    log,
	})
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*rc.Timeout.D())
	defer cancel()
	if err := st.Ping(ctx); err == nil {
		log.Info("redis: connected", "url", redisstore.Redacted(rc.URL), "token_cache", rc.TokenCache,
			"replay_store", rc.ReplayStore, "replay_fail_open", rc.ReplayFailOpen, "revocation_channel", rc.RevocationChannel)
	}
	return st, nil
}

// goRedisLogger passes go-redis's messages to the service's logger.
type goRedisLogger struct{ log *slog.Logger }

// Printf implements go-redis's internal.Logging.
func (l goRedisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}

// replayStore is the bind stage's DPoP replay store: Redis's when
// redis.replay_store is on (falling back to this replica's memory with
// redis.replay_fail_open), else this replica's memory.
func replayStore(cfg config.Config, st *redisstore.Store) binding.ReplayStore {
	mem := binding.NewMemoryReplay(cfg.DPoP.ReplayMaxEntries)
	switch {
	case st == nil || !cfg.Redis.ReplayStore:
		return mem
	case cfg.Redis.ReplayFailOpen:
		return st.ReplayStore(mem)
	default:
		return st.ReplayStore(nil)
	}
}

// sharedCache is the resolver's second-level cache: Redis when
// redis.token_cache is on. (A nil store must be a nil interface.)
func sharedCache(cfg config.Config, st *redisstore.Store) token.SharedCache {
	if st == nil || !cfg.Redis.TokenCache {
		return nil
	}
	return st
}

// revocationPublisher is where Revoke tells the other replicas: Redis's
// revocation channel when Redis is configured.
func revocationPublisher(st *redisstore.Store) token.RevocationPublisher {
	if st == nil {
		return nil
	}
	return st
}

// subscribeRevocations applies the revocations other replicas publish, until
// ctx ends (serve only).
func (s *stack) subscribeRevocations(ctx context.Context) {
	if s.redis != nil && s.resolver != nil {
		s.redis.Subscribe(ctx, s.resolver.ApplyRevocation)
	}
}

// adminConfig is the administrative endpoints when admin.token_file is set:
// POST /admin/revoke when there are tokens to revoke, /debug/pprof/ with
// admin.pprof; nil otherwise (404).
func adminConfig(cfg config.Config, s *stack, log *slog.Logger) *server.AdminConfig {
	if cfg.Admin.Token == "" || (s.resolver == nil && !cfg.Admin.PProf) {
		return nil
	}
	a := &server.AdminConfig{Token: cfg.Admin.Token, PProf: cfg.Admin.PProf, Logger: log}
	if s.resolver != nil {
		a.Revoker = s.resolver // a nil *token.Resolver must stay a nil interface
	}
	return a
}

// registerSharedMetrics exposes what replicas share: revocations (also
// without Redis: the admin endpoint works on one replica), and with Redis
// its errors and state, the shared cache and the replay-store fallbacks.
func registerSharedMetrics(m metric.Meter, s *stack) error {
	if m == nil || s.resolver == nil {
		return nil
	}
	newCounter := func(name, desc string) (metric.Int64ObservableCounter, error) {
		return m.Int64ObservableCounter(name, metric.WithDescription(desc))
	}
	revocations, err := newCounter("phantom_authz.revocations", "Token revocations applied to this replica's cache, by source (local: POST /admin/revoke here; remote: published by another replica).")
	if err != nil {
		return err
	}
	insts := []metric.Observable{revocations}
	var (
		redisErrors, sharedHits, sharedMisses, sharedRejected, lockWaits, fallbacks metric.Int64ObservableCounter
		up                                                                          metric.Int64ObservableGauge
	)
	if s.redis != nil {
		for _, c := range []struct {
			dst        *metric.Int64ObservableCounter
			name, desc string
		}{
			{&redisErrors, "phantom_authz.redis.errors", "Redis operations that failed, by operation (get, add, put, lock, unlock, publish, subscribe, replay, ping)."},
			{&sharedHits, "phantom_authz.shared_cache.hits", "Token lookups missed here and answered by the shared (Redis) cache."},
			{&sharedMisses, "phantom_authz.shared_cache.misses", "Token lookups missed here and in the shared (Redis) cache."},
			{&sharedRejected, "phantom_authz.shared_cache.rejected", "Shared (Redis) cache entries that failed authentication (not written by a replica holding redis.cache_key_file): ignored, the token resolved afresh."},
			{&lockWaits, "phantom_authz.shared_cache.lock_waits", "Shared-cache misses that waited for another replica's introspection of the same token."},
			{&fallbacks, "phantom_authz.dpop.replay_fallbacks", "DPoP replay checks answered by this replica's memory because Redis could not (redis.replay_fail_open)."},
		} {
			if *c.dst, err = newCounter(c.name, c.desc); err != nil {
				return err
			}
			insts = append(insts, *c.dst)
		}
		if up, err = m.Int64ObservableGauge("phantom_authz.redis.up",
			metric.WithDescription("1 while Redis answers, 0 from a failure until it answers again.")); err != nil {
			return err
		}
		insts = append(insts, up)
	}
	attr := func(k, v string) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(attribute.String(k, v)))
	}
	local, remote := attr("source", "local"), attr("source", "remote")
	ops := make(map[string]metric.ObserveOption, len(redisstore.Ops))
	for _, op := range redisstore.Ops {
		ops[op] = attr("operation", op)
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		ts := s.resolver.Stats()
		o.ObserveInt64(revocations, int64(ts.RevokedLocal), local)
		o.ObserveInt64(revocations, int64(ts.RevokedRemote), remote)
		if s.redis == nil {
			return nil
		}
		rs := s.redis.Stats()
		for _, op := range redisstore.Ops {
			o.ObserveInt64(redisErrors, int64(rs.Errors[op]), ops[op])
		}
		o.ObserveInt64(sharedHits, int64(ts.SharedHits))
		o.ObserveInt64(sharedMisses, int64(ts.SharedMisses))
		o.ObserveInt64(sharedRejected, int64(ts.SharedRejected))
		o.ObserveInt64(lockWaits, int64(ts.LockWaits))
		o.ObserveInt64(fallbacks, int64(rs.ReplayFallbacks))
		var u int64
		if rs.Up {
			u = 1
		}
		o.ObserveInt64(up, u)
		return nil
	}, insts...)
	return err
}
