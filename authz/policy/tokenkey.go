package policy

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"slices"

	"github.com/phantom-authz/phantom-authz/authz/token"
)

// Decisions keyed by what the policies read of the token.
//
// A stream of new tokens (every client's token is new every few minutes)
// would evaluate the policy once per token if the decision cache keyed a
// token by its identity. When the policies read named fields of
// input.token (active, scopes, client_id, claims.acr, ...) and not the
// whole object or all claims, a decision is a function of those fields'
// values: tokens that agree on all of them get the same decision from the
// same evaluation, and a token that differs in any of them (another
// tenant, another scope) gets its own. The values are written once per
// token, when it is prepared, for the policy set loaded then; a token
// prepared under an earlier set is keyed by its identity, as are all
// tokens of a set that reads input.token whole or claims by a name it
// cannot know (see inputNeed).

// tokenField is one field of input.token a policy set reads.
type tokenField struct {
	kind tokenFieldKind
	name string // the claim, for tokenClaim
}

type tokenFieldKind uint8

const (
	tokenActive tokenFieldKind = iota
	tokenKind
	tokenScopes
	tokenClientID
	tokenSub
	tokenExp
	tokenIss
	tokenCnf
	tokenClaim
)

// tokenFieldNames are input.token's fields (newTokenInput) but claims, by name.
var tokenFieldNames = map[string]tokenFieldKind{
	"active": tokenActive, "kind": tokenKind, "scopes": tokenScopes, "client_id": tokenClientID,
	"sub": tokenSub, "exp": tokenExp, "iss": tokenIss, "cnf": tokenCnf,
}

// maxTokenKey bounds the bytes of a token's key: a token whose fields read
// by the policies are larger is keyed by its identity.
const maxTokenKey = 256

// tokenPlan returns the fields of input.token that tn (the need below
// token) reads, sorted by name; ok is false when the decision must be keyed
// by the token's identity (the whole token, or all claims, is read).
func tokenPlan(tn *need) (fields []tokenField, ok bool) {
	if tn == nil || tn.all {
		return nil, false
	}
	for _, name := range tn.names() {
		if name == "claims" {
			cn := tn.childNamed(name)
			if cn.all {
				return nil, false
			}
			for _, c := range cn.names() {
				fields = append(fields, tokenField{kind: tokenClaim, name: c})
			}
			continue
		}
		// A name not in tokenFieldNames is not a field of input.token:
		// undefined for every token.
		if kind, ok := tokenFieldNames[name]; ok {
			fields = append(fields, tokenField{kind: kind})
		}
	}
	return fields, true
}

// tokenKey writes the values of the plan's token fields for tok, whose
// decoded claims are claims, as newTokenInput puts them in input.token:
// each length-prefixed or tagged, so that two tokens whose inputs differ in
// any of these fields never write the same bytes. ok is false when the
// token must be keyed by its identity (a value too large, of a type the
// writer does not know).
func (p *keyPlan) tokenKey(tok *token.Token, claims map[string]any) ([]byte, bool) {
	w := valueWriter{b: make([]byte, 0, 64)}
	for _, f := range p.tokenFields {
		switch f.kind {
		case tokenActive:
			w.byte(b2u(tok.Active))
		case tokenKind:
			w.str(string(tok.Kind))
		case tokenScopes:
			w.uvarint(uint64(len(tok.Scopes)))
			for _, s := range tok.Scopes {
				w.str(s)
			}
		case tokenClientID:
			w.str(tok.ClientID) // "": absent from the input, for every such token
		case tokenSub:
			w.str(tok.Subject)
		case tokenExp:
			if tok.Expiry.IsZero() {
				w.byte(0)
			} else {
				w.byte(1)
				w.uint64(uint64(tok.Expiry.Unix()))
			}
		case tokenIss:
			w.str(tok.Issuer)
		case tokenCnf:
			v, ok := claims["cnf"]
			w.value(v, ok)
		case tokenClaim:
			v, ok := claims[f.name]
			w.value(v, ok)
		}
		if w.bad || len(w.b) > maxTokenKey {
			return nil, false
		}
	}
	return w.b, true
}

// valueWriter appends an injective encoding of values to b.
type valueWriter struct {
	b   []byte
	bad bool
}

func (w *valueWriter) byte(c byte)             { w.b = append(w.b, c) }
func (w *valueWriter) uvarint(x uint64)        { w.b = binary.AppendUvarint(w.b, x) }
func (w *valueWriter) uint64(x uint64)         { w.b = binary.LittleEndian.AppendUint64(w.b, x) }
func (w *valueWriter) str(s string)            { w.uvarint(uint64(len(s))); w.b = append(w.b, s...) }
func (w *valueWriter) tagged(t byte, s string) { w.byte(t); w.str(s) }

// value writes a decoded JSON value (token.Token.ClaimMap's types) with a
// tag per type; present false writes the absent value.
func (w *valueWriter) value(v any, present bool) {
	if !present {
		w.byte(0)
		return
	}
	switch x := v.(type) {
	case nil:
		w.byte(1)
	case bool:
		w.byte(2)
		w.byte(b2u(x))
	case string:
		w.tagged(3, x)
	case float64:
		w.byte(4)
		w.uint64(math.Float64bits(x))
	case json.Number:
		w.tagged(5, string(x))
	case []any:
		w.byte(6)
		w.uvarint(uint64(len(x)))
		for _, e := range x {
			w.value(e, true)
		}
	case map[string]any:
		w.byte(7)
		w.uvarint(uint64(len(x)))
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			w.str(k)
			w.value(x[k], true)
		}
	default:
		w.bad = true
	}
}
