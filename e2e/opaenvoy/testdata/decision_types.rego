package envoy.authz

c := input.attributes.request.http.headers["x-case"]

result := [true] if c == "array"

result := {} if c == "empty"

result := false if c == "false"

result := null if c == "null"

result := 1 if c == "number"

result := {true} if c == "set"

result := "allow" if c == "string"

result := true if c == "true"

