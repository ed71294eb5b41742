package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// skipEnv, set to 1, turns missing tools into skipped tests instead of
// failures (CI never sets it: `make test` installs the tools first).
const skipEnv = "PHANTOM_E2E_SKIP_MISSING_TOOLS"

var (
	// root is the repository root; the shipped configs are read from it.
	root string
	// bins are phantom-authz and demo-api, built once for the whole run.
	bins struct {
		authz, demo string
		err         error
	}
	// tools are the real Envoy and Hydra binaries, and Jaeger (jaegerErr
	// when missing: only the tracing tests need it).
	tools struct {
		envoy, hydra string
		err          error
		jaeger       string
		jaegerErr    error
	}
)

func TestMain(m *testing.M) {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	root = filepath.Dir(wd)

	dir, err := os.MkdirTemp("", "phantom-authz-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	bins.authz, bins.demo, bins.err = build(dir)
	tools.envoy, tools.hydra, tools.err = findTools()
	tools.jaeger, tools.jaegerErr = findTool("jaeger")

	code := m.Run()
	stopKeycloak()
	if err := checkAllLogs(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		code = 1
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles the two binaries the tests run. A failure is reported by
// each test that needs them, so the tests of static files still run.
func build(dir string) (authz, demo string, err error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, "build", "-o", dir+string(os.PathSeparator), "./cmd/phantom-authz", "./cmd/demo-api")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build ./cmd/phantom-authz ./cmd/demo-api: %v\n%s", err, out)
	}
	return filepath.Join(dir, "phantom-authz"), filepath.Join(dir, "demo-api"), nil
}

// findTool looks in .tools/bin (make tools), then on PATH.
func findTool(name string) (string, error) {
	p := filepath.Join(root, ".tools", "bin", name)
	if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
		return p, nil
	}
	return exec.LookPath(name)
}

// findTools finds Envoy and Hydra.
func findTools() (envoy, hydra string, err error) {
	find := findTool
	var missing []string
	if envoy, err = find("envoy"); err != nil {
		missing = append(missing, "envoy")
	}
	if hydra, err = find("hydra"); err != nil {
		missing = append(missing, "hydra")
	}
	if len(missing) > 0 {
		return "", "", errors.New(strings.Join(missing, " and ") + " not found in .tools/bin or on PATH")
	}
	return envoy, hydra, nil
}

// needBinaries stops a test that runs phantom-authz or the demo API when
// they did not build.
func needBinaries(t *testing.T) {
	t.Helper()
	if bins.err != nil {
		t.Fatal(bins.err)
	}
}

// needTools stops a test that runs Envoy or Hydra when they are missing: a
// failure, or a skip when PHANTOM_E2E_SKIP_MISSING_TOOLS=1.
func needTools(t *testing.T) {
	t.Helper()
	needBinaries(t)
	if tools.err == nil {
		return
	}
	msg := fmt.Sprintf("%v: run `make tools` (installs Envoy 1.40 and Hydra v2.3.0 into .tools/bin)", tools.err)
	if os.Getenv(skipEnv) == "1" {
		t.Skipf("%s; skipped because %s=1", msg, skipEnv)
	}
	t.Fatalf("%s, or set %s=1 to skip the end-to-end tests", msg, skipEnv)
}

// needJaeger stops a test that runs Jaeger when it is missing, as needTools
// does for Envoy and Hydra.
func needJaeger(t *testing.T) {
	t.Helper()
	needTools(t)
	if tools.jaegerErr == nil {
		return
	}
	msg := fmt.Sprintf("jaeger not found in .tools/bin or on PATH (%v): run `make tools` (builds Jaeger v1.76.0 into .tools/bin)", tools.jaegerErr)
	if os.Getenv(skipEnv) == "1" {
		t.Skipf("%s; skipped because %s=1", msg, skipEnv)
	}
	t.Fatalf("%s, or set %s=1 to skip the end-to-end tests", msg, skipEnv)
}
