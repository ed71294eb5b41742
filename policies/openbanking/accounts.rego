# An Open Banking accounts API (account information, PSD2 AISP): read-only,
# with the accounts scope, and only under the consent the customer gave.
#
# The consent id travels in the Consent-ID header (as in the Berlin Group
# NextGenPSD2 API) and must be the one in the token's consent claim
# (data.openbanking.settings.consent_claim, openbanking_intent_id by
# default). The default policy hands a request here when its API is
# ob-accounts (context_extensions api: ob-accounts).
package openbanking.accounts

import data.openbanking.settings
import data.phantom.fapi

default allow := {
	"allowed": false,
	"http_status": 403,
	"reason": "This request is not allowed on the accounts API.",
}

allow := {"allowed": true} if {
	input.token.active
	input.attributes.request.http.method in {"GET", "HEAD"}
	settings.accounts.scope in input.token.scopes
	fapi.consent_matches(settings.consent_claim, input.attributes.request.http.headers["consent-id"])
} else := denial

# Why a request is denied: the first check that fails decides.
denial := {
	"allowed": false,
	"http_status": 401,
	"error": "invalid_token",
	"reason": "This API needs an active access token.",
} if {
	not input.token.active
} else := {
	"allowed": false,
	"http_status": 405,
	"reason": "The accounts API is read-only.",
} if {
	not input.attributes.request.http.method in {"GET", "HEAD"}
} else := {
	"allowed": false,
	"http_status": 403,
	"error": "insufficient_scope",
	"scope": settings.accounts.scope,
	"reason": sprintf("The accounts API needs the scope %q.", [settings.accounts.scope]),
} if {
	not settings.accounts.scope in input.token.scopes
} else := {
	"allowed": false,
	"http_status": 403,
	"reason": "The Consent-ID header must name the consent the access token was granted for.",
}
