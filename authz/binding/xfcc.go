package binding

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Behind a proxy that terminates the client's TLS (an Istio ingress gateway,
// any Envoy in front of the one that calls phantom-authz), the client
// certificate of RFC 8705 arrives in the x-forwarded-client-cert header
// (XFCC) instead of in the CheckRequest's peer certificate. Anyone can send
// that header, so it is read only when the request came from a proxy this
// configuration trusts, named by the CheckRequest's source: its principal
// (the URI SAN, DNS SAN or subject of its certificate, as Envoy reports it)
// or its address. From any other source the header is ignored, and the
// engine strips it from the upstream request.

// XFCCHeader is the header, lower-case as Envoy hands headers over.
const XFCCHeader = "x-forwarded-client-cert"

// XFCCConfig says which proxies may tell the client's certificate in XFCC.
// A request is trusted when every list that is set matches its source: with
// both lists, the principal and the address must match.
type XFCCConfig struct {
	// TrustedPrincipals are peer principals, matched exactly (e.g.
	// spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account).
	TrustedPrincipals []string
	// TrustedAddresses are IP addresses or CIDR prefixes of the peer.
	TrustedAddresses []string
}

// xfccTrust is a parsed XFCCConfig.
type xfccTrust struct {
	principals map[string]bool
	prefixes   []netip.Prefix
}

func newXFCCTrust(cfg *XFCCConfig) (*xfccTrust, error) {
	if cfg == nil || len(cfg.TrustedPrincipals) == 0 && len(cfg.TrustedAddresses) == 0 {
		return nil, nil
	}
	x := &xfccTrust{}
	if len(cfg.TrustedPrincipals) > 0 {
		x.principals = make(map[string]bool, len(cfg.TrustedPrincipals))
		for i, p := range cfg.TrustedPrincipals {
			if p == "" {
				return nil, fmt.Errorf("binding: xfcc.trusted_principals[%d]: empty", i)
			}
			x.principals[p] = true
		}
	}
	for i, a := range cfg.TrustedAddresses {
		p, err := ParseAddressPrefix(a)
		if err != nil {
			return nil, fmt.Errorf("binding: xfcc.trusted_addresses[%d]: %w", i, err)
		}
		x.prefixes = append(x.prefixes, p)
	}
	return x, nil
}

// ParseAddressPrefix reads an IP address (a /32 or /128) or a CIDR prefix.
func ParseAddressPrefix(s string) (netip.Prefix, error) {
	if strings.IndexByte(s, '/') >= 0 {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// trusts reports whether the source peer may tell the client certificate.
func (x *xfccTrust) trusts(principal, address string) bool {
	if x == nil {
		return false
	}
	if x.principals != nil && (principal == "" || !x.principals[principal]) {
		return false
	}
	if x.prefixes != nil {
		a, err := netip.ParseAddr(address)
		if err != nil {
			return false
		}
		a = a.Unmap()
		for _, p := range x.prefixes {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return true
}

// TrustsForwardedCert reports whether a request from the source peer with
// principal and address may carry the client certificate in XFCC; when it
// may not, the engine strips the header from the upstream request.
func (b *Binder) TrustsForwardedCert(principal, address string) bool {
	return b.xfcc.trusts(principal, address)
}

var errXFCCSyntax = errors.New("malformed x-forwarded-client-cert")

// xfccPair is one key=value of an XFCC element, the value unquoted.
type xfccPair struct{ key, value string }

// xfccElements parses an XFCC header value (Envoy's grammar: elements
// separated by commas, each a list of key=value pairs separated by
// semicolons; a value holding , ; = or " is double-quoted, with \" for a
// quote) into its elements, in order. A comma inside quotes is not a
// boundary; any syntax error refuses the whole header.
func xfccElements(v string) ([][]xfccPair, error) {
	var elements [][]xfccPair
	var pairs []xfccPair
	start, inQuote := 0, false
	for i := 0; i <= len(v); i++ {
		if i < len(v) {
			c := v[i]
			if inQuote {
				switch c {
				case '\\':
					i++ // the escaped byte is part of the value
				case '"':
					inQuote = false
				}
				continue
			}
			if c == '"' {
				inQuote = true
				continue
			}
			if c != ';' && c != ',' {
				continue
			}
		}
		if inQuote {
			return nil, errXFCCSyntax
		}
		p, err := xfccParsePair(v[start:min(i, len(v))])
		if err != nil {
			return nil, err
		}
		pairs = append(pairs, p)
		start = i + 1
		if i == len(v) || v[i] == ',' {
			elements, pairs = append(elements, pairs), nil
		}
	}
	if inQuote {
		return nil, errXFCCSyntax
	}
	return elements, nil
}

// describes reports whether the element is about the peer with principal
// and certificate SHA-256 peerSum (nil when unknown): a URI equal to the
// principal, or the peer certificate's Hash.
func describes(el []xfccPair, principal string, peerSum *[sha256.Size]byte) bool {
	for _, p := range el {
		switch {
		case principal != "" && strings.EqualFold(p.key, "URI") && p.value == principal:
			return true
		case peerSum != nil && strings.EqualFold(p.key, "Hash"):
			if h, err := hex.DecodeString(p.value); err == nil && string(h) == string(peerSum[:]) {
				return true
			}
		}
	}
	return false
}

// xfccParsePair reads key=value, the value unquoted.
func xfccParsePair(s string) (xfccPair, error) {
	s = strings.TrimSpace(s)
	key, value, ok := strings.Cut(s, "=")
	key = strings.TrimSpace(key)
	if !ok || key == "" || strings.ContainsAny(key, "\" ") {
		return xfccPair{}, errXFCCSyntax
	}
	value = strings.TrimSpace(value)
	if strings.HasPrefix(value, `"`) {
		if len(value) < 2 || !strings.HasSuffix(value, `"`) {
			return xfccPair{}, errXFCCSyntax
		}
		inner := value[1 : len(value)-1]
		var sb strings.Builder
		for i := 0; i < len(inner); i++ {
			c := inner[i]
			if c == '\\' && i+1 < len(inner) {
				i++
				c = inner[i]
			} else if c == '"' || c == '\\' {
				return xfccPair{}, errXFCCSyntax
			}
			sb.WriteByte(c)
		}
		value = sb.String()
	} else if strings.IndexByte(value, '"') >= 0 {
		return xfccPair{}, errXFCCSyntax
	}
	return xfccPair{key: key, value: value}, nil
}

var (
	errXFCCNoCertificate = &Error{Err: ErrInvalidToken,
		Reason: "the access token is bound to a client certificate and the proxy in front forwarded none"}
	errXFCCBad = &Error{Err: ErrInvalidToken,
		Reason: "the client certificate the proxy in front forwarded could not be read"}
)

// forwardedThumbprint is the SHA-256 of the client certificate XFCC names:
// in the element the trusted proxy added, the last one, unless the Envoy
// calling phantom-authz appended its own about that proxy (Istio's sidecars
// do: APPEND_FORWARD, with the peer's URI), which is recognised by naming
// the peer (its principal as a URI, or its certificate's Hash) and skipped,
// once. The element's Cert (URL-encoded PEM) or Hash (hex SHA-256 of the
// DER) tells the certificate; when it has both they must agree.
func forwardedThumbprint(header, principal string, peerSum *[sha256.Size]byte) ([32]byte, *Error) {
	var sum [32]byte
	if header == "" {
		return sum, errXFCCNoCertificate
	}
	elements, err := xfccElements(header)
	if err != nil {
		return sum, errXFCCBad
	}
	if n := len(elements); n > 0 && describes(elements[n-1], principal, peerSum) {
		elements = elements[:n-1]
	}
	if len(elements) == 0 {
		return sum, errXFCCNoCertificate
	}
	pairs := elements[len(elements)-1]
	var hash, cert string
	var nHash, nCert int
	for _, p := range pairs {
		switch {
		case strings.EqualFold(p.key, "Hash"):
			hash, nHash = p.value, nHash+1
		case strings.EqualFold(p.key, "Cert"):
			cert, nCert = p.value, nCert+1
		}
	}
	switch {
	case nHash > 1 || nCert > 1:
		return sum, errXFCCBad
	case nHash == 0 && nCert == 0:
		return sum, errXFCCNoCertificate
	}
	if nCert == 1 {
		block := decodeCertificate(cert)
		if block == nil {
			return sum, errXFCCBad
		}
		sum = sha256.Sum256(block.Bytes)
	}
	if nHash == 1 {
		h, err := hex.DecodeString(hash)
		if err != nil || len(h) != len(sum) {
			return sum, errXFCCBad
		}
		if nCert == 1 && string(h) != string(sum[:]) {
			return sum, errXFCCBad
		}
		copy(sum[:], h)
	}
	return sum, nil
}
