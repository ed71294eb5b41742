package mint

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/phantom-authz/phantom-authz/authz/token"
)

// MinPairwiseSecret is the shortest pairwise secret accepted: an HMAC-SHA256
// key as long as its output.
const MinPairwiseSecret = 32

// PairwiseKey is one secret that derives pairwise subjects, named by ID
// (the pairwise_kid claim of the JWTs it derives).
type PairwiseKey struct {
	ID     string
	Secret []byte
}

// Claims a pairwise JWT carries besides its pairwise sub.
const (
	// ClaimPairwiseKID names the key that derived sub.
	ClaimPairwiseKID = "pairwise_kid"
	// ClaimPairwisePrevious maps the ID of every other configured key to
	// the subject it derives, so an upstream can move its records across a
	// key rotation.
	ClaimPairwisePrevious = "pairwise_previous"
)

// pairwise derives pairwise pseudonymous identifiers: for a sector (one
// upstream API, or a group of them), the token's issuer and a subject,
//
//	base64url(HMAC-SHA256(secret, uint64be(len(sector)) ‖ sector ‖ uint64be(len(iss)) ‖ iss ‖ subject))
//
// without padding. A sub is unique only within its issuer (OIDC Core §2):
// without the issuer, alice at one authorization server and alice at
// another would be one user to the upstream. The length prefixes keep
// ("ab", "c") and ("a", "bc") apart, between sector and issuer as between
// issuer and subject. The same user gets the same value from one sector
// every time, and values that cannot be linked across sectors nor turned
// back into the subject without the secret.
type pairwise struct {
	keys []PairwiseKey
}

func newPairwise(keys []PairwiseKey) (*pairwise, error) {
	seen := make(map[string]bool, len(keys))
	p := &pairwise{keys: make([]PairwiseKey, len(keys))}
	for i, k := range keys {
		if k.ID == "" || !validKID(k.ID) {
			return nil, fmt.Errorf("mint: pairwise.keys[%d].id: %q must be non-empty printable ASCII without quotes or backslashes", i, k.ID)
		}
		if seen[k.ID] {
			return nil, fmt.Errorf("mint: pairwise.keys[%d].id: %q is used twice", i, k.ID)
		}
		seen[k.ID] = true
		if len(k.Secret) < MinPairwiseSecret {
			return nil, fmt.Errorf("mint: pairwise.keys[%d]: the secret has %d bytes, at least %d are needed", i, len(k.Secret), MinPairwiseSecret)
		}
		p.keys[i] = PairwiseKey{ID: k.ID, Secret: append([]byte(nil), k.Secret...)}
	}
	return p, nil
}

// derive is the pairwise subject of (issuer, subject) in sector under key.
func derive(key PairwiseKey, sector, issuer, subject string) string {
	mac := hmac.New(sha256.New, key.Secret)
	var n [8]byte
	for _, s := range [...]string{sector, issuer} {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		mac.Write(n[:])
		mac.Write([]byte(s))
	}
	mac.Write([]byte(subject))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// MintForSector signs the upstream JWT of tok for an upstream in the
// pairwise sector: the claims Mint would put in it, with sub replaced by
// the pairwise subject, pairwise_kid naming the key, and pairwise_previous
// the subjects the other configured keys derive. The subject is the token's
// sub (its client_id when it has none) qualified by the issuer of the
// server that vouched for it (tok.Issuer), or, when the configuration names
// none, by the iss its answer names ("" when none): a server's answer is
// not trusted to name another server's issuer, or to name none, and so
// share that server's pseudonyms. A token whose upstream JWT
// came from elsewhere (the OAuth server's, a client's JWT by value) is
// re-minted here, since its sub must change.
func (m *Minter) MintForSector(tok *token.Token, sector string) (string, time.Time, error) {
	if sector == "" {
		return "", time.Time{}, errors.New("mint: pairwise: empty sector")
	}
	if m.pairwise == nil {
		return "", time.Time{}, errors.New("mint: pairwise: no keys configured")
	}
	iss := tok.Issuer
	if iss == "" {
		var err error
		if iss, err = issClaim(tok); err != nil {
			return "", time.Time{}, err
		}
	}
	return m.sign(tok, nil, m.pairwiseSubject(sector, iss))
}

// pairwiseSubject turns a subject of issuer iss into its pairwise subject
// in sector, adding pairwise_kid and pairwise_previous.
func (m *Minter) pairwiseSubject(sector, iss string) func(sub string, claims map[string]any) string {
	return func(sub string, claims map[string]any) string {
		keys := m.pairwise.keys
		if len(keys) > 1 {
			prev := make(map[string]string, len(keys)-1)
			for _, k := range keys[1:] {
				prev[k.ID] = derive(k, sector, iss, sub)
			}
			claims[ClaimPairwisePrevious] = prev
		}
		claims[ClaimPairwiseKID] = keys[0].ID
		return derive(keys[0], sector, iss, sub)
	}
}

// issClaim is the token's iss claim, "" when it has none.
func issClaim(tok *token.Token) (string, error) {
	claims, err := tok.ClaimMap()
	if err != nil {
		return "", fmt.Errorf("mint: %w", err)
	}
	iss, _ := claims["iss"].(string)
	return iss, nil
}
