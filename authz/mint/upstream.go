package mint

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/phantom-authz/phantom-authz/authz/token"
)

// Upstream is what the JWT of one upstream API differs in from the JWT Mint
// signs: local token exchange (RFC 8693 semantics) whose answer never leaves
// phantom-authz but for that API.
type Upstream struct {
	// Audience replaces Config.Audience when not empty.
	Audience []string
	// CopyClaims replace Config.CopyClaims when not nil (cnf is always
	// copied).
	CopyClaims []string
	// Scopes, when not nil, narrow the JWT's scope to the token's scopes
	// among them: the API learns no scope it does not care about, and never
	// one the token lacks. None left: no scope claim.
	Scopes []string
	// Sector, when set, replaces sub with the pairwise subject of the sector
	// (as MintForSector does).
	Sector string
}

// CheckUpstream reports an Upstream MintUpstream would refuse, for start-up.
func (m *Minter) CheckUpstream(up Upstream) error {
	for _, c := range up.CopyClaims {
		if c == "" || reserved[c] {
			return fmt.Errorf("mint: copy_claims: %q is set by the minter itself", c)
		}
	}
	for _, a := range up.Audience {
		if a == "" {
			return errors.New("mint: audience: an audience is empty")
		}
	}
	if up.Sector != "" && m.pairwise == nil {
		return errors.New("mint: pairwise: no keys configured")
	}
	return nil
}

// MintUpstream signs the JWT of tok for one upstream API, with up's
// audience, claims, scope and sector. Like MintForSector it re-mints a token
// whose JWT came from elsewhere. It returns the JWT and its expiry.
func (m *Minter) MintUpstream(tok *token.Token, up Upstream) (string, time.Time, error) {
	if err := m.CheckUpstream(up); err != nil {
		return "", time.Time{}, err
	}
	var subject func(string, map[string]any) string
	if up.Sector != "" {
		iss, err := issClaim(tok)
		if err != nil {
			return "", time.Time{}, err
		}
		subject = m.pairwiseSubject(up.Sector, iss)
	}
	return m.sign(tok, &up, subject)
}

// narrow is the token's scopes that are among want, in the token's order.
func narrow(have, want []string) []string {
	out := make([]string, 0, len(want))
	for _, s := range have {
		if slices.Contains(want, s) {
			out = append(out, s)
		}
	}
	return out
}
