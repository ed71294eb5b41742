package redisstore

import (
	"context"
	"fmt"
	"time"

	"github.com/phantom-authz/phantom-authz/authz/binding"
)

// Replay is the DPoP replay store in Redis: a proof's key is SET NX PX
// until the proof expires, so of all replicas only the first to see a proof
// accepts it.
type Replay struct {
	s        *Store
	fallback binding.ReplayStore
}

var _ binding.ReplayStore = (*Replay)(nil)

// ReplayStore returns the store's DPoP replay store. When Redis cannot
// answer, fallback (this replica's memory: protection against replays to
// this replica only) answers instead and the fallback is counted; with a nil
// fallback the check fails and the request is refused (503).
func (s *Store) ReplayStore(fallback binding.ReplayStore) *Replay {
	if fallback != nil {
		s.failOpen.Store(true)
	}
	return &Replay{s: s, fallback: fallback}
}

// Use implements binding.ReplayStore: SET prefix+"dpop:"+hex(key) NX PX.
func (p *Replay) Use(ctx context.Context, key string, until time.Time) (bool, error) {
	ttl := max(time.Until(until), time.Millisecond)
	var fresh bool
	err := p.s.do(ctx, OpReplay, func(ctx context.Context) error {
		var err error
		fresh, err = p.s.client.SetNX(ctx, p.s.key("dpop", []byte(key)), "1", ttl).Result()
		return err
	})
	if err == nil {
		return fresh, nil
	}
	if ctx.Err() != nil || p.fallback == nil {
		return false, fmt.Errorf("redisstore: replay check: %w", err)
	}
	p.s.fallbacks.Add(1)
	return p.fallback.Use(ctx, key, until)
}
