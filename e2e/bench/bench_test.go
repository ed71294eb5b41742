package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
)

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses; utime 250, stime 50 ticks.
	line := "1234 (phantom (x) authz) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 0 0\n"
	got, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * time.Second; got != want {
		t.Errorf("cpu = %v, want %v", got, want)
	}
	if _, err := parseStat([]byte("1234 (x) S 1 2")); err == nil {
		t.Error("a short line: want an error")
	}
}

func TestParseRSS(t *testing.T) {
	got, err := parseRSS([]byte("Name:\tx\nVmPeak:\t  99 kB\nVmRSS:\t   2048 kB\nThreads:\t9\n"))
	if err != nil || got != 2<<20 {
		t.Errorf("rss = %d, %v; want %d", got, err, 2<<20)
	}
	if _, err := parseRSS([]byte("Name:\tx\n")); err == nil {
		t.Error("no VmRSS: want an error")
	}
}

func TestOwnProcess(t *testing.T) {
	pid := os.Getpid()
	if _, err := cpuTime(pid); err != nil {
		t.Error(err)
	}
	if r, err := rss(pid); err != nil || r <= 0 {
		t.Errorf("rss = %d, %v", r, err)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 1000; i++ {
		d = append(d, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 500}, {99, 990}, {99.9, 999}, {100, 1000}} {
		if got := percentile(d, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if percentile(nil, 99) != 0 {
		t.Error("empty: want 0")
	}
}

// The token patched into a pre-encoded request is the one the server
// decodes.
func TestTemplate(t *testing.T) {
	tmpl, err := newTemplate(opaqueToken('d', 0), false)
	if err != nil {
		t.Fatal(err)
	}
	b := append([]byte(nil), tmpl.b...)
	writeToken(b[tmpl.slot:tmpl.slot+tmpl.n], 'd', 12345)
	var req authv3.CheckRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		t.Fatal(err)
	}
	if got, want := req.GetAttributes().GetRequest().GetHttp().GetHeaders()["authorization"], "Bearer "+opaqueToken('d', 12345); got != want {
		t.Errorf("authorization = %q, want %q", got, want)
	}
}

func TestTargetsAndReport(t *testing.T) {
	mk := func(sc *scenario, reqs int64, cpu time.Duration, p99 time.Duration) *result {
		lat := make([]time.Duration, reqs)
		for i := range lat {
			lat[i] = p99
		}
		return &result{sc: sc, s: &sample{requests: reqs, elapsed: time.Second, serverCPU: cpu, latencies: lat,
			rssStart: 100 << 20, rssMin: 95 << 20, rssMax: 112 << 20, rssEnd: 101 << 20}}
	}
	sc := &scenario{id: "a", title: "t", targets: []target{cpuAtMost(1.5), rpsAtLeast(0.7), p99AtMost(1.5), rssFlat(0.10)}}
	p := &pair{scenario: mk(sc, 800, 800*60*time.Microsecond, 3*time.Millisecond), noop: mk(&noop, 1000, 1000*40*time.Microsecond, 2*time.Millisecond)}
	report, met := markdown(header{opts: options{callers: 32, conns: 4}}, []*pair{p}, nil)
	if met {
		t.Error("RSS grew 12%: want a target missed")
	}
	for _, want := range []string{
		"| a | server CPU/check ≤ 1.5× no-op | 1.50× | yes |",
		"| a | throughput ≥ 0.7× no-op | 0.80× | yes |",
		"| a | p99 ≤ 1.5× no-op | 1.50× | yes |",
		"| a | RSS flat (±10%) over the window | -5.0% / +12.0% | **no** |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
}

// The whole harness, briefly: both servers built and started, scenario a
// and the no-op server loaded side by side, the report written.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the servers")
	}
	out := filepath.Join(t.TempDir(), "RESULTS.md")
	err := run(options{out: out, only: []string{"a"}, warmup: 300 * time.Millisecond, window: time.Second,
		slices: 2, soak: time.Second, callers: 4, conns: 2})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"**a**: cached opaque token", "↳ no-op server, side by side with a", "## Targets"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("report lacks %q:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), "no errors, no wrong decisions") {
		t.Errorf("errors or wrong decisions:\n%s", b)
	}
}

// The Envoy-level benchmark, briefly: every setup through real Envoy, each
// answering 200 with the expected header at the upstream (no errors).
func TestEnvoySmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Envoy and the servers")
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, ".tools", "bin", "envoy")); err != nil {
		t.Skip("envoy not installed (make tools)")
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("wrk not installed (make tools)")
	}
	out := filepath.Join(t.TempDir(), "RESULTS.md")
	err = run(options{out: out, only: []string{"envoy"}, callers: 4, conns: 2,
		envoy: envoyOptions{window: 2 * time.Second, fixedWindow: time.Second, connections: 4, rate: 200,
			authzTimeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		if !strings.HasPrefix(line, "| **E") {
			continue
		}
		rows++
		cols := strings.Split(line, "|")
		if len(cols) < 7 || strings.TrimSpace(cols[6]) != "0" {
			t.Errorf("errors in row: %s", line)
		}
		if strings.TrimSpace(cols[2]) == "0" {
			t.Errorf("no requests in row: %s", line)
		}
	}
	if rows != len(envoySetups()) {
		t.Errorf("%d Envoy rows, want %d:\n%s", rows, len(envoySetups()), b)
	}
}

// The smoke test's timeout lands on the ext_authz filter of the shipped
// config, not on the tracer's or a cluster's.
func TestWithAuthzTimeout(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := os.ReadFile(filepath.Join(root, "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := withAuthzTimeout(string(shipped), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	call := "envoy_grpc: { cluster_name: phantom_authz }"
	i := strings.Index(cfg, call)
	if j := strings.Index(cfg[i:], "timeout: "); !strings.HasPrefix(cfg[i+j:], "timeout: 10s\n") {
		t.Errorf("ext_authz timeout not replaced: %q", cfg[i:i+j+20])
	}
	if strings.Count(cfg, "timeout: 10s") != 1 || strings.Count(cfg, "timeout: 0.25s") != strings.Count(string(shipped), "timeout: 0.25s")-1 {
		t.Errorf("other timeouts changed")
	}
}
