// Package credential reads the one access token a request presents.
package credential

import "errors"

// Scheme is the HTTP authentication scheme of the credential.
type Scheme string

// Supported schemes.
const (
	SchemeBearer Scheme = "Bearer"
	SchemeDPoP   Scheme = "DPoP"
)

// Credential is the token presented and how.
type Credential struct {
	Scheme Scheme
	Token  string
	// Proof is the DPoP header value (RFC 9449), when present.
	Proof string
}

// ErrMissing: the request carries no credential (401 with a bare challenge,
// RFC 6750 §3.1).
var ErrMissing = errors.New("credential: no access token")

// ErrInvalidRequest: the credential is malformed, duplicated, too large or in
// the query string (400 invalid_request). Errors wrap it with the reason.
var ErrInvalidRequest = errors.New("credential: invalid request")

// Error is what FromHeaders returns: Err is ErrMissing or ErrInvalidRequest,
// Reason a short lower-case phrase for a client (a problem+json detail). The
// reason is fixed text: it never repeats anything the request sent.
type Error struct {
	Err    error
	Reason string
}

// Error reads "credential: invalid request: <reason>", so the reason is the
// text after the last ": ".
func (e *Error) Error() string { return e.Err.Error() + ": " + e.Reason }

// Unwrap returns ErrMissing or ErrInvalidRequest.
func (e *Error) Unwrap() error { return e.Err }
