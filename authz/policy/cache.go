package policy

import (
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
)

// OPA's evaluator keeps two caches per evaluation: virtual documents (rule
// results) and base documents (data read from the store). Its default
// implementations are tries of hash maps, rebuilt on every evaluation; for a
// policy that evaluates a dozen rules they are a good part of the
// allocations of a decision. The two below do the same job without
// allocating once warm.

// ruleCache is a topdown.VirtualCache: a stack of frames of (ref, value)
// entries searched linearly (an evaluation caches a few dozen rules at
// most). It lives in a pooled evaluator and is emptied between evaluations.
type ruleCache struct {
	terms   []*ast.Term // the refs of all entries, back to back
	entries []ruleEntry
	frames  []int // index in entries where each pushed frame starts
}

type ruleEntry struct {
	start, n  int // the ref is terms[start:start+n]
	value     *ast.Term
	undefined bool
}

// start readies the cache for an evaluation: one empty frame.
func (c *ruleCache) start() {
	c.frames = append(c.frames[:0], 0)
}

// reset drops every entry, so a pooled cache does not keep a request alive.
func (c *ruleCache) reset() {
	clear(c.terms)
	clear(c.entries)
	c.terms, c.entries, c.frames = c.terms[:0], c.entries[:0], c.frames[:0]
}

// Push starts a new, empty frame.
func (c *ruleCache) Push() { c.frames = append(c.frames, len(c.entries)) }

// Pop drops the top frame and its entries.
func (c *ruleCache) Pop() {
	top := c.frames[len(c.frames)-1]
	c.frames = c.frames[:len(c.frames)-1]
	if top < len(c.entries) {
		c.terms = c.terms[:c.entries[top].start]
		clear(c.entries[top:])
		c.entries = c.entries[:top]
	}
}

func (c *ruleCache) find(ref ast.Ref) *ruleEntry {
	top := c.frames[len(c.frames)-1]
	for i := len(c.entries) - 1; i >= top; i-- {
		e := &c.entries[i]
		if e.n == len(ref) && refEqual(c.terms[e.start:e.start+e.n], ref) {
			return e
		}
	}
	return nil
}

func refEqual(a []*ast.Term, b ast.Ref) bool {
	for i := range a {
		if a[i] != b[i] && !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// Get returns the cached value of ref: (value, false) when defined,
// (nil, true) when recorded as undefined, (nil, false) when not cached.
func (c *ruleCache) Get(ref ast.Ref) (*ast.Term, bool) {
	if e := c.find(ref); e != nil {
		return e.value, e.undefined
	}
	return nil, false
}

// Put records the value of ref in the top frame; nil records undefined.
func (c *ruleCache) Put(ref ast.Ref, value *ast.Term) {
	e := c.find(ref)
	if e == nil {
		// The caller may reuse ref's backing array: keep a copy of its terms.
		c.entries = append(c.entries, ruleEntry{start: len(c.terms), n: len(ref)})
		c.terms = append(c.terms, ref...)
		e = &c.entries[len(c.entries)-1]
	}
	if value != nil {
		e.value = value
	} else {
		e.undefined = true
	}
}

// Keys returns the refs with a value in the top frame.
func (c *ruleCache) Keys() []ast.Ref {
	var keys []ast.Ref
	for _, e := range c.entries[c.frames[len(c.frames)-1]:] {
		if e.value != nil {
			keys = append(keys, append(ast.Ref(nil), c.terms[e.start:e.start+e.n]...))
		}
	}
	return keys
}

// dataCache is a topdown.BaseCache shared by every evaluation of one policy
// set. The set's data never changes, so what one evaluation read from the
// store is good for all of them. Reads take no lock: the entries are a
// copy-on-write map behind an atomic pointer; only a miss (at most once per
// distinct path of the data) takes the mutex. Only paths that exist in the
// data are ever stored, so the map is bounded by the data's size.
type dataCache struct {
	m  atomic.Pointer[map[int][]dataEntry]
	mu sync.Mutex
	n  int
}

type dataEntry struct {
	ref   ast.Ref
	value ast.Value
}

// maxDataCacheEntries caps the cache for very large data documents; past
// it, reads go to the store (still correct, just slower).
const maxDataCacheEntries = 1024

// Get returns the cached value of ref, nil when not cached.
func (c *dataCache) Get(ref ast.Ref) ast.Value {
	m := c.m.Load()
	if m == nil {
		return nil
	}
	for _, e := range (*m)[ref.Hash()] {
		if e.ref.Equal(ref) {
			return e.value
		}
	}
	return nil
}

// Put caches the value of ref.
func (c *dataCache) Put(ref ast.Ref, value ast.Value) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n >= maxDataCacheEntries || c.Get(ref) != nil {
		return
	}
	old := c.m.Load()
	next := make(map[int][]dataEntry, c.n+1)
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	h := ref.Hash()
	next[h] = append(next[h][:len(next[h]):len(next[h])], dataEntry{ref: ref.Copy(), value: value})
	c.m.Store(&next)
	c.n++
}
