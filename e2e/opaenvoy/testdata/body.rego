package envoy.authz

default allow := false

allow if input.parsed_body.firstname == "alice"

allow if input.parsed_body.name[0] == "alice"

allow if input.parsed_body.firstname[1] == "bob"

allow if not input.parsed_body

result := {"allowed": allow, "dynamic_metadata": {"truncated": input.truncated_body}} if input.truncated_body

result := {"allowed": allow} if not input.truncated_body
