# The default phantom-authz policy: which token may call which route.
#
# Envoy asks about every request; this policy answers with the decision
# object described in README.md. The routes, and the scope each method needs
# on them, live in data.json: most changes are data changes, not code.
package envoy.authz

# Nothing is allowed unless a rule below says so.
default allow := {
	"allowed": false,
	"http_status": 403,
	"reason": "No route is configured for this request.",
}

# A request is allowed on a public path, or with an active token that has
# the scope its route needs for its method (and, where the route names its
# clients, comes from one of them). Otherwise `denial` says what is missing.
allow := {"allowed": true} if {
	# Public paths (health checks) are matched exactly, query string
	# included: "/healthz?x" is not public.
	input.attributes.request.http.path in data.routes.public
} else := {"allowed": true} if {
	# A route phantom-authz's configuration (or Envoy) marks public.
	input.route.public
} else := data.openbanking.accounts.allow if {
	# The Open Banking pack (openbanking/) decides its APIs itself.
	api == "ob-accounts"
} else := data.openbanking.payments.allow if {
	api == "ob-payments"
} else := {"allowed": true} if {
	input.token.active
	required_scope in input.token.scopes
	client_permitted
} else := denial

# Why a request is denied: the first check that fails decides.
denial := {
	"allowed": false,
	"http_status": 403,
	"reason": "No route is configured for this request.",
} if {
	not required_scope
} else := {
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
	"scope": required_scope,
	"reason": sprintf("%s on this API needs the scope %q.", [input.attributes.request.http.method, required_scope]),
} if {
	not required_scope in input.token.scopes
} else := {
	"allowed": false,
	"http_status": 403,
	"reason": "This client may not call this API.",
} if {
	not client_permitted
}

# The API a request is for: the route's (phantom-authz's route table, Envoy's
# route metadata or context_extensions: api: accounts), else the second
# segment of a path /api/<name>/...
api := name if {
	name := input.route.api
} else := name if {
	name := input.attributes.contextExtensions.api
} else := name if {
	input.parsed_path[0] == "api"
	name := input.parsed_path[1]
}

# The route table entry of that API.
route := data.routes.apis[api]

# The scope this request's method needs on its API; undefined when the API
# or the method is not in the route table.
required_scope := route.methods[input.attributes.request.http.method]

# A route may name the OAuth clients allowed to call it (a claim check:
# client_id comes from the token).
client_permitted if not route.clients

client_permitted if input.token.client_id in route.clients
