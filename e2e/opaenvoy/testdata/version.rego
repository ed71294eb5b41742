package envoy.authz

allow if {
	input.version.ext_authz == "v3"
	input.version.encoding == "protojson"
}
