package token

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync"
)

// A cached token's claims map is most of what it costs. Claim names, and the
// values that repeat from token to token (issuer, audience, client, scopes),
// are stored once and shared by every Token that carries them; the values
// unique to a token (sub, jti, exp) are its own. Shared values are as
// immutable as the Tokens holding them.

// claimNames are the claim names kept as one string for all tokens.
var claimNames = func() map[string]string {
	names := []string{
		"active", "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "client_id", "azp",
		"auth_time", "acr", "amr", "sid", "cnf", "token_type", "username", "purpose", "delegationId",
		"email", "email_verified", "name", "given_name", "family_name", "preferred_username",
		"roles", "groups", "entitlements", "tenant", "may_act", "act", "token_introspection",
	}
	m := make(map[string]string, len(names))
	for _, n := range names {
		m[n] = n
	}
	return m
}()

// sharedClaims are the claims whose values are shared between tokens.
var sharedClaims = map[string]bool{
	"iss": true, "aud": true, "client_id": true, "azp": true, "scope": true, "acr": true, "amr": true,
	"token_type": true, "purpose": true, "tenant": true, "roles": true, "groups": true,
}

const (
	// maxShared bounds each table of shared values; a full table starts
	// over (tokens keep the values they hold).
	maxShared = 4096
	// maxSharedLen is the longest string value worth sharing.
	maxSharedLen = 512
)

// interner holds the shared claim values of one Resolver.
type interner struct {
	mu     sync.Mutex
	values map[string]any      // string values, boxed once
	lists  map[string]any      // arrays of strings, by listKey of their items
	scopes map[string][]string // split scope strings
}

// newToken builds a Token from decoded claims (an introspection answer or a
// JWT payload), reading the standard claims and checking their types.
func (in *interner) newToken(kind Kind, decoded map[string]any) (*Token, error) {
	claims := in.claims(decoded)
	tok := &Token{Active: true, Kind: kind, Claims: claims}
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
	return tok, nil
}

// claims returns decoded with numbers made plain (see normalize), claim
// names and repeating values shared.
func (in *interner) claims(decoded map[string]any) map[string]any {
	out := make(map[string]any, len(decoded))
	in.mu.Lock()
	defer in.mu.Unlock()
	for k, v := range decoded {
		v = normalize(v)
		if name, ok := claimNames[k]; ok {
			k = name
		}
		if sharedClaims[k] {
			v = in.share(v)
		}
		out[k] = v
	}
	return out
}

// share returns the shared copy of v when v is a string or an array of
// strings; other values are returned as they are. in.mu is held.
func (in *interner) share(v any) any {
	switch x := v.(type) {
	case string:
		if len(x) > maxSharedLen {
			return v
		}
		if s, ok := in.values[x]; ok {
			return s
		}
		in.values = put(in.values, x, v)
	case []any:
		key, ok := listKey(x)
		if !ok {
			return v
		}
		if s, ok := in.lists[key]; ok {
			return s
		}
		for i, e := range x {
			x[i] = in.share(e)
		}
		in.lists = put(in.lists, key, v)
	}
	return v
}

// listKey names a list of strings by its items, each prefixed with its
// length, so that no two different lists share a key: joined with a
// separator, ["admin","users"] and ["admin\x00users"] would, and the policy
// of one token would see the other's roles. ok is false for a list that is
// not all strings or too long to share.
func listKey(list []any) (key string, ok bool) {
	var b strings.Builder
	for _, e := range list {
		s, ok := e.(string)
		if !ok || b.Len()+len(s) > maxSharedLen {
			return "", false
		}
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	return b.String(), true
}

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
