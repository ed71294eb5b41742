package e2e

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// What must never appear in the output of any process the suite starts
// (phantom-authz's logs on stderr and decision log on stdout, `phantom-authz
// config`, and Envoy, Hydra, Jaeger, Redis and the demo API as well): the
// tokens the tests obtain, the client secrets and Hydra's system secret of
// the test stacks, any JWT (the upstream JWTs phantom-authz mints, DPoP
// proofs) and any private key.
var secrets = &secretSet{values: map[string]bool{
	clientSecret:                             true,
	"e2e-only-not-a-secret-0123456789abcdef": true, // Hydra's SECRETS_SYSTEM
	"unused-by-hydra":                        true, // introspection.client_secret in envoy/local/phantom-authz.yaml
	pairwiseSecret:                           true,
	strings.Repeat("e2e-nonce-secret-", 3):   true, // dpop.nonce.secret_file of TestEnvoyDPoPNonce
	configSecret:                             true,
}}

var (
	jwtPattern        = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*`)
	privateKeyPattern = regexp.MustCompile(`PRIVATE KEY|"d"\s*:\s*"`)
)

type secretSet struct {
	mu     sync.Mutex
	values map[string]bool
	// logs is every phantom-authz output of the run, checked once more at
	// the end against the secrets known by then.
	logs []capturedLog
}

type capturedLog struct {
	test string
	text string
}

func (s *secretSet) add(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[v] = true
}

// leaks describes each line of text holding a secret, without repeating
// the secret.
func (s *secretSet) leaks(text string) []string {
	s.mu.Lock()
	values := make([]string, 0, len(s.values))
	for v := range s.values {
		values = append(values, v)
	}
	s.mu.Unlock()
	var out []string
	for i, line := range strings.Split(text, "\n") {
		for _, v := range values {
			if strings.Contains(line, v) {
				out = append(out, fmt.Sprintf("line %d holds a secret starting %q", i+1, v[:min(8, len(v))]))
			}
		}
		if jwtPattern.MatchString(line) {
			out = append(out, fmt.Sprintf("line %d holds a JWT", i+1))
		}
		if privateKeyPattern.MatchString(line) {
			out = append(out, fmt.Sprintf("line %d holds a private key", i+1))
		}
	}
	return out
}

// checkOutput checks the output of the process or command name (its
// stdout and stderr) for secrets when a test ends, and keeps it for the
// final check of the run. startProcess calls it for every process the
// suite starts (phantom-authz, Envoy, Hydra, Jaeger, Redis, the demo API),
// and the tests that run a phantom-authz command for its output.
func checkOutput(t *testing.T, name, text string) {
	t.Helper()
	secrets.mu.Lock()
	secrets.logs = append(secrets.logs, capturedLog{test: t.Name() + " (" + name + ")", text: text})
	secrets.mu.Unlock()
	for _, l := range secrets.leaks(text) {
		t.Errorf("the output of %s leaks: %s", name, l)
	}
}

// checkProcessOutput is checkOutput for a process once it has stopped.
func checkProcessOutput(t *testing.T, p *process) {
	t.Helper()
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Errorf("reading the output of %s: %v", p.name, err)
		return
	}
	checkOutput(t, p.name, string(b))
}

// watchLog was the check of one phantom-authz process; startProcess now
// checks every process it starts, so it does nothing.
func watchLog(*testing.T, *process) {}

// checkAllLogs runs after every test: the output of every process and
// command of the run against every secret any test obtained (a token one
// test got may only be known after another's process ended).
func checkAllLogs() error {
	secrets.mu.Lock()
	logs := secrets.logs
	secrets.mu.Unlock()
	var found []string
	for _, l := range logs {
		for _, leak := range secrets.leaks(l.text) {
			found = append(found, l.test+": "+leak)
		}
	}
	if len(found) > 0 {
		return fmt.Errorf("secrets in the output of the processes of the run:\n  %s", strings.Join(found, "\n  "))
	}
	return nil
}

// The scan that guards every phantom-authz output finds what it must: a
// known token, a JWT, a private key; and passes ordinary log lines.
func TestSecretScanFindsLeaks(t *testing.T) {
	t.Parallel()
	s := &secretSet{values: map[string]bool{"ory_at_sample-token.abc": true}}
	clean := `{"time":"2026-05-01T12:00:00Z","level":"INFO","msg":"denied","reason":"invalid_token","status":401}`
	if l := s.leaks(clean); len(l) != 0 {
		t.Errorf("an ordinary line flagged: %v", l)
	}
	for _, leak := range []string{
		`{"msg":"denied","token":"ory_at_sample-token.abc"}`,
		`authorization=Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl`,
		`-----BEGIN EC PRIVATE KEY-----`,
	} {
		if l := s.leaks(clean + "\n" + leak); len(l) != 1 || !strings.HasPrefix(l[0], "line 2 ") {
			t.Errorf("%q: leaks %v, want one on line 2", leak, l)
		}
	}
}
