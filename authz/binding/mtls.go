package binding

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/pem"
	"net/url"
)

var (
	errNoCertificate = &Error{Err: ErrInvalidToken,
		Reason: "the access token is bound to a client certificate and the request came without one"}
	errBadCertificate = &Error{Err: ErrInvalidToken,
		Reason: "the client certificate could not be read"}
	errCertMismatch = &Error{Err: ErrInvalidToken,
		Reason: "the access token is not bound to this client certificate"}
)

// checkCertificate compares the SHA-256 thumbprint of the client certificate
// (the DER of Envoy's URL-encoded PEM, RFC 8705 §3.1) with the token's
// cnf."x5t#S256". Envoy has already verified the certificate chain during
// the TLS handshake; this check only ties the token to that certificate.
func checkCertificate(encoded, x5t string) *Error {
	if encoded == "" {
		return errNoCertificate
	}
	block := decodeCertificate(encoded)
	if block == nil {
		return errBadCertificate
	}
	return matchThumbprint(sha256.Sum256(block.Bytes), x5t)
}

// matchThumbprint compares a certificate's SHA-256 with the token's
// cnf."x5t#S256" (base64url, unpadded), in constant time.
func matchThumbprint(sum [sha256.Size]byte, x5t string) *Error {
	var got [43]byte
	base64.RawURLEncoding.Encode(got[:], sum[:])
	if subtle.ConstantTimeCompare(got[:], []byte(x5t)) != 1 {
		return errCertMismatch
	}
	return nil
}

// clientCertificate checks the client certificate of in against x5t: the
// one a trusted proxy forwarded in XFCC when the request came from such a
// proxy (the connection's peer certificate is then the proxy's, not the
// client's, and only serves to recognise an XFCC element about the proxy),
// else the peer certificate of the connection Envoy saw.
func (b *Binder) clientCertificate(in *Input, x5t string) *Error {
	if !b.xfcc.trusts(in.PeerPrincipal, in.PeerAddress) {
		return checkCertificate(in.Certificate, x5t)
	}
	var peerSum *[sha256.Size]byte
	if block := decodeCertificate(in.Certificate); in.Certificate != "" && block != nil {
		s := sha256.Sum256(block.Bytes)
		peerSum = &s
	}
	sum, err := forwardedThumbprint(in.ForwardedCert, in.PeerPrincipal, peerSum)
	if err != nil {
		return err
	}
	return matchThumbprint(sum, x5t)
}

// decodeCertificate reads the first PEM certificate of Envoy's URL-encoded
// PEM. Envoy escapes spaces as %20 and '+' as %2B, so PathUnescape (which
// keeps a '+') reads it; a PEM whose spaces came as '+' (form encoding) is
// read by QueryUnescape instead.
func decodeCertificate(encoded string) *pem.Block {
	for _, unescape := range [...]func(string) (string, error){url.PathUnescape, url.QueryUnescape} {
		text, err := unescape(encoded)
		if err != nil {
			continue
		}
		block, _ := pem.Decode([]byte(text))
		if block != nil && block.Type == "CERTIFICATE" && len(block.Bytes) > 0 {
			return block
		}
	}
	return nil
}
