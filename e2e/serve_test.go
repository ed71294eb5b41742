package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// An unknown key in the configuration stops `serve` with exit status 2 and
// a message naming the key.
func TestServeRejectsUnknownConfigKey(t *testing.T) {
	t.Parallel()
	needBinaries(t)
	tests := []struct{ name, yaml, key string }{
		{"top level", "polcy:\n  dir: policies\n", "polcy"},
		{"nested", "grpc:\n  adress: 127.0.0.1:0\n", "grpc.adress"},
		{"deep in a section", "introspection:\n  endpoint: https://as.example/introspect\n  client_id: x\n  client_secret: y\n  timout: 2s\n", "introspection.timout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bins.authz, "serve", "--config", path)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			checkOutput(t, "phantom-authz serve", stderr.String())
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("exit: %v, want status 2; stderr: %s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.key) {
				t.Errorf("stderr %q does not name the key %s", stderr.String(), tc.key)
			}
		})
	}
}

// SIGTERM drains and exits 0, freeing both ports.
func TestServeExitsZeroOnSIGTERM(t *testing.T) {
	t.Parallel()
	needBinaries(t)
	gp, hp := freePort(t), freePort(t)
	// The introspection endpoint is never called: no request is sent.
	cfg := writeAuthzConfig(t, gp, hp, "http://127.0.0.1:1/unused", authzOptions{})
	p := startProcess(t, "phantom-authz", []string{"TMPDIR=" + t.TempDir()}, []int{gp, hp},
		bins.authz, "serve", "--config", cfg)
	p.waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", hp), 30*time.Second)

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatal("still running 15s after SIGTERM")
	}
	if p.waitErr != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0:\n%s", p.waitErr, p.tail(20))
	}
	for _, port := range []int{gp, hp} {
		if err := waitPortFree(port, 2*time.Second); err != nil {
			t.Error(err)
		}
	}
}
