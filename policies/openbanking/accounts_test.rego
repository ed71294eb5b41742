# Tests of the accounts pack: one allowed request, and one request failing
# each check.
package openbanking.accounts_test

import data.openbanking.accounts

request(method, headers, tok) := {
	"attributes": {"request": {"http": {"method": method, "path": "/accounts/acc-1", "headers": headers}}},
	"parsed_path": ["accounts", "acc-1"],
	"token": tok,
}

token(scopes, claims) := {"active": true, "kind": "opaque", "scopes": scopes, "claims": claims}

consented := token(["openid", "accounts"], {"openbanking_intent_id": "aac-123"})

test_read_with_scope_and_consent if {
	accounts.allow == {"allowed": true} with input as request("GET", {"consent-id": "aac-123"}, consented)
}

test_head_is_a_read if {
	accounts.allow.allowed with input as request("HEAD", {"consent-id": "aac-123"}, consented)
}

test_no_token_is_401 if {
	d := accounts.allow with input as object.remove(request("GET", {"consent-id": "aac-123"}, consented), ["token"])
	d.http_status == 401
	d.error == "invalid_token"
}

test_inactive_token_is_401 if {
	d := accounts.allow with input as request("GET", {"consent-id": "aac-123"}, object.union(consented, {"active": false}))
	d.http_status == 401
}

test_write_is_refused if {
	d := accounts.allow with input as request("POST", {"consent-id": "aac-123"}, consented)
	d.allowed == false
	d.http_status == 405
}

test_missing_scope_is_insufficient_scope if {
	d := accounts.allow with input as request("GET", {"consent-id": "aac-123"}, token(["payments"], {"openbanking_intent_id": "aac-123"}))
	d.http_status == 403
	d.error == "insufficient_scope"
	d.scope == "accounts"
}

test_other_consent_is_refused if {
	d := accounts.allow with input as request("GET", {"consent-id": "aac-999"}, consented)
	d.allowed == false
	d.http_status == 403
	not d.error
}

test_missing_consent_header_is_refused if {
	d := accounts.allow with input as request("GET", {}, consented)
	d.allowed == false
	d.http_status == 403
}

test_token_without_consent_claim_is_refused if {
	d := accounts.allow with input as request("GET", {"consent-id": "aac-123"}, token(["accounts"], {}))
	d.allowed == false
}

test_consent_claim_name_is_configurable if {
	tok := token(["accounts"], {"consent_id": "aac-123"})
	accounts.allow.allowed with input as request("GET", {"consent-id": "aac-123"}, tok)
		with data.openbanking.settings.consent_claim as "consent_id"
}
