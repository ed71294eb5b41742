package binding_test

import (
	"context"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz/binding"
)

// Issue 13 item 5: Envoy's :authority is the Host the client chose. A proof
// the client made for another site (https://evil.example/x, say for a
// server that then replays it here) matches a request sent with Host:
// evil.example when htu is compared with Host alone. With dpop.origins the
// htu must name one of the API's own origins.
func TestBindDPoPOrigins(t *testing.T) {
	k := keys()
	jkt := thumbprint(t, &k.es256.PublicKey)
	bank := binding.Config{Origins: []string{"https://api.bank.example", "https://pay.bank.example:8443"}}
	cases := []struct {
		name       string
		cfg        binding.Config
		htu        string
		host, path string
		scheme     string // default https
		ok         bool
	}{
		// The attack: the proof and the Host both say evil.example.
		{name: "evil htu replayed with Host evil (no origins: passes, the defect)", htu: "https://evil.example/x", host: "evil.example", path: "/x", ok: true},
		{name: "evil htu replayed with Host evil", cfg: bank, htu: "https://evil.example/x", host: "evil.example", path: "/x"},
		{name: "evil htu, Host an origin", cfg: bank, htu: "https://evil.example/x", host: "api.bank.example", path: "/x"},
		{name: "origin htu with Host evil", cfg: bank, htu: "https://api.bank.example/x", host: "evil.example", path: "/x", ok: true},
		{name: "origin htu over http", cfg: bank, htu: "http://api.bank.example/x", host: "evil.example", path: "/x"},
		{name: "origin htu, the default port", cfg: bank, htu: "https://API.bank.example:443/x", host: "api.bank.example", path: "/x", ok: true},
		{name: "origin htu, another port", cfg: bank, htu: "https://api.bank.example:8443/x", host: "internal:8080", path: "/x"},
		{name: "second origin with its port", cfg: bank, htu: "https://pay.bank.example:8443/x", host: "internal:8080", path: "/x", ok: true},
		{name: "second origin without its port", cfg: bank, htu: "https://pay.bank.example/x", host: "internal:8080", path: "/x"},
		// Host names one origin: the proof must be for that one.
		{name: "Host one origin, htu the other", cfg: bank, htu: "https://pay.bank.example:8443/x", host: "api.bank.example", path: "/x"},
		{name: "origin htu, another path", cfg: bank, htu: "https://api.bank.example/y", host: "api.bank.example", path: "/x"},
		{name: "origin htu with userinfo", cfg: bank, htu: "https://u@api.bank.example/x", host: "api.bank.example", path: "/x"},
		{name: "a suffix of an origin", cfg: bank, htu: "https://evilapi.bank.example/x", host: "evilapi.bank.example", path: "/x"},

		// The path, normalised as Envoy forwards it (normalize_path, then
		// merge_slashes): a legitimate htu written with // or /./ matches.
		{name: "htu with //", htu: "https://api.example.com//v1//accounts", host: "api.example.com", path: "/v1/accounts", ok: true},
		{name: "htu with /./", htu: "https://api.example.com/v1/./accounts", host: "api.example.com", path: "/v1/accounts", ok: true},
		{name: "htu with // and /./, origins set", cfg: bank, htu: "https://api.bank.example//v1/./accounts", host: "api.bank.example", path: "/v1/accounts?page=2", ok: true},
		{name: "htu with ..", htu: "https://api.example.com/v1/x/../accounts", host: "api.example.com", path: "/v1/accounts", ok: true},
		{name: "htu with a//.. (dot segments before slashes, as Envoy)", htu: "https://api.example.com/v1/a//../accounts", host: "api.example.com", path: "/v1/a/accounts", ok: true},
		{name: "htu with a//.., merged first would be /v1/accounts", htu: "https://api.example.com/v1/a//../accounts", host: "api.example.com", path: "/v1/accounts"},
		{name: "htu escaping an unreserved character", htu: "https://api.example.com/v1/%61ccounts", host: "api.example.com", path: "/v1/accounts", ok: true},
		{name: "htu escaped slash is not a slash", htu: "https://api.example.com/v1%2Faccounts", host: "api.example.com", path: "/v1/accounts"},
		{name: "htu .. above the root", htu: "https://api.example.com/../../v1/accounts", host: "api.example.com", path: "/v1/accounts", ok: true},
		{name: "htu dot segment to another API", htu: "https://api.example.com/v1/accounts/../admin", host: "api.example.com", path: "/v1/accounts"},
		{name: "request path not normalised by Envoy", htu: "https://api.example.com/v1/accounts", host: "api.example.com", path: "//v1/./accounts", ok: true},
		{name: "trailing slash still differs", htu: "https://api.example.com/v1/accounts/", host: "api.example.com", path: "/v1/accounts"},
		{name: "htu /. at the end", htu: "https://api.example.com/v1/accounts/.", host: "api.example.com", path: "/v1/accounts/", ok: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newProof(t, tok1, now)
			p.claims["htu"] = tc.htu
			in := dpopInput(p.sign(t))
			in.Host, in.Path = tc.host, tc.path
			if tc.scheme != "" {
				in.URLScheme = tc.scheme
			}
			_, err := newBinder(t, tc.cfg).Bind(context.Background(), in, dpopToken(jkt))
			if tc.ok {
				checkErr(t, err, nil, "")
			} else {
				checkErr(t, err, binding.ErrInvalidProof, "htu")
			}
		})
	}
}

func TestNewRefusesOrigins(t *testing.T) {
	for _, o := range []string{"api.bank.example", "ftp://api.bank.example", "https://", "https://u:p@api.bank.example",
		"https://api.bank.example/v1", "https://api.bank.example?x", "https://api.bank.example#f", "https://api.bank.example/?", "%zz"} {
		if _, err := binding.New(binding.Config{Origins: []string{o}}); err == nil {
			t.Errorf("origin %q accepted", o)
		}
	}
	for _, o := range []string{"https://api.bank.example", "https://api.bank.example/", "http://127.0.0.1:10000", "https://[::1]:8443"} {
		if _, err := binding.New(binding.Config{Origins: []string{o}}); err != nil {
			t.Errorf("origin %q: %v", o, err)
		}
	}
}
