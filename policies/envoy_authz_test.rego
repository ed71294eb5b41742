# Tests of the default policy, run by `opa test policies/` and by
# `go test ./policies/`. Each builds the input Envoy and phantom-authz
# would send and checks the decision.
package envoy.authz_test

import data.envoy.authz

# request builds the policy input for a method and path; extra fields
# (token, context extensions) are merged in by the tests.
request(method, path) := {
	"attributes": {"request": {"http": {
		"method": method,
		"path": path,
		"headers": {":method": method, ":path": path},
	}}},
	"parsed_path": split(trim_prefix(split(path, "?")[0], "/"), "/"),
}

token(scopes) := {
	"active": true,
	"kind": "opaque",
	"scopes": scopes,
	"client_id": "web-app",
	"sub": "user-42",
	"claims": {"client_id": "web-app", "sub": "user-42"},
}

with_token(req, tok) := object.union(req, {"token": tok})

allowed := {"allowed": true}

# Public paths.

test_health_check_needs_no_token if {
	authz.allow == allowed with input as request("GET", "/healthz")
}

test_public_path_is_matched_exactly if {
	d := authz.allow with input as request("GET", "/healthz?verbose=1")
	d.allowed == false
	d.http_status == 403
}

# Scopes per method.

test_read_scope_allows_get if {
	authz.allow == allowed with input as with_token(request("GET", "/api/accounts/123"), token(["read"]))
}

test_write_scope_allows_post if {
	authz.allow == allowed with input as with_token(request("POST", "/api/accounts"), token(["openid", "write"]))
}

test_missing_scope_is_insufficient_scope if {
	d := authz.allow with input as with_token(request("DELETE", "/api/accounts/123"), token(["read"]))
	d.allowed == false
	d.http_status == 403
	d.error == "insufficient_scope"
	d.scope == "write"
	d.reason == `DELETE on this API needs the scope "write".`
}

# Tokens.

test_no_token_on_protected_route_is_401 if {
	d := authz.allow with input as request("GET", "/api/accounts/123")
	d.allowed == false
	d.http_status == 401
	d.error == "invalid_token"
}

test_inactive_token_is_401 if {
	tok := object.union(token(["read"]), {"active": false})
	d := authz.allow with input as with_token(request("GET", "/api/accounts/123"), tok)
	d.http_status == 401
	d.error == "invalid_token"
}

# Routes.

test_unknown_path_is_403 if {
	d := authz.allow with input as with_token(request("GET", "/other"), token(["read"]))
	d.allowed == false
	d.http_status == 403
	not d.error
}

test_unknown_api_is_403 if {
	d := authz.allow with input as with_token(request("GET", "/api/unknown/1"), token(["read"]))
	d.http_status == 403
	d.reason == "No route is configured for this request."
}

test_unknown_method_is_403 if {
	d := authz.allow with input as with_token(request("OPTIONS", "/api/accounts"), token(["read", "write"]))
	d.http_status == 403
	d.reason == "No route is configured for this request."
}

test_unknown_route_without_token_is_403_not_401 if {
	d := authz.allow with input as request("GET", "/other")
	d.http_status == 403
}

test_context_extension_names_the_api if {
	req := object.union(request("GET", "/v2/acct/1"), {"attributes": {"contextExtensions": {"api": "accounts"}}})
	authz.allow == allowed with input as with_token(req, token(["read"]))
}

test_route_names_the_api if {
	req := object.union(request("GET", "/v2/acct/1"), {"route": {"name": "acct", "api": "accounts", "params": {}}})
	authz.allow == allowed with input as with_token(req, token(["read"]))
}

test_public_route_needs_no_token if {
	req := object.union(request("GET", "/status"), {"route": {"name": "status", "public": true, "params": {}}})
	authz.allow == allowed with input as req
}

test_context_extension_wins_over_the_path if {
	req := object.union(request("GET", "/api/accounts/1"), {"attributes": {"contextExtensions": {"api": "admin"}}})
	d := authz.allow with input as with_token(req, token(["read"]))
	d.error == "insufficient_scope"
	d.scope == "admin"
}

# Claim check: the admin API only takes tokens issued to listed clients.

admin_token(client) := object.union(token(["admin"]), {"client_id": client})

test_admin_client_is_allowed if {
	authz.allow == allowed with input as with_token(request("GET", "/api/admin/users"), admin_token("admin-console"))
}

test_other_client_is_refused_on_admin if {
	d := authz.allow with input as with_token(request("GET", "/api/admin/users"), admin_token("web-app"))
	d.allowed == false
	d.http_status == 403
	d.reason == "This client may not call this API."
}

test_admin_client_still_needs_the_scope if {
	tok := object.union(token(["read"]), {"client_id": "admin-console"})
	d := authz.allow with input as with_token(request("POST", "/api/admin/users"), tok)
	d.error == "insufficient_scope"
	d.scope == "admin"
}

# Routes without a client list take any client.

test_any_client_on_accounts if {
	tok := object.union(token(["read"]), {"client_id": "someone-else"})
	authz.allow == allowed with input as with_token(request("GET", "/api/accounts"), tok)
}

# The Open Banking pack decides the routes Envoy names ob-accounts and
# ob-payments.

test_ob_accounts_route_goes_to_the_pack if {
	req := object.union(request("GET", "/open-banking/accounts"), {"attributes": {
		"contextExtensions": {"api": "ob-accounts"},
		"request": {"http": {"headers": {"consent-id": "aac-1"}}},
	}})
	tok := object.union(token(["accounts"]), {"claims": {"openbanking_intent_id": "aac-1"}})
	authz.allow == allowed with input as with_token(req, tok)

	# The default route table would have wanted read; the pack wants its consent.
	d := authz.allow with input as with_token(req, token(["read", "accounts"]))
	d.allowed == false
	d.reason == "The Consent-ID header must name the consent the access token was granted for."
}

test_ob_payments_route_asks_for_step_up if {
	req := object.union(request("POST", "/pisp/payment-consents/pc-1/payments"), {"attributes": {"contextExtensions": {"api": "ob-payments"}}})
	tok := object.union(token(["payments"]), {"claims": {"openbanking_intent_id": "pc-1"}})
	d := authz.allow with input as with_token(req, tok)
	d.http_status == 401
	d.error == "insufficient_user_authentication"
}
