package redisstore

import (
	"context"
	"encoding/hex"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/phantom-authz/phantom-authz/authz/token"
)

// A revocation message is "v1 <origin> <token ID in hex>": the publishing
// process (whose own messages it skips) and the token's ID, never the token.
const messageVersion = "v1"

var _ token.RevocationPublisher = (*Store)(nil)

// PublishRevocation implements token.RevocationPublisher: PUBLISH on the
// revocation channel.
func (s *Store) PublishRevocation(ctx context.Context, id token.TokenID) error {
	msg := messageVersion + " " + s.origin + " " + hex.EncodeToString(id[:])
	return s.do(ctx, OpPublish, func(ctx context.Context) error {
		return s.client.Publish(ctx, s.channel, msg).Err()
	})
}

// Subscribe listens on the revocation channel until ctx ends and calls
// apply with the ID of each token another replica revoked. It waits (at
// most the store's timeout) for the subscription to be confirmed, so that
// revocations published after it returns arrive; when Redis is down it
// returns at once and keeps trying in the background: go-redis reconnects
// and subscribes again when Redis returns.
func (s *Store) Subscribe(ctx context.Context, apply func(token.TokenID)) {
	ps := s.client.Subscribe(ctx, s.channel)
	if _, err := ps.ReceiveTimeout(ctx, s.timeout); err != nil {
		if ctx.Err() == nil {
			s.health.failed(OpSubscribe, err)
		}
	} else {
		s.subscribed.Store(true)
	}
	ch := ps.ChannelWithSubscriptions()
	go func() {
		defer func() { _ = ps.Close() }()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-ch:
				if !ok {
					return
				}
				switch m := m.(type) {
				case *redis.Subscription:
					s.subscribed.Store(m.Kind == "subscribe")
				case *redis.Message:
					s.receive(m.Payload, apply)
				}
			}
		}
	}()
}

// receive applies one message; malformed ones and our own are skipped.
func (s *Store) receive(payload string, apply func(token.TokenID)) {
	f := strings.Fields(payload)
	if len(f) != 3 || f[0] != messageVersion || f[1] == s.origin {
		return
	}
	var id token.TokenID
	if b, err := hex.DecodeString(f[2]); err != nil || len(b) != len(id) {
		return
	} else {
		copy(id[:], b)
	}
	s.received.Add(1)
	apply(id)
}
