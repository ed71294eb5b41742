package mint_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/phantom-authz/phantom-authz/authz/mint"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 500_000_000, time.UTC)

func clock() time.Time { return now }

// RSA keys are slow to generate; each size is made once.
var rsaKeys sync.Map

func rsaKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	if k, ok := rsaKeys.Load(bits); ok {
		return k.(*rsa.PrivateKey)
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	rsaKeys.Store(bits, k)
	return k
}

func ecKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func edKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// pemFile writes key in format ("pkcs8", "sec1", "pkcs1") to a new file.
func pemFile(t testing.TB, key any, format string) string {
	t.Helper()
	var block *pem.Block
	var err error
	switch format {
	case "pkcs8":
		var der []byte
		der, err = x509.MarshalPKCS8PrivateKey(key)
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	case "sec1":
		var der []byte
		der, err = x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
		block = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
	case "pkcs1":
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))}
	default:
		t.Fatalf("format %q", format)
	}
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, pem.EncodeToMemory(block))
}

func writeFile(t testing.TB, data []byte) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "key-*.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// thumbprint is the RFC 7638 kid of key's public half, computed apart from
// the minter.
func thumbprint(t testing.TB, key crypto.Signer) string {
	t.Helper()
	k, err := jwk.Import(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

func newMinter(t testing.TB, cfg mint.Config) *mint.Minter {
	t.Helper()
	if cfg.Issuer == "" {
		cfg.Issuer = "https://authz.example"
	}
	if cfg.Audience == nil {
		cfg.Audience = []string{"api"}
	}
	if cfg.Now == nil {
		cfg.Now = clock
	}
	m, err := mint.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

func activeToken() *token.Token {
	return &token.Token{
		Active:   true,
		Kind:     token.KindOpaque,
		Subject:  "user-1",
		ClientID: "web",
		Scopes:   []string{"orders:read", "orders:write"},
		Expiry:   now.Add(time.Hour),
		Claims:   map[string]any{"sub": "user-1", "email": "u@example.com"},
	}
}

// verified checks tok.JWT against the minter's published JWKS the way an
// upstream would (kid must match, iss, aud, exp, iat), and returns its
// decoded header and claims.
func verified(t *testing.T, m *mint.Minter, tok *token.Token) (header, claims map[string]any) {
	t.Helper()
	set, err := jwk.Parse(m.JWKS())
	if err != nil {
		t.Fatalf("JWKS does not parse: %v", err)
	}
	if _, err := jwt.ParseString(tok.JWT,
		jwt.WithKeySet(set),
		jwt.WithIssuer("https://authz.example"),
		jwt.WithAudience("api"),
		jwt.WithClock(jwt.ClockFunc(clock)),
	); err != nil {
		t.Fatalf("minted JWT does not verify against JWKS: %v", err)
	}
	parts := strings.Split(tok.JWT, ".")
	if len(parts) != 3 {
		t.Fatalf("JWT has %d parts", len(parts))
	}
	return decodeSegment(t, parts[0]), decodeSegment(t, parts[1])
}

func decodeSegment(t *testing.T, s string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMintKeyTypes(t *testing.T) {
	tests := []struct {
		name   string
		key    crypto.Signer
		format string
		alg    string
	}{
		{"ec p-256 pkcs8", ecKey(t, elliptic.P256()), "pkcs8", "ES256"},
		{"ec p-256 sec1", ecKey(t, elliptic.P256()), "sec1", "ES256"},
		{"ec p-384", ecKey(t, elliptic.P384()), "pkcs8", "ES384"},
		{"ec p-521", ecKey(t, elliptic.P521()), "sec1", "ES512"},
		{"rsa 2048 pkcs1", rsaKey(t, 2048), "pkcs1", "PS256"},
		{"rsa 2048 pkcs8", rsaKey(t, 2048), "pkcs8", "PS256"},
		{"ed25519", edKey(t), "pkcs8", "EdDSA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMinter(t, mint.Config{KeyFiles: []string{pemFile(t, tt.key, tt.format)}})
			tok := activeToken()
			if err := m.Mint(tok); err != nil {
				t.Fatalf("Mint: %v", err)
			}
			header, claims := verified(t, m, tok)

			wantHeader := map[string]any{"typ": "at+jwt", "alg": tt.alg, "kid": thumbprint(t, tt.key)}
			if !reflect.DeepEqual(header, wantHeader) {
				t.Errorf("header = %v, want %v", header, wantHeader)
			}
			jti, _ := claims["jti"].(string)
			if b, err := base64.RawURLEncoding.DecodeString(jti); err != nil || len(b) != 16 {
				t.Errorf("jti %q is not 128 bits base64url", jti)
			}
			delete(claims, "jti")
			wantClaims := map[string]any{
				"iss":       "https://authz.example",
				"sub":       "user-1",
				"aud":       []any{"api"},
				"exp":       float64(now.Add(5 * time.Minute).Unix()),
				"iat":       float64(now.Unix()),
				"client_id": "web",
				"scope":     "orders:read orders:write",
			}
			if !reflect.DeepEqual(claims, wantClaims) {
				t.Errorf("claims = %v, want %v", claims, wantClaims)
			}
			if want := time.Unix(now.Add(5*time.Minute).Unix(), 0); !tok.JWTExpiry.Equal(want) {
				t.Errorf("JWTExpiry = %v, want %v", tok.JWTExpiry, want)
			}
		})
	}
}

func TestMintFreshJTI(t *testing.T) {
	m := newMinter(t, mint.Config{KeyFiles: []string{pemFile(t, ecKey(t, elliptic.P256()), "pkcs8")}})
	a, b := activeToken(), activeToken()
	if err := m.Mint(a); err != nil {
		t.Fatal(err)
	}
	if err := m.Mint(b); err != nil {
		t.Fatal(err)
	}
	_, ca := verified(t, m, a)
	_, cb := verified(t, m, b)
	if ca["jti"] == cb["jti"] {
		t.Errorf("two JWTs share jti %v", ca["jti"])
	}
}

func TestJWKS(t *testing.T) {
	keys := []crypto.Signer{ecKey(t, elliptic.P256()), rsaKey(t, 2048), edKey(t)}
	files := []string{pemFile(t, keys[0], "pkcs8"), pemFile(t, keys[1], "pkcs1"), pemFile(t, keys[2], "pkcs8")}
	m := newMinter(t, mint.Config{KeyFiles: files})

	raw := m.JWKS()
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Keys) != 3 {
		t.Fatalf("JWKS has %d keys, want 3", len(doc.Keys))
	}
	for i, k := range doc.Keys {
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
			if _, ok := k[private]; ok {
				t.Errorf("key %d publishes private parameter %q", i, private)
			}
		}
		if k["use"] != "sig" || k["kid"] != thumbprint(t, keys[i]) || k["alg"] == nil {
			t.Errorf("key %d = %v, want use sig, alg, kid %s", i, k, thumbprint(t, keys[i]))
		}
	}

	raw[0] = 'x'
	if bytes.Equal(raw, m.JWKS()) {
		t.Error("JWKS returns shared memory")
	}
}

func TestRotation(t *testing.T) {
	current, next := ecKey(t, elliptic.P256()), ecKey(t, elliptic.P256())
	currentFile, nextFile := pemFile(t, current, "pkcs8"), pemFile(t, next, "sec1")
	m := newMinter(t, mint.Config{KeyFiles: []string{currentFile, nextFile}})

	set, err := jwk.Parse(m.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for i := range set.Len() {
		k, _ := set.Key(i)
		kid, _ := k.KeyID()
		kids = append(kids, kid)
	}
	if want := []string{thumbprint(t, current), thumbprint(t, next)}; !reflect.DeepEqual(kids, want) || kids[0] == kids[1] {
		t.Fatalf("published kids = %v, want %v, distinct", kids, want)
	}

	tok := activeToken()
	if err := m.Mint(tok); err != nil {
		t.Fatal(err)
	}
	header, _ := verified(t, m, tok)
	if header["kid"] != kids[0] {
		t.Errorf("signed with kid %v, want the first key's %s", header["kid"], kids[0])
	}
	// The signature is the first key's, not merely labelled with its kid.
	pub, err := jwk.Import(current.Public())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwt.ParseString(tok.JWT, jwt.WithKey(jwa.ES256(), pub), jwt.WithValidate(false)); err != nil {
		t.Errorf("JWT does not verify with the first key: %v", err)
	}

	// Swapping the order makes the next key sign, and both stay published.
	m2 := newMinter(t, mint.Config{KeyFiles: []string{nextFile, currentFile}})
	if err := m2.Mint(tok); err != nil {
		t.Fatal(err)
	}
	if header, _ := verified(t, m2, tok); header["kid"] != kids[1] {
		t.Errorf("after rotation signed with kid %v, want %s", header["kid"], kids[1])
	}
}

func TestKeyIDs(t *testing.T) {
	a, b := ecKey(t, elliptic.P256()), edKey(t)
	m := newMinter(t, mint.Config{
		KeyFiles: []string{pemFile(t, a, "pkcs8"), pemFile(t, b, "pkcs8")},
		KeyIDs:   []string{"2026-03"},
	})
	tok := activeToken()
	if err := m.Mint(tok); err != nil {
		t.Fatal(err)
	}
	if header, _ := verified(t, m, tok); header["kid"] != "2026-03" {
		t.Errorf("kid = %v, want the configured 2026-03", header["kid"])
	}
	if !bytes.Contains(m.JWKS(), []byte(`"kid":"`+thumbprint(t, b)+`"`)) {
		t.Errorf("second key without configured kid is not published under its thumbprint: %s", m.JWKS())
	}
}

func TestLifetime(t *testing.T) {
	key := pemFile(t, ecKey(t, elliptic.P256()), "pkcs8")
	tests := []struct {
		name        string
		maxLifetime time.Duration
		expiry      time.Time
		wantExp     time.Time // zero: Mint fails with token.ErrInactive
	}{
		{"long-lived token capped at the default", 0, now.Add(24 * time.Hour), now.Add(5 * time.Minute)},
		{"capped at the configured lifetime", time.Minute, now.Add(time.Hour), now.Add(time.Minute)},
		{"token expiring sooner keeps its exp", 0, now.Add(90 * time.Second), now.Add(90 * time.Second)},
		{"sub-second exp rounds down", 0, now.Add(2*time.Second + 900*time.Millisecond), now.Add(2500 * time.Millisecond)}, // 12:00:03.4 → 12:00:03
		{"token without exp", 0, time.Time{}, now.Add(5 * time.Minute)},
		{"expired token", 0, now.Add(-time.Second), time.Time{}},
		{"token expiring now", 0, now, time.Time{}},
		{"token expiring within the second", 0, now.Add(400 * time.Millisecond), time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMinter(t, mint.Config{KeyFiles: []string{key}, MaxLifetime: tt.maxLifetime})
			tok := activeToken()
			tok.Expiry = tt.expiry
			err := m.Mint(tok)
			if tt.wantExp.IsZero() {
				if !errors.Is(err, token.ErrInactive) {
					t.Fatalf("Mint error = %v, want token.ErrInactive", err)
				}
				if tok.JWT != "" {
					t.Error("JWT set on failure")
				}
				return
			}
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			_, claims := verified(t, m, tok)
			want := time.Unix(tt.wantExp.Unix(), 0)
			if exp := claims["exp"]; exp != float64(want.Unix()) {
				t.Errorf("exp = %v, want %d", exp, want.Unix())
			}
			if !tok.JWTExpiry.Equal(want) {
				t.Errorf("JWTExpiry = %v, want %v", tok.JWTExpiry, want)
			}
			if !tt.expiry.IsZero() && tok.JWTExpiry.After(tt.expiry) {
				t.Errorf("JWT outlives the token: %v > %v", tok.JWTExpiry, tt.expiry)
			}
		})
	}
}

func TestSubject(t *testing.T) {
	m := newMinter(t, mint.Config{KeyFiles: []string{pemFile(t, ecKey(t, elliptic.P256()), "pkcs8")}})

	cc := activeToken()
	cc.Subject, cc.Scopes = "", nil
	if err := m.Mint(cc); err != nil {
		t.Fatalf("client-credentials token: %v", err)
	}
	_, claims := verified(t, m, cc)
	if claims["sub"] != "web" || claims["client_id"] != "web" {
		t.Errorf("sub = %v, client_id = %v, want both web", claims["sub"], claims["client_id"])
	}
	if _, ok := claims["scope"]; ok {
		t.Errorf("empty scope published: %v", claims["scope"])
	}

	anon := activeToken()
	anon.Subject, anon.ClientID = "", ""
	if err := m.Mint(anon); err == nil {
		t.Error("minted a JWT with neither sub nor client_id")
	}

	inactive := activeToken()
	inactive.Active = false
	if err := m.Mint(inactive); !errors.Is(err, token.ErrInactive) {
		t.Errorf("inactive token: error = %v, want token.ErrInactive", err)
	}
	if err := m.Mint(nil); !errors.Is(err, token.ErrInactive) {
		t.Errorf("nil token: error = %v, want token.ErrInactive", err)
	}
}

func TestCopyClaims(t *testing.T) {
	m := newMinter(t, mint.Config{
		KeyFiles:   []string{pemFile(t, ecKey(t, elliptic.P256()), "pkcs8")},
		CopyClaims: []string{"acr", "auth_time", "amr", "cnf", "absent", "null"},
	})
	tok := activeToken()
	tok.Claims = map[string]any{
		"sub":       "user-1",
		"acr":       "urn:example:loa:2",
		"auth_time": float64(1772366000),
		"amr":       []any{"pwd", "otp"},
		"cnf":       map[string]any{"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},
		"null":      nil,
		"email":     "u@example.com",
	}
	if err := m.Mint(tok); err != nil {
		t.Fatal(err)
	}
	_, claims := verified(t, m, tok)
	for _, name := range []string{"acr", "auth_time", "amr", "cnf"} {
		if !reflect.DeepEqual(claims[name], tok.Claims[name]) {
			t.Errorf("%s = %#v, want %#v", name, claims[name], tok.Claims[name])
		}
	}
	for _, name := range []string{"email", "absent", "null"} {
		if v, ok := claims[name]; ok {
			t.Errorf("claim %s = %v copied, want absent", name, v)
		}
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	ec := pemFile(t, ecKey(t, elliptic.P256()), "pkcs8")
	ed := pemFile(t, edKey(t), "pkcs8")
	rsa1024 := pemFile(t, rsaKey(t, 1024), "pkcs1")
	p224 := pemFile(t, ecKey(t, elliptic.P224()), "pkcs8")
	garbage := writeFile(t, []byte("not a key\n"))
	badDER := writeFile(t, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 0x03, 1, 2, 3}}))
	encrypted := writeFile(t, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}))
	pubDER, _ := x509.MarshalPKIXPublicKey(ecKey(t, elliptic.P256()).Public())
	publicOnly := writeFile(t, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	ecPEM, _ := os.ReadFile(ec)
	twoKeys := writeFile(t, append(append([]byte{}, ecPEM...), ecPEM...))
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name string
		cfg  mint.Config
		want []string // substrings of the error
	}{
		{"no issuer", mint.Config{Audience: []string{"api"}, KeyFiles: []string{ec}}, []string{"mint: issuer"}},
		{"no audience", mint.Config{Issuer: "i", KeyFiles: []string{ec}}, []string{"mint: audience"}},
		{"empty audience", mint.Config{Issuer: "i", Audience: []string{""}, KeyFiles: []string{ec}}, []string{"mint: audience"}},
		{"negative lifetime", mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{ec}, MaxLifetime: -time.Second}, []string{"mint: max_lifetime"}},
		{"reserved copy claim", mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{ec}, CopyClaims: []string{"aud"}}, []string{"mint: copy_claims", `"aud"`}},
		{"no key", mint.Config{Issuer: "i", Audience: []string{"a"}}, []string{"mint: signing_key_file"}},
		{"missing file", mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{missing}}, []string{`mint: signing_key_file "` + missing + `"`, "no such file"}},
		{"directory", mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{dir}}, []string{`signing_key_file "` + dir + `"`}},
		{"garbage", mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{garbage}}, []string{`signing_key_file "` + garbage + `"`, "no PEM private key"}},
		{"bad der", mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{badDER}}, []string{`signing_key_file "` + badDER + `"`, "does not parse"}},
		{"encrypted", mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{encrypted}}, []string{`signing_key_file "` + encrypted + `"`, "encrypted"}},
		{"public key only", mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{publicOnly}}, []string{`signing_key_file "` + publicOnly + `"`, "no PEM private key"}},
		{"two keys in a file", mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{twoKeys}}, []string{`signing_key_file "` + twoKeys + `"`, "more than one"}},
		{"rsa 1024", mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{rsa1024}}, []string{`signing_key_file "` + rsa1024 + `"`, "1024 bits"}},
		{"p-224", mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{p224}}, []string{`signing_key_file "` + p224 + `"`, "P-224"}},
		{"bad second file", mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{ec, garbage}}, []string{`signing_key_file "` + garbage + `"`}},
		{"same key twice", mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{ec, ec}}, []string{`signing_key_file "` + ec + `"`, "already used"}},
		{"same kid twice", mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{ec, ed}, KeyIDs: []string{"k", "k"}}, []string{"already used"}},
		{"more kids than keys", mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{ec}, KeyIDs: []string{"a", "b"}}, []string{"mint: key_ids"}},
		{"kid with a quote", mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{ec}, KeyIDs: []string{`a"b`}}, []string{`signing_key_file "` + ec + `"`, "key ID"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := mint.New(tt.cfg)
			if err == nil {
				t.Fatalf("New succeeded (%v), want an error", m)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestGenerate(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	var logs bytes.Buffer
	m := newMinter(t, mint.Config{
		Generate: true,
		Logger:   slog.New(slog.NewJSONHandler(&logs, nil)),
	})

	var entry struct {
		Level, Path, Kid string
	}
	if err := json.Unmarshal(logs.Bytes(), &entry); err != nil {
		t.Fatalf("log %q: %v", logs.String(), err)
	}
	if entry.Level != "INFO" || filepath.Dir(entry.Path) != tmp {
		t.Fatalf("log = %s, want an info line with the key's path in %s", logs.String(), tmp)
	}
	fi, err := os.Stat(entry.Path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", fi.Mode().Perm())
	}

	// The file holds the key that signs, and the log holds none of it.
	data, err := os.ReadFile(entry.Path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		t.Fatalf("generated %T, want an EC P-256 key", key)
	}
	d, _ := ec.Bytes()
	for _, secret := range []string{
		"PRIVATE KEY",
		base64.StdEncoding.EncodeToString(block.Bytes)[:32],
		base64.RawURLEncoding.EncodeToString(d),
	} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("log contains key material %q", secret)
		}
	}
	tok := activeToken()
	if err := m.Mint(tok); err != nil {
		t.Fatal(err)
	}
	header, _ := verified(t, m, tok)
	if header["alg"] != "ES256" || header["kid"] != thumbprint(t, ec) || entry.Kid != header["kid"] {
		t.Errorf("header %v, logged kid %q: want ES256 signed by the generated key", header, entry.Kid)
	}

	// A named key file wins over Generate.
	logs.Reset()
	newMinter(t, mint.Config{Generate: true, KeyFiles: []string{entry.Path}, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if logs.Len() != 0 {
		t.Errorf("generated a key although one was named: %s", logs.String())
	}
}

func TestMintConcurrent(t *testing.T) {
	m := newMinter(t, mint.Config{KeyFiles: []string{pemFile(t, ecKey(t, elliptic.P256()), "pkcs8")}})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				tok := activeToken()
				if err := m.Mint(tok); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkMint(b *testing.B) {
	for _, bb := range []struct {
		name string
		key  func(testing.TB) crypto.Signer
	}{
		{"ES256", func(t testing.TB) crypto.Signer { return ecKey(t, elliptic.P256()) }},
		{"EdDSA", func(t testing.TB) crypto.Signer { return edKey(t) }},
		{"PS256", func(t testing.TB) crypto.Signer { return rsaKey(t, 2048) }},
	} {
		b.Run(bb.name, func(b *testing.B) {
			m := newMinter(b, mint.Config{
				KeyFiles:   []string{pemFile(b, bb.key(b), "pkcs8")},
				CopyClaims: []string{"acr", "auth_time"},
			})
			tok := activeToken()
			tok.Claims["acr"], tok.Claims["auth_time"] = "urn:example:loa:2", float64(now.Unix()-60)
			b.ReportAllocs()
			for b.Loop() {
				tok.JWT = ""
				if err := m.Mint(tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
