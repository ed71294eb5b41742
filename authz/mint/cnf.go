package mint

import "slices"

// withConfirmation returns the claims to copy, cnf (RFC 7800) among them
// whether listed or not: a token bound to a key or a certificate stays
// bound in the JWT the upstream receives, so an upstream can tell a
// sender-constrained call from a bearer one (and check it again).
func withConfirmation(claims []string) []string {
	out := slices.Clone(claims)
	if !slices.Contains(out, "cnf") {
		out = append(out, "cnf")
	}
	return out
}
