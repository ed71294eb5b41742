package envoy.authz

import input.attributes.request.http as http_request

default allow := false

claims := payload if {
	v := http_request.headers.authorization
	startswith(v, "Bearer ")
	t := substring(v, count("Bearer "), -1)
	[_, payload, _] := io.jwt.decode(t)
}

allow if claims.role == "admin"

allow if {
	claims.role == "guest"
	http_request.method == "GET"
}
