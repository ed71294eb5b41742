package policy_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/phantom-authz/phantom-authz/authz/internal/logtest"
	"github.com/phantom-authz/phantom-authz/authz/policy"
)

// bundleSigner signs test bundles as `opa sign` does.
type bundleSigner struct {
	privatePEM, publicFile string
	alg, keyID, scope      string
}

func newRSASigner(t *testing.T) *bundleSigner {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return newSigner(t, k, &k.PublicKey, "RS256")
}

func newES256Signer(t *testing.T) *bundleSigner {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return newSigner(t, k, &k.PublicKey, "ES256")
}

func newSigner(t *testing.T, priv, pub any, alg string) *bundleSigner {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "bundle-key.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &bundleSigner{
		privatePEM: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		publicFile: file, alg: alg, keyID: "release",
	}
}

// makeBundle builds a bundle tarball with OPA's bundle writer: rego files
// by path, one data document, the manifest revision, and a signature when
// sign is set. tamper, when set, changes a module after signing.
func makeBundle(t *testing.T, rego map[string]string, data map[string]any, revision string,
	sign *bundleSigner, tamper bool) []byte {
	t.Helper()
	b := bundle.Bundle{Data: data, Manifest: bundle.Manifest{Revision: revision}}
	b.Manifest.Init()
	if b.Data == nil {
		b.Data = map[string]any{}
	}
	for path, src := range rego {
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: path, Path: path, Raw: []byte(src)})
	}
	if sign != nil {
		sc := bundle.NewSigningConfig(sign.privatePEM, sign.alg, "")
		if sign.scope != "" {
			claims := filepath.Join(t.TempDir(), "claims.json")
			if err := os.WriteFile(claims, fmt.Appendf(nil, `{"scope": %q}`, sign.scope), 0o600); err != nil {
				t.Fatal(err)
			}
			sc.ClaimsPath = claims
		}
		if err := b.GenerateSignature(sc, sign.keyID, false); err != nil {
			t.Fatal(err)
		}
	}
	if tamper {
		b.Modules[0].Raw = append(b.Modules[0].Raw, []byte("\nextra := 1\n")...)
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).DisableFormat(true).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// policyBundle is a bundle whose decision is allowed, with reason as its
// detail, at revision rev.
func policyBundle(t *testing.T, allowed bool, rev string, sign *bundleSigner) []byte {
	t.Helper()
	return makeBundle(t, map[string]string{
		"envoy/authz/authz.rego":      "package envoy.authz\n\nallow := {\"allowed\": data.envoy.authz.allowed, \"reason\": data.envoy.authz.reason}\n",
		"envoy/authz/authz_test.rego": "package envoy.authz\n\n# Would conflict with authz.rego if served.\nallow := false\n",
	}, map[string]any{"envoy": map[string]any{"authz": map[string]any{"allowed": allowed, "reason": rev}}}, rev, sign, false)
}

// bundleServer is an HTTP bundle server: it serves one tarball with an
// ETag, answers 304 to a matching If-None-Match, or fails as told.
type bundleServer struct {
	*httptest.Server
	token string // bearer credential demanded, when set

	mu          sync.Mutex
	body        []byte
	etag        string
	fail        int    // status to answer instead, when set
	garbage     bool   // answer 200 with a body that is not a tarball
	requests    int    // GETs of the bundle
	notModified int    // of them answered 304
	ifNoneMatch string // the last If-None-Match
	query       string // the last request's query
}

func newBundleServer(t *testing.T, body []byte) *bundleServer {
	t.Helper()
	s := &bundleServer{}
	s.set(body)
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *bundleServer) url() string { return s.URL + "/bundles/authz.tar.gz" }

func (s *bundleServer) set(body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body = body
	s.etag = fmt.Sprintf(`"%d-%d"`, len(body), time.Now().UnixNano())
	s.fail, s.garbage = 0, false
}

func (s *bundleServer) failWith(status int, garbage bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail, s.garbage = status, garbage
}

func (s *bundleServer) stats() (requests, notModified int, ifNoneMatch, etag string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests, s.notModified, s.ifNoneMatch, s.etag
}

func (s *bundleServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.URL.Path != "/bundles/authz.tar.gz" || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	if s.token != "" && r.Header.Get("Authorization") != "Bearer "+s.token {
		http.Error(w, "who are you", http.StatusUnauthorized)
		return
	}
	s.requests++
	s.ifNoneMatch = r.Header.Get("If-None-Match")
	s.query = r.URL.RawQuery
	switch {
	case s.fail != 0:
		http.Error(w, "bundle store down", s.fail)
	case s.garbage:
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = w.Write([]byte("this is not a tarball"))
	case s.ifNoneMatch == s.etag:
		s.notModified++
		w.WriteHeader(http.StatusNotModified)
	default:
		w.Header().Set("ETag", s.etag)
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = w.Write(s.body)
	}
}

// bundleEngine starts an engine polling cfg.URL every second and returns
// it with its log.
func bundleEngine(t *testing.T, cfg policy.BundleConfig) (*policy.Engine, *logtest.Buffer) {
	t.Helper()
	cfg.PollMin, cfg.PollMax = time.Second, time.Second
	cfg.AllowInsecureHTTP = true
	var logs logtest.Buffer
	e, err := policy.New(policy.Config{Bundle: &cfg, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Watch(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return e, &logs
}

// eventually polls cond for up to timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// decision returns the engine's decision for GET /, or fails the test.
func decision(t *testing.T, e *policy.Engine) (allowed bool, reason string) {
	t.Helper()
	d, err := e.Decide(context.Background(), getRequest("/", nil), nil)
	if err != nil {
		t.Fatalf("decide: %v", err)
	}
	return d.Allowed, d.Detail
}

// Not ready until the first bundle is in; then it decides by the bundle,
// reports the manifest revision, and a new bundle (new ETag) takes over
// within the poll interval. The bundle server's credential is sent and
// never logged.
func TestBundleFirstLoadAndSwap(t *testing.T) {
	t.Parallel()
	srv := newBundleServer(t, policyBundle(t, true, "v1", nil))
	srv.token = "s3cret-bundle-token"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(srv.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var logs logtest.Buffer
	cfg := policy.BundleConfig{URL: srv.url(), PollMin: time.Second, PollMax: time.Second, AllowInsecureHTTP: true, TokenFile: tokenFile}
	e, err := policy.New(policy.Config{Bundle: &cfg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if e.Ready() {
		t.Fatal("ready before any bundle was loaded")
	}
	if d, err := e.Decide(context.Background(), getRequest("/", nil), nil); err == nil || d.Status != http.StatusServiceUnavailable {
		t.Fatalf("decision before any bundle = %+v, %v; want a 503 error", d, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Watch(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	eventually(t, 3*time.Second, "first bundle activated", e.Ready)
	if allowed, reason := decision(t, e); !allowed || reason != "v1" {
		t.Fatalf("decision under v1 = %v %q", allowed, reason)
	}
	if e.Revision() != "v1" {
		t.Errorf("revision = %q, want the manifest's v1", e.Revision())
	}

	srv.set(policyBundle(t, false, "v2", nil))
	swapped := time.Now()
	eventually(t, 3*time.Second, "v2 decides", func() bool { allowed, _ := decision(t, e); return !allowed })
	t.Logf("new bundle deciding %s after the swap (poll interval 1s)", time.Since(swapped).Round(time.Millisecond))
	if _, reason := decision(t, e); reason != "v2" || e.Revision() != "v2" {
		t.Errorf("after the swap: reason %q, revision %q", reason, e.Revision())
	}
	if ok, failed := e.Reloads(); ok != 2 || failed != 0 {
		t.Errorf("reloads ok=%d failed=%d, want 2 and 0", ok, failed)
	}
	log := logs.String()
	if !strings.Contains(log, "policy: bundle activated") || !strings.Contains(log, "revision=v2") {
		t.Errorf("activation not logged with its revision:\n%s", log)
	}
	if strings.Contains(log, srv.token) {
		t.Errorf("the bundle server's credential is in the log:\n%s", log)
	}
}

// An unchanged bundle is not downloaded again: the server sees the active
// bundle's ETag in If-None-Match, answers 304, and nothing reloads.
func TestBundleNotModified(t *testing.T) {
	t.Parallel()
	srv := newBundleServer(t, policyBundle(t, true, "v1", nil))
	e, _ := bundleEngine(t, policy.BundleConfig{URL: srv.url()})
	eventually(t, 3*time.Second, "first bundle activated", e.Ready)
	eventually(t, 5*time.Second, "two polls answered 304", func() bool {
		_, n, _, _ := srv.stats()
		return n >= 2
	})
	requests, notModified, inm, etag := srv.stats()
	if inm != etag {
		t.Errorf("If-None-Match = %q, want the served ETag %q", inm, etag)
	}
	if ok, failed := e.Reloads(); ok != 1 || failed != 0 {
		t.Errorf("reloads ok=%d failed=%d after %d requests (%d answered 304), want 1 and 0", ok, failed, requests, notModified)
	}
	if allowed, reason := decision(t, e); !allowed || reason != "v1" {
		t.Errorf("decision = %v %q", allowed, reason)
	}
}

// Whatever goes wrong with a new bundle, the last good set keeps serving,
// the failure is logged with its reason and counted, and the next poll
// tries again: a good bundle then takes over.
func TestBundleFailuresKeepLastGood(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		break_ func(t *testing.T, s *bundleServer)
		reason string // in the log line
	}{
		{"server error", func(_ *testing.T, s *bundleServer) { s.failWith(http.StatusInternalServerError, false) },
			`stage=download`},
		{"not a tarball", func(_ *testing.T, s *bundleServer) { s.failWith(0, true) }, `stage=read`},
		{"does not compile", func(t *testing.T, s *bundleServer) {
			s.set(makeBundle(t, map[string]string{
				"envoy/authz/authz.rego": "package envoy.authz\n\nallow if no_such_function(input.x)\n",
			}, nil, "broken", nil, false))
		}, `stage=activate`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := newBundleServer(t, policyBundle(t, true, "good", nil))
			e, logs := bundleEngine(t, policy.BundleConfig{URL: srv.url()})
			eventually(t, 3*time.Second, "first bundle activated", e.Ready)

			c.break_(t, srv)
			eventually(t, 5*time.Second, "failure counted", func() bool { _, failed := e.Reloads(); return failed > 0 })
			if allowed, reason := decision(t, e); !allowed || reason != "good" || !e.Ready() || e.Revision() != "good" {
				t.Fatalf("after the failure: allowed %v reason %q ready %v revision %q", allowed, reason, e.Ready(), e.Revision())
			}
			log := logs.String()
			if !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "policy: bundle refused, keeping the last good policy set") ||
				!strings.Contains(log, c.reason) || !strings.Contains(log, "serving_revision=good") {
				t.Errorf("failure not logged with %s:\n%s", c.reason, log)
			}
			switch c.name {
			case "server error":
				if !strings.Contains(log, "500 Internal Server Error") {
					t.Errorf("status missing from the log:\n%s", log)
				}
			case "does not compile":
				if !strings.Contains(log, "envoy/authz/authz.rego:3") || !strings.Contains(log, "rego_type_error") {
					t.Errorf("compile error not logged with file:line:\n%s", log)
				}
			}

			// The next poll tries again: a fixed bundle takes over.
			srv.set(policyBundle(t, false, "fixed", nil))
			eventually(t, 5*time.Second, "fixed bundle decides", func() bool { _, reason := decision(t, e); return reason == "fixed" })
		})
	}
}

// With verification configured, a bundle signed with the key is served;
// one tampered with after signing, an unsigned one, one signed by another
// key or with another kid or scope are refused.
func TestBundleSignature(t *testing.T) {
	t.Parallel()
	rsaKey, esKey, other := newRSASigner(t), newES256Signer(t), newRSASigner(t)
	verification := func(s *bundleSigner, keyID, scope string) *policy.BundleVerification {
		return &policy.BundleVerification{PublicKeyFile: s.publicFile, KeyID: keyID, Algorithm: s.alg, Scope: scope}
	}
	scoped := *rsaKey
	scoped.scope = "prod"
	otherKid := *esKey
	otherKid.keyID = "someone-else"
	cases := []struct {
		name   string
		body   func(t *testing.T) []byte
		verify *policy.BundleVerification
		reason string // empty: accepted
	}{
		{"RS256 signed", func(t *testing.T) []byte { return policyBundle(t, true, "signed", rsaKey) }, verification(rsaKey, "", ""), ""},
		{"ES256 signed, key id", func(t *testing.T) []byte { return policyBundle(t, true, "signed", esKey) }, verification(esKey, "release", ""), ""},
		{"scope", func(t *testing.T) []byte { return policyBundle(t, true, "signed", &scoped) }, verification(rsaKey, "", "prod"), ""},
		{"tampered", func(t *testing.T) []byte {
			return makeBundle(t, map[string]string{"envoy/authz/authz.rego": "package envoy.authz\n\nallow := true\n"}, nil, "t", rsaKey, true)
		}, verification(rsaKey, "", ""), "digest mismatch"},
		{"unsigned", func(t *testing.T) []byte { return policyBundle(t, true, "unsigned", nil) }, verification(rsaKey, "", ""), "bundle missing .signatures.json file"},
		{"other key", func(t *testing.T) []byte { return policyBundle(t, true, "x", other) }, verification(rsaKey, "", ""), "failed to verify JWT signature"},
		{"other kid", func(t *testing.T) []byte { return policyBundle(t, true, "x", &otherKid) }, verification(esKey, "release", ""), "verification key corresponding to ID someone-else not found"},
		{"wrong scope", func(t *testing.T) []byte { return policyBundle(t, true, "x", rsaKey) }, verification(rsaKey, "", "prod"), "scope mismatch"},
		{"signed, no verification", func(t *testing.T) []byte { return policyBundle(t, true, "x", rsaKey) }, nil, "verification key not provided"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := newBundleServer(t, c.body(t))
			e, logs := bundleEngine(t, policy.BundleConfig{URL: srv.url(), Verification: c.verify})
			if c.reason == "" {
				eventually(t, 3*time.Second, "signed bundle activated", e.Ready)
				if allowed, _ := decision(t, e); !allowed {
					t.Error("signed bundle does not decide")
				}
				return
			}
			eventually(t, 3*time.Second, "refusal counted", func() bool { _, failed := e.Reloads(); return failed > 0 })
			if e.Ready() {
				t.Fatal("ready with a refused bundle")
			}
			if log := logs.String(); !strings.Contains(log, c.reason) || !strings.Contains(log, "stage=read") {
				t.Errorf("refusal not logged with %q:\n%s", c.reason, log)
			}
		})
	}
}

// With persist_dir, the last activated bundle is kept on disk, and a
// restart while the bundle server is down serves it.
func TestBundlePersisted(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "persist")
	signer := newRSASigner(t)
	srv := newBundleServer(t, policyBundle(t, true, "kept", signer))
	verify := &policy.BundleVerification{PublicKeyFile: signer.publicFile}
	e, _ := bundleEngine(t, policy.BundleConfig{URL: srv.url(), PersistDir: dir, Verification: verify})
	eventually(t, 3*time.Second, "first bundle activated", e.Ready)
	eventually(t, 3*time.Second, "bundle persisted", func() bool {
		_, err := os.Stat(filepath.Join(dir, "bundle.tar.gz"))
		return err == nil
	})
	down := srv.url()
	srv.Close()

	e2, logs := bundleEngine(t, policy.BundleConfig{URL: down, PersistDir: dir, Verification: verify})
	eventually(t, 3*time.Second, "persisted bundle served", e2.Ready)
	if allowed, reason := decision(t, e2); !allowed || reason != "kept" || e2.Revision() != "kept" {
		t.Errorf("persisted bundle decides %v %q at revision %q", allowed, reason, e2.Revision())
	}
	if log := logs.String(); !strings.Contains(log, "serving the persisted bundle") || !strings.Contains(log, "stage=download") {
		t.Errorf("fallback not logged:\n%s", log)
	}

	// A persisted copy that fails verification is not served.
	if err := os.WriteFile(filepath.Join(dir, "bundle.tar.gz"), policyBundle(t, true, "forged", newRSASigner(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	e3, logs3 := bundleEngine(t, policy.BundleConfig{URL: down, PersistDir: dir, Verification: verify})
	eventually(t, 3*time.Second, "persisted copy refused", func() bool {
		return strings.Contains(logs3.String(), "policy: persisted bundle refused")
	})
	if e3.Ready() {
		t.Error("a forged persisted bundle is served")
	}
}

// Fetch loads once, for commands that decide once; it fails when no bundle
// can be had.
func TestBundleFetch(t *testing.T) {
	t.Parallel()
	srv := newBundleServer(t, policyBundle(t, true, "once", nil))
	cfg := policy.BundleConfig{URL: srv.url(), AllowInsecureHTTP: true}
	e, err := policy.New(policy.Config{Bundle: &cfg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	if allowed, reason := decision(t, e); !allowed || reason != "once" {
		t.Errorf("decision = %v %q", allowed, reason)
	}

	srv.failWith(http.StatusNotFound, false)
	e2, err := policy.New(policy.Config{Bundle: &cfg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e2.Fetch(ctx); err == nil || e2.Ready() {
		t.Errorf("Fetch from a 404 = %v, ready %v", err, e2.Ready())
	}
}

// Construction errors name what is wrong.
func TestBundleConfigErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		cfg  policy.BundleConfig
		want string
	}{
		{policy.BundleConfig{URL: "ftp://example.com/b.tar.gz"}, "must be https"},
		{policy.BundleConfig{URL: "http://example.com/b.tar.gz"}, "must be https"},
		{policy.BundleConfig{URL: "https://example.com/b.tar.gz", PollMin: time.Minute, PollMax: time.Second}, "poll max"},
		{policy.BundleConfig{URL: "https://example.com/b.tar.gz", CAFile: "/nonexistent/ca.pem"}, "ca_file"},
		{policy.BundleConfig{URL: "https://example.com/b.tar.gz", Verification: &policy.BundleVerification{PublicKeyFile: "/nonexistent"}}, "verification key"},
	} {
		_, err := policy.New(policy.Config{Bundle: &c.cfg})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.cfg, err, c.want)
		}
	}
}

// An https bundle server is trusted through ca_file (and only through it:
// its test certificate is not in the system roots). A credential in the
// URL's query (a pre-signed URL) never reaches the log.
func TestBundleTLSAndURLSecrets(t *testing.T) {
	t.Parallel()
	plain := newBundleServer(t, policyBundle(t, true, "tls", nil))
	srv := httptest.NewUnstartedServer(plain.Config.Handler)
	srv.Config.ErrorLog = stdlog.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	const secret = "X-Amz-Signature=deadbeefcafe"
	url := srv.URL + "/bundles/authz.tar.gz?" + secret
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	var logs logtest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	e, err := policy.New(policy.Config{Bundle: &policy.BundleConfig{URL: url, CAFile: ca}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Fetch(ctx); err != nil {
		t.Fatalf("with ca_file: %v", err)
	}
	if allowed, reason := decision(t, e); !allowed || reason != "tls" {
		t.Errorf("decision = %v %q", allowed, reason)
	}
	plain.mu.Lock()
	if plain.query != secret {
		t.Errorf("the server got query %q, want the URL's", plain.query)
	}
	plain.mu.Unlock()

	untrusted, err := policy.New(policy.Config{Bundle: &policy.BundleConfig{URL: url}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := untrusted.Fetch(ctx); err == nil {
		t.Fatal("a server outside the trusted roots was accepted")
	}
	srv.Close()
	down, err := policy.New(policy.Config{Bundle: &policy.BundleConfig{URL: url, CAFile: ca}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := down.Fetch(ctx); err == nil {
		t.Fatal("Fetch from a closed server succeeded")
	}
	out := logs.String()
	if !strings.Contains(out, "certificate signed by unknown authority") || !strings.Contains(out, "connection refused") {
		t.Errorf("the failures are not logged:\n%s", out)
	}
	if strings.Contains(out, "deadbeefcafe") {
		t.Errorf("the URL's query is in the log:\n%s", out)
	}
}
