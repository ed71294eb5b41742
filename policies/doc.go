// Package policies holds the default Rego policies of phantom-authz
// (envoy_authz.rego), their route table (data.json) and their tests. Its Go
// tests run the Rego tests and load the directory the way the server does,
// so `go test ./...` fails when a shipped policy is broken.
package policies
