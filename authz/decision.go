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
	// Scheme is the authentication scheme of the WWW-Authenticate challenge:
	// "" for Bearer, SchemeDPoP for a client that used DPoP or a route that
	// demands it (RFC 9449 §7.1; the challenge then carries algs).
	Scheme string
	// ACRValues (space-separated) and MaxAge (seconds; nil when not asked)
	// are the authentication a step-up denial (RFC 9470 §3,
	// insufficient_user_authentication) asks the client to come back with.
	ACRValues string
	MaxAge    *int

	Headers         []Header
	RemoveHeaders   []string
	ResponseHeaders []Header
	// Body is the denial body (problem+json unless a policy set its own).
	Body string
	// DynamicMetadata is handed to Envoy's filter metadata (OPA-Envoy's
	// dynamic_metadata).
	DynamicMetadata map[string]any

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
