package envoy.authz

allow if input.attributes.request.http.method == "POST"
