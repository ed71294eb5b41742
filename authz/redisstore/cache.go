package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/phantom-authz/phantom-authz/authz/token"
)

var _ token.SharedCache = (*Store)(nil)

// Get implements token.SharedCache: GET prefix+"token:"+hex(key).
func (s *Store) Get(ctx context.Context, key [32]byte) ([]byte, bool, error) {
	var value []byte
	err := s.do(ctx, OpGet, func(ctx context.Context) error {
		var err error
		value, err = s.client.Get(ctx, s.key("token", key[:])).Bytes()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return value, true, nil
}

// Add implements token.SharedCache: SET NX PX.
func (s *Store) Add(ctx context.Context, key [32]byte, value []byte, ttl time.Duration) error {
	err := s.do(ctx, OpAdd, func(ctx context.Context) error {
		return s.client.SetNX(ctx, s.key("token", key[:]), value, ttl).Err()
	})
	return err
}

// Put implements token.SharedCache: SET PX.
func (s *Store) Put(ctx context.Context, key [32]byte, value []byte, ttl time.Duration) error {
	return s.do(ctx, OpPut, func(ctx context.Context) error {
		return s.client.Set(ctx, s.key("token", key[:]), value, ttl).Err()
	})
}

// Lock implements token.SharedCache: SET prefix+"lock:"+hex(key) <random> NX
// PX ttl; release deletes it only while it still holds our value.
func (s *Store) Lock(ctx context.Context, key [32]byte, ttl time.Duration) (func(), bool, error) {
	var mine [16]byte
	_, _ = rand.Read(mine[:])
	value := hex.EncodeToString(mine[:])
	name := s.key("lock", key[:])
	var held bool
	err := s.do(ctx, OpLock, func(ctx context.Context) error {
		var err error
		held, err = s.client.SetNX(ctx, name, value, ttl).Result()
		return err
	})
	if err != nil || !held {
		return nil, false, err
	}
	release := func() {
		// On a context of its own: the caller's work is done.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
		defer cancel()
		_ = s.do(ctx, OpUnlock, func(ctx context.Context) error {
			return s.unlock.Run(ctx, s.client, []string{name}, value).Err()
		})
	}
	return release, true, nil
}
