package token

import (
	"encoding/json"
	"unsafe"
)

// Estimated heap sizes (64-bit), close enough for the cache's memory budget.
const (
	stringHeader = int64(unsafe.Sizeof(""))
	ifaceHeader  = int64(unsafe.Sizeof(any(nil)))
	// mapEntry is a map[string]any slot with its share of the table.
	mapEntry    = stringHeader + ifaceHeader + 16
	mapOverhead = 64
	// inactiveCost is what a remembered inactive answer costs: the entry
	// alone (ristretto adds its own per-item size).
	inactiveCost = int64(unsafe.Sizeof(entry{}))
)

// sizer is what a Prepared value may implement to report its memory; one
// that does not is counted as large as the claims it was built from.
type sizer interface{ Size() int64 }

// tokenCost estimates the bytes the cache holds for tok, computed once when
// it is stored. Subject and ClientID are counted with the claims.
func tokenCost(tok *Token) int64 {
	n := int64(unsafe.Sizeof(*tok)) + inactiveCost + int64(len(tok.JWT))
	n += int64(len(tok.Scopes)) * stringHeader
	// Subject and ClientID are their own copies, out of the decoded claims.
	claims := int64(len(tok.claimsJSON) + len(tok.Subject) + len(tok.ClientID))
	if tok.Claims != nil {
		claims += valueCost(tok.Claims)
	}
	if tok.hasCnf {
		claims += valueCost(tok.cnf)
	}
	n += claims
	switch p := tok.Prepared.(type) {
	case nil:
	case sizer:
		n += p.Size()
	default:
		n += claims
	}
	return n
}

// valueCost estimates the heap size of a decoded JSON value.
func valueCost(v any) int64 {
	switch v := v.(type) {
	case string:
		return int64(len(v))
	case json.Number:
		return int64(len(v))
	case float64, bool, nil:
		return 8
	case []any:
		n := int64(len(v)) * ifaceHeader
		for _, e := range v {
			n += valueCost(e)
		}
		return n
	case map[string]any:
		n := int64(mapOverhead) + int64(len(v))*mapEntry
		for k, e := range v {
			n += int64(len(k)) + valueCost(e)
		}
		return n
	default:
		return 64
	}
}
