package binding_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz/binding"
	"github.com/phantom-authz/phantom-authz/authz/credential"
)

// FuzzBindProof feeds hostile proofs, URIs and certificates: Bind never
// panics, never binds a proof it did not see signed by the token's key, and
// every refusal is one of the four kinds.
func FuzzBindProof(f *testing.F) {
	jkt := thumbprint(f, &keys().es256.PublicKey)
	valid := newProof(f, tok1, now).sign(f)
	f.Add(valid, "https://api.example.com", "/v1/accounts", "")
	f.Add("a.b.c", "http://x", "/", "%zz")
	f.Add("eyJ0eXAiOiJkcG9wK2p3dCJ9..", "HTTPS://[::1]:443", "//", "-----BEGIN%20CERTIFICATE-----")
	f.Add(valid[:len(valid)-4], "https://api.example.com:443", "/v1/accounts?x#y", "")
	f.Fuzz(func(t *testing.T, proof, origin, path, cert string) {
		b, err := binding.New(binding.Config{Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		scheme, host := "https", origin
		if i := len("https://"); len(origin) > i && origin[:i] == "https://" {
			host = origin[i:]
		}
		in := dpopInput(proof)
		in.URLScheme, in.Host, in.Path, in.Certificate = scheme, host, path, cert
		_, err = b.Bind(context.Background(), in, dpopToken(jkt))
		if err == nil {
			if proof != valid {
				t.Fatalf("bound a proof that is not the valid one: %q", proof)
			}
			return
		}
		for _, kind := range []error{binding.ErrInvalidProof, binding.ErrInvalidToken, binding.ErrUseNonce, binding.ErrUnavailable} {
			if errors.Is(err, kind) {
				return
			}
		}
		t.Fatalf("error %v is of no kind", err)
	})
}

// FuzzForwardedCert feeds hostile x-forwarded-client-cert values from a
// trusted proxy: Bind never panics, and binds only when the header names the
// bound certificate (its Hash, or a Cert, which the fuzzer cannot forge).
func FuzzForwardedCert(f *testing.F) {
	certA, x5tA := certificate(f, "client-a")
	sum, _ := base64.RawURLEncoding.DecodeString(x5tA)
	hashA := hex.EncodeToString(sum)
	const gw = "spiffe://gw"
	f.Add("Hash=" + hashA)
	f.Add("Cert=" + certA)
	f.Add(`Hash=00;Subject="CN=a,Hash=` + hashA + `"`)
	f.Add(`By=spiffe://api;Hash=` + hashA + `;URI=` + gw)
	f.Add(`Hash=` + hashA + `,URI=` + gw + `;Hash=00`)
	f.Add(`Subject="\"",Hash=` + hashA)
	f.Add(`Hash="` + hashA)
	f.Add(",,;;==\"\\")
	b, err := binding.New(binding.Config{Now: clock, XFCC: &binding.XFCCConfig{TrustedPrincipals: []string{gw}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, xfcc string) {
		in := binding.Input{Scheme: credential.SchemeBearer, Token: tok1, Method: "GET", URLScheme: "https", Host: "api.example.com", Path: "/",
			ForwardedCert: xfcc, PeerPrincipal: gw}
		_, err := b.Bind(context.Background(), in, certToken(x5tA))
		if err == nil {
			if l := strings.ToLower(xfcc); !strings.Contains(l, hashA) && !strings.Contains(l, "cert=") {
				t.Fatalf("bound by a header naming neither the certificate's hash nor a certificate: %q", xfcc)
			}
			return
		}
		if !errors.Is(err, binding.ErrInvalidToken) {
			t.Fatalf("error %v, want invalid_token", err)
		}
	})
}
