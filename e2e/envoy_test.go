package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// An opaque token with the right scope reaches the upstream as a JWT signed
// by phantom-authz, carrying Hydra's claims; the opaque token never does.
func TestEnvoyForwardsJWTInsteadOfOpaqueToken(t *testing.T) {
	t.Parallel()
	s := newStack(t, authzOptions{})
	tok := s.hydra.token(t, "read")

	r := s.call(t, http.MethodGet, "/api/accounts/42", tok, nil)
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", r.status, r.body)
	}
	up := r.upstream(t)
	if up.Path != "/api/accounts/42" {
		t.Errorf("upstream path %q", up.Path)
	}
	auth := up.Headers["authorization"]
	if len(auth) != 1 || !strings.HasPrefix(auth[0], "Bearer ") {
		t.Fatalf("upstream authorization = %q, want one Bearer JWT", auth)
	}
	jwt := strings.TrimPrefix(auth[0], "Bearer ")
	if jwt == tok || strings.Count(jwt, ".") != 2 {
		t.Fatalf("upstream got %q, not a JWT", jwt)
	}
	for name, values := range up.Headers {
		for _, v := range values {
			if strings.Contains(v, tok) {
				t.Errorf("the opaque token reached the upstream in %s", name)
			}
		}
	}

	claims := verifyJWT(t, s.authz.httpURL, jwt)
	hydraSaid := s.hydra.introspect(t, tok)
	for _, c := range []string{"sub", "client_id", "scope"} {
		if claims[c] != hydraSaid[c] || claims[c] == nil {
			t.Errorf("JWT %s = %v, Hydra says %v", c, claims[c], hydraSaid[c])
		}
	}
	if claims["client_id"] != clientID {
		t.Errorf("JWT client_id = %v, want %s", claims["client_id"], clientID)
	}

	// The public health route skips ext_authz altogether, and a token sent
	// to it anyway does not go upstream either.
	if r := s.call(t, http.MethodGet, "/healthz", "", nil); r.status != http.StatusOK || !r.fromUpstream() {
		t.Errorf("/healthz without a token: %d %s", r.status, r.body)
	}
	if up := s.call(t, http.MethodGet, "/healthz", tok, nil).upstream(t); up.Headers["authorization"] != nil {
		t.Errorf("/healthz passed the client's token upstream: %q", up.Headers["authorization"])
	}
}

// Each refusal carries the standard challenge and a problem+json body, and
// none reaches the upstream.
func TestEnvoyDenials(t *testing.T) {
	t.Parallel()
	s := newStack(t, authzOptions{})
	read := s.hydra.token(t, "read")

	tests := []struct {
		name, method, token string
		extra               http.Header
		status              int
		wantError, scope    string
	}{
		{name: "no token", method: "GET", status: 401},
		{name: "junk token", method: "GET", token: "ory_at_not-a-token.at-all", status: 401, wantError: "invalid_token"},
		{name: "wrong scope", method: "POST", token: read, status: 403, wantError: "insufficient_scope", scope: "write"},
		// Envoy sends each header occurrence apart (encode_raw_headers), so
		// a second Authorization is seen, not joined into the first.
		{name: "two authorization headers", method: "GET", token: read, extra: http.Header{"Authorization": {"Bearer " + read}},
			status: 400, wantError: "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := s.call(t, tc.method, "/api/accounts/42", tc.token, tc.extra)
			p := r.denial(t, tc.status)
			if p.Error != tc.wantError || p.Scope != tc.scope {
				t.Errorf("problem error=%q scope=%q, want %q %q", p.Error, p.Scope, tc.wantError, tc.scope)
			}
			ch := r.header.Get("WWW-Authenticate")
			if !strings.HasPrefix(ch, `Bearer realm="phantom-authz"`) {
				t.Errorf("WWW-Authenticate %q, want a Bearer challenge with the realm", ch)
			}
			if tc.wantError == "" && strings.Contains(ch, "error=") {
				t.Errorf("WWW-Authenticate %q: a request without a token gets no error code (RFC 6750 §3.1)", ch)
			}
			if tc.wantError != "" && !strings.Contains(ch, `error="`+tc.wantError+`"`) {
				t.Errorf("WWW-Authenticate %q, want error=%q", ch, tc.wantError)
			}
			if tc.scope != "" && !strings.Contains(ch, `scope="`+tc.scope+`"`) {
				t.Errorf("WWW-Authenticate %q, want scope=%q", ch, tc.scope)
			}
		})
	}
}

// Headers phantom-authz owns (x-user-*, x-jwt-*) are removed from the
// client's request whatever their case: the upstream can trust them.
func TestEnvoyStripsOwnedHeaders(t *testing.T) {
	t.Parallel()
	s := newStack(t, authzOptions{})
	tok := s.hydra.token(t, "read")

	spoof := http.Header{
		"X-User-Id":     {"admin"},
		"X-User-Roles":  {"superuser"},
		"X-Jwt-Payload": {`{"sub":"admin"}`},
		"X-Request-Tag": {"kept"}, // not owned: passes
	}
	up := s.call(t, http.MethodGet, "/api/accounts/42", tok, spoof).upstream(t)
	for name := range up.Headers {
		if strings.HasPrefix(name, "x-user-") || strings.HasPrefix(name, "x-jwt-") {
			t.Errorf("client-sent %s reached the upstream: %q", name, up.Headers[name])
		}
	}
	if got := up.Headers["x-request-tag"]; len(got) != 1 || got[0] != "kept" {
		t.Errorf("x-request-tag = %q, want the client's value", got)
	}

	// x_user_id is x-user-id to many upstreams: Envoy refuses it outright.
	r := s.call(t, http.MethodGet, "/api/accounts/42", tok, http.Header{"X_user_id": {"admin"}})
	if r.status != http.StatusBadRequest || r.fromUpstream() {
		t.Errorf("x_user_id: status %d, want 400 from Envoy: %s", r.status, r.body)
	}
}

// phantom-authz frozen or stopped: Envoy refuses (503, status_on_error) and
// never lets the request through; the public health route still answers.
func TestEnvoyFailsClosed(t *testing.T) {
	t.Parallel()
	s := newStack(t, authzOptions{})
	tok := s.hydra.token(t, "read")
	if r := s.call(t, http.MethodGet, "/api/accounts/1", tok, nil); r.status != http.StatusOK {
		t.Fatalf("before: status %d: %s", r.status, r.body)
	}

	refused := func(when string) {
		t.Helper()
		start := time.Now()
		r := s.call(t, http.MethodGet, "/api/accounts/1", tok, nil)
		if r.status != http.StatusServiceUnavailable && r.status != http.StatusForbidden {
			t.Errorf("%s: status %d, want 503 (or 403): %s", when, r.status, r.body)
		}
		if r.fromUpstream() {
			t.Errorf("%s: the request reached the upstream", when)
		}
		// ext_authz times out after 250 ms; leave room for a loaded machine.
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: refused after %s, want about the 250 ms ext_authz timeout", when, d)
		}
	}

	// Frozen: the connection is up but nothing answers: the timeout decides.
	s.authz.freeze(t)
	refused("phantom-authz frozen")
	s.authz.signal(t, syscall.SIGCONT)
	waitStatus(t, s, tok, http.StatusOK, 5*time.Second)

	// Stopped: connection refused.
	if err := s.authz.stop(); err != nil {
		t.Errorf("phantom-authz exit after SIGTERM: %v", err)
	}
	for i := 0; i < 3; i++ {
		refused("phantom-authz stopped")
	}
	if r := s.call(t, http.MethodGet, "/healthz", "", nil); r.status != http.StatusOK {
		t.Errorf("/healthz with phantom-authz down: %d %s", r.status, r.body)
	}
}

// waitStatus waits until GET /api/accounts/1 with tok answers want.
func waitStatus(t *testing.T, s *stack, tok string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r, err := s.try(http.MethodGet, "/api/accounts/1", tok, nil)
		if err == nil && r.status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %d after %s (last: %d %v %s)", want, timeout, r.status, err, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The policies a test installs, in place, while Envoy serves.
const (
	policyReadAllowed = `package envoy.authz

# Version 1: GET with scope read.
default allow := false

allow if {
	input.attributes.request.http.method == "GET"
	"read" in input.token.scopes
}
`
	policyWriteRequired = `package envoy.authz

# Version 2: scope write, for every method.
default allow := {"allowed": false, "http_status": 403, "error": "insufficient_scope", "scope": "write"}

allow := {"allowed": true} if "write" in input.token.scopes
`
	policyBroken = `package envoy.authz

allow if {
`
)

// Editing the policy while Envoy serves: the next requests follow the new
// policy, none fails in between, and a broken edit keeps the last good one.
func TestEnvoyPolicyReloadWhileServing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "authz.rego")
	writePolicy(t, file, policyReadAllowed)
	s := newStack(t, authzOptions{policyDir: dir})
	tok := s.hydra.token(t, "read")

	// A client calling back to back for the whole test.
	var (
		mu      sync.Mutex
		results []int // statuses in order; -1 a transport error
		stop    = make(chan struct{})
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := s.try(http.MethodGet, "/api/accounts/1", tok, nil)
			st := r.status
			if err != nil {
				st = -1
			}
			mu.Lock()
			results = append(results, st)
			mu.Unlock()
		}
	}()
	defer func() {
		close(stop)
		<-done
	}()
	snapshot := func() []int {
		mu.Lock()
		defer mu.Unlock()
		return append([]int(nil), results...)
	}
	waitFor := func(what string, ok func([]int) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok(snapshot()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s; statuses %v", what, summarize(snapshot()))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	countSince := func(from int, status int) func([]int) bool {
		return func(rs []int) bool {
			n := 0
			for _, st := range rs[from:] {
				if st == status {
					n++
				}
			}
			return n >= 20
		}
	}

	waitFor("200s under version 1", countSince(0, 200))

	edit := len(snapshot())
	writePolicy(t, file, policyWriteRequired)
	waitFor("403s under version 2", countSince(edit, 403))

	broken := len(snapshot())
	writePolicy(t, file, policyBroken)
	// Two poll intervals: the broken file has certainly been seen and refused.
	time.Sleep(2500 * time.Millisecond)
	waitFor("more 403s", countSince(broken, 403))
	if resp, err := http.Get(s.authz.httpURL + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("readyz after a broken policy edit: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	back := len(snapshot())
	writePolicy(t, file, policyReadAllowed)
	waitFor("200s under version 1 again", countSince(back, 200))

	// Every answer was one policy's or the other's: no failure in between,
	// no flapping back once a version took over.
	rs := snapshot()
	for i, st := range rs {
		if st != 200 && st != 403 {
			t.Fatalf("request %d got %d during the reloads; statuses %v", i, st, summarize(rs))
		}
	}
	phases := []struct {
		from, to int
		before   int
	}{{edit, broken, 200}, {back, len(rs), 403}}
	for _, ph := range phases {
		switched := false
		for _, st := range rs[ph.from:ph.to] {
			if st != ph.before {
				switched = true
			} else if switched {
				t.Errorf("went back to %d after the new policy answered; statuses %v", st, summarize(rs))
				break
			}
		}
	}
	for _, st := range rs[broken:back] {
		if st != 403 {
			t.Errorf("a broken edit changed the answers; statuses %v", summarize(rs))
			break
		}
	}
}

// writePolicy edits the policy file in place, as a person would.
func writePolicy(t *testing.T, path, src string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

// summarize turns [200 200 200 403 403] into "3×200 2×403".
func summarize(rs []int) string {
	var b strings.Builder
	for i := 0; i < len(rs); {
		j := i
		for j < len(rs) && rs[j] == rs[i] {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(j-i) + "×" + strconv.Itoa(rs[i]))
		i = j
	}
	return b.String()
}

// A token revoked at Hydra is refused once its cache entry expires
// (cache.max_ttl 2s here), and from then on.
func TestEnvoyRevokedTokenRefusedWithinCacheTTL(t *testing.T) {
	t.Parallel()
	const maxTTL = 2 * time.Second
	s := newStack(t, authzOptions{set: map[string]any{"cache.max_ttl": "2s", "cache.inactive_ttl": "1s"}})
	tok := s.hydra.token(t, "read")
	if r := s.call(t, http.MethodGet, "/api/accounts/1", tok, nil); r.status != http.StatusOK {
		t.Fatalf("before revocation: %d %s", r.status, r.body)
	}

	s.hydra.revoke(t, tok)
	revoked := time.Now()
	for {
		r := s.call(t, http.MethodGet, "/api/accounts/1", tok, nil)
		if r.status != http.StatusOK {
			if p := r.denial(t, http.StatusUnauthorized); p.Error != "invalid_token" {
				t.Errorf("revoked token: error %q, want invalid_token", p.Error)
			}
			break
		}
		if time.Since(revoked) > maxTTL+1500*time.Millisecond {
			t.Fatalf("revoked token still allowed %s after revocation (cache.max_ttl %s)", time.Since(revoked), maxTTL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("refused %s after revocation", time.Since(revoked).Round(time.Millisecond))
	for i := 0; i < 3; i++ {
		s.call(t, http.MethodGet, "/api/accounts/1", tok, nil).denial(t, http.StatusUnauthorized)
	}
}
