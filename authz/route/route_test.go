package route_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz/route"
)

func table(t testing.TB) *route.Table {
	t.Helper()
	tb, err := route.NewTable([]route.Entry{
		{Name: "health", PathPrefix: "/health", Settings: route.Settings{Public: true}},
		{Name: "transactions", Path: "/accounts/{id}/transactions", Methods: []string{"GET"},
			Settings: route.Settings{API: "accounts", SenderConstrained: "required",
				Upstream: &route.Upstream{Audience: []string{"https://accounts.internal"}, Scopes: []string{"accounts:read"}}}},
		{Name: "accounts", PathPrefix: "/accounts/", Settings: route.Settings{API: "accounts", SenderConstrained: "required"}},
		{Name: "payments-eu", Hosts: []string{"*.eu.example.com"}, PathPrefix: "/payments", Settings: route.Settings{API: "payments-eu", DryRun: true}},
		{Name: "payments", Hosts: []string{"api.example.com"}, PathPrefix: "/payments", Settings: route.Settings{API: "payments"}},
		{Name: "admin", Path: "/admin", Settings: route.Settings{API: "admin", SenderConstrained: "mtls"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// The route a request gets is the first entry matching its host, its
// normalised path and its method; a path written to look like another
// route's never gets that route's settings.
func TestSelect(t *testing.T) {
	tb := table(t)
	for _, c := range []struct {
		name, method, host, path string
		want                     string // entry name, "" for none
		params                   string
	}{
		{"template", "GET", "api.example.com", "/accounts/42/transactions?from=1", "transactions", "id=42"},
		{"template method mismatch falls to the prefix", "POST", "api.example.com", "/accounts/42/transactions", "accounts", ""},
		{"template needs its segment", "GET", "h", "/accounts//transactions", "accounts", ""},
		{"template does not match deeper paths", "GET", "h", "/accounts/42/transactions/x", "accounts", ""},
		{"prefix ends at a segment", "GET", "h", "/healthz", "", ""},
		{"prefix itself", "GET", "h", "/health", "health", ""},
		{"prefix below", "GET", "h", "/health/live", "health", ""},
		{"dot segments climb out of the public prefix", "GET", "h", "/health/../admin", "admin", ""},
		{"encoded dots climb out too", "GET", "h", "/health/%2e%2E/admin", "admin", ""},
		{"dot segments into a template", "GET", "h", "/accounts/7/./transactions", "transactions", "id=7"},
		{"double slash", "GET", "h", "//admin", "admin", ""},
		{"encoded letters", "GET", "h", "/%61dmin", "admin", ""},
		{"admin is exact", "GET", "h", "/admin/x", "", ""},
		{"climbing above the root", "GET", "h", "/../../admin", "admin", ""},
		{"wildcard host", "GET", "a.eu.example.com", "/payments/1", "payments-eu", ""},
		{"wildcard host, deeper", "GET", "a.b.eu.example.com:8443", "/payments", "payments-eu", ""},
		{"wildcard is not the apex", "GET", "eu.example.com", "/payments", "", ""},
		{"suffix must be whole labels", "GET", "evil-eu.example.com", "/payments", "", ""},
		{"exact host with port and case", "GET", "API.Example.com:443", "/payments", "payments", ""},
		{"trailing dot host", "GET", "api.example.com.", "/payments", "payments", ""},
		{"other host", "GET", "api.example.org", "/payments", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := tb.Select(&route.Request{Method: c.method, Host: c.host, Path: c.path})
			if err != nil {
				t.Fatal(err)
			}
			if r.Name() != c.want {
				t.Fatalf("route %q, want %q (%s)", r.Name(), c.want, r.Why())
			}
			var ps []string
			for _, p := range r.Params() {
				ps = append(ps, p.Name+"="+p.Value)
			}
			if got := strings.Join(ps, ","); got != c.params {
				t.Errorf("params %q, want %q", got, c.params)
			}
		})
	}
}

// Paths whose segments an upstream could read differently are refused
// outright, whichever route they aim at.
func TestSelectRefusesAmbiguousPaths(t *testing.T) {
	tb := table(t)
	for _, p := range []string{
		"/health/..%2Fadmin", "/health/..%2fadmin", "/health%5C..%5Cadmin", "/health\\..\\admin",
		"/admin%00", "/admin%", "/admin%zz", "/admin\x00", "/admin\n",
		"/health//../admin", "/admin//%2e%2E/health", "//../admin",
	} {
		_, err := tb.Select(&route.Request{Method: "GET", Path: p})
		if !errors.Is(err, route.ErrPath) {
			t.Errorf("%q: err %v, want ErrPath", p, err)
		}
	}
}

// Envoy's context extensions override route metadata, which overrides the
// table, key by key.
func TestSelectOverrides(t *testing.T) {
	tb := table(t)
	r, err := tb.Select(&route.Request{Method: "GET", Path: "/health",
		Metadata:          map[string]string{"public": "false", "api": "meta", "dry_run": "true"},
		ContextExtensions: map[string]string{"api": "accounts"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Public || !r.DryRun || r.API != "accounts" || r.Name() != "health" {
		t.Errorf("route %+v: want public off (metadata), dry_run on (metadata), api accounts (context extensions)", r.Settings)
	}
	// The upstream JWT settings follow the API the overrides name.
	if r.Upstream == nil || r.Upstream.Audience[0] != "https://accounts.internal" {
		t.Errorf("upstream %+v, want the accounts API's", r.Upstream)
	}
	if !strings.Contains(r.Why(), "context_extensions") || !strings.Contains(r.Why(), "route metadata") {
		t.Errorf("why %q names neither source", r.Why())
	}

	// Without a table, Envoy alone sets the route.
	var none *route.Table
	r, err = none.Select(&route.Request{Method: "GET", Path: "/x//../y", ContextExtensions: map[string]string{"public": "true"}})
	if err != nil || !r.Public || !r.Matched() {
		t.Errorf("nil table: %+v, %v", r, err)
	}
	for _, bad := range []map[string]string{{"public": "yes"}, {"dry_run": "1"}} {
		if _, err := tb.Select(&route.Request{Method: "GET", Path: "/", ContextExtensions: bad}); !errors.Is(err, route.ErrSetting) {
			t.Errorf("%v: err %v, want ErrSetting", bad, err)
		}
	}
}

func TestNewTableRefuses(t *testing.T) {
	up := &route.Upstream{Audience: []string{"a"}}
	for _, c := range []struct {
		entries []route.Entry
		want    string
	}{
		{[]route.Entry{{Path: "/a"}}, "routes[0].name"},
		{[]route.Entry{{Name: "a", Path: "/a"}, {Name: "a", Path: "/b"}}, "routes[1].name"},
		{[]route.Entry{{Name: "a"}}, "routes[0].path"},
		{[]route.Entry{{Name: "a", Path: "/a", PathPrefix: "/a"}}, "routes[0].path"},
		{[]route.Entry{{Name: "a", Path: "/a/../b"}}, "routes[0].path"},
		{[]route.Entry{{Name: "a", Path: "//a"}}, "routes[0].path"},
		{[]route.Entry{{Name: "a", Path: "/a/{id}x"}}, "routes[0].path"},
		{[]route.Entry{{Name: "a", Path: "/a/{id}/{id}"}}, "routes[0].path"},
		{[]route.Entry{{Name: "a", PathPrefix: "/a/./"}}, "routes[0].path_prefix"},
		{[]route.Entry{{Name: "a", Path: "/a", Hosts: []string{"a*.b"}}}, "routes[0].hosts"},
		{[]route.Entry{{Name: "a", Path: "/a", Methods: []string{"get"}}}, "routes[0].methods"},
		{[]route.Entry{{Name: "a", Path: "/a", Settings: route.Settings{SenderConstrained: "yes"}}}, "routes[0].sender_constrained"},
		{[]route.Entry{{Name: "a", Path: "/a", Settings: route.Settings{Upstream: up}}}, "routes[0].upstream_jwt"},
		{[]route.Entry{{Name: "a", Path: "/a", Settings: route.Settings{API: "x", Upstream: up}},
			{Name: "b", Path: "/b", Settings: route.Settings{API: "x", Upstream: &route.Upstream{Audience: []string{"b"}}}}}, "routes[1].upstream_jwt"},
	} {
		_, err := route.NewTable(c.entries)
		if err == nil || !strings.HasPrefix(err.Error(), c.want+":") {
			t.Errorf("%+v: err %v, want one naming %s", c.entries, err, c.want)
		}
	}
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"/":                 "/",
		"/a/b/":             "/a/b/",
		"/a//b///c":         "/a/b/c",
		"/a/./b/../c":       "/a/c",
		"/a/b/..":           "/a/",
		"/%7Euser/%c3%a9":   "/~user/%C3%A9",
		"/a%2e%2E/b":        "/a../b",
		"/a/%2e%2e/b":       "/b",
		"/a%20b":            "/a%20b",
		"*":                 "*",
		"/accounts/42/tx":   "/accounts/42/tx",
		"/../../etc/passwd": "/etc/passwd",
	} {
		got, err := route.Normalize(in)
		if err != nil || got != want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// A clean path and a matching table cost no allocation.
func TestSelectAllocates(t *testing.T) {
	tb := table(t)
	req := &route.Request{Method: "GET", Host: "api.example.com", Path: "/accounts/42/transactions"}
	if n := testing.AllocsPerRun(100, func() {
		if r, err := tb.Select(req); err != nil || r.Name() != "transactions" {
			t.Fatal(r.Name(), err)
		}
	}); n != 0 {
		t.Errorf("Select allocates %v times per request, want 0", n)
	}
}

func BenchmarkSelect(b *testing.B) {
	tb := table(b)
	req := &route.Request{Method: "GET", Host: "api.example.com", Path: "/accounts/42/transactions"}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = tb.Select(req)
	}
}
