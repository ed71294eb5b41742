package main

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/pprof/profile"
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
	for _, want := range []string{"**a**: cached opaque token", "↳ no-op server, side by side with a", "## Targets",
		"| ES256 here | verify ", "## Where the server CPU goes (profiles)", "| bucket | share | µs/check | no-op share | no-op µs/check |"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("report lacks %q:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), "no errors, no wrong decisions") {
		t.Errorf("errors or wrong decisions:\n%s", b)
	}
	if strings.Contains(string(b), "profile missing") || strings.Count(string(b), "(profile of ") != 2 {
		t.Errorf("want a profile of each server:\n%s", b)
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

// tinyProfile is a CPU profile with one sample per stack (leaf first), of
// 10 ms each unless weights says otherwise.
func tinyProfile(t *testing.T, stacks [][]string, weights []int64) *profile.Profile {
	t.Helper()
	p := &profile.Profile{
		SampleType:    []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		PeriodType:    &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
		Period:        10_000_000,
		DurationNanos: int64(time.Second),
	}
	fns := map[string]*profile.Function{}
	for i, st := range stacks {
		s := &profile.Sample{Value: []int64{1, 10_000_000}}
		if weights != nil {
			s.Value = []int64{weights[i], weights[i] * 10_000_000}
		}
		for _, frame := range st {
			// "name@file" gives the function a source file; "a+b" is a
			// inlined into b (one location, innermost first).
			loc := &profile.Location{ID: uint64(len(p.Location) + 1)}
			for _, f := range strings.Split(frame, "+") {
				name, file, _ := strings.Cut(f, "@")
				fn := fns[f]
				if fn == nil {
					fn = &profile.Function{ID: uint64(len(p.Function) + 1), Name: name, SystemName: name, Filename: file}
					fns[f] = fn
					p.Function = append(p.Function, fn)
				}
				loc.Line = append(loc.Line, profile.Line{Function: fn})
			}
			p.Location = append(p.Location, loc)
			s.Location = append(s.Location, loc)
		}
		p.Sample = append(p.Sample, s)
	}
	// Through the wire format, as a profile from a server comes.
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		t.Fatal(err)
	}
	q, err := profile.ParseData(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// Each sample lands in the bucket of what it was for; the shares add up
// and turn into µs per check; a missing profile is said so.
func TestProfileBuckets(t *testing.T) {
	const (
		grpcHandler = "google.golang.org/grpc.(*Server).processRPC"
		engine      = "github.com/phantom-authz/phantom-authz/authz.(*Engine).check"
	)
	cases := []struct {
		stack []string
		want  string
	}{
		{[]string{"p256MulInternal", "crypto/internal/fips140/nistec.p256PointAddAffineAsm",
			"crypto/internal/fips140/ecdsa.Verify[go.shape.*crypto/internal/fips140/nistec.P256Point]",
			"crypto/ecdsa.VerifyASN1", "github.com/lestrrat-go/dsig.ecdsaVerify", engine, grpcHandler}, "ES256 verify"},
		{[]string{"runtime.mallocgc", "crypto/ecdsa.SignASN1", "github.com/phantom-authz/phantom-authz/authz/mint.(*Minter).Mint", engine}, "ES256 sign"},
		{[]string{"crypto/internal/fips140/sha256.block", engine}, "other crypto"},
		{[]string{"runtime.gcAssistAlloc", "runtime.mallocgc", "github.com/open-policy-agent/opa/v1/topdown.evalTree.next",
			"github.com/phantom-authz/phantom-authz/authz/policy.(*Engine).Decide", engine}, "policy evaluation (OPA topdown)"},
		{[]string{"runtime.newobject", "github.com/open-policy-agent/opa/v1/ast.NewObject",
			"github.com/phantom-authz/phantom-authz/authz/policy.(*builder).object@/src/authz/policy/input.go", engine}, "policy input"},
		{[]string{"syscall.write", "net/http.(*persistConn).writeLoop"}, "introspection HTTP client"},
		{[]string{"encoding/json.(*decodeState).object", "github.com/phantom-authz/phantom-authz/authz/binding.(*Binder).checkProof", engine}, "JSON"},
		{[]string{"github.com/lestrrat-go/jwx/v3/jws/jwsbb.Verify", engine}, "JOSE, other than JSON and crypto (jwx, dsig)"},
		{[]string{"github.com/dgraph-io/ristretto/v2.(*Cache[...]).Get", engine}, "caches (ristretto)"},
		// Below: the frame nearest the leaf decides.
		{[]string{"runtime.memclrNoHeapPointers", "runtime.mallocgc", "runtime.newobject", engine, grpcHandler}, "GC + allocation"},
		{[]string{"runtime.scanObject", "runtime.gcDrain", "runtime.gcBgMarkWorker"}, "GC + allocation"},
		{[]string{"internal/runtime/syscall/linux.Syscall6", "syscall.write", "internal/poll.(*FD).Write",
			"google.golang.org/grpc/internal/transport.(*loopyWriter).run"}, "scheduler + syscalls"},
		{[]string{"runtime.futex", "runtime.findRunnable", "runtime.schedule"}, "scheduler + syscalls"},
		{[]string{"runtime.memmove", "google.golang.org/protobuf/internal/impl.consumeBytes", grpcHandler}, "gRPC + protobuf"},
		{[]string{"runtime.memmove", engine, grpcHandler}, "other phantom-authz"},
		// Inlined: the innermost function of a location comes first.
		{[]string{"runtime.memmove", "google.golang.org/protobuf/proto.Size+github.com/phantom-authz/phantom-authz/authz/server.ToResponse", grpcHandler}, "gRPC + protobuf"},
		{[]string{"aeshashbody", "main.somethingElse"}, "other"},
	}
	var stacks [][]string
	for _, c := range cases {
		stacks = append(stacks, c.stack)
	}
	p := tinyProfile(t, stacks, nil)
	for i, s := range p.Sample {
		if got := bucketOf(s); got != cases[i].want {
			t.Errorf("%s: bucket %q, want %q", strings.Join(cases[i].stack, " < "), got, cases[i].want)
		}
	}

	// Weighted: 3 verify samples, 1 gRPC sample.
	p = tinyProfile(t, [][]string{{"crypto/ecdsa.Verify", engine}, {"google.golang.org/grpc.recv", grpcHandler}}, []int64{3, 1})
	c, err := classify(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.samples != 2 || c.sampled != 40*time.Millisecond || c.share["ES256 verify"] != 0.75 || c.share["gRPC + protobuf"] != 0.25 {
		t.Errorf("classified %+v", c)
	}
	if _, err := classify(&profile.Profile{SampleType: []*profile.ValueType{{Type: "alloc_space", Unit: "bytes"}}}); err == nil {
		t.Error("a heap profile: want an error")
	}

	sc := &scenario{id: "b1", title: "new JWTs"}
	mk := func(sc *scenario, cpu time.Duration) *result {
		return &result{sc: sc, s: &sample{requests: 1000, elapsed: time.Second, serverCPU: 1000 * cpu}}
	}
	pr := &pair{scenario: mk(sc, 200*time.Microsecond), noop: mk(&noop, 40*time.Microsecond)}
	pr.scenario.prof = c
	pr.noop.profErr = "connection refused"
	var b strings.Builder
	profileMarkdown(&b, []*pair{pr})
	for _, want := range []string{
		"| ES256 verify | 75.0% | 150.0 | – | – |",
		"| gRPC + protobuf | 25.0% | 50.0 | – | – |",
		"no-op server 40.0 µs (profile missing: connection refused)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("profile section lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "| JSON |") {
		t.Errorf("an empty bucket is listed:\n%s", b.String())
	}

	// d is judged by its RSS, which a profile would inflate: it is not
	// profiled, and the section says so rather than "profile missing".
	var d strings.Builder
	soak := &scenario{id: "d", title: "1,000 tokens", unprofiled: true}
	profileMarkdown(&d, []*pair{{scenario: mk(soak, 50*time.Microsecond), noop: mk(&noop, 40*time.Microsecond)}})
	if !strings.Contains(d.String(), "**d**: 1,000 tokens — not profiled") || strings.Contains(d.String(), "missing") {
		t.Errorf("unprofiled scenario:\n%s", d.String())
	}
	for _, s := range scenarios(time.Minute) {
		if s.id == "d" && !s.unprofiled {
			t.Error("scenario d is profiled: the profiler's memory would be in the RSS it is judged by")
		}
	}
}

// The floor of a cold scenario is the no-op server's CPU plus its crypto,
// beside the target.
func TestFloors(t *testing.T) {
	sc := &scenario{id: "e", title: "DPoP", targets: []target{cpuAtMost(2.8)}, verifies: 1}
	mk := func(sc *scenario, cpu time.Duration) *result {
		return &result{sc: sc, s: &sample{requests: 1000, elapsed: time.Second, serverCPU: 1000 * cpu}}
	}
	p := &pair{scenario: mk(sc, 120*time.Microsecond), noop: mk(&noop, 40*time.Microsecond)}
	var b strings.Builder
	floorMarkdown(&b, []*pair{p}, es256Cost{verify: 80 * time.Microsecond, sign: 30 * time.Microsecond})
	want := "| e | 40.0 µs | 1 ES256 verify: 80.0 µs | 120.0 µs | 3.00× | 2.8× (112.0 µs) | 120.0 µs (3.00×) |"
	if !strings.Contains(b.String(), want) {
		t.Errorf("floors lack %q:\n%s", want, b.String())
	}
	if c := measureES256(20); c.err != nil || c.verify <= 0 || c.sign <= 0 {
		t.Errorf("measureES256: %+v", c)
	}
}

// The no-op server gets the scenario's requests without using up the
// values (JWTs, proofs) the scenario needs new.
func TestNoopTraffic(t *testing.T) {
	vals := []string{"v0", "v1", "v2", "v3"}
	var next atomic.Int64
	tr := traffic{tmpl: template{b: []byte("xxv0"), slot: 2, n: 2}, fill: inTurn(vals, &next),
		again: func() func(c, n int, dst []byte) { return inTurn(vals, new(atomic.Int64)) }}
	n := tr.forNoop()
	if !bytes.Equal(n.tmpl.b, tr.tmpl.b) {
		t.Errorf("no-op template %q, want the scenario's %q", n.tmpl.b, tr.tmpl.b)
	}
	dst := make([]byte, 2)
	for range 3 {
		n.fill(0, 0, dst)
	}
	if string(dst) != "v3" {
		t.Errorf("no-op's third value %q, want v3", dst)
	}
	tr.fill(0, 0, dst)
	if string(dst) != "v1" || next.Load() != 1 {
		t.Errorf("the scenario's first value %q (counter %d), want v1: the no-op used up the scenario's values", dst, next.Load())
	}
	// A fill of c and n alone serves both as it is.
	u, err := uniqueOpaque(nil)
	if err != nil || u.again != nil || u.forNoop().fill == nil {
		t.Errorf("uniqueOpaque: %v, again set: %v", err, u.again != nil)
	}
}

// The real phantom-authz as the harness starts it: its profiles refuse a
// caller without the admin token or with a wrong one (401 and the admin
// challenge), and give the harness, which holds it, a CPU profile it
// reads.
func TestServerPProf(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs phantom-authz")
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	e := &env{opts: options{root: root}, dir: t.TempDir()}
	if err := e.build(); err != nil {
		t.Fatal(err)
	}
	if e.idp, err = startIDP(); err != nil {
		t.Fatal(err)
	}
	defer e.idp.close()
	if err := e.writeAdminToken(); err != nil {
		t.Fatal(err)
	}
	sc := scenarios(time.Second)[0]
	srv, addr, err := sc.start(e, "pprof-a")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	tr, err := sc.traffic(e)
	if err != nil {
		t.Fatal(err)
	}
	if err := waitReady(t.Context(), srv, addr, tr.tmpl.b, allowWithJWT); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ auth, challenge string }{
		{"", `Bearer realm="phantom-authz-admin"`},
		{"Bearer " + strings.Repeat("0", len(e.adminToken)), `Bearer realm="phantom-authz-admin", error="invalid_token"`},
		{"Basic " + e.adminToken, `Bearer realm="phantom-authz-admin"`},
	} {
		for _, path := range []string{"profile?seconds=1", "heap", "goroutine?debug=2", ""} {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.pprof+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != c.challenge {
				t.Errorf("%q %s: status %d, challenge %q; want 401 %q", c.auth, path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), c.challenge)
			}
		}
	}
	prof, err := e.fetchProfile(t.Context(), srv, 1, "pprof-a")
	if err != nil {
		t.Fatalf("profile with the admin token: %v", err)
	}
	if prof.duration < 900*time.Millisecond {
		t.Errorf("profile of %v, want about 1 s", prof.duration)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "pprof-a.pb.gz")); err != nil {
		t.Errorf("raw profile not kept: %v", err)
	}
	if b, _ := os.ReadFile(srv.log); strings.Contains(string(b), e.adminToken) {
		t.Errorf("the admin token is in the server's log:\n%s", b)
	}
}
