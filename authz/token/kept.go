package token

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// kept is a value fetched from a remote endpoint (a JWKS, a server's
// metadata) and kept: fetched again at most once at a time, all who ask
// sharing the fetch, and no sooner than refreshInterval after the last try
// (emptyRetryInterval while none was ever fetched), so a stream of tokens
// cannot turn phantom-authz into a load generator against the endpoint. A
// failed fetch keeps the last good value.
type kept[T any] struct {
	cur     atomic.Pointer[T]
	flight  singleflight.Group
	mu      sync.Mutex
	tried   time.Time // last fetch attempt
	bg      sync.WaitGroup
	stale   atomic.Bool // a background refresh is running
	closing atomic.Bool
}

func (k *kept[T]) load() *T   { return k.cur.Load() }
func (k *kept[T]) store(v *T) { k.cur.Store(v) }

// refresh runs fetch (bounded by timeout, detached from ctx's end) unless
// it was tried too recently, and returns the value to use: the new one, or
// the last good one.
func (k *kept[T]) refresh(ctx context.Context, now time.Time, timeout time.Duration,
	fetch func(context.Context) (*T, error)) (*T, error) {
	ch := k.flight.DoChan("", func() (any, error) {
		cur := k.cur.Load()
		k.mu.Lock()
		wait := refreshInterval
		if cur == nil {
			wait = emptyRetryInterval
		}
		if !k.tried.IsZero() && now.Sub(k.tried) < wait {
			k.mu.Unlock()
			return cur, errors.New("fetched too recently")
		}
		k.tried = now
		k.mu.Unlock()

		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		next, err := fetchRecovered(fctx, fetch)
		if err != nil {
			return cur, err
		}
		k.cur.Store(next)
		return next, nil
	})
	select {
	case res := <-ch:
		cur, _ := res.Val.(*T)
		return cur, res.Err
	case <-ctx.Done():
		return k.cur.Load(), ctx.Err()
	}
}

// fetchRecovered runs fetch, a panic in it (a parser's bug on what the
// endpoint sent) being a failed fetch: the last good value stays. Unhandled,
// it would end the process: singleflight re-panics a DoChan function's
// panic on a goroutine of its own, which nothing can recover.
func fetchRecovered[T any](ctx context.Context, fetch func(context.Context) (*T, error)) (next *T, err error) {
	defer func() {
		if recover() != nil {
			next, err = nil, errors.New("fetch failed: internal error")
		}
	}()
	return fetch(ctx)
}

// inBackground runs refresh in a goroutine of its own, unless one is
// running or close was called.
func (k *kept[T]) inBackground(refresh func(context.Context)) {
	if k.closing.Load() || !k.stale.CompareAndSwap(false, true) {
		return
	}
	k.bg.Add(1)
	go func() {
		defer k.bg.Done()
		defer k.stale.Store(false)
		refresh(context.Background())
	}()
}

// close waits for a background refresh; none starts afterwards.
func (k *kept[T]) close() {
	k.closing.Store(true)
	k.bg.Wait()
}
