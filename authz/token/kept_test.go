package token

import (
	"context"
	"testing"
	"time"
)

// A fetch that panics on what the endpoint sent (a JWKS, metadata) is a
// failed fetch: the last good value stays, and the process stays up (a
// panic under singleflight.DoChan is re-raised where nothing recovers it;
// unhandled, this test binary would die).
func TestKeptFetchPanicIsAFailedFetch(t *testing.T) {
	var k kept[string]
	good := "good"
	k.store(&good)
	now := time.Unix(1_700_000_000, 0)
	got, err := k.refresh(context.Background(), now, time.Second, func(context.Context) (*string, error) {
		var m map[string]int
		m["boom"]++ // a nil map write: a runtime panic
		return nil, nil
	})
	if err == nil {
		t.Fatal("a panicking fetch reported success")
	}
	if got == nil || *got != "good" {
		t.Fatalf("after a panicking fetch: %v, want the last good value", got)
	}
	if cur := k.load(); cur == nil || *cur != "good" {
		t.Fatalf("kept value %v, want the last good value", cur)
	}
	// The next fetch, once allowed, works.
	fresh := "fresh"
	got, err = k.refresh(context.Background(), now.Add(time.Hour), time.Second, func(context.Context) (*string, error) { return &fresh, nil })
	if err != nil || got == nil || *got != "fresh" {
		t.Fatalf("next fetch: %v, %v", got, err)
	}
}
