package e2e

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
)

// A sample of the hostile-input suite (authz/hostile_test.go) through real
// Envoy: crafted JWTs, headers and DPoP proofs sent by an HTTP client, some
// of them byte by byte over TCP where Go's client would refuse to send them.
// phantom-authz trusts an issuer whose JWKS a test server publishes, and
// introspects opaque tokens at the bound-token OAuth server of
// binding_test.go. What the client sees is checked: the status, the
// challenge's error code, a problem+json body, and that nothing reached the
// upstream.

const e2eIssuer = "https://issuer.e2e.local"

// hostileStack is the bound-token OAuth server and a JWT issuer →
// phantom-authz ← Envoy (envoy/envoy.yaml) → demo API.
type hostileStack struct {
	*stack
	tokens       *boundTokens
	issuerKey    *ecdsa.PrivateKey
	jwksHits     atomic.Int64
	attackerHits atomic.Int64
	attackerURL  string
	dpop         *dpopKey
}

func newHostileStack(t *testing.T) *hostileStack {
	t.Helper()
	needTools(t)
	h := &hostileStack{tokens: &boundTokens{tokens: map[string]map[string]any{}}, issuerKey: newECKey(t), dpop: newDPoPKey(t)}

	pub, err := jwk.Import(&h.issuerKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	_ = pub.Set(jwk.KeyIDKey, "e2e-es")
	_ = pub.Set(jwk.KeyUsageKey, "sig")
	set, _ := json.Marshal(map[string]any{"keys": []any{pub}})
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.jwksHits.Add(1)
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(set)
	}))
	t.Cleanup(jwks.Close)
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.attackerHits.Add(1)
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(set)
	}))
	t.Cleanup(attacker.Close)
	h.attackerURL = attacker.URL

	// The bound-token server, and one token whose answer is broken.
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ParseForm() == nil && r.PostForm.Get("token") == "hostile-active-string" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"active":"true","scope":"read","sub":"alice"}`)
			return
		}
		h.tokens.ServeHTTP(w, r)
	}))
	t.Cleanup(as.Close)

	a := startAuthz(t, nil, authzOptions{introspectionURL: as.URL + "/introspect", set: map[string]any{
		"jwt": map[string]any{"issuers": []any{map[string]any{
			"issuer": e2eIssuer, "jwks_uri": jwks.URL, "audiences": []string{"api"}, "type": "at+jwt", "allow_insecure_http": true,
		}}},
	}})
	h.stack = &stack{authz: a, envoy: startEnvoy(t, a.grpcPort, startDemo(t), 0)}
	return h
}

// jwt signs claims (a map, or JSON text as a string) with ES256 by key
// under the header.
func (h *hostileStack) jwt(t *testing.T, key *ecdsa.PrivateKey, hdr map[string]any, claims any) string {
	t.Helper()
	input := jsonSegment(t, hdr) + "." + jsonSegment(t, claims)
	sig, err := jwsbb.Sign(key, "ES256", []byte(input), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func jsonSegment(t *testing.T, v any) string {
	t.Helper()
	if s, ok := v.(string); ok {
		return base64.RawURLEncoding.EncodeToString([]byte(s))
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// withKeys returns a copy of m with kv set; a nil value deletes.
func withKeys(m map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// reheader re-signs a DPoP proof of d with its header changed by edit.
func (d *dpopKey) reheader(t *testing.T, proof string, edit func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(proof, ".")
	var hdr map[string]any
	decodeSegment(t, parts[0], &hdr)
	edit(hdr)
	input := jsonSegment(t, hdr) + "." + parts[1]
	sig, err := jwsbb.Sign(d.key, "ES256", []byte(input), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// raw sends GET path with the header lines exactly as given (each ending in
// CRLF), for requests Go's client refuses to write.
func (h *hostileStack) raw(t *testing.T, path, lines string) response {
	t.Helper()
	host := strings.TrimPrefix(h.envoy.url, "http://")
	c, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		// Envoy may answer and close before it has read everything.
		_, _ = io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\n"+lines+"Connection: close\r\n\r\n")
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading Envoy's answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// envoyHostileCase is one request through Envoy and what the client must
// see.
type envoyHostileCase struct {
	name         string
	method, path string
	hdr          http.Header
	// raw, when set, are header lines sent byte for byte instead of hdr.
	raw string
	// prime is sent first and must reach the upstream.
	prime http.Header
	// status 200: a positive control (upstream is the JWT it must get, ""
	// for one phantom-authz minted). Otherwise the denial: its error code
	// and challenge scheme ("Bearer", "DPoP", "" none); byEnvoy when Envoy
	// itself refuses the request before ext_authz.
	status          int
	code, challenge string
	upstream        string
	byEnvoy         bool
}

func (h *hostileStack) cases(t *testing.T) []envoyHostileCase {
	now := time.Now()
	at := map[string]any{
		"iss": e2eIssuer, "sub": "alice", "aud": "api", "client_id": "web", "scope": "read",
		"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
	}
	hdr := map[string]any{"alg": "ES256", "typ": "at+jwt", "kid": "e2e-es"}
	sign := func(hd map[string]any, claims any) string { return h.jwt(t, h.issuerKey, hd, claims) }
	good := sign(hdr, at)
	parts := strings.Split(good, ".")
	claimsText := func(c map[string]any, marker, replacement string) string {
		b, _ := json.Marshal(c)
		return strings.Replace(string(b), marker, replacement, 1)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&h.issuerKey.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	hs256 := func() string {
		input := jsonSegment(t, withKeys(hdr, "alg", "HS256")) + "." + jsonSegment(t, at)
		m := hmac.New(sha256.New, pubPEM)
		m.Write([]byte(input))
		return input + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}()
	attacker := newECKey(t)
	var scope strings.Builder
	for i := 0; scope.Len() < 5000; i++ {
		scope.WriteString("s" + strconv.Itoa(i) + " ")
	}

	// Opaque tokens at the bound-token server (scope "read write").
	const bound, bound2, unbound = "hostile-dpop-bound", "hostile-dpop-bound-2", "hostile-unbound"
	h.tokens.add(bound, map[string]any{"jkt": h.dpop.jkt})
	h.tokens.add(bound2, map[string]any{"jkt": h.dpop.jkt})
	h.tokens.add(unbound, nil)
	for _, tok := range []string{bound, bound2, unbound} {
		secrets.add(tok)
	}
	htu := h.envoy.url + "/api/accounts/1"
	proof := func(tok string, extra map[string]any) string { return h.dpop.proof(t, "GET", htu, tok, extra) }
	first := proof(bound, nil)
	bearer := func(v string) http.Header { return http.Header{"Authorization": {"Bearer " + v}} }
	const (
		br, dp = "Bearer", "DPoP"
		ir, it = "invalid_request", "invalid_token"
		idp    = "invalid_dpop_proof"
	)
	refuse := func(name string, hd http.Header, status int, code, challenge string) envoyHostileCase {
		return envoyHostileCase{name: name, hdr: hd, status: status, code: code, challenge: challenge}
	}
	rawRefuse := func(name, lines string, status int, code, challenge string, byEnvoy bool) envoyHostileCase {
		return envoyHostileCase{name: name, raw: lines, status: status, code: code, challenge: challenge, byEnvoy: byEnvoy}
	}

	return []envoyHostileCase{
		// Positive controls.
		{name: "control: ES256 at+jwt by value", hdr: bearer(good), status: 200, upstream: good},
		{name: "control: lower-case bearer scheme", hdr: http.Header{"Authorization": {"bearer " + unbound}}, status: 200},
		{name: "control: DPoP-bound token with its proof", hdr: dpopHeaders(bound, proof(bound, nil)), status: 200},

		// JWTs by value.
		refuse("alg none", bearer(jsonSegment(t, map[string]any{"alg": "none", "typ": "at+jwt"})+"."+parts[1]+"."), 401, it, br),
		refuse("HS256 keyed with the issuer's public key", bearer(hs256), 401, it, br),
		refuse("kid with path text", bearer(sign(withKeys(hdr, "kid", "../../../../etc/passwd"), at)), 401, it, br),
		refuse("kid with SQL text", bearer(sign(withKeys(hdr, "kid", "x' OR '1'='1"), at)), 401, it, br),
		refuse("jku pointing elsewhere", bearer(h.jwt(t, attacker, withKeys(hdr, "jku", h.attackerURL), at)), 401, it, br),
		refuse("x5u pointing elsewhere", bearer(h.jwt(t, attacker, withKeys(hdr, "x5u", h.attackerURL+"/cert.pem"), at)), 401, it, br),
		refuse("crit header", bearer(sign(withKeys(hdr, "crit", []string{"exp"}, "exp", 1), at)), 401, it, br),
		refuse("expired 1 s beyond the skew", bearer(sign(hdr, withKeys(at, "exp", now.Add(-61*time.Second).Unix()))), 401, it, br),
		refuse("nbf in the future beyond the skew", bearer(sign(hdr, withKeys(at, "nbf", now.Add(2*time.Minute).Unix()))), 401, it, br),
		refuse("wrong iss", bearer(sign(hdr, withKeys(at, "iss", "https://evil.e2e.local"))), 401, it, br),
		refuse("wrong aud", bearer(sign(hdr, withKeys(at, "aud", "other-api"))), 401, it, br),
		refuse("wrong typ", bearer(sign(withKeys(hdr, "typ", "JWT"), at)), 401, it, br),
		refuse("truncated signature", bearer(good[:len(good)-10]), 401, it, br),
		refuse("padded segments", bearer(parts[0]+"=."+parts[1]+"=."+parts[2]+"="), 400, ir, br),
		refuse("non-base64url character", bearer(parts[0]+"."+parts[1]+"!."+parts[2]), 400, ir, br),
		refuse("invalid UTF-8 in a claim", bearer(sign(hdr, claimsText(withKeys(at, "sub", "MARK"), "MARK", "alice\xff\xfe"))), 401, it, br),
		refuse("claims nested 2500 deep", bearer(sign(hdr, claimsText(withKeys(at, "deep", "MARK"), `"MARK"`, strings.Repeat("[", 2500)+strings.Repeat("]", 2500)))), 401, it, br),
		refuse("huge scope string without the one needed", bearer(sign(hdr, withKeys(at, "scope", scope.String()))), 403, "insufficient_scope", br),

		// The credential as sent.
		refuse("Bearer with two spaces", http.Header{"Authorization": {"Bearer  " + unbound}}, 400, ir, br),
		refuse("Bearer with a tab", http.Header{"Authorization": {"Bearer\t" + unbound}}, 400, ir, br),
		{name: "token in the query string", path: "/api/accounts/1?access_token=" + unbound, hdr: bearer(unbound), status: 400, code: ir, challenge: br},
		refuse("JSON instead of a token", bearer(`{"alg":"none","sub":"admin"}`), 400, ir, br),
		refuse("token = null", bearer("null"), 401, it, br),
		rawRefuse("non-ASCII bytes in the token", "Authorization: Bearer hostile-\xff\xfe\r\n", 400, ir, br, false),
		// Envoy 1.40 lets a bare CR through to ext_authz; phantom-authz refuses it.
		rawRefuse("CR in the Authorization header", "Authorization: Bearer "+unbound+"\rX-User-Id: admin\r\n", 400, ir, br, false),
		rawRefuse("NUL in the Authorization header", "Authorization: Bearer "+unbound+"\x00\r\n", 400, "", "", true),
		rawRefuse("token of 1 MB", "Authorization: Bearer "+strings.Repeat("a", 1<<20)+"\r\n", 431, "", "", true),
		refuse("introspection answers active as a string", bearer("hostile-active-string"), 503, "", ""),

		// DPoP and the scheme.
		{name: "DPoP proof replayed", prime: dpopHeaders(bound, first), hdr: dpopHeaders(bound, first), status: 401, code: idp, challenge: dp},
		refuse("DPoP proof reused across tokens (ath)", dpopHeaders(bound2, proof(bound, nil)), 401, idp, dp),
		refuse("DPoP jwk holding the private key", dpopHeaders(bound, h.dpop.reheader(t, proof(bound, nil), func(m map[string]any) {
			m["jwk"].(map[string]any)["d"] = base64.RawURLEncoding.EncodeToString(h.dpop.key.D.FillBytes(make([]byte, 32)))
		})), 401, idp, dp),
		refuse("DPoP alg none", dpopHeaders(bound, h.dpop.reheader(t, proof(bound, nil), func(m map[string]any) { m["alg"] = "none" })), 401, idp, dp),
		refuse("DPoP htu path differing by case", dpopHeaders(bound, proof(bound, map[string]any{"htu": h.envoy.url + "/API/accounts/1"})), 401, idp, dp),
		refuse("DPoP htu with a trailing slash", dpopHeaders(bound, proof(bound, map[string]any{"htu": htu + "/"})), 401, idp, dp),
		refuse("DPoP htu with a query", dpopHeaders(bound, proof(bound, map[string]any{"htu": htu + "?page=2"})), 401, idp, dp),
		refuse("Bearer scheme for a DPoP-bound token", bearer(bound), 401, it, dp),
		refuse("DPoP proof for an unbound token", dpopHeaders(unbound, proof(unbound, nil)), 401, it, dp),
	}
}

func TestEnvoyHostileInput(t *testing.T) {
	t.Parallel()
	h := newHostileStack(t)
	cases := h.cases(t)
	refusals := 0
	for _, c := range cases {
		if c.status != 200 {
			refusals++
		}
	}
	t.Logf("hostile-input cases through Envoy: %d (%d refusals, %d positive controls)", len(cases), refusals, len(cases)-refusals)
	if refusals < 15 {
		t.Fatalf("%d refusal cases through Envoy, want at least 15", refusals)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method, path := c.method, c.path
			if method == "" {
				method = http.MethodGet
			}
			if path == "" {
				path = "/api/accounts/1"
			}
			if c.prime != nil {
				if r := h.call(t, method, path, "", c.prime); r.status != http.StatusOK || !r.fromUpstream() {
					t.Fatalf("priming request: %d %s", r.status, r.body)
				}
			}
			var r response
			if c.raw != "" {
				r = h.raw(t, path, c.raw)
			} else {
				r = h.call(t, method, path, "", c.hdr)
			}
			if c.status == http.StatusOK {
				if r.status != http.StatusOK {
					t.Fatalf("status %d, want 200: %s", r.status, r.body)
				}
				auth := r.upstream(t).Headers["authorization"]
				if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") || strings.Count(auth[0], ".") != 2 {
					t.Fatalf("upstream authorization %q, want one Bearer JWT", auth)
				}
				if c.upstream != "" && auth[0] != "Bearer "+c.upstream {
					t.Errorf("the upstream did not get the presented JWT")
				}
				return
			}
			ch := r.header.Get("WWW-Authenticate")
			if c.byEnvoy {
				// Refused by Envoy's codec before ext_authz: no challenge, no upstream.
				if r.status != c.status || r.fromUpstream() || ch != "" {
					t.Fatalf("status %d (challenge %q), want Envoy's own %d; body %.200s", r.status, ch, c.status, r.body)
				}
				return
			}
			p := r.denial(t, c.status)
			if p.Error != c.code {
				t.Errorf("problem error %q, want %q (%s)", p.Error, c.code, p.Detail)
			}
			switch {
			case c.challenge == "" && ch != "":
				t.Errorf("WWW-Authenticate %q, want none", ch)
			case c.challenge != "" && !strings.HasPrefix(ch, c.challenge+` realm="phantom-authz"`):
				t.Errorf("WWW-Authenticate %q, want a %s challenge", ch, c.challenge)
			case c.code != "" && !strings.Contains(ch, `error="`+c.code+`"`):
				t.Errorf("WWW-Authenticate %q, want error=%q", ch, c.code)
			case c.code == "" && strings.Contains(ch, "error="):
				t.Errorf("WWW-Authenticate %q, want no error code", ch)
			}
		})
	}
	if n := h.attackerHits.Load(); n != 0 {
		t.Errorf("the URL of a jku or x5u header was fetched %d times", n)
	}
	// Made-up kids refresh the JWKS at most once per 30 s: the first fetch
	// and one refresh.
	if n := h.jwksHits.Load(); n < 1 || n > 2 {
		t.Errorf("JWKS fetched %d times, want 1 or 2", n)
	}
}
