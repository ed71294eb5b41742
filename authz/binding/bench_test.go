package binding_test

import (
	"context"
	"crypto"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"

	"github.com/phantom-authz/phantom-authz/authz/binding"
)

// forgetfulStore accepts every proof: the benchmarks present one proof again
// and again to measure its verification; BenchmarkMemoryReplay measures the
// store.
type forgetfulStore struct{}

func (forgetfulStore) Use(context.Context, string, time.Time) (bool, error) { return true, nil }

// BenchmarkBindDPoP is the bind stage for one request with a DPoP proof:
// parse, one signature verification, the claims, the token's jkt.
func BenchmarkBindDPoP(b *testing.B) {
	k := keys()
	for _, alg := range []struct {
		name string
		key  crypto.Signer
	}{{"ES256", k.es256}, {"EdDSA", k.ed}, {"PS256", k.rsa}} {
		b.Run(alg.name, func(b *testing.B) {
			p := newProof(b, tok1, now)
			if alg.name != "ES256" {
				p.signWith(b, alg.key, alg.name)
			}
			in := dpopInput(p.sign(b))
			tok := dpopToken(thumbprint(b, alg.key.Public()))
			bd, err := binding.New(binding.Config{Replay: forgetfulStore{}, Now: clock})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bd.Bind(ctx, in, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBindCertificate is the bind stage for a certificate-bound token.
func BenchmarkBindCertificate(b *testing.B) {
	cert, x5t := certificate(b, "client")
	in := binding.Input{Token: tok1, Method: "GET", URLScheme: "https", Host: "api.example.com", Path: "/", Certificate: cert}
	tok := certToken(x5t)
	bd, err := binding.New(binding.Config{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bd.Bind(ctx, in, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkES256Verify is one bare ES256 signature verification, the floor
// of BenchmarkBindDPoP/ES256.
func BenchmarkES256Verify(b *testing.B) {
	proof := newProof(b, tok1, now).sign(b)
	dot := strings.LastIndexByte(proof, '.')
	input := []byte(proof[:dot])
	sig, err := base64.RawURLEncoding.DecodeString(proof[dot+1:])
	if err != nil {
		b.Fatal(err)
	}
	pub := &keys().es256.PublicKey
	b.ReportAllocs()
	for b.Loop() {
		if err := jwsbb.Verify(pub, "ES256", input, sig); err != nil {
			b.Fatal(err)
		}
	}
}
