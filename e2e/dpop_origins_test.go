package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// Issue 13 item 5 through real Envoy: a DPoP proof the client made for
// another site (https://evil.example/x) must not be accepted here when the
// request is replayed with Host: evil.example. The shipped Envoy config
// names its domains, so such a Host never reaches a route; and with a
// catch-all virtual host (domains ["*"], as many deployments have),
// dpop.origins refuses the proof. A legitimate htu written with // and /./
// matches the path Envoy normalises.
func TestEnvoyDPoPOrigins(t *testing.T) {
	t.Parallel()
	const origin = "https://api.bank.example"
	s := newTLSStack(t, map[string]any{"dpop": map[string]any{"origins": []any{origin}}})
	catchAll := startEnvoyTLS(t, s.authz.grpcPort, startDemo(t), s.pki, func(cfg map[string]any) {
		vh := at(cfg, "static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config",
			"route_config", "virtual_hosts", 0).(map[string]any)
		vh["domains"] = []any{"*"}
	})
	key := newDPoPKey(t)
	const tok = "dpop-bound-token"
	s.tokens.add(tok, map[string]any{"jkt": key.jkt})

	// call sends GET path to the Envoy at base with the Host header host.
	call := func(t *testing.T, base, host, path string, hdr http.Header) response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		for k, vs := range hdr {
			req.Header[k] = vs
		}
		resp, err := s.pki.client(&s.pki.clientA).Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return response{status: resp.StatusCode, header: resp.Header, body: b}
	}
	evil := func(t *testing.T) http.Header {
		return dpopHeaders(tok, key.proof(t, "GET", "https://evil.example/api/accounts/1", tok, nil))
	}

	t.Run("shipped domains: Host evil.example reaches no route", func(t *testing.T) {
		r := call(t, s.url, "evil.example", "/api/accounts/1", evil(t))
		if r.status == http.StatusOK || r.fromUpstream() {
			t.Fatalf("Host evil.example: status %d, reached the upstream: %s", r.status, r.body)
		}
	})
	t.Run("catch-all host: proof for evil.example replayed with its Host", func(t *testing.T) {
		r := call(t, catchAll, "evil.example", "/api/accounts/1", evil(t))
		p := r.denial(t, http.StatusUnauthorized)
		if p.Error != "invalid_dpop_proof" || !strings.Contains(p.Detail, "htu") {
			t.Errorf("error %q (%s), want invalid_dpop_proof about htu", p.Error, p.Detail)
		}
		dpopChallenge(t, r, "invalid_dpop_proof")
	})
	t.Run("catch-all host: htu with // and /./ for the configured origin", func(t *testing.T) {
		const path = "//api/./accounts/1"
		hdr := dpopHeaders(tok, key.proof(t, "GET", origin+path, tok, nil))
		r := call(t, catchAll, "api.bank.example", path, hdr)
		s.upstreamClaims(t, r, tok)
		if got := r.upstream(t).Path; got != "/api/accounts/1" {
			t.Errorf("upstream path %q, want Envoy's normalised /api/accounts/1", got)
		}
	})
	t.Run("shipped domains: the same legitimate proof through a named host", func(t *testing.T) {
		const path = "/api//accounts/./1"
		hdr := dpopHeaders(tok, key.proof(t, "GET", origin+path, tok, nil))
		s.upstreamClaims(t, call(t, s.url, "localhost", path, hdr), tok)
	})
}
