package envoy.authz

default allow := false

allow if input.attributes.metadataContext.filterMetadata["envoy.filters.http.header_to_metadata"].policy_type == "ingress"

allow if input.attributes.routeMetadataContext.filterMetadata["envoy.filters.http.ext_authz"].route == "people"

allow if input.attributes.contextExtensions.virtual_host == "public"

allow if input.attributes.tlsSession.sni == "api.example.com"

allow if input.attributes.request.http.size == -1

allow if input.attributes.source.address.pipe.path == "/var/run/envoy.sock"

allow if input.attributes.source.address.socketAddress.protocol == 1

allow if input.attributes.request.time.nanos == 0
