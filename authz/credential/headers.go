package credential

import "strings"

// MaxTokenBytes bounds the access token a request may present. Opaque tokens
// are short and JWTs rarely pass 2 KiB; anything larger is an attack on the
// cache or the introspection call, not a credential.
const MaxTokenBytes = 8 << 10

// The errors are fixed values: a reason never quotes the request, so a token
// cannot leak into a response or a log through one, and the error paths do
// not allocate.
var (
	errNoAuthorization   = &Error{ErrMissing, "no Authorization header"}
	errUnsupportedScheme = &Error{ErrMissing, "the Authorization scheme is not Bearer or DPoP"}

	errQueryToken     = &Error{ErrInvalidRequest, "the access token must not be sent in the query string"}
	errDuplicateAuth  = &Error{ErrInvalidRequest, "more than one Authorization header or credential"}
	errEmptyAuth      = &Error{ErrInvalidRequest, "the Authorization header is empty"}
	errControlChar    = &Error{ErrInvalidRequest, "the Authorization header contains a control character"}
	errNoScheme       = &Error{ErrInvalidRequest, "the Authorization header has no scheme"}
	errNoToken        = &Error{ErrInvalidRequest, "no access token follows the Authorization scheme"}
	errSpacing        = &Error{ErrInvalidRequest, "exactly one space must separate the Authorization scheme and the token"}
	errTokenSyntax    = &Error{ErrInvalidRequest, "the access token contains characters RFC 6750 does not allow"}
	errTokenTooLarge  = &Error{ErrInvalidRequest, "the access token is larger than 8192 bytes"}
	errNoProof        = &Error{ErrInvalidRequest, "the DPoP scheme requires one DPoP header"}
	errDuplicateProof = &Error{ErrInvalidRequest, "more than one DPoP header"}
	errEmptyProof     = &Error{ErrInvalidRequest, "the DPoP header is empty"}
)

// FromHeaders reads the credential. headers: lower-case keys as Envoy sends
// them (repeated headers comma-joined); raw: every header occurrence in order
// when Envoy sends raw headers (nil otherwise); path: the request path
// including the query string.
//
// It returns an *Error wrapping ErrMissing when there is no credential to
// read (no Authorization header, or a scheme other than Bearer and DPoP, to
// which RFC 6750 answers with a bare challenge), and one wrapping
// ErrInvalidRequest when the request presents its credential wrongly. The
// returned strings share memory with the arguments; FromHeaders does not
// allocate.
func FromHeaders(headers map[string]string, raw [][2]string, path string) (Credential, error) {
	// Checked first: a token in the URL is already in access logs, and
	// RFC 6750 §3.1 makes two methods at once an invalid_request too.
	if queryHasAccessToken(path) {
		return Credential{}, errQueryToken
	}

	auth, n := header(headers, raw, "authorization")
	switch {
	case n == 0:
		return Credential{}, errNoAuthorization
	case n > 1:
		return Credential{}, errDuplicateAuth
	case auth == "":
		return Credential{}, errEmptyAuth
	}
	for i := 0; i < len(auth); i++ {
		if c := auth[i]; c < 0x20 || c == 0x7f {
			return Credential{}, errControlChar
		}
	}

	name, tok, hasSP := strings.Cut(auth, " ")
	if name == "" {
		return Credential{}, errNoScheme
	}
	var scheme Scheme
	switch {
	case strings.EqualFold(name, string(SchemeBearer)):
		scheme = SchemeBearer
	case strings.EqualFold(name, string(SchemeDPoP)):
		scheme = SchemeDPoP
	default:
		return Credential{}, errUnsupportedScheme
	}
	switch {
	case !hasSP || tok == "":
		return Credential{}, errNoToken
	case tok[0] == ' ':
		return Credential{}, errSpacing
	case len(tok) > MaxTokenBytes:
		return Credential{}, errTokenTooLarge
	case !isB64Token(tok):
		return Credential{}, errTokenSyntax
	}

	cred := Credential{Scheme: scheme, Token: tok}
	if scheme == SchemeDPoP {
		proof, n := header(headers, raw, "dpop")
		switch {
		case n == 0:
			return Credential{}, errNoProof
		case n > 1:
			return Credential{}, errDuplicateProof
		case proof == "":
			return Credential{}, errEmptyProof
		}
		cred.Proof = proof
	}
	return cred, nil
}

// header returns the value of the header name (lower case) and how many
// values the request carries for it: 0, 1, or 2 meaning "more than one".
//
// With raw headers every occurrence counts. The comma-joined map cannot tell
// two headers from one holding a comma, and neither a token nor a DPoP proof
// may contain one, so a comma counts as two. When both forms are given and
// disagree, the request is treated as carrying two.
func header(headers map[string]string, raw [][2]string, name string) (string, int) {
	mv, inMap := headers[name]
	if inMap && strings.IndexByte(mv, ',') >= 0 {
		return "", 2
	}
	var rv string
	n := 0
	for _, h := range raw {
		if len(h[0]) == len(name) && strings.EqualFold(h[0], name) {
			if n++; n > 1 {
				return "", 2
			}
			rv = h[1]
		}
	}
	switch {
	case n == 0 && inMap:
		return mv, 1
	case n == 0:
		return "", 0
	case inMap && mv != rv:
		return "", 2
	}
	return rv, 1
}

// isB64Token reports whether s is an RFC 6750 b64token:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	i := 0
	for ; i < len(s) && b64tokenChar[s[i]]; i++ {
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

var b64tokenChar = func() (t [256]bool) {
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
		t[c+'a'-'A'] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~+/" {
		t[c] = true
	}
	return t
}()

// queryHasAccessToken reports whether the query string of path carries an
// access_token parameter, however its name is percent-encoded. Both '&' and
// ';' separate parameters, because some frameworks still split on ';' and
// the check must be at least as wide as any upstream's parser.
func queryHasAccessToken(path string) bool {
	_, query, ok := strings.Cut(path, "?")
	if !ok {
		return false
	}
	if i := strings.IndexByte(query, '#'); i >= 0 {
		query = query[:i]
	}
	for query != "" {
		var pair string
		if i := strings.IndexAny(query, "&;"); i >= 0 {
			pair, query = query[:i], query[i+1:]
		} else {
			pair, query = query, ""
		}
		key, _, _ := strings.Cut(pair, "=")
		if decodesTo(key, "access_token") {
			return true
		}
	}
	return false
}

// decodesTo reports whether the form-encoded name decodes to want ('+' is a
// space, %XX a byte). It decodes as it compares, so it never allocates, and
// it keeps a '%' not followed by two hex digits literally, as lenient
// parsers do, rather than failing.
func decodesTo(name, want string) bool {
	j := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '+':
			c = ' '
		case c == '%' && i+2 < len(name) && isHex(name[i+1]) && isHex(name[i+2]):
			c = unhex(name[i+1])<<4 | unhex(name[i+2])
			i += 2
		}
		if j >= len(want) || want[j] != c {
			return false
		}
		j++
	}
	return j == len(want)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
