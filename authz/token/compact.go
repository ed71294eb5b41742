package token

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// compact is a JWS in compact serialization (RFC 7515 §7.1), split and
// decoded but not verified.
type compact struct {
	header jwsHeader
	claims map[string]any
	// input is the signing input (header.payload), sig the decoded
	// signature.
	input string
	sig   []byte
}

// jwsHeader is the part of the protected header we act on. Headers that
// point at keys (jku, x5u, jwk, x5c) are deliberately not read: keys come
// from the configured JWKS only.
type jwsHeader struct {
	Alg  string          `json:"alg"`
	Kid  string          `json:"kid"`
	Typ  string          `json:"typ"`
	Crit json.RawMessage `json:"crit"`
	B64  json.RawMessage `json:"b64"`
}

// headerNames are the json names of jwsHeader's fields.
var headerNames = [...]string{"alg", "kid", "typ", "crit", "b64"}

var b64 = base64.RawURLEncoding.Strict()

// parseCompact splits and decodes a compact JWS whose payload is a JSON
// object. It is strict: three non-empty segments, unpadded base64url, JSON
// objects without trailing data, an alg. Numbers in the claims are
// json.Number so they survive re-encoding unchanged.
func parseCompact(raw string) (*compact, error) {
	// Go's base64 decoders skip CR and LF, even in strict mode: without
	// this check "header.payload.sig\n" (or a line break anywhere in the
	// signature) verifies, another string with the same claims, which a
	// revocation of the token (by its hash) does not name.
	if strings.ContainsAny(raw, "\r\n") {
		return nil, errors.New("not a compact JWS")
	}
	h, rest, ok := strings.Cut(raw, ".")
	p, s, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || h == "" || p == "" || s == "" || strings.Contains(s, ".") {
		return nil, errors.New("not a compact JWS")
	}
	hb, err := b64.DecodeString(h)
	if err != nil {
		return nil, errors.New("header is not base64url")
	}
	var c compact
	if err := decodeObject(hb, &c.header); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if err := uniqueNames(hb); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if c.header.Alg == "" {
		return nil, errors.New("header has no alg")
	}
	if c.sig, err = b64.DecodeString(s); err != nil {
		return nil, errors.New("signature is not base64url")
	}
	c.input = raw[:len(h)+1+len(p)]
	pb, err := b64.DecodeString(p)
	if err != nil {
		return nil, errors.New("payload is not base64url")
	}
	if err := decodeObject(pb, &c.claims); err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	return &c, nil
}

// uniqueNames refuses a JSON object (decodeObject accepted it) that names a
// member twice: RFC 7515 §4 lets a JWS parser refuse such a header, and
// must, for "alg": encoding/json keeps the last value, another parser the
// first ({"alg":"none","alg":"ES256"}). It also refuses a member spelled as
// one of jwsHeader's in another case ("ALG", "Kid", "\u212aid" with the
// Kelvin sign): encoding/json fills the field from it, case-insensitively,
// while every JOSE library reads it as another, unknown member
// ({"alg":"none","ALG":"ES256"} would be ES256 here, unsigned elsewhere).
func uniqueNames(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // {
		return errors.New("not a JSON object")
	}
	seen := make(map[string]bool, 8)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return errors.New("not a JSON object")
		}
		name, _ := t.(string)
		if seen[name] {
			return fmt.Errorf("member %.40q appears twice", name)
		}
		for _, h := range headerNames {
			if name != h && strings.EqualFold(name, h) {
				return fmt.Errorf("member %.40q is %q in another case", name, h)
			}
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return errors.New("not a JSON object")
		}
	}
	return nil
}

// decodeObject decodes one JSON object into v, refusing anything after it.
func decodeObject(data []byte, v any) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return errors.New("not a JSON object")
	}
	// RFC 8259 §8.1. encoding/json would replace invalid bytes with
	// U+FFFD, so the claims seen here would differ from those another
	// parser (the upstream's) reads in the same token.
	if !utf8.Valid(data) {
		return errors.New("not valid UTF-8")
	}
	// The same for a \u escape of a UTF-16 surrogate that is not half of
	// a pair (\ud800 alone): not a character (RFC 8259 §8.2), read as
	// U+FFFD by encoding/json, so "bob\ud800" and "bob\udbff" would be one
	// subject here ("bob\ufffd", also in a minted JWT) and two upstream.
	if loneSurrogate(data) {
		return errors.New("a \\u escape of a lone UTF-16 surrogate")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return errors.New("not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	return nil
}

// loneSurrogate reports whether data, UTF-8 JSON, holds a \u escape of a
// UTF-16 surrogate that is not a high one followed at once by the escape of
// a low one. It reads every backslash as the start of an escape, as it is
// in valid JSON (anywhere else the decoder refuses the text anyway).
func loneSurrogate(data []byte) bool {
	for i := 0; ; {
		j := bytes.IndexByte(data[i:], '\\')
		if j < 0 || i+j+1 >= len(data) {
			return false
		}
		i += j
		if data[i+1] != 'u' {
			i += 2 // \\, \", \n...: the escaped byte is not a backslash to read
			continue
		}
		r, ok := hex4(data[i+2:])
		if !ok {
			i += 2
			continue
		}
		i += 6
		switch {
		case r >= 0xDC00 && r <= 0xDFFF:
			return true
		case r >= 0xD800 && r <= 0xDBFF:
			if i+1 < len(data) && data[i] == '\\' && data[i+1] == 'u' {
				if lo, ok := hex4(data[i+2:]); ok && lo >= 0xDC00 && lo <= 0xDFFF {
					i += 6
					continue
				}
			}
			return true
		}
	}
}

// hex4 reads the four hexadecimal digits that start b.
func hex4(b []byte) (rune, bool) {
	var v [2]byte
	if len(b) < 4 {
		return 0, false
	}
	if _, err := hex.Decode(v[:], b[:4]); err != nil {
		return 0, false
	}
	return rune(v[0])<<8 | rune(v[1]), true
}

// issuerOf is peekIssuer's answer for raw, read from c (raw parsed) when
// raw is a well-formed JWS, so that a JWT is decoded once on its way to
// verification.
func issuerOf(raw string, c *compact) (iss string, ok bool) {
	if c == nil {
		return peekIssuer(raw)
	}
	iss, _ = c.claims["iss"].(string)
	return iss, iss != ""
}

// peekIssuer returns the iss of raw when raw looks like a JWS with a JSON
// payload, without verifying anything; ok is false for anything else. It
// decides only where the token goes, never whether it is accepted.
func peekIssuer(raw string) (iss string, ok bool) {
	if strings.Count(raw, ".") != 2 {
		return "", false
	}
	h, rest, _ := strings.Cut(raw, ".")
	p, _, _ := strings.Cut(rest, ".")
	hb, err := b64.DecodeString(h)
	if err != nil {
		return "", false
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(hb, &hdr) != nil || hdr.Alg == "" {
		return "", false
	}
	pb, err := b64.DecodeString(p)
	if err != nil {
		return "", false
	}
	var claims struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(pb, &claims) != nil || claims.Iss == "" {
		return "", false
	}
	return claims.Iss, true
}

// typMatches compares typ values as RFC 8725 §3.11 and RFC 7515 §4.1.9 say:
// case-insensitively, with "application/" optional.
func typMatches(got, want string) bool {
	norm := func(s string) string {
		s = strings.ToLower(s)
		return strings.TrimPrefix(s, "application/")
	}
	return norm(got) == norm(want)
}

var errInvalidScope = errors.New("claim scope is not a string")

// numericDate reads a NumericDate claim (RFC 7519 §2); ok is false when it is
// absent, err set when it is not a number.
func numericDate(claims map[string]any, name string) (t time.Time, ok bool, err error) {
	v, present := claims[name]
	if !present {
		return time.Time{}, false, nil
	}
	var f float64
	switch n := v.(type) {
	case json.Number:
		f, err = n.Float64()
	case float64:
		f = n
	default:
		err = errors.New("not a number")
	}
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1<<40 {
		return time.Time{}, false, fmt.Errorf("claim %s is not a NumericDate", name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// stringClaim reads an optional string claim.
func stringClaim(claims map[string]any, name string) (string, error) {
	v, ok := claims[name]
	if !ok {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("claim %s is not a string", name)
	}
	return s, nil
}

// hasAudience reports whether aud, a string or an array of strings (RFC 7519
// §4.1.3), holds any of accepted.
func hasAudience(claims map[string]any, accepted ...string) bool {
	switch aud := claims["aud"].(type) {
	case string:
		for _, a := range accepted {
			if aud == a {
				return true
			}
		}
	case []any:
		for _, v := range aud {
			s, _ := v.(string)
			for _, a := range accepted {
				if s == a {
					return true
				}
			}
		}
	}
	return false
}
