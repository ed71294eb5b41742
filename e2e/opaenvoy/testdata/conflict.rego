package envoy.authz

allow := false if input.attributes.request.http.method == "GET"

allow := true if input.attributes.request.http.method == "GET"
