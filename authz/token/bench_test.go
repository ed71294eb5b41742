package token

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// cachedResolver is a Resolver holding one phantom token (an ~850-byte JWT),
// and the opaque token that resolves to it.
func cachedResolver(b *testing.B) (*Resolver, string) {
	stub := &phantomServer{now: time.Now()}
	r := mustNew(b, Config{
		Introspection: &IntrospectionConfig{
			Endpoint: "https://as.example/introspect", ClientID: "gateway", ClientSecret: "s", Response: ResponseJWT,
		},
		HTTPClient: &http.Client{Transport: stub},
	})
	const opaque = "_0XBPWQQ_2fe6e2a5-7ba4-4fb5-9a2d-2b4f0d6c4f1e"
	if _, err := r.Resolve(context.Background(), bearer(opaque)); err != nil {
		b.Fatal(err)
	}
	return r, opaque
}

// BenchmarkResolveCached is the hot path: a token already in the cache.
func BenchmarkResolveCached(b *testing.B) {
	r, opaque := cachedResolver(b)
	ctx, cred := context.Background(), bearer(opaque)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Resolve(ctx, cred); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkResolveCachedParallel: the hot path from all Ps at once.
func BenchmarkResolveCachedParallel(b *testing.B) {
	r, opaque := cachedResolver(b)
	ctx, cred := context.Background(), bearer(opaque)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Resolve(ctx, cred); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkResolveCachedJWT: a JWT verified by value, then cached; the key
// is the SHA-256 of the whole JWT, so this measures hashing a longer token.
func BenchmarkResolveCachedJWT(b *testing.B) {
	testKeys(b)
	jwks := newJWKSServer(b, keysES)
	r := mustNew(b, Config{Issuers: []IssuerConfig{issuerConfig(jwks)}})
	tok := signJWT(b, keysES, nil, claimsAt(time.Now()))
	ctx, cred := context.Background(), bearer(tok)
	if _, err := r.Resolve(ctx, cred); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Resolve(ctx, cred); err != nil {
			b.Fatal(err)
		}
	}
}
