package envoy.authz

default allow := false

allow if {
	input.attributes.source.address.socketAddress.address == "10.0.0.5"
	input.attributes.destination.address.socketAddress.portValue == 8080
	not input.attributes.request.http.headers["x-role"]
}

allow if input.attributes.source.principal == "spiffe://test-domain/test"
