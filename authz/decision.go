package authz

import "errors"

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

	Headers         []Header
	RemoveHeaders   []string
	ResponseHeaders []Header
	// Body is the denial body (problem+json unless a policy set its own).
	Body string
	// DynamicMetadata is handed to Envoy's filter metadata (OPA-Envoy's
	// dynamic_metadata).
	DynamicMetadata map[string]any
}

// ErrInvalidInput marks a request the engine cannot evaluate as sent (no HTTP
// attributes, a JSON body that does not parse): it is denied with 400
// invalid_request. Stages wrap it with the reason.
var ErrInvalidInput = errors.New("authz: invalid request")
