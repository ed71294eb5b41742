# Tests of the payments pack: one allowed request, and one request failing
# each check.
package openbanking.payments_test

import data.openbanking.payments

# The clock of every test, in seconds.
now := 1800000000

request(method, path, tok) := {
	"attributes": {"request": {"http": {"method": method, "path": path}}},
	"parsed_path": split(trim_prefix(path, "/"), "/"),
	"token": tok,
}

token(scopes, claims) := {"active": true, "kind": "opaque", "scopes": scopes, "claims": claims}

sca_token(auth_time) := token(["payments"], {
	"openbanking_intent_id": "pc-123",
	"acr": "urn:openbanking:psd2:sca",
	"auth_time": auth_time,
})

pay := "/pisp/payment-consents/pc-123/payments"

decide(method, path, tok) := d if {
	d := payments.allow with input as request(method, path, tok) with time.now_ns as now * 1000000000
}

test_payment_with_recent_sca if {
	decide("POST", pay, sca_token(now - 60)) == {"allowed": true}
}

test_status_read_needs_no_step_up if {
	decide("GET", pay, token(["payments"], {"openbanking_intent_id": "pc-123"})).allowed
}

test_no_token_is_401 if {
	d := payments.allow with input as object.remove(request("POST", pay, sca_token(now)), ["token"])
	d.http_status == 401
	d.error == "invalid_token"
}

test_missing_scope_is_insufficient_scope if {
	d := decide("POST", pay, object.union(sca_token(now), {"scopes": ["accounts"]}))
	d.http_status == 403
	d.error == "insufficient_scope"
	d.scope == "payments"
}

test_other_consent_is_refused if {
	d := decide("POST", "/pisp/payment-consents/pc-999/payments", sca_token(now))
	d.allowed == false
	d.http_status == 403
}

test_no_consent_in_path_is_refused if {
	d := decide("POST", "/pisp/payments", sca_token(now))
	d.allowed == false
	d.http_status == 403
}

test_two_consents_in_path_are_refused if {
	d := decide("POST", "/payment-consents/pc-123/payment-consents/pc-123", sca_token(now))
	d.allowed == false
}

test_without_sca_asks_for_step_up if {
	tok := token(["payments"], {"openbanking_intent_id": "pc-123", "acr": "urn:openbanking:psd2:ca", "auth_time": now})
	d := decide("POST", pay, tok)
	d.http_status == 401
	d.error == "insufficient_user_authentication"
	d.acr_values == ["urn:openbanking:psd2:sca"]
	d.max_age == 300
}

test_old_sca_asks_for_step_up if {
	d := decide("POST", pay, sca_token(now - 301))
	d.http_status == 401
	d.error == "insufficient_user_authentication"
}

test_sca_without_auth_time_asks_for_step_up if {
	d := decide("PUT", pay, token(["payments"], {"openbanking_intent_id": "pc-123", "acr": "urn:openbanking:psd2:sca"}))
	d.error == "insufficient_user_authentication"
}
