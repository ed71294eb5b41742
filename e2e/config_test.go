package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// configSecret is the client secret TestConfigCommand passes through the
// environment: it must not appear in any output.
const configSecret = "e2e-config-secret-from-env-0123456789"

// `phantom-authz config` prints the effective configuration of the local
// stack's file, the client secret coming from the environment (${VAR}) and
// the pairwise and DPoP nonce secrets from files, with every secret masked;
// its output goes through the run's secret scan. A `serve` refused for an
// invalid value next to a secret names the key, not the secret.
func TestConfigCommand(t *testing.T) {
	t.Parallel()
	needBinaries(t)
	dir := t.TempDir()
	pairwiseFile := filepath.Join(dir, "pairwise.key")
	nonceFile := filepath.Join(dir, "nonce.key")
	for path, v := range map[string]string{pairwiseFile: pairwiseSecret, nonceFile: strings.Repeat("e2e-nonce-secret-", 3)} {
		if err := os.WriteFile(path, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := writeAuthzConfig(t, freePort(t), freePort(t), "http://127.0.0.1:1/introspect", authzOptions{set: map[string]any{
		"introspection.client_secret": "${PA_E2E_CLIENT_SECRET}",
		"pairwise":                    map[string]any{"keys": []any{map[string]any{"id": "k1", "secret_file": pairwiseFile}}},
		"dpop":                        map[string]any{"nonce": map[string]any{"enabled": true, "secret_file": nonceFile}},
	}})
	env := []string{"PA_E2E_CLIENT_SECRET=" + configSecret}

	out, stderr, err := runAuthz(t, env, "config", "--config", cfg)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, stderr)
	}
	checkOutput(t, "phantom-authz config", out+stderr)
	for _, want := range []string{
		"client_secret: '***'", "secret_file: " + pairwiseFile, "secret_file: " + nonceFile,
		"endpoint: http://127.0.0.1:1/introspect", "max_recv_bytes: 4194304",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("config output lacks %q:\n%s", want, out)
		}
	}

	// An invalid value beside the secret: exit 2, the key named, the
	// secret (from the environment) not repeated.
	bad := filepath.Join(dir, "bad.yaml")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("${PA_E2E_CLIENT_SECRET}"), []byte("!!int ${PA_E2E_CLIENT_SECRET}"), 1)
	if err := os.WriteFile(bad, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"serve", "config", "check"} {
		args := []string{cmd, "--config", bad}
		if cmd == "check" {
			args = append(args, "--request", "-")
		}
		_, stderr, err := runAuthz(t, env, args...)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%s: exit %v, want status 2; stderr %s", cmd, err, stderr)
		}
		if !strings.Contains(stderr, "introspection.client_secret") {
			t.Errorf("%s: stderr %q does not name the key", cmd, stderr)
		}
		checkOutput(t, "phantom-authz "+cmd, stderr)
	}
}

// runAuthz runs one phantom-authz command to completion.
func runAuthz(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.authz, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader("{}")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}
