package binding

import (
	"crypto"
	"strings"
	"sync"
	"sync/atomic"
)

// maxCachedHeaders bounds the header cache. A client signs its proofs with
// one key, so its header segment repeats on every request: a few thousand
// entries cover the busy clients. When full, the cache starts over.
const maxCachedHeaders = 4096

// parsedHeader is what a proof's protected header says, once checked: the
// algorithm, the public key and its thumbprint.
type parsedHeader struct {
	alg   string
	pub   crypto.PublicKey
	thumb string
}

// headerCache maps the encoded protected header of proofs that passed every
// check to its parsed form, so a repeat costs a map lookup, not a JSON
// decode, a JWK import and a thumbprint. Only headers whose signature
// verified and whose key a token is bound to get in, so junk cannot fill it.
// No lock on the hot path: a sync.Map, replaced whole when full.
type headerCache struct {
	m atomic.Pointer[sync.Map]
	n atomic.Int64
}

func newHeaderCache() *headerCache {
	c := &headerCache{}
	c.m.Store(new(sync.Map))
	return c
}

func (c *headerCache) get(encoded string) (*parsedHeader, bool) {
	v, ok := c.m.Load().Load(encoded)
	if !ok {
		return nil, false
	}
	return v.(*parsedHeader), true
}

func (c *headerCache) put(encoded string, h *parsedHeader) {
	if c.n.Add(1) > maxCachedHeaders {
		c.m.Store(new(sync.Map))
		c.n.Store(1)
	}
	// A copy: encoded points into the request's header value.
	c.m.Load().Store(strings.Clone(encoded), h)
}
