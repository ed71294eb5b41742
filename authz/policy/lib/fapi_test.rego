# Tests of the FAPI helpers, run by `go test ./authz/policy/` (and by
# `opa test authz/policy/lib/`). Each check has a case that fails it.
package phantom.fapi_test

import data.phantom.fapi

# The clock of every test: 2027-01-15T08:00:00Z.
now_ns := 1800000000 * 1000000000

token(claims) := {"token": {"active": true, "claims": claims}}

sca := {"acr_values": ["urn:openbanking:psd2:sca"], "max_age": 300}

# authenticated: acr_values.

test_acr_in_list if {
	fapi.authenticated({"acr_values": ["urn:a", "urn:openbanking:psd2:sca"]}) with input as token({"acr": "urn:openbanking:psd2:sca"})
}

test_acr_space_separated_string if {
	fapi.authenticated({"acr_values": "urn:a urn:b"}) with input as token({"acr": "urn:b"})
}

test_acr_not_in_list_fails if {
	not fapi.authenticated({"acr_values": ["urn:openbanking:psd2:sca"]}) with input as token({"acr": "urn:openbanking:psd2:ca"})
}

test_acr_missing_fails if {
	not fapi.authenticated({"acr_values": ["urn:openbanking:psd2:sca"]}) with input as token({"sub": "u"})
}

test_acr_not_a_string_fails if {
	not fapi.authenticated({"acr_values": ["urn:x"]}) with input as token({"acr": ["urn:x"]})
}

test_no_acr_values_accepts_any_acr if {
	fapi.authenticated({"max_age": 60}) with input as token({"auth_time": 1800000000}) with time.now_ns as now_ns
}

test_no_token_fails if {
	not fapi.authenticated({"acr_values": ["urn:x"]}) with input as {}
}

# authenticated: max_age.

test_recent_auth_time if {
	fapi.authenticated(sca) with input as token({"acr": "urn:openbanking:psd2:sca", "auth_time": 1800000000 - 300}) with time.now_ns as now_ns
}

test_old_auth_time_fails if {
	not fapi.authenticated(sca) with input as token({"acr": "urn:openbanking:psd2:sca", "auth_time": 1800000000 - 301}) with time.now_ns as now_ns
}

test_missing_auth_time_fails if {
	not fapi.authenticated(sca) with input as token({"acr": "urn:openbanking:psd2:sca"}) with time.now_ns as now_ns
}

test_auth_time_not_a_number_fails if {
	not fapi.authenticated(sca) with input as token({"acr": "urn:openbanking:psd2:sca", "auth_time": "1800000000"}) with time.now_ns as now_ns
}

test_max_age_zero_needs_authentication_now if {
	not fapi.authenticated({"max_age": 0}) with input as token({"auth_time": 1800000000 - 1}) with time.now_ns as now_ns
}

# step_up.

test_step_up_is_the_rfc9470_denial if {
	fapi.step_up(sca) == {
		"allowed": false,
		"http_status": 401,
		"error": "insufficient_user_authentication",
		"reason": "A stronger authentication is required.",
		"acr_values": ["urn:openbanking:psd2:sca"],
		"max_age": 300,
	}
}

test_step_up_max_age_only if {
	d := fapi.step_up({"max_age": 60})
	d.max_age == 60
	not d.acr_values
	d.reason == "A more recent authentication is required."
}

test_step_up_ignores_other_keys if {
	not fapi.step_up({"acr_values": "urn:x", "http_status": 200}).http_status == 200
}

# The one-liner a policy writes.
one_liner := fapi.step_up(sca) if not fapi.authenticated(sca)

test_one_liner_denies_without_sca if {
	one_liner.error == "insufficient_user_authentication" with input as token({"acr": "urn:low", "auth_time": 1800000000}) with time.now_ns as now_ns
}

test_one_liner_silent_with_sca if {
	not one_liner with input as token({"acr": "urn:openbanking:psd2:sca", "auth_time": 1800000000}) with time.now_ns as now_ns
}

# consent_matches.

test_consent_matches_string_claim if {
	fapi.consent_matches("openbanking_intent_id", "pc-123") with input as token({"openbanking_intent_id": "pc-123"})
}

test_consent_matches_array_claim if {
	fapi.consent_matches("consents", "c-2") with input as token({"consents": ["c-1", "c-2"]})
}

test_consent_other_value_fails if {
	not fapi.consent_matches("openbanking_intent_id", "pc-999") with input as token({"openbanking_intent_id": "pc-123"})
}

test_consent_other_claim_fails if {
	not fapi.consent_matches("consent_id", "pc-123") with input as token({"openbanking_intent_id": "pc-123"})
}

test_consent_empty_value_fails if {
	not fapi.consent_matches("openbanking_intent_id", "") with input as token({"openbanking_intent_id": ""})
}

test_consent_non_string_value_fails if {
	not fapi.consent_matches("n", 5) with input as token({"n": 5})
}

test_consent_without_token_fails if {
	not fapi.consent_matches("openbanking_intent_id", "pc-123") with input as {}
}
