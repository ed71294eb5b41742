# An Open Banking payments API (payment initiation, PSD2 PISP): the payments
# scope, the consent the customer gave for this payment, and for anything
# that moves money, strong customer authentication at most five minutes old
# (RFC 9470 step-up).
#
# The consent id is the path segment after payment-consents
# (/…/payment-consents/{ConsentId}/…) and must be the one in the token's
# consent claim. Reading a payment's status needs no step-up. The default
# policy hands a request here when its API is ob-payments.
package openbanking.payments

import data.openbanking.settings
import data.phantom.fapi

default allow := {
	"allowed": false,
	"http_status": 403,
	"reason": "This request is not allowed on the payments API.",
}

allow := {"allowed": true} if {
	input.token.active
	settings.payments.scope in input.token.scopes
	consented
	sca_satisfied
} else := denial

denial := {
	"allowed": false,
	"http_status": 401,
	"error": "invalid_token",
	"reason": "This API needs an active access token.",
} if {
	not input.token.active
} else := {
	"allowed": false,
	"http_status": 403,
	"error": "insufficient_scope",
	"scope": settings.payments.scope,
	"reason": sprintf("The payments API needs the scope %q.", [settings.payments.scope]),
} if {
	not settings.payments.scope in input.token.scopes
} else := {
	"allowed": false,
	"http_status": 403,
	"reason": "The payment consent in the path is not the one the access token was granted for.",
} if {
	not consented
} else := fapi.step_up(settings.sca)

# The token was granted for the consent the path names.
consented if fapi.consent_matches(settings.consent_claim, consent_id)

# Reading is safe; anything else initiates or changes a payment.
reads := {"GET", "HEAD"}

sca_satisfied if input.attributes.request.http.method in reads

sca_satisfied if fapi.authenticated(settings.sca)

# The consent id: the one path segment after payment-consents. Two such
# segments name no consent.
consent_id := ids[0] if {
	ids := [input.parsed_path[i + 1] | input.parsed_path[i] == settings.payments.consent_segment]
	count(ids) == 1
}
