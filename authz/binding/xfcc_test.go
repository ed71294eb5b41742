package binding_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz/binding"
	"github.com/phantom-authz/phantom-authz/authz/credential"
)

const gateway = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"

// xfccHash is the XFCC Hash of a certificate whose x5t#S256 is x5t.
func xfccHash(t *testing.T, x5t string) string {
	t.Helper()
	sum, err := base64.RawURLEncoding.DecodeString(x5t)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(sum)
}

// RFC 8705 behind a proxy that terminates TLS: the client certificate comes
// in x-forwarded-client-cert, and only a trusted proxy may say what it is.
func TestBindForwardedCertificate(t *testing.T) {
	certA, x5tA := certificate(t, "client-a")
	certB, x5tB := certificate(t, "client-b")
	hashA, hashB := xfccHash(t, x5tA), xfccHash(t, x5tB)
	pemA, _ := url.PathUnescape(certA)
	// Envoy's Cert: the PEM URL-encoded, quoted.
	envoyCertA := `"` + url.QueryEscape(pemA) + `"`

	trusted := binding.Config{XFCC: &binding.XFCCConfig{TrustedPrincipals: []string{gateway}}}
	byAddress := binding.Config{XFCC: &binding.XFCCConfig{TrustedAddresses: []string{"10.0.0.0/8", "192.0.2.7"}}}
	both := binding.Config{XFCC: &binding.XFCCConfig{TrustedPrincipals: []string{gateway}, TrustedAddresses: []string{"10.0.0.0/8"}}}

	cases := []struct {
		name                     string
		cfg                      binding.Config
		xfcc, principal, address string
		peerCert                 string // the connection's own peer certificate
		kind                     error
		reason                   string
	}{
		// From the trusted gateway.
		{name: "trusted: Hash of the bound certificate", cfg: trusted, principal: gateway, xfcc: "Hash=" + hashA},
		{name: "trusted: Hash in upper case", cfg: trusted, principal: gateway, xfcc: "hash=" + strings.ToUpper(hashA)},
		{name: "trusted: Cert, URL-encoded PEM, quoted", cfg: trusted, principal: gateway, xfcc: "By=spiffe://gw;Cert=" + envoyCertA},
		{name: "trusted: Cert as include_peer_certificate encodes it", cfg: trusted, principal: gateway, xfcc: "Cert=" + certA},
		{name: "trusted: Hash and Cert agree", cfg: trusted, principal: gateway,
			xfcc: `By=spiffe://gw;Hash=` + hashA + `;Cert=` + envoyCertA + `;Subject="CN=client-a,O=Example";URI=;DNS=a.example`},
		{name: "trusted: Hash and Cert disagree", cfg: trusted, principal: gateway, xfcc: "Hash=" + hashB + ";Cert=" + envoyCertA,
			kind: binding.ErrInvalidToken, reason: "could not be read"},
		{name: "trusted: another certificate", cfg: trusted, principal: gateway, xfcc: "Hash=" + hashB,
			kind: binding.ErrInvalidToken, reason: "not bound to this client certificate"},
		// Several elements: the last is the nearest proxy's.
		{name: "last element is the bound one", cfg: trusted, principal: gateway, xfcc: "Hash=" + hashB + ",By=spiffe://gw;Hash=" + hashA},
		{name: "earlier element is the bound one", cfg: trusted, principal: gateway, xfcc: "Hash=" + hashA + ", Hash=" + hashB,
			kind: binding.ErrInvalidToken, reason: "not bound to this client certificate"},
		{name: "a comma inside quotes is no boundary", cfg: trusted, principal: gateway, xfcc: `Hash=` + hashA + `;Subject="CN=x,Hash=` + hashB + `"`},
		{name: "an escaped quote inside quotes", cfg: trusted, principal: gateway, xfcc: `Subject="CN=\"q\",O=y";Hash=` + hashA},
		// Istio: the sidecar that calls phantom-authz appends its own element
		// about its peer, the gateway (APPEND_FORWARD, URI of the peer): it is
		// skipped, once, and the gateway's element before it counts.
		{name: "Istio: sidecar element about the gateway skipped", cfg: trusted, principal: gateway,
			xfcc: `Hash=` + hashA + `;Subject="CN=client-a",By=spiffe://cluster.local/ns/default/sa/api;Hash=` + hashB + `;Subject="";URI=` + gateway},
		{name: "Istio: only the sidecar's element", cfg: trusted, principal: gateway,
			xfcc: `By=spiffe://cluster.local/ns/default/sa/api;Hash=` + hashA + `;URI=` + gateway, kind: binding.ErrInvalidToken, reason: "forwarded none"},
		{name: "Istio: skipped once only", cfg: trusted, principal: gateway,
			xfcc: `Hash=` + hashA + `,URI=` + gateway + `;Hash=` + hashB + `,URI=` + gateway + `;Hash=` + hashB,
			kind: binding.ErrInvalidToken, reason: "not bound to this client certificate"},
		{name: "element about the peer recognised by its certificate's Hash", cfg: byAddress, address: "10.0.0.1", peerCert: certB,
			xfcc: "Hash=" + hashA + ",Hash=" + hashB},
		{name: "the client's element is not skipped for a URI that is not the peer's", cfg: trusted, principal: gateway,
			xfcc: "Hash=" + hashB + ",URI=spiffe://client;Hash=" + hashA},

		// Malformed: refused, never guessed at.
		{name: "unterminated quote", cfg: trusted, principal: gateway, xfcc: `Hash=` + hashA + `;Subject="CN=x`, kind: binding.ErrInvalidToken, reason: "could not be read"},
		{name: "pair without =", cfg: trusted, principal: gateway, xfcc: "Hash=" + hashA + ";junk", kind: binding.ErrInvalidToken, reason: "could not be read"},
		{name: "two Hash in the last element", cfg: trusted, principal: gateway, xfcc: "Hash=" + hashB + ";Hash=" + hashA, kind: binding.ErrInvalidToken, reason: "could not be read"},
		{name: "Hash not hex", cfg: trusted, principal: gateway, xfcc: "Hash=" + strings.Repeat("zz", 32), kind: binding.ErrInvalidToken, reason: "could not be read"},
		{name: "Hash too short", cfg: trusted, principal: gateway, xfcc: "Hash=" + hashA[:62], kind: binding.ErrInvalidToken, reason: "could not be read"},
		{name: "Hash as base64url (x5t#S256)", cfg: trusted, principal: gateway, xfcc: "Hash=" + x5tA, kind: binding.ErrInvalidToken, reason: "could not be read"},
		{name: "Cert garbage", cfg: trusted, principal: gateway, xfcc: `Cert="not%20a%20PEM"`, kind: binding.ErrInvalidToken, reason: "could not be read"},
		{name: "Cert empty", cfg: trusted, principal: gateway, xfcc: `Cert=""`, kind: binding.ErrInvalidToken, reason: "could not be read"},
		{name: "quote in an unquoted value", cfg: trusted, principal: gateway, xfcc: `Hash=ab"cd`, kind: binding.ErrInvalidToken, reason: "could not be read"},
		{name: "no Hash nor Cert", cfg: trusted, principal: gateway, xfcc: "By=spiffe://gw;URI=spiffe://client", kind: binding.ErrInvalidToken, reason: "forwarded none"},
		{name: "trusted proxy forwarded no header", cfg: trusted, principal: gateway, kind: binding.ErrInvalidToken, reason: "forwarded none"},
		// From a trusted proxy, its own certificate is not the client's.
		{name: "trusted: peer certificate is the proxy's, not used", cfg: trusted, principal: gateway, peerCert: certA,
			kind: binding.ErrInvalidToken, reason: "forwarded none"},

		// From anyone else the header is ignored.
		{name: "untrusted principal: XFCC ignored, peer certificate decides", cfg: trusted, principal: "spiffe://cluster.local/ns/default/sa/attacker",
			xfcc: "Hash=" + hashA, peerCert: certB, kind: binding.ErrInvalidToken, reason: "not bound to this client certificate"},
		{name: "untrusted principal: XFCC ignored, no certificate", cfg: trusted, principal: "spiffe://other", xfcc: "Hash=" + hashA,
			kind: binding.ErrInvalidToken, reason: "came without one"},
		{name: "no principal", cfg: trusted, xfcc: "Hash=" + hashA, kind: binding.ErrInvalidToken, reason: "came without one"},
		{name: "principal differing in case", cfg: trusted, principal: strings.ToUpper(gateway), xfcc: "Hash=" + hashA,
			kind: binding.ErrInvalidToken, reason: "came without one"},
		{name: "untrusted: the client's own certificate still works", cfg: trusted, principal: "spiffe://other", xfcc: "Hash=" + hashB, peerCert: certA},
		{name: "no xfcc configured: ignored", principal: gateway, xfcc: "Hash=" + hashA, kind: binding.ErrInvalidToken, reason: "came without one"},

		// By address.
		{name: "trusted address in a prefix", cfg: byAddress, address: "10.1.2.3", xfcc: "Hash=" + hashA},
		{name: "trusted single address", cfg: byAddress, address: "192.0.2.7", xfcc: "Hash=" + hashA},
		{name: "trusted address IPv4-mapped", cfg: byAddress, address: "::ffff:10.1.2.3", xfcc: "Hash=" + hashA},
		{name: "address outside", cfg: byAddress, address: "11.0.0.1", xfcc: "Hash=" + hashA, kind: binding.ErrInvalidToken, reason: "came without one"},
		{name: "address next to the single one", cfg: byAddress, address: "192.0.2.8", xfcc: "Hash=" + hashA, kind: binding.ErrInvalidToken, reason: "came without one"},
		{name: "no address", cfg: byAddress, xfcc: "Hash=" + hashA, kind: binding.ErrInvalidToken, reason: "came without one"},
		{name: "address not an IP", cfg: byAddress, address: "10.1.2.3.evil", xfcc: "Hash=" + hashA, kind: binding.ErrInvalidToken, reason: "came without one"},
		// Both lists: both must match.
		{name: "principal and address", cfg: both, principal: gateway, address: "10.9.9.9", xfcc: "Hash=" + hashA},
		{name: "principal without the address", cfg: both, principal: gateway, address: "172.16.0.1", xfcc: "Hash=" + hashA,
			kind: binding.ErrInvalidToken, reason: "came without one"},
		{name: "address without the principal", cfg: both, principal: "spiffe://other", address: "10.9.9.9", xfcc: "Hash=" + hashA,
			kind: binding.ErrInvalidToken, reason: "came without one"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBinder(t, tc.cfg)
			in := binding.Input{Scheme: credential.SchemeBearer, Token: tok1, Method: "GET", URLScheme: "https", Host: "api.example.com", Path: "/",
				Certificate: tc.peerCert, ForwardedCert: tc.xfcc, PeerPrincipal: tc.principal, PeerAddress: tc.address}
			_, err := b.Bind(context.Background(), in, certToken(x5tA))
			checkErr(t, err, tc.kind, tc.reason)
		})
	}
}

func TestTrustsForwardedCert(t *testing.T) {
	b := newBinder(t, binding.Config{XFCC: &binding.XFCCConfig{TrustedPrincipals: []string{gateway}}})
	if !b.TrustsForwardedCert(gateway, "203.0.113.1") || b.TrustsForwardedCert("spiffe://other", "") || b.TrustsForwardedCert("", "") {
		t.Error("principal trust")
	}
	if newBinder(t, binding.Config{}).TrustsForwardedCert(gateway, "127.0.0.1") {
		t.Error("trusted without configuration")
	}
	for _, bad := range []binding.XFCCConfig{
		{TrustedPrincipals: []string{""}},
		{TrustedAddresses: []string{"10.0.0.0/33"}},
		{TrustedAddresses: []string{"gateway.local"}},
	} {
		if _, err := binding.New(binding.Config{XFCC: &bad}); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
