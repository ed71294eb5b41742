package binding

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"time"
)

// NonceConfig turns on server-provided DPoP nonces (RFC 9449 §9).
//
// A nonce is derived, not stored: base64url(period ‖ HMAC-SHA256(Secret,
// period ‖ the proof key's thumbprint)), period being the number of the
// Lifetime/2 slice of time it was issued in. Any replica sharing the secret
// can check any nonce without shared state, a nonce is good only for the
// key it was issued to, and it expires by itself.
type NonceConfig struct {
	// Secret keys the HMAC: at least 32 bytes, the same on every replica.
	Secret []byte
	// Lifetime is the longest a nonce is accepted (default 5m). It is
	// accepted in the half-lifetime period it was issued in and the next;
	// from that next period on, successful responses carry a fresh one.
	Lifetime time.Duration
}

// DefaultNonceLifetime is the nonce lifetime when none is configured.
const DefaultNonceLifetime = 5 * time.Minute

// minNonceSecret is the shortest HMAC key accepted.
const minNonceSecret = 32

// nonceMACBytes is how much of the HMAC a nonce carries: 128 bits, beyond
// forging by trial within a nonce's few minutes.
const nonceMACBytes = 16

// nonceLabel separates these HMACs from any other use of the secret.
const nonceLabel = "phantom-authz dpop nonce v1\x00"

type nonces struct {
	secret []byte
	period time.Duration
}

func newNonces(cfg NonceConfig) (*nonces, error) {
	if len(cfg.Secret) < minNonceSecret {
		return nil, errors.New("binding: dpop.nonce.secret_file: the secret must be at least 32 bytes")
	}
	switch {
	case cfg.Lifetime < 0:
		return nil, errors.New("binding: dpop.nonce.lifetime: must be positive")
	case cfg.Lifetime == 0:
		cfg.Lifetime = DefaultNonceLifetime
	case cfg.Lifetime < 2*time.Second:
		return nil, errors.New("binding: dpop.nonce.lifetime: must be at least 2s")
	}
	return &nonces{secret: append([]byte(nil), cfg.Secret...), period: cfg.Lifetime / 2}, nil
}

// issue returns the nonce of the current period for the key thumb.
func (n *nonces) issue(now time.Time, thumb string) string {
	var buf [8 + nonceMACBytes]byte
	p := uint64(now.UnixNano() / int64(n.period))
	binary.BigEndian.PutUint64(buf[:8], p)
	copy(buf[8:], n.mac(buf[:8], thumb))
	return base64.RawURLEncoding.EncodeToString(buf[:])
}

// check reports whether nonce is one this server issued to the key thumb
// and has not expired (ok), and whether it is of the current period (fresh).
func (n *nonces) check(nonce string, now time.Time, thumb string) (fresh, ok bool) {
	var buf [8 + nonceMACBytes]byte
	if base64.RawURLEncoding.DecodedLen(len(nonce)) != len(buf) {
		return false, false
	}
	if _, err := base64.RawURLEncoding.Decode(buf[:], []byte(nonce)); err != nil {
		return false, false
	}
	p := binary.BigEndian.Uint64(buf[:8])
	cur := uint64(now.UnixNano() / int64(n.period))
	if p != cur && p+1 != cur {
		return false, false
	}
	if !hmac.Equal(buf[8:], n.mac(buf[:8], thumb)) {
		return false, false
	}
	return p == cur, true
}

func (n *nonces) mac(period []byte, thumb string) []byte {
	m := hmac.New(sha256.New, n.secret)
	m.Write([]byte(nonceLabel))
	m.Write(period)
	m.Write([]byte(thumb))
	return m.Sum(nil)[:nonceMACBytes]
}
