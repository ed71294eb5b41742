package envoy.authz

result := {"allowed": true, "dynamic_metadata": {"input": input}}
