package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"golang.org/x/sync/errgroup"
)

// idp is the OAuth server of the scenarios, in the harness's own process: an
// RFC 7662 introspection endpoint that knows every token the harness makes
// up (opaque tokens start with "pb"), and the JWKS of the issuer whose JWTs
// the by-value scenarios send. It answers from memory, quickly, so the
// cache-miss scenario measures phantom-authz and not the OAuth server.
type idp struct {
	url    string
	issuer string
	key    *ecdsa.PrivateKey
	kid    string
	jwks   []byte
	srv    *http.Server

	// dpopKey is the client's DPoP key; tokens starting "pbe" are bound
	// to it (cnf.jkt is its thumbprint).
	dpopKey *ecdsa.PrivateKey
	dpopJWK jwk.Key
	jkt     string

	introspections atomic.Int64
}

const benchIssuer = "https://idp.bench.local"

func startIDP() (*idp, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	p := &idp{issuer: benchIssuer, key: key, kid: "bench-es256"}
	pub, err := jwk.Import(key.Public())
	if err != nil {
		return nil, err
	}
	_ = pub.Set(jwk.KeyIDKey, p.kid)
	_ = pub.Set(jwk.AlgorithmKey, jwa.ES256())
	_ = pub.Set(jwk.KeyUsageKey, "sig")
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, err
	}
	if p.jwks, err = json.Marshal(set); err != nil {
		return nil, err
	}
	if p.dpopKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	if p.dpopJWK, err = jwk.Import(p.dpopKey.Public()); err != nil {
		return nil, err
	}
	thumb, err := p.dpopJWK.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	p.jkt = base64.RawURLEncoding.EncodeToString(thumb)

	mux := http.NewServeMux()
	mux.HandleFunc("POST /introspect", p.introspect)
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(p.jwks)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.url = "http://" + l.Addr().String()
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = p.srv.Serve(l) }()
	return p, nil
}

func (p *idp) close() { _ = p.srv.Close() }

// introspect answers RFC 7662 JSON: every token the harness made up is
// active for an hour, with the scopes the default policy wants.
func (p *idp) introspect(w http.ResponseWriter, r *http.Request) {
	p.introspections.Add(1)
	tok := r.PostFormValue("token")
	w.Header().Set("Content-Type", "application/json")
	if len(tok) < 2 || tok[:2] != "pb" {
		_, _ = w.Write([]byte(`{"active":false}`))
		return
	}
	now := time.Now().Unix()
	// A subject per token, so tokens differ in their claims as real ones do.
	sub := "user-" + tok[len(tok)-6:]
	cnf := ""
	if tok[2] == 'e' {
		cnf = fmt.Sprintf(`,"cnf":{"jkt":%q}`, p.jkt)
	}
	_, _ = fmt.Fprintf(w, `{"active":true,"scope":"openid read write","client_id":"web-app","sub":%s,`+
		`"iss":%q,"token_type":"Bearer","iat":%d,"exp":%d%s}`,
		strconv.Quote(sub), p.issuer, now, now+3600, cnf)
}

// signProofs makes n DPoP proofs (RFC 9449) of the client's key for GET
// https://api.example.com/api/accounts/123 with token, each with its own
// jti, all of the same length.
func (p *idp) signProofs(n int, token string) ([]string, error) {
	now := time.Now().Unix()
	sum := sha256.Sum256([]byte(token))
	ath := base64.RawURLEncoding.EncodeToString(sum[:])
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.TypeKey, "dpop+jwt")
	_ = hdr.Set(jws.JWKKey, p.dpopJWK)
	return signAll(n, func(i int) (string, error) {
		claims := fmt.Sprintf(`{"jti":"proof-%012d","htm":"GET","htu":"https://api.example.com/api/accounts/123","iat":%d,"ath":%q}`,
			i, now, ath)
		signed, err := jws.Sign([]byte(claims), jws.WithKey(jwa.ES256(), p.dpopKey, jws.WithProtectedHeaders(hdr)))
		return string(signed), err
	})
}

// signJWTs makes n access tokens of the issuer, ES256, all of the same
// length (the harness patches them into a pre-encoded request). jti tells
// them apart.
func (p *idp) signJWTs(n int, prefix string) ([]string, error) {
	now := time.Now().Unix()
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, p.kid)
	_ = hdr.Set(jws.TypeKey, "at+jwt")
	return signAll(n, func(i int) (string, error) {
		claims := fmt.Sprintf(`{"iss":%q,"sub":"svc-%06d","aud":"api","client_id":"batch-svc","scope":"read write",`+
			`"iat":%d,"exp":%d,"jti":"%s-%010d"}`, p.issuer, i%1000000, now, now+3600, prefix, i)
		signed, err := jws.Sign([]byte(claims), jws.WithKey(jwa.ES256(), p.key, jws.WithProtectedHeaders(hdr)))
		return string(signed), err
	})
}

// signAll makes n tokens with sign, on every core, and checks that they are
// all of the same length (the harness patches them into a pre-encoded
// request).
func signAll(n int, sign func(i int) (string, error)) ([]string, error) {
	out := make([]string, n)
	var g errgroup.Group
	g.SetLimit(runtime.NumCPU())
	const chunk = 1000
	for start := 0; start < n; start += chunk {
		g.Go(func() error {
			for i := start; i < min(start+chunk, n); i++ {
				var err error
				if out[i], err = sign(i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for i := range out {
		if len(out[i]) != len(out[0]) {
			return nil, fmt.Errorf("token %d is %d bytes, the first %d", i, len(out[i]), len(out[0]))
		}
	}
	return out, nil
}
