package envoy.authz

import input.attributes.request.http as h

f["time"] := input.attributes.request.time
f["id"] := h.id
f["method"] := h.method
f["path"] := h.path
f["host"] := h.host
f["scheme"] := h.scheme
f["query"] := h.query
f["fragment"] := h.fragment
f["size"] := h.size
f["protocol"] := h.protocol
f["body"] := h.body
f["raw_body"] := h.rawBody
f["user_agent"] := h.headers["user-agent"]
f["x_role"] := h.headers["x-role"]
f["content_type"] := h.headers["content-type"]
f["header_map"] := h.headerMap
f["parsed_path"] := input.parsed_path
f["parsed_query"] := input.parsed_query
f["parsed_body"] := input.parsed_body
f["no_parsed_body"] := true if not input.parsed_body
f["truncated_body"] := input.truncated_body
f["version"] := input.version
f["source_principal"] := input.source_principal
f["source"] := input.attributes.source
f["destination_address"] := input.attributes.destination.address
f["destination_principal"] := input.attributes.destination.principal
f["context_extensions"] := input.attributes.contextExtensions
f["metadata"] := input.attributes.metadataContext
f["route_metadata"] := input.attributes.routeMetadataContext
f["tls"] := input.attributes.tlsSession

result := {"allowed": true, "dynamic_metadata": f}
