package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `check` says which route a request got and why: the table entry, its
// template parameters, and the Envoy settings that override it.
func TestCheckCommandExplainsRoute(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "policies")
	if err := os.Mkdir(pol, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pol, "p.rego"), []byte("package envoy.authz\nallow if input.route.params.id == \"42\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(`
policy: {dir: `+pol+`}
routes:
  - name: health
    path_prefix: /health
    public: true
  - name: transactions
    hosts: ["*.bank.example"]
    path: /accounts/{id}/transactions
    methods: [GET]
    api: accounts
    dry_run: true
`), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(req string) checkResult {
		t.Helper()
		cmd := checkCmd()
		var out, errOut bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetIn(strings.NewReader(req))
		cmd.SetArgs([]string{"--config", cfg, "--request", "-"})
		if err := cmd.Execute(); err != nil {
			t.Fatalf("%v: %s", err, errOut.String())
		}
		var res checkResult
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatalf("%v: %s", err, out.String())
		}
		return res
	}

	res := run(`{"attributes":{"request":{"http":{"method":"GET","host":"api.bank.example","path":"/accounts/42/./transactions?x=1"}},
		"contextExtensions":{"dry_run":"false"}}}`)
	rt := res.Route
	if !res.Allowed || rt.Name != "transactions" || rt.API != "accounts" || rt.Template != "/accounts/{id}/transactions" || rt.Params["id"] != "42" || rt.DryRun {
		t.Errorf("result %+v: want allowed on route transactions with id 42, dry_run off by the context extension", res)
	}
	for _, want := range []string{`"transactions"`, "/accounts/{id}/transactions", "*.bank.example", `id="42"`, "context_extensions"} {
		if !strings.Contains(rt.Why, want) {
			t.Errorf("why %q does not mention %s", rt.Why, want)
		}
	}

	res = run(`{"attributes":{"request":{"http":{"method":"GET","host":"api.bank.example","path":"/health/../accounts/1/transactions"}}}}`)
	if res.Route.Name != "transactions" || res.Route.Params["id"] != "1" || !res.DryRun || res.Status != 403 || res.Reason != "policy_denied" {
		t.Errorf("dot segments: %+v, want the transactions route (id 1), denied (403) but let through by its dry_run", res)
	}
	res = run(`{"attributes":{"request":{"http":{"method":"GET","host":"x","path":"/nowhere"}}}}`)
	if res.Route.Name != "" || !strings.Contains(res.Route.Why, "no route table entry matched") {
		t.Errorf("no route: %+v", res.Route)
	}
}
