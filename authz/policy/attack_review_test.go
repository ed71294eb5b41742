package policy_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/policy"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// Decisions keyed by the values of the token fields the policies read
// (tokenkey.go, need.go), attacked: a client that can obtain tokens with
// claims of its choosing (a neighbouring tenant's) presents token B after
// token A was allowed. Whatever the policy, B must get the decision an
// evaluation would give B (here: a denial), never A's cached allow.

// attackTok is a token as the attacker can have one issued.
type attackTok struct {
	kind     token.Kind
	scopes   []string
	clientID string
	sub      string
	iss      string
	exp      time.Time
	claims   map[string]any
}

func (s attackTok) build() *token.Token {
	tok := &token.Token{Active: true, Kind: s.kind, Scopes: s.scopes, ClientID: s.clientID,
		Subject: s.sub, Issuer: s.iss, Expiry: s.exp, Claims: map[string]any{"jti": "j-" + s.sub}}
	if tok.Kind == "" {
		tok.Kind = token.KindOpaque
	}
	for k, v := range s.claims {
		tok.Claims[k] = v
	}
	return tok
}

const attackHeader = "package envoy.authz\n\nimport data.settings\n\ndefault allow := false\n\n"

const attackData = `{"settings": {"role_claim": "role", "claims": {"role": "role"}, "obj": {"a": 1}}}`

type attackCase struct {
	name   string
	policy string // after attackHeader
	hdrs   map[string]string
	a, b   attackTok // a is allowed; b must not be served a's decision
}

var attackCases = []attackCase{
	// Claims read through a function parameter.
	{
		name: "negated equality on the name is not a binding",
		policy: `allow if has_entitlement(input.attributes.request.http.headers["x-entitlement"])

# Any boolean claim grants what it names, but the tier claim is not an entitlement.
has_entitlement(name) if {
	not name = "tier"
	claim_true(name)
}

claim_true(name) if input.token.claims[name] == true
`,
		hdrs: map[string]string{"x-entitlement": "admin"},
		a:    attackTok{sub: "alice", claims: map[string]any{"admin": true, "tier": "gold"}},
		b:    attackTok{sub: "mallory", claims: map[string]any{"tier": "gold"}},
	},
	{
		name: "negated equality, name from iteration",
		policy: `allow if {
	some name, v in input.attributes.contextExtensions
	v == "required"
	not name = "tier"
	claim_true(name)
}

claim_true(name) if input.token.claims[name] == true
`,
		a: attackTok{sub: "alice", claims: map[string]any{"admin": true, "tier": "gold"}},
		b: attackTok{sub: "mallory", claims: map[string]any{"tier": "gold"}},
	},
	{
		name:   "name from a virtual document computed from the request",
		policy: "claim_name := input.attributes.request.http.headers[\"x-claim\"]\n\nallow if is_root(claim_name)\n\nis_root(n) if input.token.claims[n] == \"root\"\n",
		hdrs:   map[string]string{"x-claim": "admin_role"},
		a:      attackTok{sub: "alice", claims: map[string]any{"admin_role": "root"}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"admin_role": "user"}},
	},
	{
		name:   "name passed down a chain of functions",
		policy: "allow if outer(\"role\")\n\nouter(n) if inner(n)\n\ninner(n) if input.token.claims[n] == \"root\"\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"role": "root"}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"role": "user"}},
	},
	{
		name:   "function of two parameters, the name second",
		policy: "allow if has(\"root\", settings.role_claim)\n\nhas(v, n) if input.token.claims[n] == v\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"role": "root"}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"role": "user"}},
	},
	{
		name:   "name bound to base data by a variable",
		policy: "allow if {\n\tn := settings.role_claim\n\tis_root(n)\n}\n\nis_root(n) if input.token.claims[n] == \"root\"\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"role": "root"}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"role": "user"}},
	},
	{
		name:   "call in the rule's head",
		policy: "allow := claim(\"role\") == \"root\"\n\nclaim(n) := input.token.claims[n]\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"role": "root"}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"role": "user"}},
	},
	{
		name:   "call in a comprehension's head",
		policy: "allow if {\n\txs := [claim(\"role\") | true]\n\txs[0] == \"root\"\n}\n\nclaim(n) := x if x := input.token.claims[n]\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"role": "root"}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"role": "user"}},
	},
	{
		name:   "name from a partial set",
		policy: "names := {\"role\"}\n\nallow if {\n\tsome n in names\n\tinput.token.claims[n] == \"root\"\n}\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"role": "root"}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"role": "user"}},
	},
	{
		name:   "a with modifier elsewhere in the set",
		policy: "allow if is_root(settings.role_claim) with data.settings.obj as {}\n\nis_root(n) if input.token.claims[n] == \"root\"\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"role": "root"}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"role": "user"}},
	},
	// All claims, or the whole token, read at once.
	{
		name:   "walk over the claims",
		policy: "allow if {\n\twalk(input.token.claims, [_, v])\n\tv == \"root\"\n}\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"x": map[string]any{"y": "root"}}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"x": map[string]any{"y": "user"}}},
	},
	{
		name:   "object.get with a name from the request",
		policy: "allow if object.get(input.token.claims, input.attributes.request.http.headers[\"x-claim\"], false) == true\n",
		hdrs:   map[string]string{"x-claim": "admin"},
		a:      attackTok{sub: "alice", claims: map[string]any{"admin": true}},
		b:      attackTok{sub: "mallory"},
	},
	{
		name:   "object.get with a path into the token",
		policy: "allow if object.get(input.token, [\"claims\", \"admin\"], false) == true\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"admin": true}},
		b:      attackTok{sub: "mallory"},
	},
	{
		name:   "object.keys of the claims",
		policy: "allow if \"admin\" in object.keys(input.token.claims)\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"admin": false}},
		b:      attackTok{sub: "mallory"},
	},
	{
		name:   "count of the claims",
		policy: "allow if count(input.token.claims) > 2\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"a": 1, "b": 2}},
		b:      attackTok{sub: "mallory"},
	},
	{
		name:   "json.marshal of the token",
		policy: "allow if contains(json.marshal(input.token), \"root\")\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"note": "root"}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"note": "user"}},
	},
	{
		name:   "json.marshal of the whole input",
		policy: "allow if contains(json.marshal(input), \"root\")\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"note": "root"}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"note": "user"}},
	},
	{
		name:   "claims iterated by a variable",
		policy: "allow if {\n\tsome k\n\tinput.token.claims[k] == \"root\"\n}\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"anything": "root"}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"anything": "user"}},
	},
	{
		name:   "the token through a local alias",
		policy: "allow if {\n\tt := input.token\n\tt.claims.role == \"root\"\n}\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"role": "root"}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"role": "user"}},
	},
	{
		name:   "the token through an import alias",
		policy: "import input.token as t\n\nallow if t.claims.role == \"root\"\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"role": "root"}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"role": "user"}},
	},
	{
		name:   "brackets instead of dots",
		policy: "allow if input[\"token\"][\"claims\"][\"role\"] == \"root\"\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"role": "root"}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"role": "user"}},
	},
	{
		name:   "every over a claim",
		policy: "allow if every g in [\"a\", \"b\"] { g in input.token.claims.groups }\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"groups": []any{"a", "b"}}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"groups": []any{"a"}}},
	},
	// Values.
	{
		name:   "nested claim path, the other part of the object",
		policy: "allow if {\n\tinput.token.claims.org.id == \"acme\"\n\tinput.token.claims.org.role == \"admin\"\n}\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"org": map[string]any{"id": "acme", "role": "admin"}}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"org": map[string]any{"id": "acme", "role": "user"}}},
	},
	{
		name:   "array claim, an element deep inside",
		policy: "allow if input.token.claims.perms[1].admin == true\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"perms": []any{"x", map[string]any{"admin": true}}}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"perms": []any{"x", map[string]any{"admin": false}}}},
	},
	{
		name:   "numbers one ulp apart",
		policy: "allow if input.token.claims.level >= 10\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"level": float64(10)}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"level": 9.999999999999998}},
	},
	{
		name:   "integers beyond 2^53",
		policy: "allow if input.token.claims.n == 9007199254740993\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"n": json.Number("9007199254740993")}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"n": json.Number("9007199254740992")}},
	},
	{
		name:   "null against absent",
		policy: "allow if input.token.claims.revoked == null\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"revoked": nil}},
		b:      attackTok{sub: "mallory"},
	},
	// Token fields besides the claims.
	{
		name:   "exp",
		policy: "allow if input.token.exp > 2000000000\n",
		a:      attackTok{sub: "alice", exp: time.Unix(2100000000, 0)},
		b:      attackTok{sub: "mallory", exp: time.Unix(1900000000, 0)},
	},
	{
		name:   "cnf",
		policy: "allow if input.token.cnf.jkt == \"key-a\"\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"cnf": map[string]any{"jkt": "key-a"}}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"cnf": map[string]any{"jkt": "key-b"}}},
	},
	{
		name:   "kind",
		policy: "allow if input.token.kind == \"jwt\"\n",
		a:      attackTok{sub: "alice", kind: token.KindJWT},
		b:      attackTok{sub: "mallory", kind: token.KindOpaque},
	},
	{
		name:   "iss",
		policy: "allow if input.token.iss == \"https://idp-a\"\n",
		a:      attackTok{sub: "alice", iss: "https://idp-a"},
		b:      attackTok{sub: "mallory", iss: "https://idp-b"},
	},
	{
		name:   "sub",
		policy: "allow if input.token.sub == \"alice\"\n",
		a:      attackTok{sub: "alice"},
		b:      attackTok{sub: "mallory"},
	},
	{
		name:   "client_id present against absent",
		policy: "allow if not input.token.client_id\n",
		a:      attackTok{sub: "alice"},
		b:      attackTok{sub: "mallory", clientID: "tpp"},
	},
	// Separators: two tuples of values that one string joined without
	// lengths would not tell apart.
	{
		name:   "two claims shifted",
		policy: "allow if {\n\tinput.token.claims.tenant == \"ac\"\n\tinput.token.claims.tier == \"me\"\n}\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"tenant": "ac", "tier": "me"}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"tenant": "a", "tier": "cme"}},
	},
	{
		name:   "client_id and sub shifted",
		policy: "allow if {\n\tinput.token.client_id == \"ab\"\n\tinput.token.sub == \"c\"\n}\n",
		a:      attackTok{clientID: "ab", sub: "c"},
		b:      attackTok{clientID: "a", sub: "bc"},
	},
	{
		name:   "one scope with a space against two",
		policy: "allow if \"read write\" in input.token.scopes\n",
		a:      attackTok{sub: "alice", scopes: []string{"read write"}},
		b:      attackTok{sub: "mallory", scopes: []string{"read", "write"}},
	},
	{
		name:   "a length byte inside a value",
		policy: "allow if {\n\tinput.token.claims.a == \"x\\u0001y\"\n\tinput.token.claims.b == \"z\"\n}\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"a": "x\x01y", "b": "z"}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"a": "x", "b": "y\x01z"}},
	},
	{
		name:   "object claim: key and value shifted",
		policy: "allow if input.token.claims.m == {\"ab\": \"c\"}\n",
		a:      attackTok{sub: "alice", claims: map[string]any{"m": map[string]any{"ab": "c"}}},
		b:      attackTok{sub: "mallory", claims: map[string]any{"m": map[string]any{"a": "bc"}}},
	},
}

// TestAttackTokenServedAnothersDecision decides A (twice, so its decision
// is cached), then B, and compares each with what an engine without a
// decision cache answers.
func TestAttackTokenServedAnothersDecision(t *testing.T) {
	for _, c := range attackCases {
		t.Run(c.name, func(t *testing.T) {
			files := map[string]string{"p.rego": attackHeader + c.policy, "data.json": attackData}
			cached, _ := newEngineCfg(t, policy.Config{}, files)
			plain, _ := newEngineCfg(t, policy.Config{DecisionCacheBytes: -1}, files)
			r := getRequest("/api/x", c.hdrs)
			r.ContextExtensions = map[string]string{"admin": "required"}
			truth := func(s attackTok) authz.Decision {
				tok := s.build()
				if err := plain.PrepareToken(tok); err != nil {
					t.Fatal(err)
				}
				d, err := plain.Decide(context.Background(), r, tok)
				if err != nil {
					t.Fatal(err)
				}
				return d
			}
			if !truth(c.a).Allowed || truth(c.b).Allowed {
				t.Fatalf("the case is wrong: A must be allowed and B denied when evaluated")
			}
			a, b := c.a.build(), c.b.build()
			for _, tok := range []*token.Token{a, b} {
				if err := cached.PrepareToken(tok); err != nil {
					t.Fatal(err)
				}
			}
			for _, d := range decideN(t, cached, r, a, 2) {
				if !d.Allowed {
					t.Fatalf("A: %+v", d)
				}
			}
			if policy.DecisionCached(cached, r, b) {
				t.Errorf("B is served the decision cached for A")
			}
			if d := decideN(t, cached, r, b, 1)[0]; d.Allowed {
				t.Errorf("B allowed with A's decision: %+v", d)
			}
		})
	}
}

// A token prepared under one policy set, decided under the next (which
// reads a claim the first did not), is not served by its key of the first.
func TestAttackReloadBetweenPrepareAndDecide(t *testing.T) {
	e, dir := newEngineCfg(t, policy.Config{PollInterval: 20 * time.Millisecond}, map[string]string{
		"p.rego": attackHeader + "allow if \"read\" in input.token.scopes\n",
	})
	r := getRequest("/api/x", nil)
	alice := attackTok{sub: "alice", scopes: []string{"read"}, claims: map[string]any{"tenant": "acme"}}.build()
	mallory := attackTok{sub: "mallory", scopes: []string{"read"}, claims: map[string]any{"tenant": "evil"}}.build()
	for _, tok := range []*token.Token{alice, mallory} {
		if err := e.PrepareToken(tok); err != nil {
			t.Fatal(err)
		}
	}
	// Both keyed by scopes alone under the first set: they share.
	decideN(t, e, r, alice, 2)
	if !policy.DecisionCached(e, r, mallory) {
		t.Fatal("first set: tokens of equal scopes do not share (the test assumes they do)")
	}
	writeFiles(t, dir, map[string]string{"p.rego": attackHeader +
		"allow if {\n\t\"read\" in input.token.scopes\n\tinput.token.claims.tenant == \"acme\"\n}\n"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Watch(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	eventually(t, 3*time.Second, "reload", func() bool { ok, _ := e.Reloads(); return ok > 0 })
	for _, d := range decideN(t, e, r, alice, 2) {
		if !d.Allowed {
			t.Fatalf("alice after reload: %+v", d)
		}
	}
	if policy.DecisionCached(e, r, mallory) {
		t.Error("mallory, prepared under the old set, is served alice's decision of the new one")
	}
	if d := decideN(t, e, r, mallory, 1)[0]; d.Allowed {
		t.Errorf("mallory allowed after reload: %+v", d)
	}
}

// A decision that called a non-deterministic builtin is never cached, even
// when the token's key would allow it.
func TestAttackNondeterministicNotCached(t *testing.T) {
	e, _ := newEngineCfg(t, policy.Config{}, map[string]string{"p.rego": attackHeader +
		"allow if {\n\tinput.token.claims.role == \"root\"\n\ttime.now_ns() > 0\n}\n"})
	r := getRequest("/api/x", nil)
	alice := attackTok{sub: "alice", claims: map[string]any{"role": "root"}}.build()
	if err := e.PrepareToken(alice); err != nil {
		t.Fatal(err)
	}
	decideN(t, e, r, alice, 2)
	if policy.DecisionCached(e, r, alice) {
		t.Error("a decision that read the clock was cached")
	}
}
