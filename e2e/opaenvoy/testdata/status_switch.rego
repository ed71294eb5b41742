package envoy.authz

code := to_number(input.parsed_query.code[0])

result := {"allowed": false, "http_status": code, "body": sprintf("status %d", [code])}
