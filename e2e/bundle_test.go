package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// bundleTarball is an OPA bundle (OPA's own writer) holding one policy, at
// manifest revision rev.
func bundleTarball(t *testing.T, rego, rev string) []byte {
	t.Helper()
	b := bundle.Bundle{
		Data:     map[string]any{},
		Manifest: bundle.Manifest{Revision: rev},
		Modules:  []bundle.ModuleFile{{URL: "envoy/authz/authz.rego", Path: "envoy/authz/authz.rego", Raw: []byte(rego)}},
	}
	b.Manifest.Init()
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).DisableFormat(true).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Policies from a bundle server through real Envoy: phantom-authz is not
// ready until the first bundle is in; a GET with scope read is allowed by
// bundle v1; the server swaps in v2 (scope write required) and the same
// request is refused within a few seconds, with no failure in between.
func TestEnvoyPolicyBundle(t *testing.T) {
	t.Parallel()
	needTools(t)

	// The bundle server: 503 until told to serve, then the current
	// tarball with its ETag (304 when unchanged). It demands a credential.
	const credential = "bundle-credential-e2e-5b0c1d"
	secrets.add(credential)
	var (
		mu       sync.Mutex
		serving  bool
		body     []byte
		etag     string
		failures int
	)
	set := func(b []byte, rev string) {
		mu.Lock()
		defer mu.Unlock()
		body, etag, serving = b, `"`+rev+`"`, true
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Header.Get("Authorization") != "Bearer "+credential:
			http.Error(w, "no credential", http.StatusUnauthorized)
		case !serving:
			failures++
			http.Error(w, "not yet", http.StatusServiceUnavailable)
		case r.Header.Get("If-None-Match") == etag:
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("ETag", etag)
			w.Header().Set("Content-Type", "application/gzip")
			_, _ = w.Write(body)
		}
	}))
	defer srv.Close()
	tokenFile := filepath.Join(t.TempDir(), "bundle-token")
	if err := os.WriteFile(tokenFile, []byte(credential), 0o600); err != nil {
		t.Fatal(err)
	}

	h := startHydra(t)
	gp, hp := freePort(t), freePort(t)
	cfg := writeAuthzConfig(t, gp, hp, h.adminURL+"/admin/oauth2/introspect", authzOptions{set: map[string]any{
		"policy.bundle": map[string]any{
			"url":                 srv.URL + "/bundles/authz.tar.gz",
			"poll_min":            "1s",
			"poll_max":            "1s",
			"token_file":          tokenFile,
			"allow_insecure_http": true,
		},
	}})
	a := &authzServer{grpcAddr: fmt.Sprintf("127.0.0.1:%d", gp), grpcPort: gp, httpURL: fmt.Sprintf("http://127.0.0.1:%d", hp)}
	a.process = startProcess(t, "phantom-authz", []string{"TMPDIR=" + t.TempDir()}, []int{gp, hp},
		bins.authz, "serve", "--config", cfg)
	watchLog(t, a.process)

	// Serving, but not ready while the bundle server fails.
	deadline := time.Now().Add(15 * time.Second)
	for {
		mu.Lock()
		n := failures
		mu.Unlock()
		resp, err := http.Get(a.httpURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Fatal("/readyz answers 200 before any bundle was served")
			}
			if n > 0 && resp.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 503 from /readyz while the bundle server fails (%d failures seen; last %v)\n%s", n, err, a.tail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	conn, err := grpc.NewClient(a.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("gRPC health before the first bundle: %v %v, want NOT_SERVING", hr, err)
	}

	set(bundleTarball(t, policyReadAllowed, "v1"), "v1")
	a.waitHTTP(t, a.httpURL+"/readyz", 10*time.Second)

	s := &stack{hydra: h, authz: a}
	s.envoy = startEnvoy(t, gp, startDemo(t), 0)
	tok := h.token(t, "read")
	if r := s.call(t, http.MethodGet, "/api/accounts/1", tok, nil); r.status != http.StatusOK {
		t.Fatalf("under bundle v1: %d %s", r.status, r.body)
	}

	set(bundleTarball(t, policyWriteRequired, "v2"), "v2")
	swapped := time.Now()
	waitStatus(t, s, tok, http.StatusForbidden, 5*time.Second)
	t.Logf("bundle v2 deciding through Envoy %s after the swap (poll interval 1s)", time.Since(swapped).Round(10*time.Millisecond))

	// The failed downloads before v1 and both activations are counted.
	m := scrape(t, a.httpURL)
	if m[`phantom_authz_policy_reloads_total{outcome=failed}`] < 1 || m[`phantom_authz_policy_reloads_total{outcome=ok}`] != 2 {
		t.Errorf("reload metrics: failed %v, ok %v; want ≥1 and 2",
			m[`phantom_authz_policy_reloads_total{outcome=failed}`], m[`phantom_authz_policy_reloads_total{outcome=ok}`])
	}

	// The denial is v2's, and the log names the activated revisions.
	r := s.call(t, http.MethodGet, "/api/accounts/1", tok, nil)
	if p := r.denial(t, http.StatusForbidden); p.Error != "insufficient_scope" {
		t.Errorf("denial under v2: %+v", p)
	}
	log := a.tail(200)
	for _, want := range []string{`"revision":"v1"`, `"revision":"v2"`, `"stage":"download"`, "503 Service Unavailable"} {
		if !strings.Contains(log, want) {
			t.Errorf("phantom-authz's log lacks %s:\n%s", want, log)
		}
	}
}
