package policy_test

import (
	"context"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/phantom-authz/phantom-authz/authz/policy"
)

// TestLibraryRego runs the Rego tests of the helper library (lib/*_test.rego).
func TestLibraryRego(t *testing.T) {
	ctx := context.Background()
	modules, store, err := tester.LoadWithRegoVersion([]string{"lib"}, nil, ast.RegoV1)
	if err != nil {
		t.Fatal(err)
	}
	// The embedded copy, not lib/fapi.rego itself: the tests check what ships.
	lib, err := policy.Library()
	if err != nil {
		t.Fatal(err)
	}
	for name := range modules {
		if modules[name].Package.Path.String() == "data.phantom.fapi" {
			delete(modules, name)
		}
	}
	for name, m := range lib {
		modules[name] = m
	}
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Abort(ctx, txn)
	results, err := tester.NewRunner().SetStore(store).SetModules(modules).
		SetDefaultRegoVersion(ast.RegoV1).RaiseBuiltinErrors(true).RunTests(ctx, txn)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for r := range results {
		n++
		switch {
		case r.Error != nil:
			t.Errorf("%s: %s: error: %v", r.Location, r.Name, r.Error)
		case r.Fail:
			t.Errorf("%s: %s: FAIL", r.Location, r.Name)
		}
	}
	if n < 20 {
		t.Fatalf("%d library Rego tests ran, want every one of lib/fapi_test.rego", n)
	}
}

// The library is there whatever policy.dir holds, and a step-up policy
// written with it answers the decision RFC 9470 asks for.
func TestLibraryAlwaysLoaded(t *testing.T) {
	e := newEngine(t, map[string]string{"p.rego": `package envoy.authz

import data.phantom.fapi

sca := {"acr_values": ["urn:openbanking:psd2:sca"], "max_age": 300}

default allow := {"allowed": true}

allow := fapi.step_up(sca) if not fapi.authenticated(sca)
`})
	tok := activeToken("read")
	d, err := e.Decide(context.Background(), getRequest("/x", nil), tok)
	if err != nil {
		t.Fatal(err)
	}
	if d.Allowed || d.Status != 401 || d.Error != "insufficient_user_authentication" ||
		d.ACRValues != "urn:openbanking:psd2:sca" || d.MaxAge == nil || *d.MaxAge != 300 {
		t.Fatalf("decision = %+v, want the step-up denial", d)
	}

	tok.Claims = map[string]any{"acr": "urn:openbanking:psd2:sca", "auth_time": float64(time.Now().Unix() - 10)}
	d, err = e.Decide(context.Background(), getRequest("/x", nil), tok)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Allowed {
		t.Fatalf("decision = %+v, want allowed for a recent SCA", d)
	}
}

// The step-up fields of the decision object: acr_values as a string or an
// array, max_age in seconds (0 included: "authenticate now").
func TestStepUpDecisionFields(t *testing.T) {
	tests := []struct {
		rule   string
		acr    string
		maxAge int
		hasMax bool
	}{
		{`{"allowed": false, "http_status": 401, "error": "insufficient_user_authentication", "acr_values": ["urn:a", "urn:b"]}`, "urn:a urn:b", 0, false},
		{`{"allowed": false, "acr_values": "urn:a"}`, "urn:a", 0, false},
		{`{"allowed": false, "max_age": 0}`, "", 0, true},
		{`{"allowed": false, "max_age": 300, "acr_values": ["urn:x"]}`, "urn:x", 300, true},
	}
	for _, tt := range tests {
		e := newEngine(t, map[string]string{"p.rego": "package envoy.authz\nallow := " + tt.rule + "\n"})
		d, err := e.Decide(context.Background(), getRequest("/", nil), nil)
		if err != nil {
			t.Fatalf("%s: %v", tt.rule, err)
		}
		if d.ACRValues != tt.acr || (d.MaxAge != nil) != tt.hasMax || (tt.hasMax && *d.MaxAge != tt.maxAge) {
			t.Errorf("%s: acr_values %q max_age %v, want %q %d (set: %v)", tt.rule, d.ACRValues, d.MaxAge, tt.acr, tt.maxAge, tt.hasMax)
		}
	}
}

// max_age reads the clock: the same token and request are allowed, then
// refused once the authentication is too old, whatever is cached.
func TestStepUpMaxAgeFollowsTheClock(t *testing.T) {
	e := newEngine(t, map[string]string{"p.rego": `package envoy.authz

import data.phantom.fapi

default allow := {"allowed": true}

allow := fapi.step_up({"max_age": 1}) if not fapi.authenticated({"max_age": 1})
`})
	tok := activeToken("read")
	tok.Claims = map[string]any{"auth_time": float64(time.Now().Unix())}
	if err := e.PrepareToken(tok); err != nil {
		t.Fatal(err)
	}
	req := getRequest("/x", nil)
	for range 3 {
		if d, err := e.Decide(context.Background(), req, tok); err != nil || !d.Allowed {
			t.Fatalf("fresh authentication: %+v, %v", d, err)
		}
	}
	time.Sleep(2100 * time.Millisecond)
	d, err := e.Decide(context.Background(), req, tok)
	if err != nil {
		t.Fatal(err)
	}
	if d.Allowed || d.Error != "insufficient_user_authentication" || d.MaxAge == nil || *d.MaxAge != 1 {
		t.Fatalf("2 s later: %+v, want the step-up denial", d)
	}
}

// Policies that name each header they read get those headers (the input
// builds only them); a policy that reads the whole map gets every header.
func TestNamedHeaders(t *testing.T) {
	req := getRequest("/x", map[string]string{"consent-id": "c-1", "x-other": "o"})
	for name, rule := range map[string]string{
		"named":       `allow if { input.attributes.request.http.headers["consent-id"] == "c-1"; not input.attributes.request.http.headers["x-missing"] }`,
		"two named":   `allow if { input.attributes.request.http.headers["consent-id"] == "c-1"; input.attributes.request.http.headers["x-other"] == "o" }`,
		"whole map":   `allow if { count(input.attributes.request.http.headers) == 5; input.attributes.request.http.headers["consent-id"] == "c-1" }`,
		"by variable": `allow if { some k; input.attributes.request.http.headers[k] == "o"; k == "x-other" }`,
	} {
		e := newEngine(t, map[string]string{"p.rego": "package envoy.authz\n" + rule + "\n"})
		d, err := e.Decide(context.Background(), req, nil)
		if err != nil || !d.Allowed {
			t.Errorf("%s: %+v, %v", name, d, err)
		}
	}
	e := newEngine(t, map[string]string{"p.rego": "package envoy.authz\nallow if input.attributes.request.http.headers[\"consent-id\"] == \"c-1\"\n"})
	if d, _ := e.Decide(context.Background(), getRequest("/x", map[string]string{"consent-id": "c-2"}), nil); d.Allowed {
		t.Error("another header value allowed")
	}
}
