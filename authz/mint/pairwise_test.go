package mint_test

import (
	"bytes"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz/mint"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

var (
	secretA = bytes.Repeat([]byte("a"), 32)
	secretB = bytes.Repeat([]byte("b"), 32)
)

// expectedPairwise is the documented derivation, computed apart from the
// minter: base64url(HMAC-SHA256(secret, uint64be(len(sector)) ‖ sector ‖
// uint64be(len(iss)) ‖ iss ‖ sub)). The tokens of activeToken carry no iss.
func expectedPairwise(secret []byte, sector, sub string) string {
	return expectedPairwiseIss(secret, sector, "", sub)
}

func expectedPairwiseIss(secret []byte, sector, iss, sub string) string {
	mac := hmac.New(sha256.New, secret)
	_ = binary.Write(mac, binary.BigEndian, uint64(len(sector)))
	mac.Write([]byte(sector))
	_ = binary.Write(mac, binary.BigEndian, uint64(len(iss)))
	mac.Write([]byte(iss + sub))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// sectorClaims mints tok's JWT for sector and returns its verified claims.
func sectorClaims(t *testing.T, m *mint.Minter, tok *token.Token, sector string) map[string]any {
	t.Helper()
	jwt, exp, err := m.MintForSector(tok, sector)
	if err != nil {
		t.Fatalf("MintForSector(%q): %v", sector, err)
	}
	if !exp.Equal(now.Add(mint.DefaultMaxLifetime).Truncate(1e9)) {
		t.Errorf("exp = %v", exp)
	}
	probe := &token.Token{JWT: jwt}
	_, claims := verified(t, m, probe)
	return claims
}

func pairwiseMinter(t *testing.T, keys ...mint.PairwiseKey) *mint.Minter {
	t.Helper()
	return newMinter(t, mint.Config{
		KeyFiles:     []string{pemFile(t, ecKey(t, elliptic.P256()), "pkcs8")},
		CopyClaims:   []string{"acr"},
		PairwiseKeys: keys,
	})
}

func TestPairwiseSubject(t *testing.T) {
	m := pairwiseMinter(t, mint.PairwiseKey{ID: "2026-01", Secret: secretA})
	tok := activeToken()
	tok.Claims["acr"] = "urn:sca"

	accounts := sectorClaims(t, m, tok, "https://accounts.bank.example")
	sub, _ := accounts["sub"].(string)
	if sub == "" || sub == tok.Subject || strings.Contains(sub, tok.Subject) {
		t.Fatalf("sub = %q: the real subject %q shows", sub, tok.Subject)
	}
	if want := expectedPairwise(secretA, "https://accounts.bank.example", "user-1"); sub != want {
		t.Errorf("sub = %q, want the documented derivation %q", sub, want)
	}
	if accounts["pairwise_kid"] != "2026-01" {
		t.Errorf("pairwise_kid = %v, want 2026-01", accounts["pairwise_kid"])
	}
	if _, ok := accounts["pairwise_previous"]; ok {
		t.Errorf("pairwise_previous with a single key: %v", accounts["pairwise_previous"])
	}
	if accounts["acr"] != "urn:sca" || accounts["client_id"] != "web" || accounts["scope"] != "orders:read orders:write" {
		t.Errorf("the other claims are not those Mint sets: %v", accounts)
	}

	// Stable per user per sector.
	if again := sectorClaims(t, m, tok, "https://accounts.bank.example"); again["sub"] != sub {
		t.Errorf("same user, same sector: sub %v then %v", sub, again["sub"])
	}
	// Unlinkable across sectors.
	if other := sectorClaims(t, m, tok, "https://payments.bank.example"); other["sub"] == sub {
		t.Errorf("two sectors gave the same sub %v", sub)
	}
	// Different per user.
	u2 := activeToken()
	u2.Subject = "user-2"
	if other := sectorClaims(t, m, u2, "https://accounts.bank.example"); other["sub"] == sub {
		t.Errorf("two users gave the same sub %v", sub)
	}
	// The sector and subject are length-prefixed: moving a byte across the
	// boundary changes the value.
	if expectedPairwise(secretA, "ab", "c") == expectedPairwise(secretA, "a", "bc") {
		t.Error("derivation is ambiguous across the sector/subject boundary")
	}
	a := &token.Token{Active: true, Subject: "c", Expiry: tok.Expiry}
	b := &token.Token{Active: true, Subject: "bc", Expiry: tok.Expiry}
	if sectorClaims(t, m, a, "ab")["sub"] == sectorClaims(t, m, b, "a")["sub"] {
		t.Error("(ab, c) and (a, bc) derive the same subject")
	}
	// A client-credentials token: the client acts for itself; its id is the subject.
	cc := activeToken()
	cc.Subject = ""
	if got := sectorClaims(t, m, cc, "s")["sub"]; got != expectedPairwise(secretA, "s", "web") {
		t.Errorf("client-credentials sub = %v", got)
	}
	// Mint itself is unchanged: the upstream JWT without a sector keeps sub.
	if err := m.Mint(tok); err != nil {
		t.Fatal(err)
	}
	if _, claims := verified(t, m, tok); claims["sub"] != "user-1" || claims["pairwise_kid"] != nil {
		t.Errorf("Mint: sub %v pairwise_kid %v", claims["sub"], claims["pairwise_kid"])
	}
}

// Item 4 of issue 13: a sub is unique only within its issuer, so the same
// sub at two authorization servers is two users and must get two
// pseudonyms; and the issuer is length-prefixed, so moving bytes between
// issuer and sub cannot make two users one.
func TestPairwiseSubjectIncludesIssuer(t *testing.T) {
	const sector = "https://accounts.bank.example"
	m := pairwiseMinter(t, mint.PairwiseKey{ID: "k", Secret: secretA})
	at := func(iss, sub string) string {
		tok := activeToken()
		tok.Subject = sub
		tok.Claims = map[string]any{"iss": iss, "sub": sub}
		got, _ := sectorClaims(t, m, tok, sector)["sub"].(string)
		return got
	}

	aliceA, aliceB := at("https://as-a.example", "alice"), at("https://as-b.example", "alice")
	if aliceA == "" || aliceA == aliceB {
		t.Errorf("alice at issuer A and alice at issuer B both got pseudonym %q", aliceA)
	}
	if want := expectedPairwiseIss(secretA, sector, "https://as-a.example", "alice"); aliceA != want {
		t.Errorf("alice at A = %q, want the documented derivation %q", aliceA, want)
	}
	if again := at("https://as-a.example", "alice"); again != aliceA {
		t.Errorf("same issuer, same sub: %q then %q", aliceA, again)
	}
	// Boundary shifting: issuer "ab" with sub "c" against issuer "a" with
	// sub "bc" (the same bytes after the sector) must differ.
	if x, y := at("ab", "c"), at("a", "bc"); x == y {
		t.Errorf("(iss ab, sub c) and (iss a, sub bc) derive the same pseudonym %q", x)
	}
	// And between sector and issuer.
	tok := activeToken()
	tok.Claims = map[string]any{"iss": "bc"}
	tok2 := activeToken()
	tok2.Claims = map[string]any{"iss": "c"}
	if sectorClaims(t, m, tok, "a")["sub"] == sectorClaims(t, m, tok2, "ab")["sub"] {
		t.Error("(sector a, iss bc) and (sector ab, iss c) derive the same pseudonym")
	}
	// A token whose answer names no issuer differs from any named one.
	if at("", "alice") == aliceA {
		t.Error("a token without iss got the pseudonym of issuer A's alice")
	}
}

// Several authorization servers: the issuer in the derivation is the one
// of the server that vouched for the token (its configured issuer), not
// what its answer says. A server whose introspection answers name no iss
// (RFC 7662 makes it optional), or name another server's issuer, must not
// give its users that server's pseudonyms.
func TestPairwiseIssuerIsTheVouchingServer(t *testing.T) {
	const sector = "https://accounts.bank.example"
	const asA, asB = "https://as-a.example", "https://as-b.example"
	m := pairwiseMinter(t, mint.PairwiseKey{ID: "k", Secret: secretA})
	at := func(server, issClaim string) string {
		tok := activeToken()
		tok.Issuer, tok.Subject = server, "alice"
		tok.Claims = map[string]any{"sub": "alice"}
		if issClaim != "" {
			tok.Claims["iss"] = issClaim
		}
		got, _ := sectorClaims(t, m, tok, sector)["sub"].(string)
		return got
	}
	aliceA := at(asA, asA)
	if want := expectedPairwiseIss(secretA, sector, asA, "alice"); aliceA != want {
		t.Fatalf("alice at A = %q, want the documented derivation %q", aliceA, want)
	}
	if got := at(asB, asA); got == aliceA {
		t.Error("server B answering iss = A's issuer got A's alice's pseudonym")
	}
	if at(asA, "") != aliceA {
		t.Error("A's answer without iss: alice is still A's alice")
	}
	if at(asA, "") == at(asB, "") {
		t.Error("answers without iss from two servers derive one pseudonym")
	}
	// No issuer configured (one introspection server without
	// introspection.issuer): the answer's iss, as before.
	if got := at("", asA); got != aliceA {
		t.Errorf("no configured issuer, answer iss A: %q, want A's alice %q", got, aliceA)
	}
}

func TestPairwiseRotation(t *testing.T) {
	const sector = "https://accounts.bank.example"
	tok := activeToken()
	before := sectorClaims(t, pairwiseMinter(t, mint.PairwiseKey{ID: "old", Secret: secretA}), tok, sector)
	// The new key goes first; the old one stays listed during the move.
	after := sectorClaims(t, pairwiseMinter(t,
		mint.PairwiseKey{ID: "new", Secret: secretB},
		mint.PairwiseKey{ID: "old", Secret: secretA}), tok, sector)

	if after["sub"] == before["sub"] {
		t.Errorf("rotation kept sub %v", after["sub"])
	}
	if after["sub"] != expectedPairwise(secretB, sector, "user-1") || after["pairwise_kid"] != "new" {
		t.Errorf("after rotation: sub %v kid %v, want the new key's", after["sub"], after["pairwise_kid"])
	}
	prev, _ := after["pairwise_previous"].(map[string]any)
	if prev["old"] != before["sub"] || len(prev) != 1 {
		t.Errorf("pairwise_previous = %v, want {old: %v}", after["pairwise_previous"], before["sub"])
	}
}

func TestPairwiseErrors(t *testing.T) {
	key := pemFile(t, ecKey(t, elliptic.P256()), "pkcs8")
	for name, keys := range map[string][]mint.PairwiseKey{
		"short secret": {{ID: "k", Secret: []byte("short")}},
		"no id":        {{Secret: secretA}},
		"quote in id":  {{ID: `k"`, Secret: secretA}},
		"same id":      {{ID: "k", Secret: secretA}, {ID: "k", Secret: secretB}},
	} {
		_, err := mint.New(mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{key}, PairwiseKeys: keys})
		if err == nil || !strings.Contains(err.Error(), "pairwise") {
			t.Errorf("%s: err = %v, want a pairwise error", name, err)
		}
	}
	for _, name := range []string{"pairwise_kid", "pairwise_previous"} {
		if _, err := mint.New(mint.Config{Issuer: "i", Audience: []string{"a"}, KeyFiles: []string{key}, CopyClaims: []string{name}}); err == nil {
			t.Errorf("copy_claims %s accepted: the introspection answer could forge it", name)
		}
	}

	plain := newMinter(t, mint.Config{KeyFiles: []string{key}})
	if _, _, err := plain.MintForSector(activeToken(), "s"); err == nil {
		t.Error("MintForSector without pairwise keys: no error")
	}
	m := pairwiseMinter(t, mint.PairwiseKey{ID: "k", Secret: secretA})
	if _, _, err := m.MintForSector(activeToken(), ""); err == nil {
		t.Error("empty sector: no error")
	}
	inactive := activeToken()
	inactive.Active = false
	if _, _, err := m.MintForSector(inactive, "s"); err == nil {
		t.Error("inactive token minted")
	}
}
