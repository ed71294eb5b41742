package envoy.authz

default allow = false

allow if {
	input.parsed_path = ["my", "test", "path"]
}

allow if {
	input.parsed_path[0] == "people"
}

headers["x"] = "hello"
headers["y"] = "world"

request_headers_to_remove := ["foo", "bar"]

result["allowed"] = allow
result["headers"] = headers
result["request_headers_to_remove"] = request_headers_to_remove
