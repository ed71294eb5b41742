package policy_test

import (
	"log/slog"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz/policy"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// tenantPolicy reads two claims by name, one through a function given the
// claim's name by base data (as fapi.consent_matches is): a decision is
// keyed by those claims' values, and by nothing else of the token.
const tenantPolicy = `package envoy.authz

import data.settings

default allow := {"allowed": false, "http_status": 403}

allow := {"allowed": true, "headers": {"x-tenant": input.token.claims.tenant}} if {
	input.token.active
	"read" in input.token.scopes
	claim_is(settings.tier_claim, "gold")
}

claim_is(name, value) if input.token.claims[name] == value
`

func tenantToken(t *testing.T, e *policy.Engine, sub, tenant, tier string, scopes ...string) *token.Token {
	t.Helper()
	tok := &token.Token{Active: true, Kind: token.KindOpaque, Scopes: scopes, Subject: sub,
		Claims: map[string]any{"sub": sub, "tenant": tenant, "tier": tier, "jti": sub + "-jti"}}
	if err := e.PrepareToken(tok); err != nil {
		t.Fatal(err)
	}
	return tok
}

// What a neighbouring tenant, or a token with less scope or a lower tier,
// would try: a decision cached for one token is served only to tokens the
// policy cannot tell apart; any difference in a field it reads (tenant,
// scopes, the claim named by data) gets its own evaluation.
func TestDecisionKeyedByTokenFieldsRead(t *testing.T) {
	e, _ := newEngineCfg(t, policy.Config{}, map[string]string{
		"p.rego":    tenantPolicy,
		"data.json": `{"settings": {"tier_claim": "tier"}}`,
	})
	r := getRequest("/api/x", nil)
	alice := tenantToken(t, e, "alice", "acme", "gold", "read")
	for _, d := range decideN(t, e, r, alice, 2) {
		if !d.Allowed || header(d, "x-tenant") != "acme" {
			t.Fatalf("alice: %+v", d)
		}
	}
	// Another user of the same tenant, tier and scopes: the same decision,
	// from the cache (sub and jti are not read).
	bob := tenantToken(t, e, "bob", "acme", "gold", "read")
	if !policy.DecisionCached(e, r, bob) {
		t.Error("bob (same tenant, tier, scopes) did not share alice's cached decision")
	}
	cases := []struct {
		name  string
		tok   *token.Token
		allow bool
	}{
		{"another tenant", tenantToken(t, e, "mallory", "evil-corp", "gold", "read"), true},
		{"a lower tier (the claim named by data)", tenantToken(t, e, "carol", "acme", "silver", "read"), false},
		{"less scope", tenantToken(t, e, "dave", "acme", "gold", "write"), false},
		{"more scope", tenantToken(t, e, "erin", "acme", "gold", "read", "write"), true},
	}
	for _, c := range cases {
		if policy.DecisionCached(e, r, c.tok) {
			t.Errorf("%s: served a decision cached for another token", c.name)
		}
		for _, d := range decideN(t, e, r, c.tok, 2) {
			if d.Allowed != c.allow {
				t.Errorf("%s: allowed %v, want %v", c.name, d.Allowed, c.allow)
			}
			if c.allow && header(d, "x-tenant") != c.tok.Claims["tenant"] {
				t.Errorf("%s: x-tenant %q, want %q", c.name, header(d, "x-tenant"), c.tok.Claims["tenant"])
			}
		}
	}
}

// A claim read by a name the policy cannot know before it runs (from the
// request) keys decisions by the token's identity: two users never share.
func TestDecisionKeyedByTokenWhenClaimNameUnknown(t *testing.T) {
	e, _ := newEngineCfg(t, policy.Config{}, map[string]string{"p.rego": `package envoy.authz

default allow := false

allow if input.token.claims[input.attributes.request.http.headers["x-claim"]] == "yes"
`})
	r := getRequest("/api/x", map[string]string{"x-claim": "admin"})
	alice := tenantToken(t, e, "alice", "acme", "gold", "read")
	alice.Claims["admin"] = "yes"
	bob := tenantToken(t, e, "bob", "acme", "gold", "read")
	for _, d := range decideN(t, e, r, alice, 2) {
		if !d.Allowed {
			t.Fatalf("alice: %+v", d)
		}
	}
	if policy.DecisionCached(e, r, bob) {
		t.Fatal("bob was served alice's decision")
	}
	for _, d := range decideN(t, e, r, bob, 2) {
		if d.Allowed {
			t.Fatal("bob allowed with alice's admin claim")
		}
	}
}

// The shipped policies read named fields of the token (active, scopes,
// client_id) and the claims FAPI's helpers name (consent_matches gets its
// claim from data): a new token of a client with the same scopes is
// answered from the cache, the evaluation a stream of new tokens would
// otherwise make for each.
func TestShippedPoliciesShareDecisionsAcrossTokens(t *testing.T) {
	e2, err := policy.New(policy.Config{Dir: "../../policies", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	r := getRequest("/api/accounts/1", nil)
	first := tenantToken(t, e2, "user-1", "acme", "gold", "read")
	for _, d := range decideN(t, e2, r, first, 2) {
		if !d.Allowed {
			t.Fatalf("want allow, got %+v", d)
		}
	}
	next := tenantToken(t, e2, "user-2", "acme", "gold", "read")
	if !policy.DecisionCached(e2, r, next) {
		t.Error("a new token of the same client and scopes evaluated the shipped policies again")
	}
	less := tenantToken(t, e2, "user-3", "acme", "gold", "openid")
	if policy.DecisionCached(e2, r, less) {
		t.Error("a token without the read scope was served a cached allow")
	}
	if d := decideN(t, e2, r, less, 1)[0]; d.Allowed || d.Status != 403 {
		t.Errorf("token without read: %+v, want 403", d)
	}
}

// A with modifier can swap the data that names the claim (or the function
// itself): then no claim name is known, and decisions are keyed by token.
func TestDecisionKeyedByTokenWithModifier(t *testing.T) {
	e, _ := newEngineCfg(t, policy.Config{}, map[string]string{
		"p.rego": `package envoy.authz

import data.settings

default allow := false

allow if claim_is(settings.tier_claim, "gold") with data.settings.tier_claim as input.attributes.request.http.headers["x-claim"]

claim_is(name, value) if input.token.claims[name] == value
`,
		"data.json": `{"settings": {"tier_claim": "tier"}}`,
	})
	r := getRequest("/api/x", map[string]string{"x-claim": "level"})
	alice := tenantToken(t, e, "alice", "acme", "gold", "read")
	alice.Claims["level"] = "gold"
	bob := tenantToken(t, e, "bob", "acme", "gold", "read")
	if d := decideN(t, e, r, alice, 2)[1]; !d.Allowed {
		t.Fatalf("alice (level gold): %+v", d)
	}
	if policy.DecisionCached(e, r, bob) {
		t.Fatal("bob (no level claim) was served alice's decision")
	}
	if d := decideN(t, e, r, bob, 1)[0]; d.Allowed {
		t.Fatal("bob allowed on alice's level claim")
	}
}

// The Open Banking accounts API: the consent a token was granted for is a
// claim the shipped policies read through fapi.consent_matches, named by
// data (openbanking_intent_id). Mallory's token, of the same client and
// scope as Alice's, presenting Alice's consent id gets no decision cached
// for Alice's token.
func TestShippedConsentNotSharedAcrossTokens(t *testing.T) {
	e, err := policy.New(policy.Config{Dir: "../../policies", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	consentToken := func(sub, consent string) *token.Token {
		tok := &token.Token{Active: true, Kind: token.KindOpaque, Scopes: []string{"accounts"}, ClientID: "tpp-1", Subject: sub,
			Claims: map[string]any{"sub": sub, "client_id": "tpp-1", "openbanking_intent_id": consent}}
		if err := e.PrepareToken(tok); err != nil {
			t.Fatal(err)
		}
		return tok
	}
	r := getRequest("/accounts/1", map[string]string{"consent-id": "c-alice"})
	r.ContextExtensions = map[string]string{"api": "ob-accounts"}
	alice, mallory := consentToken("alice", "c-alice"), consentToken("mallory", "c-mallory")
	for _, d := range decideN(t, e, r, alice, 2) {
		if !d.Allowed {
			t.Fatalf("alice with her consent: %+v", d)
		}
	}
	if policy.DecisionCached(e, r, mallory) {
		t.Fatal("mallory was served alice's cached decision")
	}
	for _, d := range decideN(t, e, r, mallory, 2) {
		if d.Allowed || d.Status != 403 {
			t.Fatalf("mallory with alice's consent id: %+v, want 403", d)
		}
	}
	// Another token for Alice's consent (a refreshed one) shares it.
	if !policy.DecisionCached(e, r, consentToken("alice-2", "c-alice")) {
		t.Error("a new token for the same consent, client and scope evaluated again")
	}
}
