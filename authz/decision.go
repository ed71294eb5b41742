package authz

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
)

// Decision is the engine's answer for one request.
//
// On allow, Headers go onto the upstream request (overwriting any the client
// sent), RemoveHeaders are taken off it and ResponseHeaders are added to the
// response to the client. On deny, Status, Headers and Body form the answer
// the client receives.
type Decision struct {
	Allowed bool
	// Status is the HTTP status of a denial (401, 403, 400, 503, ...); 0 on allow.
	Status int
	// Reason is a short, stable code of why: "allowed", "invalid_token",
	// "insufficient_scope", "policy_denied", "policy_error", ... It goes into
	// logs, metrics and traces; never a token or a claim value.
	Reason string
	// Detail is a human sentence for the client and the logs, free of internals.
	Detail string

	// Error is the RFC 6750 / RFC 9470 error code for WWW-Authenticate
	// ("invalid_request", "invalid_token", "insufficient_scope",
	// "insufficient_user_authentication"); Scope the scopes a client lacks.
	Error string
	Scope string
	// Scheme is the authentication scheme of the WWW-Authenticate challenge:
	// "" for Bearer, SchemeDPoP for a client that used DPoP or a route that
	// demands it (RFC 9449 §7.1; the challenge then carries algs).
	Scheme string
	// ACRValues (space-separated) and MaxAge (seconds; nil when not asked)
	// are the authentication a step-up denial (RFC 9470 §3,
	// insufficient_user_authentication) asks the client to come back with.
	ACRValues string
	MaxAge    *int

	// Headers go onto the upstream request on allow, onto the denial on
	// deny. The first value of a name replaces whatever the client sent
	// under it; further values of the same name are added beside it, so an
	// array of values (set-cookie) arrives whole.
	Headers         []Header
	RemoveHeaders   []string
	ResponseHeaders []Header
	// QueryParamsToSet are set on the upstream request's query (replacing
	// the client's values of those names); QueryParamsToRemove are taken
	// off it (OPA-Envoy's query_parameters_to_set / _to_remove).
	QueryParamsToSet    []Header
	QueryParamsToRemove []string
	// Body is the denial body (problem+json unless a policy set its own).
	Body string
	// DynamicMetadata is handed to Envoy's filter metadata (OPA-Envoy's
	// dynamic_metadata).
	DynamicMetadata map[string]any
	// DecisionID is a UUID naming this decision; Envoy receives it as
	// dynamic metadata decision_id (as from OPA-Envoy), and the decision log
	// and the span carry it, so an access log line can be joined to them.
	DecisionID DecisionID
	// PolicyBody says the policy wrote the body or content-type of its
	// denial: phantom-authz then adds no problem+json of its own.
	PolicyBody bool

	// DefaultRule says the policy's default rule (or no rule at all)
	// decided: no rule written for the request matched. Audits look for
	// routes only ever decided this way.
	DefaultRule bool
	// DryRun marks an allow that dry-run mode made of a denial; Status and
	// Reason keep what the denial would have been.
	DryRun bool
}

// ErrInvalidInput marks a request the engine cannot evaluate as sent (no HTTP
// attributes, a JSON body that does not parse): it is denied with 400
// invalid_request. Stages wrap it with the reason.
var ErrInvalidInput = errors.New("authz: invalid request")

// DecisionID is a random (version 4) UUID naming one decision. It is kept
// as bytes, so that making one costs no allocation; String formats it where
// it leaves the process (the response, the decision log, the span).
type DecisionID [16]byte

// newDecisionID returns a fresh id. Its bits come from the runtime's
// per-thread ChaCha8 generator, seeded by the system: ids are unique and
// unguessable in practice, cost no system call and take no lock on the path
// every request takes. They name a decision for correlation and never
// authorise anything.
func newDecisionID() DecisionID {
	var b DecisionID
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 variant
	return b
}

// IsZero reports whether id was never set.
func (id DecisionID) IsZero() bool { return id == DecisionID{} }

// String is the UUID's text form, "" for the zero id.
func (id DecisionID) String() string {
	if id.IsZero() {
		return ""
	}
	var s [36]byte
	hex.Encode(s[0:8], id[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], id[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], id[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], id[8:10])
	s[23] = '-'
	hex.Encode(s[24:], id[10:])
	return string(s[:])
}
