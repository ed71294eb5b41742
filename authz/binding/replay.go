package binding

import (
	"context"
	"crypto/sha256"
	"errors"
	"hash/maphash"
	"sync"
	"time"
)

// ReplayStore remembers which DPoP proofs have been used. Every replica that
// can see a proof must share one store, or a proof replayed to another
// replica passes: the in-memory store suits a single replica (or sticky
// routing by token); a shared store (Redis SET NX PX, say) implements the
// same interface.
type ReplayStore interface {
	// Use records key until the given time and reports whether it was
	// unseen (fresh). key is opaque (Bind passes 32 bytes: a hash of the
	// proof key's thumbprint and the jti). An error means the store cannot
	// tell; Bind then refuses the request (503), never allows it.
	Use(ctx context.Context, key string, until time.Time) (fresh bool, err error)
}

// ErrReplayStoreFull: the in-memory store holds MaxEntries unexpired proofs.
var ErrReplayStoreFull = errors.New("binding: replay store full")

// DefaultReplayEntries bounds the in-memory store when NewMemoryReplay is
// given 0: about 64 MiB at most (an entry is a 32-byte key and a time, kept
// in a map and a queue, with no pointers for the collector to scan).
const DefaultReplayEntries = 1 << 19

const replayShards = 64

// MemoryReplay is a ReplayStore in this process's memory. It is sharded so
// concurrent checks rarely wait on each other, expires entries as it goes
// (no goroutine), and never holds more than its bound: when full of
// unexpired entries it answers ErrReplayStoreFull rather than forget one.
type MemoryReplay struct {
	seed     maphash.Seed
	perShard int
	now      func() time.Time
	shards   [replayShards]replayShard
}

type replayShard struct {
	mu    sync.Mutex
	until map[[32]byte]int64 // key → expiry, Unix nanoseconds
	queue []replayEntry      // in insertion order, for expiry
	head  int
	swept int64 // when the whole shard was last swept
}

type replayEntry struct {
	key   [32]byte
	until int64
}

// NewMemoryReplay returns an in-memory store holding at most maxEntries
// unexpired proofs (DefaultReplayEntries when 0 or less).
func NewMemoryReplay(maxEntries int) *MemoryReplay {
	if maxEntries <= 0 {
		maxEntries = DefaultReplayEntries
	}
	m := &MemoryReplay{seed: maphash.MakeSeed(), perShard: max(1, maxEntries/replayShards), now: time.Now}
	for i := range m.shards {
		m.shards[i].until = make(map[[32]byte]int64)
	}
	return m
}

// Use implements ReplayStore.
func (m *MemoryReplay) Use(_ context.Context, key string, until time.Time) (bool, error) {
	var k [32]byte
	if len(key) == len(k) {
		copy(k[:], key)
	} else {
		k = sha256.Sum256([]byte(key))
	}
	now := m.now().UnixNano()
	s := m.shardOf(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if u, ok := s.until[k]; ok && u > now {
		return false, nil
	}
	s.expire(now)
	if len(s.until) >= m.perShard {
		// The queue is ordered by arrival, not expiry: an entry with a
		// later expiry can hold expired ones behind it. Sweep all, at most
		// once a second, before refusing.
		if now-s.swept > int64(time.Second) {
			s.sweep(now)
		}
		if len(s.until) >= m.perShard {
			return false, ErrReplayStoreFull
		}
	}
	u := until.UnixNano()
	s.until[k] = u
	s.queue = append(s.queue, replayEntry{key: k, until: u})
	return true, nil
}

func (m *MemoryReplay) shardOf(k [32]byte) *replayShard {
	return &m.shards[maphash.Comparable(m.seed, k)%replayShards]
}

// Len returns how many entries the store holds, expired ones not yet
// dropped included.
func (m *MemoryReplay) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.until)
		s.mu.Unlock()
	}
	return n
}

// expire drops the expired entries at the head of the queue.
func (s *replayShard) expire(now int64) {
	for s.head < len(s.queue) && s.queue[s.head].until <= now {
		e := s.queue[s.head]
		if s.until[e.key] == e.until {
			delete(s.until, e.key)
		}
		s.head++
	}
	if s.head == len(s.queue) {
		s.queue, s.head = s.queue[:0], 0
	} else if s.head > 1024 && s.head > len(s.queue)/2 {
		n := copy(s.queue, s.queue[s.head:])
		s.queue, s.head = s.queue[:n], 0
	}
}

// sweep drops every expired entry and rebuilds the queue.
func (s *replayShard) sweep(now int64) {
	s.swept = now
	live := s.queue[:0]
	for _, e := range s.queue[s.head:] {
		if e.until > now {
			live = append(live, e)
		} else if s.until[e.key] == e.until {
			delete(s.until, e.key)
		}
	}
	s.queue, s.head = live, 0
}
