package binding

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func TestMemoryReplay(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	m := NewMemoryReplay(replayShards * 4) // 4 per shard
	m.now = func() time.Time { return now }

	fresh, err := m.Use(ctx, "a", now.Add(time.Minute))
	if !fresh || err != nil {
		t.Fatalf("first use: %v %v", fresh, err)
	}
	if fresh, err := m.Use(ctx, "a", now.Add(time.Minute)); fresh || err != nil {
		t.Fatalf("second use: %v %v, want not fresh", fresh, err)
	}

	// Past its time the key is forgotten, and usable again.
	now = now.Add(time.Minute + time.Nanosecond)
	if fresh, err := m.Use(ctx, "a", now.Add(time.Minute)); !fresh || err != nil {
		t.Fatalf("after expiry: %v %v, want fresh", fresh, err)
	}
	if n := m.Len(); n != 1 {
		t.Errorf("Len = %d, want 1 (the expired entry dropped)", n)
	}

	// Bounded: fill every shard, then one more key is refused, not forgotten.
	full := 0
	for i := 0; full == 0 && i < 10_000; i++ {
		_, err := m.Use(ctx, fmt.Sprint("k", i), now.Add(time.Minute))
		if errors.Is(err, ErrReplayStoreFull) {
			full = i
		}
	}
	if full == 0 {
		t.Fatal("never full")
	}
	if n := m.Len(); n > replayShards*4 {
		t.Errorf("Len = %d beyond the bound %d", n, replayShards*4)
	}
	// Everything remembered is still refused while full.
	if fresh, _ := m.Use(ctx, "a", now.Add(time.Minute)); fresh {
		t.Error("a remembered key is fresh again when the store is full")
	}

	// Once the entries expire, a full shard empties and accepts again.
	now = now.Add(2 * time.Minute)
	if fresh, err := m.Use(ctx, fmt.Sprint("k", full), now.Add(time.Minute)); !fresh || err != nil {
		t.Fatalf("after everything expired: %v %v", fresh, err)
	}
}

// An entry with a long life ahead of expired ones does not keep them: the
// sweep finds them when the shard fills.
func TestMemoryReplaySweepsBehindALongEntry(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	m := NewMemoryReplay(replayShards * 2)
	m.now = func() time.Time { return now }
	s := &m.shards[0]
	// Keys of one shard, found by trial.
	var ks []string
	for i := 0; len(ks) < 3; i++ {
		k := fmt.Sprintf("%032d", i)
		var a [32]byte
		copy(a[:], k)
		if m.shardOf(a) == s {
			ks = append(ks, k)
		}
	}
	if _, err := m.Use(ctx, ks[0], now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Use(ctx, ks[1], now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Second)
	if fresh, err := m.Use(ctx, ks[2], now.Add(time.Second)); !fresh || err != nil {
		t.Fatalf("the expired entry behind the long one was not swept: %v %v", fresh, err)
	}
}

func BenchmarkMemoryReplay(b *testing.B) {
	m := NewMemoryReplay(0)
	ctx := context.Background()
	var g atomic.Int32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var k [32]byte
		k[31] = byte(g.Add(1))
		i := 0
		// Entries expire at once, so the store stays small however long
		// the benchmark runs; each Use still inserts and later drops one.
		until := time.Now()
		for pb.Next() {
			i++
			k[0], k[1], k[2], k[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
			if _, err := m.Use(ctx, string(k[:]), until); err != nil {
				b.Fatal(err)
			}
		}
	})
}
