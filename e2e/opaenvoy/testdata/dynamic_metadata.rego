package envoy.authz

default allow = false

allow if {
	input.parsed_path = ["my", "test", "path"]
}

allow if {
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/people")
}

dynamic_metadata["foo"] = "bar"
dynamic_metadata["bar"] = "baz"
dynamic_metadata["path"] = input.parsed_path

result["allowed"] = allow
result["dynamic_metadata"] = dynamic_metadata
