package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// jwtParts decodes a JWT's header and payload (no verification).
func jwtParts(t *testing.T, raw string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWT: %d parts", len(parts))
	}
	decodeSegment(t, parts[0], &header)
	decodeSegment(t, parts[1], &claims)
	return header, claims
}

// audiences is a JWT's aud as a list.
func audiences(claims map[string]any) []string {
	switch a := claims["aud"].(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, v := range a {
			s, _ := v.(string)
			out = append(out, s)
		}
		return out
	}
	return nil
}

// What phantom-authz relies on from Keycloak 26.7, checked against the real
// server: if an upgrade changes one of these, this test says which.
func TestKeycloakContract(t *testing.T) {
	t.Parallel()
	k := needKeycloak(t)

	t.Run("discovery", func(t *testing.T) {
		resp, err := k.httpClient(nil).Get(k.issuer + "/.well-known/openid-configuration")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var meta map[string]any
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &meta) != nil {
			t.Fatalf("openid-configuration: %d %s", resp.StatusCode, b)
		}
		if meta["issuer"] != k.issuer {
			t.Errorf("metadata issuer %v, want %s (the fixed --hostname)", meta["issuer"], k.issuer)
		}
		for key, want := range map[string]string{
			"introspection_endpoint": k.issuer + "/protocol/openid-connect/token/introspect",
			"jwks_uri":               k.issuer + "/protocol/openid-connect/certs",
		} {
			if meta[key] != want {
				t.Errorf("metadata %s = %v, want %s", key, meta[key], want)
			}
		}
	})

	t.Run("TPP token and the jwt field", func(t *testing.T) {
		tok := k.clientCredentials(t, kcTPP, nil, "").AccessToken
		header, claims := jwtParts(t, tok)
		if header["typ"] != "at+jwt" {
			t.Errorf("typ %v, want at+jwt (access.token.header.type.rfc9068)", header["typ"])
		}
		if claims["iss"] != k.issuer || !slices.Contains(audiences(claims), kcIntrospector) {
			t.Errorf("iss %v aud %v, want %s and %s (audience mapper)", claims["iss"], claims["aud"], k.issuer, kcIntrospector)
		}
		if !strings.Contains(" "+claims["scope"].(string)+" ", " read ") {
			t.Errorf("scope %q lacks read", claims["scope"])
		}
		answer := k.introspect(t, tok, "application/jwt")
		if answer["active"] != true {
			t.Fatalf("introspection: %v", answer)
		}
		signed, _ := answer["jwt"].(string)
		if signed == "" {
			t.Fatalf("no jwt field with Accept: application/jwt: %v", answer)
		}
		// Not RFC 9701, not the phantom-token answer: the token's claims,
		// re-signed with the realm key (RS256, typ JWT), without active.
		header, inner := jwtParts(t, signed)
		if header["alg"] != "RS256" || inner["iss"] != k.issuer || inner["client_id"] != kcTPP || inner["typ"] != "Bearer" {
			t.Errorf("the jwt field: header %v, claims %v", header, inner)
		}
		if _, ok := k.introspect(t, tok, "")["jwt"]; ok {
			t.Error("a jwt field without Accept: application/jwt")
		}
	})

	t.Run("lightweight token", func(t *testing.T) {
		tok := k.clientCredentials(t, kcLight, nil, "").AccessToken
		_, claims := jwtParts(t, tok)
		if _, ok := claims["aud"]; ok {
			t.Errorf("a lightweight token carries aud: %v", claims)
		}
		answer := k.introspect(t, tok, "")
		if answer["active"] != true || !slices.Contains(audiences(answer), kcIntrospector) || answer["client_id"] != kcLight {
			t.Errorf("introspection of a lightweight token: %v", answer)
		}
	})

	t.Run("refresh token", func(t *testing.T) {
		toks := k.clientCredentials(t, kcTPP, nil, "")
		if toks.RefreshToken == "" {
			t.Fatal("no refresh token (client_credentials.use_refresh_token)")
		}
		// With the audience check: inactive, yet with a signed jwt field
		// (typ Refresh) that a careless reader would forward.
		answer := k.introspect(t, toks.RefreshToken, "application/jwt")
		if answer["active"] != false || answer["jwt"] == nil {
			t.Errorf("refresh token, audience checked: active %v, jwt field present %v; want false and true", answer["active"], answer["jwt"] != nil)
		}
		// Without it: active, typ Refresh.
		answer = k.introspectAs(t, kcIntrospectorAnyAud, toks.RefreshToken, "application/jwt")
		if answer["active"] != true || answer["typ"] != "Refresh" {
			t.Errorf("refresh token, no audience check: active %v typ %v", answer["active"], answer["typ"])
		}
	})

	t.Run("revoked token", func(t *testing.T) {
		tok := k.clientCredentials(t, kcTPP, nil, "").AccessToken
		k.revoke(t, kcTPP, tok)
		answer := k.introspect(t, tok, "application/jwt")
		if answer["active"] != false {
			t.Errorf("revoked token introspects as %v", answer["active"])
		}
	})

	t.Run("DPoP-bound token", func(t *testing.T) {
		key := newDPoPKey(t)
		toks := k.clientCredentials(t, kcDPoP, nil, key.proof(t, "POST", k.tokenEndpoint(), "", nil))
		if toks.TokenType != "DPoP" {
			t.Errorf("token_type %q, want DPoP", toks.TokenType)
		}
		_, claims := jwtParts(t, toks.AccessToken)
		if cnf, _ := claims["cnf"].(map[string]any); cnf["jkt"] != key.jkt {
			t.Errorf("cnf %v, want jkt %s", claims["cnf"], key.jkt)
		}
	})

	t.Run("certificate-bound token", func(t *testing.T) {
		toks := k.clientCredentials(t, kcMTLS, &k.mtlsCert.tls, "")
		sum := sha256.Sum256(k.mtlsCert.der)
		want := base64.RawURLEncoding.EncodeToString(sum[:])
		_, claims := jwtParts(t, toks.AccessToken)
		if cnf, _ := claims["cnf"].(map[string]any); cnf["x5t#S256"] != want {
			t.Errorf("cnf %v, want x5t#S256 %s", claims["cnf"], want)
		}
	})
}
