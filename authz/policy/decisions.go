package policy

import (
	"encoding/binary"
	"hash/maphash"
	"runtime"
	"slices"
	"sync/atomic"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/phantom-authz/phantom-authz/authz"
)

// Decision caching.
//
// Evaluating a policy is the costliest step of a decision, and most requests
// repeat one seen a moment ago: the same token on the same route. A decision
// is a pure function of the compiled policy set, the input fields its
// policies can read (need) and the token, as long as the evaluation calls no
// non-deterministic builtin (time.now_ns, http.send, rand.intn, uuid.*,
// io.jwt.decode_verify, net.lookup_ip_addr, opa.runtime, ...: the ones OPA
// marks Nondeterministic). So a decision is cached under a key made of
//
//   - the policy set's generation: a reload starts afresh;
//   - when the policies read input.token, the token's values of the fields
//     they read (tokenkey.go): a decision is served to another token only
//     when its input cannot differ; or, when they read the whole token or
//     claims by a name not known before they run, the token's identity (a
//     number given to each prepared token);
//   - the request's value of every field the policies can read, each
//     length-prefixed, in an order fixed per policy set;
//
// and it is served only when the whole key is equal, not a hash of it. An
// evaluation that called a non-deterministic builtin, or in which a builtin
// failed (a failing http.send is not recorded as called), is not cached; a
// policy set that reads the whole input, or fields unique to every request
// (the request id, its time, all headers, the body), or that verifies
// certificates against the clock, is never cached.

// keyOp is one field of a request that goes into the decision key.
type keyOp struct {
	kind opKind
	peer int    // for the peer ops: 0 source, 1 destination
	name string // for a named header, context extension or label
}

type opKind uint8

const (
	opPeerAddress opKind = iota
	opPeerService
	opPeerLabels
	opPeerLabel
	opPeerPrincipal
	opPeerCertificate
	opMethod
	opPath
	opHost
	opScheme
	opQuery
	opFragment
	opSize
	opProtocol
	opHeader
	opContextExtensions
	opContextExtension
	opSNI
	opTarget // the path and query parsed_path and parsed_query come from
	opRoute  // input.route: the selected route and its params
)

// keyPlan is how a policy set keys its decisions: the request fields its
// policies can read.
type keyPlan struct {
	ops []keyOp
	// token: the policies read input.token. tokenByValue: they read
	// named fields of it, tokenFields, so a token's values of those key
	// its decisions (tokenkey.go); else its identity does.
	token        bool
	tokenByValue bool
	tokenFields  []tokenField
	// headers: some op reads r.Headers by name.
	headers bool
}

// timeBound are builtins that read the clock without being marked
// non-deterministic: a policy set that calls one is never cached.
var timeBound = map[string]bool{
	"crypto.x509.parse_and_verify_certificates":              true,
	"crypto.x509.parse_and_verify_certificates_with_options": true,
}

// newKeyPlan returns the plan for a set with need n compiled by c, or nil
// when its decisions must not be cached.
func newKeyPlan(c *ast.Compiler, n *need) *keyPlan {
	if n != nil && n.all {
		return nil
	}
	if callsTimeBound(c) {
		return nil
	}
	p := &keyPlan{}
	if a := n.child(kAttributes); a != nil {
		if a.all {
			return nil // the request id and time among them
		}
		for i, k := range [...]*ast.Term{kSource, kDestination} {
			if pn := a.child(k); pn != nil {
				p.peer(i, pn)
			}
		}
		if rn := a.child(kRequest); rn != nil {
			if rn.all || rn.has(kTime) {
				return nil
			}
			if hn := rn.child(kHTTP); hn != nil {
				if !p.http(hn) {
					return nil
				}
			}
		}
		if cn := a.child(kContextExt); cn != nil {
			p.mapOps(cn, opContextExtensions, opContextExtension, 0)
		}
		if a.has(kMetadataContext) || a.has(kRouteMetadata) {
			return nil
		}
		if a.has(kTLSSession) {
			p.ops = append(p.ops, keyOp{kind: opSNI})
		}
	}
	if n.has(kParsedPath) || n.has(kParsedQuery) {
		p.ops = append(p.ops, keyOp{kind: opTarget})
	}
	if n.has(kRoute) {
		p.ops = append(p.ops, keyOp{kind: opRoute})
	}
	if n.has(kSourcePrincipal) {
		p.ops = append(p.ops, keyOp{kind: opPeerPrincipal, peer: 0})
	}
	// parsed_body and truncated_body: a request with a body is never cached
	// (see writeKey), and without one they are constant but for Envoy's
	// partial-body mark; version is constant.
	if n.has(kTruncatedBody) {
		p.ops = append(p.ops, keyOp{kind: opHeader, name: "x-envoy-auth-partial-body"})
		p.headers = true
	}
	p.token = n.has(kToken)
	p.tokenFields, p.tokenByValue = tokenPlan(n.child(kToken))
	return p
}

func (p *keyPlan) peer(i int, n *need) {
	if n.has(kAddress) {
		p.ops = append(p.ops, keyOp{kind: opPeerAddress, peer: i})
	}
	if n.has(kService) {
		p.ops = append(p.ops, keyOp{kind: opPeerService, peer: i})
	}
	if ln := n.child(kLabels); ln != nil {
		p.mapOps(ln, opPeerLabels, opPeerLabel, i)
	}
	if n.has(kPrincipal) {
		p.ops = append(p.ops, keyOp{kind: opPeerPrincipal, peer: i})
	}
	if n.has(kCertificate) {
		p.ops = append(p.ops, keyOp{kind: opPeerCertificate, peer: i})
	}
}

// http adds the ops of input.attributes.request.http; false when the
// policies read a field unique to each request.
func (p *keyPlan) http(n *need) bool {
	if n.all || n.has(kID) || n.has(kHeaderMap) || n.has(kBody) || n.has(kRawBody) {
		return false
	}
	for _, f := range [...]struct {
		k    *ast.Term
		kind opKind
	}{
		{kMethod, opMethod}, {kPath, opPath}, {kHost, opHost}, {kScheme, opScheme},
		{kQuery, opQuery}, {kFragment, opFragment}, {kSize, opSize}, {kProtocol, opProtocol},
	} {
		if n.has(f.k) {
			p.ops = append(p.ops, keyOp{kind: f.kind})
		}
	}
	if hn := n.child(kHeaders); hn != nil {
		if hn.all {
			return false // x-request-id alone makes every request different
		}
		for _, name := range hn.names() {
			p.ops = append(p.ops, keyOp{kind: opHeader, name: name})
		}
		p.headers = true
	}
	return true
}

// mapOps keys a map of strings: whole, or by the names the policies read.
func (p *keyPlan) mapOps(n *need, whole, named opKind, peer int) {
	if n.all {
		p.ops = append(p.ops, keyOp{kind: whole, peer: peer})
		return
	}
	for _, name := range n.names() {
		p.ops = append(p.ops, keyOp{kind: named, peer: peer, name: name})
	}
}

// names returns the names of n's children, sorted.
func (n *need) names() []string {
	out := make([]string, 0, len(n.children))
	for k := range n.children {
		out = append(out, string(k.Value.(ast.String)))
	}
	slices.Sort(out)
	return out
}

// callsTimeBound reports whether any module calls a builtin of timeBound.
func callsTimeBound(c *ast.Compiler) bool {
	found := false
	for _, m := range c.Modules {
		ast.WalkRefs(m, func(r ast.Ref) bool {
			found = found || timeBound[r.String()]
			return found
		})
	}
	return found
}

// writeKey writes the request's value of every field of the plan, each
// length-prefixed so that two different requests never make the same bytes.
// It returns false when the request must not use the cache.
func (p *keyPlan) writeKey(w *keyWriter, r *authz.Request) bool {
	if r.Body != "" || len(r.RawBody) > 0 {
		// The body is checked and parsed by the builder; requests with one
		// are rare enough on a cached route to always evaluate.
		return false
	}
	// Headers only in raw form (Envoy's encode_raw_headers, as
	// envoy/envoy.yaml ships): the input has no headers map, so no header's
	// value can change the decision. The key says which form came and
	// carries no header value; refusing the cache here made every check
	// through the shipped Envoy evaluate the policy (the authorizer's CPU per
	// cached-token check 64 -> 145 µs, e2e/bench row E2).
	joined := p.headers && r.HeadersJoined
	if p.headers {
		w.opt("", !joined)
	}
	// Which parts were sent shapes the input (no http object at all for
	// Envoy's network filter).
	w.uvarint(uint64(r.Absent))
	for i := range p.ops {
		op := &p.ops[i]
		var peer *authz.Peer
		if op.peer == 0 {
			peer = &r.Source
		} else {
			peer = &r.Destination
		}
		switch op.kind {
		case opPeerAddress:
			if peer.AddressValue != nil {
				return false // a pipe, an internal address: rare, evaluated
			}
			w.str(peer.Address)
			w.uvarint(uint64(peer.Port))
		case opPeerService:
			w.str(peer.Service)
		case opPeerLabels:
			w.stringMap(peer.Labels)
		case opPeerLabel:
			v, ok := peer.Labels[op.name]
			w.opt(v, ok)
		case opPeerPrincipal:
			w.str(peer.Principal)
		case opPeerCertificate:
			w.str(peer.Certificate)
		case opMethod:
			w.str(r.Method)
		case opPath:
			w.str(r.Path)
		case opHost:
			w.str(r.Host)
		case opScheme:
			w.str(r.Scheme)
		case opQuery:
			w.str(r.Query)
		case opFragment:
			w.str(r.Fragment)
		case opSize:
			w.uvarint(uint64(r.Size))
		case opProtocol:
			w.str(r.Protocol)
		case opHeader:
			if joined {
				continue
			}
			v, ok := r.Headers[op.name]
			w.opt(v, ok)
		case opContextExtensions:
			w.stringMap(r.ContextExtensions)
		case opContextExtension:
			v, ok := r.ContextExtensions[op.name]
			w.opt(v, ok)
		case opSNI:
			w.str(r.TLSSNI)
		case opTarget:
			w.str(r.Path)
			w.str(r.Query)
		case opRoute:
			rt := &r.Route
			if !rt.Matched() {
				w.uvarint(0) // no input.route at all
				break
			}
			w.uvarint(1 + uint64(rt.NumParams()))
			w.str(rt.Name())
			w.str(rt.API)
			w.str(rt.Template())
			w.uvarint(uint64(b2u(rt.Public)))
			for i := range rt.NumParams() {
				p := rt.ParamAt(i)
				w.str(p.Name)
				w.str(p.Value)
			}
		}
		if w.full {
			return false
		}
	}
	return true
}

// keyWriter writes a key into a fixed buffer, so that building one does
// not allocate; a key that does not fit is not cached (a request whose
// fields read by the policy are this large is rare, and evaluates).
type keyWriter struct {
	buf  [512]byte
	n    int
	full bool
}

func (w *keyWriter) bytes() []byte { return w.buf[:w.n] }

func (w *keyWriter) uvarint(x uint64) {
	if len(w.buf)-w.n < binary.MaxVarintLen64 {
		w.full = true
		return
	}
	w.n += binary.PutUvarint(w.buf[w.n:], x)
}

func (w *keyWriter) uint64(x uint64) {
	if len(w.buf)-w.n < 8 {
		w.full = true
		return
	}
	binary.LittleEndian.PutUint64(w.buf[w.n:], x)
	w.n += 8
}

func (w *keyWriter) str(s string) {
	w.uvarint(uint64(len(s)))
	w.raw(s)
}

func (w *keyWriter) raw(s string) {
	if len(w.buf)-w.n < len(s) {
		w.full = true
		return
	}
	w.n += copy(w.buf[w.n:], s)
}

// opt tells an absent value from an empty one: the input has the empty
// header, not the absent one.
func (w *keyWriter) opt(s string, ok bool) {
	if !ok {
		w.uvarint(0)
		return
	}
	w.uvarint(uint64(len(s)) + 1)
	w.raw(s)
}

// stringMap writes a whole map of strings in key order.
func (w *keyWriter) stringMap(m map[string]string) {
	w.uvarint(uint64(len(m)))
	var arr [8]string
	keys := arr[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		w.str(k)
		w.str(m[k])
	}
}

// setGenerations numbers compiled policy sets, and tokenIDs prepared
// tokens, across every Engine of the process: a number is never reused, so a
// key made with it can never match another set's or token's.
var setGenerations, tokenIDs atomic.Uint64

// decisionCache holds decisions by key, within a memory budget (ristretto:
// admission by frequency, so one-off requests do not push out the routes
// used all the time). Entries are found by a hash of the key and served
// only when their whole key is equal.
type decisionCache struct {
	c    *ristretto.Cache[uint64, *cachedDecision]
	seed maphash.Seed
}

// cachedDecision is a decision and the whole key it was made for.
type cachedDecision struct {
	key string
	d   authz.Decision
}

// DefaultDecisionCacheBytes is the decision cache's memory budget when
// Config.DecisionCacheBytes is 0.
const DefaultDecisionCacheBytes = 16 << 20

// newDecisionCache returns a cache of maxBytes, or nil when maxBytes < 0
// (caching off). It is closed when owner becomes unreachable.
func newDecisionCache(owner *Engine, maxBytes int64) (*decisionCache, error) {
	if maxBytes < 0 {
		return nil, nil
	}
	if maxBytes == 0 {
		maxBytes = DefaultDecisionCacheBytes
	}
	c, err := ristretto.NewCache(&ristretto.Config[uint64, *cachedDecision]{
		// About ten counters per entry; an entry is a few hundred bytes.
		NumCounters: max(maxBytes/32, 1000),
		MaxCost:     maxBytes,
		BufferItems: 64,
	})
	if err != nil {
		return nil, err
	}
	// The engine has no Close: its cache's goroutines stop when nothing
	// can call it any more.
	runtime.AddCleanup(owner, func(c *ristretto.Cache[uint64, *cachedDecision]) { c.Close() }, c)
	return &decisionCache{c: c, seed: maphash.MakeSeed()}, nil
}

// decisionKey is the key of one request, built on the stack.
type decisionKey struct {
	w  keyWriter
	ok bool // the request may use the cache
}

// make builds the key of r and the token input ti under set; k.ok is false
// when the request must be evaluated without the cache.
func (k *decisionKey) make(set *policySet, r *authz.Request, ti *tokenInput) {
	p := set.plan
	if p == nil {
		return
	}
	if !validTarget(r.Path) {
		return // refused by the builder, whatever the policy reads
	}
	k.w.uint64(set.gen)
	switch {
	case !p.token || ti == nil:
		k.w.uvarint(0) // no token, or the policies do not read it
	case p.tokenByValue && ti.keyGen == set.gen:
		k.w.uvarint(1)
		k.w.str(ti.key)
	case ti.id == 0:
		return // a token that was not prepared: nothing to key it by
	default:
		k.w.uvarint(2)
		k.w.uint64(ti.id)
	}
	k.ok = p.writeKey(&k.w, r)
}

// get returns the decision cached for k.
func (c *decisionCache) get(k *decisionKey) (authz.Decision, bool) {
	if c == nil || !k.ok {
		return authz.Decision{}, false
	}
	b := k.w.bytes()
	cd, ok := c.c.Get(maphash.Bytes(c.seed, b))
	if !ok || cd.key != string(b) {
		return authz.Decision{}, false
	}
	return cd.d, true
}

// put caches d under k. d's slices are capped, so a caller appending to
// them (the engine adds its headers) copies them instead of writing into the
// cached ones.
func (c *decisionCache) put(k *decisionKey, d authz.Decision) {
	if c == nil || !k.ok {
		return
	}
	d.Headers = slices.Clip(d.Headers)
	d.RemoveHeaders = slices.Clip(d.RemoveHeaders)
	d.ResponseHeaders = slices.Clip(d.ResponseHeaders)
	b := k.w.bytes()
	cd := &cachedDecision{key: string(b), d: d}
	c.c.Set(maphash.Bytes(c.seed, b), cd, cd.cost())
}

// wait blocks until the entries given to put are in the cache (tests).
func (c *decisionCache) wait() {
	if c != nil {
		c.c.Wait()
	}
}

// cost estimates the bytes an entry holds.
func (cd *cachedDecision) cost() int64 {
	const overhead = 256 // the entry, the decision struct, ristretto's item
	d := &cd.d
	n := int64(overhead + len(cd.key) + len(d.Reason) + len(d.Detail) + len(d.Error) + len(d.Scope) +
		len(d.ACRValues) + len(d.Body))
	for _, hs := range [...][]authz.Header{d.Headers, d.ResponseHeaders} {
		for _, h := range hs {
			n += int64(32 + len(h.Key) + len(h.Value))
		}
	}
	for _, h := range d.RemoveHeaders {
		n += int64(16 + len(h))
	}
	return n + anyCost(d.DynamicMetadata)
}

// anyCost estimates the heap size of a JSON-like value.
func anyCost(v any) int64 {
	switch v := v.(type) {
	case string:
		return 16 + int64(len(v))
	case map[string]any:
		n := int64(64)
		for k, e := range v {
			n += 32 + int64(len(k)) + anyCost(e)
		}
		return n
	case []any:
		n := int64(24)
		for _, e := range v {
			n += 16 + anyCost(e)
		}
		return n
	default:
		return 16
	}
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
