package binding_test

import (
	"context"
	"errors"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz/binding"
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
