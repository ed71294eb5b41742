package envoy.authz

c := input.attributes.request.http.headers["x-case"]

result := {"allowed": true, "headers": {"x-a": "1"}, "request_headers_to_remove": ["x-b"], "response_headers_to_add": {"x-c": "3"},
			"query_parameters_to_set": {"d": "4"}, "query_parameters_to_remove": ["e"], "dynamic_metadata": {"f": {"g": [1, "h", null, true]}}} if c == "allow-all-fields"

result := {"allowed": true, "body": 1, "http_status": "teapot"} if c == "allow-body-and-status"

result := {"allowed": true, "body": "ok", "http_status": 200} if c == "allow-body-string-status-200"

result := {"allowed": true, "dynamic_metadata": {"foo": "bar", "bar": "baz"}} if c == "allow-dynamic-metadata"

result := {"allowed": true, "dynamic_metadata": {"decision_id": "mine"}} if c == "allow-dynamic-metadata-decision-id"

result := {"allowed": true, "dynamic_metadata": {}} if c == "allow-dynamic-metadata-empty"

result := {"allowed": true, "dynamic_metadata": "x"} if c == "allow-dynamic-metadata-string"

result := {"allowed": true, "headers": {"x-empty": ""}} if c == "allow-empty-header-value"

result := {"allowed": "true"} if c == "allow-false-string"

result := {"allowed": true, "headers": {"set-cookie": ["a=1", "b=2"], "x-one": "1"}} if c == "allow-header-array"

result := {"allowed": true, "headers": {"x-n": ["a", 1]}} if c == "allow-header-array-number"

result := {"allowed": true, "headers": [{"x-a": "1"}, {"x-a": "2", "x-b": ["3", "4"]}]} if c == "allow-header-list"

result := {"allowed": true, "headers": ["x-a"]} if c == "allow-header-list-string"

result := {"allowed": true, "headers": {"x-n": 1}} if c == "allow-header-number"

result := {"allowed": true, "headers": {"x-ext-auth-allow": "yes", "X-Validated-By": "security-checkpoint"}} if c == "allow-headers"

result := {"allowed": true, "headers": "x-a: 1"} if c == "allow-headers-string"

result := {"headers": {"x-a": "1"}} if c == "allow-missing"

result := {"allowed": null} if c == "allow-null"

result := {"allowed": true, "query_parameters_to_remove": ["foo", "bar"]} if c == "allow-query-remove"

result := {"allowed": true, "query_parameters_to_remove": [1]} if c == "allow-query-remove-number"

result := {"allowed": true, "query_parameters_to_remove": "foo"} if c == "allow-query-remove-string"

result := {"allowed": true, "query_parameters_to_set": {"foo": "bar", "baz": ["qux", "quux"]}} if c == "allow-query-set"

result := {"allowed": true, "query_parameters_to_set": {"foo": ["a", 2]}} if c == "allow-query-set-array-num"

result := {"allowed": true, "query_parameters_to_set": {}} if c == "allow-query-set-empty"

result := {"allowed": true, "query_parameters_to_set": [{"foo": "bar"}]} if c == "allow-query-set-list"

result := {"allowed": true, "query_parameters_to_set": {"foo": 1}} if c == "allow-query-set-number"

result := {"allowed": true, "request_headers_to_remove": ["one-auth-header", "Another-Auth-Header"]} if c == "allow-remove"

result := {"allowed": true, "request_headers_to_remove": ["foo", 1]} if c == "allow-remove-number"

result := {"allowed": true, "request_headers_to_remove": {"b", "a"}} if c == "allow-remove-set"

result := {"allowed": true, "request_headers_to_remove": "foo"} if c == "allow-remove-string"

result := {"allowed": true, "response_headers_to_add": {"x-foo": "bar", "cache-control": ["no-store", "private"]}} if c == "allow-response-headers"

result := {"allowed": true, "response_headers_to_add": {"x-foo": true}} if c == "allow-response-headers-bad"

result := {"allowed": true, "max_age": "1h", "reason": {"why": "x"}, "error": 1, "scope": 2, "acr_values": true, "whatever": [1]} if c == "allow-unknown-fields"

result := {"allowed": false, "body": ""} if c == "deny-body-empty"

result := {"allowed": false, "body": "{\"error\": \"nope\"}", "headers": {"content-type": "application/json"}} if c == "deny-body-json"

result := {"allowed": false, "body": 1} if c == "deny-body-number"

result := {"allowed": false, "dynamic_metadata": {"reason": "blocked"}} if c == "deny-dynamic-metadata"

result := {"allowed": false, "dynamic_metadata": [1]} if c == "deny-dynamic-metadata-bad"

result := {"allowed": false, "headers": {"set-cookie": ["a=1", "b=2"]}, "http_status": 401} if c == "deny-header-array"

result := {"allowed": false, "headers": {"x": 1}} if c == "deny-headers-bad"

result := {"allowed": false, "http_status": 403, "headers": {"content-type": "text/plain"}, "body": "Unauthorized Request"} if c == "deny-own-content-type"

result := {"allowed": false, "headers": {"content-type": "text/plain"}} if c == "deny-own-content-type-no-body"

result := {"allowed": false, "http_status": 401, "error": "invalid_token", "reason": "The token expired", "scope": ["read"]} if c == "deny-phantom-fields"

result := {"allowed": false} if c == "deny-plain"

result := {"allowed": false, "http_status": 100} if c == "deny-status-100"

result := {"allowed": false, "http_status": 200} if c == "deny-status-200"

result := {"allowed": false, "http_status": 302, "headers": {"location": "https://login.example.com/"}} if c == "deny-status-302"

result := {"allowed": false, "http_status": 401} if c == "deny-status-401"

result := {"allowed": false, "http_status": 401, "body": "Authentication Failed"} if c == "deny-status-401-body"

result := {"allowed": false, "http_status": 401, "headers": {"www-authenticate": "Basic realm=\"x\""}} if c == "deny-status-401-www-auth"

result := {"allowed": false, "http_status": 418} if c == "deny-status-418"

result := {"allowed": false, "http_status": 429, "headers": {"retry-after": "10"}} if c == "deny-status-429"

result := {"allowed": false, "http_status": 451} if c == "deny-status-451"

result := {"allowed": false, "http_status": 499} if c == "deny-status-499"

result := {"allowed": false, "http_status": 503} if c == "deny-status-503"

result := {"allowed": false, "http_status": 599} if c == "deny-status-599"

result := {"allowed": false, "http_status": 600} if c == "deny-status-600"

result := {"allowed": false, "http_status": 401.0} if c == "deny-status-float"

result := {"allowed": false, "http_status": 401.5} if c == "deny-status-fraction"

result := {"allowed": false, "http_status": -1} if c == "deny-status-negative"

result := {"allowed": false, "http_status": "401"} if c == "deny-status-string"

result := {"allowed": false, "max_age": "1h", "reason": {"why": "x"}} if c == "deny-unknown-fields"

result := {"allowed": false, "request_headers_to_remove": 1, "query_parameters_to_set": 2, "response_headers_to_add": 3} if c == "deny-with-allow-fields"

