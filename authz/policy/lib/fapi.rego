# phantom-authz's FAPI helpers. phantom-authz loads this module with every
# policy set, whatever policy.dir holds: a policy uses it with
#
#	import data.phantom.fapi
#
# The package phantom (data.phantom) is reserved for these helpers.
#
# `opa test` does not know them: run `go test ./policies/`, or name this
# directory too (`opa test policies/ authz/policy/lib/`).
package phantom.fapi

# authenticated(req) is true when the user authentication behind the token
# meets req (RFC 9470):
#
#	acr_values: the token's acr claim is one of these (an array, or a
#	            space-separated string); absent: any acr, or none
#	max_age:    the token's auth_time is at most this many seconds ago;
#	            absent: any age
#
# max_age reads the clock (time.now_ns), so a decision that uses it depends
# on when it is made, not only on the request and the token.
authenticated(req) if {
	_acr_ok(req)
	_age_ok(req)
}

# step_up(req) is the RFC 9470 denial that asks the client to
# re-authenticate as req says: 401 with
# `WWW-Authenticate: Bearer error="insufficient_user_authentication",
# acr_values="…", max_age=…`. The one-liner:
#
#	allow := fapi.step_up(sca) if not fapi.authenticated(sca)
step_up(req) := object.union(
	{
		"allowed": false,
		"http_status": 401,
		"error": "insufficient_user_authentication",
		"reason": _step_up_reason(req),
	},
	object.filter(req, {"acr_values", "max_age"}),
)

# consent_matches(claim, value) is true when the token's claim (a consent or
# intent id, e.g. openbanking_intent_id) equals value, a non-empty string the
# policy takes from the request (a path segment, a header). A claim holding
# an array matches any of its strings.
consent_matches(claim, value) if {
	_id(value)
	input.token.claims[claim] == value
}

consent_matches(claim, value) if {
	_id(value)
	is_array(input.token.claims[claim])
	value in input.token.claims[claim]
}

_id(value) if {
	is_string(value)
	value != ""
}

_acr_ok(req) if not req.acr_values

_acr_ok(req) if {
	is_string(input.token.claims.acr)
	input.token.claims.acr in _list(req.acr_values)
}

_age_ok(req) if not "max_age" in object.keys(req)

_age_ok(req) if {
	is_number(req.max_age)
	is_number(input.token.claims.auth_time)
	time.now_ns() - (input.token.claims.auth_time * 1000000000) <= req.max_age * 1000000000
}

_list(x) := split(x, " ") if is_string(x)

_list(x) := x if not is_string(x)

_step_up_reason(req) := "A more recent authentication is required." if {
	not req.acr_values
} else := "A stronger authentication is required."
