package token

import (
	"errors"
	"fmt"
	"strings"
)

// An OAuth server vouches, at introspection, for every token it issued and
// still honours: access tokens, but also refresh tokens (Hydra answers
// active with token_use "refresh_token", even when asked with
// token_type_hint=access_token; Keycloak with typ "Refresh") and, at some
// servers, ID tokens. Only an access token opens the API: a refresh token
// stolen from a client's storage, or an ID token handed to a third party,
// must not work as a bearer token. So an answer or a JWT that says it is of
// another use is invalid (401 invalid_token), whatever else it says.

// nonAccessTypes are the normalised typ and token_type values that name
// another kind of token (Keycloak: Refresh, Offline, ID; RFC 8693 token type
// URNs; fosite's names).
var nonAccessTypes = map[string]bool{
	"refresh": true, "refresh_token": true, "refresh-token": true, "refresh+jwt": true,
	"offline": true, "offline_token": true, "offline-token": true,
	"id": true, "id_token": true, "id-token": true, "id+jwt": true,
	"logout": true, "logout+jwt": true,
}

// normalType lower-cases a typ or token_type and drops the prefixes that do
// not change its meaning.
func normalType(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimPrefix(s, "application/")
	return strings.TrimPrefix(s, "urn:ietf:params:oauth:token-type:")
}

// checkAnswer refuses an introspection answer that says it is not about an
// access token: token_use present and not access_token (RFC 7662 servers
// built on fosite say access_token or refresh_token), or typ or token_type
// naming a refresh, offline or ID token.
func checkAnswer(claims map[string]any) error {
	if v, ok := claims["token_use"]; ok {
		if s, _ := v.(string); s != "access_token" {
			return fmt.Errorf("not an access token (token_use %.40q)", fmt.Sprint(v))
		}
	}
	return checkTypes(claims, "typ", "token_type")
}

// checkPayload refuses a JWT payload whose typ (Keycloak's claim),
// token_type or token_use names a refresh, offline or ID token. token_use
// other than that is left alone: issuers use their own words (Cognito's
// access tokens say "access", its ID tokens "id").
func checkPayload(claims map[string]any) error {
	return checkTypes(claims, "typ", "token_type", "token_use")
}

// checkTypes refuses claims whose named string claims name another kind of
// token than an access token.
func checkTypes(claims map[string]any, names ...string) error {
	for _, name := range names {
		if s, ok := claims[name].(string); ok && nonAccessTypes[normalType(s)] {
			return fmt.Errorf("not an access token (%s %.40q)", name, s)
		}
	}
	return nil
}

// checkTyp refuses a JWT whose typ header names another kind of token.
func checkTyp(typ string) error {
	if nonAccessTypes[normalType(typ)] {
		return fmt.Errorf("not an access token (typ %.40q)", typ)
	}
	return nil
}

// errNoAudience is an answer without the aud introspection.audiences asks for.
var errNoAudience = errors.New("the answer names none of the accepted audiences (introspection.audiences)")
