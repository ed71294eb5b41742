package envoy.authz

default allow = false

allow if {
  input.parsed_path = ["test.KitchenSink", "Ping"]
}

allow if {
  input.parsed_path = ["people"]
}
