package token

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
)

// The split scope strings repeat from token to token: each is kept once and
// shared by every Token that carries it (Token.Scopes is read-only).

const (
	// maxShared bounds the table of shared scope lists; a full table
	// starts over (tokens keep the lists they hold).
	maxShared = 4096
	// maxSharedLen is the longest scope string worth sharing.
	maxSharedLen = 512
)

// interner holds the shared scope lists of one Resolver.
type interner struct {
	mu     sync.Mutex
	scopes map[string][]string // split scope strings
}

// claimsSource is where decoded claims came from, exactly (decoding it gives
// the same map): a JWT's payload, or JSON. Empty: they are to be encoded.
type claimsSource struct {
	jwt  string
	json []byte
}

// newToken builds a Token from decoded claims (an introspection answer or a
// JWT payload), reading the standard claims and checking their types. The
// claims are kept as JSON (see Token.Claims): their source when it has one,
// else encoded.
func (in *interner) newToken(kind Kind, decoded map[string]any, src claimsSource) (*Token, error) {
	// A copy: the caller may still compare decoded's numbers as decoded.
	claims := make(map[string]any, len(decoded))
	for k, v := range decoded {
		claims[k] = normalize(v)
	}
	tok := &Token{Active: true, Kind: kind, decoded: claims}
	var err error
	if tok.Scopes, err = in.scopeList(claims["scope"]); err != nil {
		return nil, err
	}
	if tok.ClientID, err = stringClaim(claims, "client_id"); err != nil {
		return nil, err
	}
	if tok.Subject, err = stringClaim(claims, "sub"); err != nil {
		return nil, err
	}
	if tok.Expiry, _, err = numericDate(claims, "exp"); err != nil {
		return nil, err
	}
	tok.cnf, tok.hasCnf = claims["cnf"]
	switch {
	case src.jwt != "":
		tok.JWT, tok.claimsInJWT = src.jwt, true
		return tok, nil
	case src.json != nil:
		// A copy of its own: the caller's buffer may be larger, or reused.
		tok.claimsJSON = bytes.Clone(src.json)
		return tok, nil
	}
	// exactNumbers: a float beyond 2^53 that encoding/json would write as
	// an integer reads back a float, not a json.Number.
	if tok.claimsJSON, err = json.Marshal(exactNumbers(claims)); err != nil {
		return nil, err
	}
	return tok, nil
}

// shareable clears what only the Resolver building tok may use: after it,
// tok may be cached and shared.
func (tok *Token) shareable() { tok.decoded = nil }

// scopeList splits the scope claim, a space-separated string (RFC 7662, RFC
// 9068) or, as some servers send it, an array of strings.
func (in *interner) scopeList(v any) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		in.mu.Lock()
		defer in.mu.Unlock()
		if s, ok := in.scopes[v]; ok {
			return s, nil
		}
		s := strings.Fields(v)
		if len(v) <= maxSharedLen {
			in.scopes = put(in.scopes, v, s)
		}
		return s, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, s := range v {
			str, ok := s.(string)
			if !ok {
				return nil, errInvalidScope
			}
			out = append(out, str)
		}
		return out, nil
	default:
		return nil, errInvalidScope
	}
}

// put adds k to m, starting a new map when m is nil or full.
func put[V any](m map[string]V, k string, v V) map[string]V {
	if m == nil || len(m) >= maxShared {
		m = make(map[string]V)
	}
	m[k] = v
	return m
}

// normalize turns the json.Numbers decoded from JSON into float64, as
// encoding/json would, except integers beyond 2^53, which stay json.Number
// so they survive re-encoding (into a minted JWT) unchanged.
func normalize(v any) any {
	switch x := v.(type) {
	case json.Number:
		return number(x)
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
	}
	return v
}

func number(n json.Number) any {
	s := string(n)
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		if i >= -1<<53 && i <= 1<<53 {
			return float64(i)
		}
		return n
	}
	if strings.ContainsAny(s, ".eE") {
		if f, err := n.Float64(); err == nil {
			return f
		}
	}
	return n
}
