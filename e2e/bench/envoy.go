package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The Envoy-level benchmark: HTTP load through real Envoy (the shipped
// envoy/envoy.yaml, its ports swapped) to an upstream in the harness, with
// no ext_authz filter, with the no-op server, and with phantom-authz. What
// each setup costs is read from the processes themselves: Envoy's and the
// authorizer's CPU time (/proc/PID/stat) over the window, per request.

// envoySetup is one configuration of Envoy and authorizer.
type envoySetup struct {
	id, title string
	// authz is the ext_authz server: "" none (the filter removed), "noop"
	// or "phantom".
	authz string
	// newToken sends a token never seen before on every request.
	newToken bool
	// edit changes the shipped Envoy configuration (nil: as shipped).
	edit func(cfg string) (string, error)
	// alone is the id of the setup without ext_authz this one's Envoy CPU is
	// compared with (default E0).
	alone string
}

// envoySetups are the rows of the Envoy-level table, in order.
func envoySetups() []envoySetup {
	return []envoySetup{
		{id: "E0", title: "Envoy alone (ext_authz filter removed)", edit: withoutExtAuthz},
		{id: "E1", title: "Envoy + no-op ext_authz server", authz: "noop"},
		{id: "E2", title: "Envoy + phantom-authz, cached opaque token", authz: "phantom"},
		{id: "E3", title: "Envoy + phantom-authz, a new opaque token every request", authz: "phantom", newToken: true},
		// The shipped configuration's share: E1 with one setting changed.
		{id: "E1h", title: "E1 with allowed_headers (only what phantom-authz reads)", authz: "noop", edit: withAllowedHeaders},
		{id: "E1r", title: "E1 with encode_raw_headers off", authz: "noop", edit: withoutRawHeaders},
		{id: "E1t", title: "E1 without tracing", authz: "noop", edit: withoutTracing, alone: "E0t"},
		{id: "E0t", title: "E0 without tracing", edit: chain(withoutExtAuthz, withoutTracing)},
	}
}

// chain applies edits in turn.
func chain(edits ...func(string) (string, error)) func(string) (string, error) {
	return func(cfg string) (string, error) {
		var err error
		for _, e := range edits {
			if cfg, err = e(cfg); err != nil {
				return "", err
			}
		}
		return cfg, nil
	}
}

// replaceOnce replaces old, which must occur exactly once.
func replaceOnce(cfg, old, new string) (string, error) {
	if n := strings.Count(cfg, old); n != 1 {
		return "", fmt.Errorf("envoy/envoy.yaml has %q %d times, want once: update e2e/bench/envoy.go", old, n)
	}
	return strings.Replace(cfg, old, new, 1), nil
}

const extAuthzAnchor = "                      transport_api_version: V3\n"

// withAllowedHeaders sends only the headers phantom-authz and the shipped
// policies read, and the owned headers it must see to strip them.
func withAllowedHeaders(cfg string) (string, error) {
	return replaceOnce(cfg, extAuthzAnchor, extAuthzAnchor+`                      allowed_headers:
                        patterns:
                          - exact: authorization
                          - exact: dpop
                          - exact: consent-id
                          - exact: x-fapi-interaction-id
                          - prefix: x-jwt-
                          - prefix: x-user-
`)
}

func withoutRawHeaders(cfg string) (string, error) {
	return replaceOnce(cfg, "encode_raw_headers: true", "encode_raw_headers: false")
}

// withoutTracing removes the HTTP connection manager's tracing block.
func withoutTracing(cfg string) (string, error) {
	start := strings.Index(cfg, "                tracing:\n")
	end := strings.Index(cfg, "                access_log:\n")
	if start < 0 || end < start {
		return "", errors.New("envoy/envoy.yaml: tracing is not where e2e/bench/envoy.go looks for it")
	}
	// Keep the comment above access_log.
	if c := strings.LastIndex(cfg[:end], "\n                # Envoy's default access log"); c > start {
		end = c + 1
	}
	return cfg[:start] + cfg[end:], nil
}

// envoyResult is one setup's figures.
type envoyResult struct {
	setup *envoySetup
	// closed loop (wrk)
	requests      int64
	elapsed       time.Duration
	p50, p99      time.Duration // request-weighted mean of the slices' percentiles
	errors        int64         // non-2xx answers and socket errors
	envoyCPU      time.Duration
	authzCPU      time.Duration
	wrongUpstream int64 // requests that reached the upstream without the expected header
	// fixed rate
	fixed fixedResult
}

func (r *envoyResult) rps() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.requests) / r.elapsed.Seconds()
}

func (r *envoyResult) perRequest(cpu time.Duration) time.Duration {
	if r.requests == 0 {
		return 0
	}
	return cpu / time.Duration(r.requests)
}

// envoyRun is a started setup: its processes and where to send requests.
type envoyRun struct {
	setup    *envoySetup
	envoy    *server
	authz    *server // nil for E0
	url      string
	upstream *upstream
	res      *envoyResult
	tokens   atomic.Int64 // runs that sent new tokens, for unique prefixes
}

// Envoy-level options, beside the scenario options.
type envoyOptions struct {
	window, fixedWindow time.Duration
	connections         int
	rate                int
	// authzTimeout, when set, replaces the shipped ext_authz timeout: the
	// smoke test checks that every setup answers right, not how fast a
	// loaded machine answers (a check past 250 ms is Envoy's 503).
	authzTimeout time.Duration
}

// The fixed ports of envoy/envoy.yaml (e2e/stack_test.go swaps the same).
var envoyPorts = struct{ listener, admin, authz, upstream, collector int }{10000, 9901, 9191, 8080, 4317}

// runEnvoy starts every setup, then loads them in turn: the closed-loop
// window in slices alternating between setups (forward, then backward), so
// that the machine's other load weighs on all alike, then the fixed rate.
func (e *env) runEnvoy(ctx context.Context) ([]*envoyResult, error) {
	envoyBin := filepath.Join(e.opts.root, ".tools", "bin", "envoy")
	if _, err := os.Stat(envoyBin); err != nil {
		return nil, fmt.Errorf("envoy not installed (make tools): %w", err)
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return nil, fmt.Errorf("wrk not on PATH (make tools installs it): %w", err)
	}
	shipped, err := os.ReadFile(filepath.Join(e.opts.root, "envoy", "envoy.yaml"))
	if err != nil {
		return nil, err
	}
	var runs []*envoyRun
	defer func() {
		for _, r := range runs {
			r.stop()
		}
	}()
	for i := range e.setups {
		s := &e.setups[i]
		r, err := e.startEnvoySetup(ctx, s, envoyBin, string(shipped), fmt.Sprintf("envoy-%02d-%s", i, s.id))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.id, err)
		}
		runs = append(runs, r)
		// Warm-up: connections, the JWKS, the first introspection, Envoy's pools.
		if _, err := r.wrk(ctx, wrk, e, 2*time.Second, e.eopts.connections); err != nil {
			return nil, fmt.Errorf("%s warm-up: %w", s.id, err)
		}
	}
	const slices = 2
	for k := range slices {
		for j := range runs {
			r := runs[j]
			if k%2 == 1 {
				r = runs[len(runs)-1-j]
			}
			if err := r.closedSlice(ctx, wrk, e, e.eopts.window/slices); err != nil {
				return nil, fmt.Errorf("%s: %w", r.setup.id, err)
			}
		}
	}
	for _, r := range runs {
		if err := r.fixedRate(ctx, e); err != nil {
			return nil, fmt.Errorf("%s fixed rate: %w", r.setup.id, err)
		}
		r.res.wrongUpstream = r.upstream.wrong.Load()
	}
	out := make([]*envoyResult, len(runs))
	for i, r := range runs {
		out[i] = r.res
	}
	return out, nil
}

func (e *env) startEnvoySetup(ctx context.Context, s *envoySetup, envoyBin, shipped, name string) (*envoyRun, error) {
	r := &envoyRun{setup: s, res: &envoyResult{setup: s}}
	var err error
	want := "Bearer "
	if s.authz == "phantom" {
		want = "Bearer ey" // the JWT, never the opaque token
	}
	if s.authz == "" {
		want = "Bearer pb" // Envoy alone forwards the client's token
	}
	if r.upstream, err = startUpstream(want); err != nil {
		return nil, err
	}
	authzPort := 0
	switch s.authz {
	case "noop", "phantom":
		sc := &noop
		if s.authz == "phantom" {
			sc = &scenario{id: "envoy", config: introspectionConfig}
		}
		srv, addr, err := sc.start(e, name+"-authz")
		if err != nil {
			return r, err
		}
		r.authz = srv
		_, port, _ := net.SplitHostPort(addr)
		authzPort, _ = strconv.Atoi(port)
	}
	ports := map[int]int{envoyPorts.upstream: r.upstream.port, envoyPorts.authz: authzPort}
	for _, p := range []int{envoyPorts.listener, envoyPorts.admin, envoyPorts.collector} {
		if ports[p], err = freePort(); err != nil {
			return r, err
		}
	}
	if authzPort == 0 {
		ports[envoyPorts.authz] = ports[envoyPorts.collector] // unused: nothing listens
	}
	cfg, err := envoyConfig(shipped, ports, s.edit)
	if err != nil {
		return r, err
	}
	if t := e.opts.envoy.authzTimeout; t > 0 && r.authz != nil {
		if cfg, err = withAuthzTimeout(cfg, t); err != nil {
			return r, err
		}
	}
	path := filepath.Join(e.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return r, err
	}
	// One worker thread, as the e2e tests run it: Envoy, the authorizer, the
	// upstream and wrk share the machine's cores. Its access log (stdout)
	// is written, as shipped, to a file the harness deletes.
	if r.envoy, err = startServer(e.dir, name, 0, envoyBin, "-c", path, "--disable-hot-restart",
		"--concurrency", "1", "-l", "warning"); err != nil {
		return r, err
	}
	r.url = fmt.Sprintf("http://127.0.0.1:%d/api/accounts/123", ports[envoyPorts.listener])
	return r, r.waitReady(ctx, e)
}

// envoyConfig is the shipped configuration with its ports swapped and edit
// applied.
func envoyConfig(shipped string, ports map[int]int, edit func(string) (string, error)) (string, error) {
	cfg := shipped
	for from, to := range ports {
		old := fmt.Sprintf("port_value: %d ", from)
		if n := strings.Count(cfg, old); n != 1 {
			return "", fmt.Errorf("envoy/envoy.yaml has %q %d times, want once: update e2e/bench/envoy.go", old, n)
		}
		cfg = strings.Replace(cfg, old, fmt.Sprintf("port_value: %d ", to), 1)
	}
	if edit != nil {
		return edit(cfg)
	}
	return cfg, nil
}

// withAuthzTimeout sets the ext_authz filter's gRPC timeout to t.
func withAuthzTimeout(cfg string, t time.Duration) (string, error) {
	const call = "envoy_grpc: { cluster_name: phantom_authz }\n"
	i := strings.Index(cfg, call)
	if i < 0 {
		return "", errors.New("envoy/envoy.yaml: the ext_authz gRPC service is not where e2e/bench/envoy.go looks for it")
	}
	rest := cfg[i+len(call):]
	j := strings.Index(rest, "timeout: ")
	k := strings.IndexByte(rest[max(j, 0):], '\n')
	if j < 0 || k < 0 || strings.Contains(rest[:j], "grpc_service") {
		return "", errors.New("envoy/envoy.yaml: the ext_authz timeout is not where e2e/bench/envoy.go looks for it")
	}
	return cfg[:i+len(call)] + rest[:j] + fmt.Sprintf("timeout: %gs", t.Seconds()) + rest[j+k:], nil
}

// withoutExtAuthz removes the ext_authz filter: Envoy alone.
func withoutExtAuthz(cfg string) (string, error) {
	start := strings.Index(cfg, "                  - name: envoy.filters.http.ext_authz\n")
	end := strings.Index(cfg, "                  # The router is always last.")
	if start < 0 || end < start {
		return "", errors.New("envoy/envoy.yaml: the ext_authz filter is not where e2e/bench/envoy.go looks for it")
	}
	return cfg[:start] + cfg[end:], nil
}

// waitReady waits for Envoy's admin /ready and a 200 through the route.
func (r *envoyRun) waitReady(ctx context.Context, e *env) error {
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		for _, s := range []*server{r.envoy, r.authz} {
			if s != nil && s.exited() {
				return fmt.Errorf("%s exited: %v\n%s", s.name, s.err, s.tail())
			}
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
		req.Header.Set("Authorization", "Bearer "+opaqueToken('a', 1))
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not ready after 60s: %s\n%s", last, r.envoy.tail())
}

func (r *envoyRun) stop() {
	for _, s := range []*server{r.envoy, r.authz} {
		if s != nil {
			s.stop()
		}
	}
	if r.upstream != nil {
		r.upstream.close()
	}
}

// wrkScript sends GET with the token: the cached one, or (prefix set) a new
// one per request, 32 characters like the others ("pb" + "n" + prefix +
// counter). done() prints the figures on one line.
const wrkScript = `
local prefix = os.getenv("BENCH_TOKEN_PREFIX") or ""
local n = 0
local cached = "Bearer ` + "%s" + `"
request = function()
  if prefix == "" then
    return wrk.format("GET", nil, {["Authorization"] = cached})
  end
  n = n + 1
  return wrk.format("GET", nil, {["Authorization"] = string.format("Bearer pbn%%s%%020d", prefix, n)})
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %%d %%d %%d %%d %%d %%d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
`

// wrkResult is what one wrk run printed.
type wrkResult struct {
	requests, status, socket int64
	duration, p50, p99       time.Duration
}

// wrk runs wrk against the setup for d, one thread, conns connections.
func (r *envoyRun) wrk(ctx context.Context, wrk string, e *env, d time.Duration, conns int) (wrkResult, error) {
	script := filepath.Join(e.dir, "bench.lua")
	if _, err := os.Stat(script); err != nil {
		if err := os.WriteFile(script, []byte(fmt.Sprintf(wrkScript, opaqueToken('a', 1))), 0o600); err != nil {
			return wrkResult{}, err
		}
	}
	cmd := exec.CommandContext(ctx, wrk, "-t1", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(int(d.Seconds()+0.5))+"s",
		"--timeout", "5s", "-s", script, r.url)
	cmd.Env = os.Environ()
	if r.setup.newToken {
		// Unique across runs: a token of an earlier run would be cached.
		cmd.Env = append(cmd.Env, fmt.Sprintf("BENCH_TOKEN_PREFIX=%09d", r.tokens.Add(1)))
	}
	out, err := cmd.Output()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 7 || f[0] != "BENCH" {
			continue
		}
		var v [6]int64
		for i := range v {
			if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
				return wrkResult{}, fmt.Errorf("wrk: %q: %w", line, err)
			}
		}
		return wrkResult{requests: v[0], duration: time.Duration(v[1]) * time.Microsecond,
			p50: time.Duration(v[2]) * time.Microsecond, p99: time.Duration(v[3]) * time.Microsecond,
			status: v[4], socket: v[5]}, nil
	}
	return wrkResult{}, fmt.Errorf("wrk printed no result: %s", out)
}

// closedSlice runs wrk for d and adds its figures and the processes' CPU.
func (r *envoyRun) closedSlice(ctx context.Context, wrk string, e *env, d time.Duration) error {
	e0, a0, err := r.cpu()
	if err != nil {
		return err
	}
	w, err := r.wrk(ctx, wrk, e, d, e.eopts.connections)
	if err != nil {
		return err
	}
	e1, a1, err := r.cpu()
	if err != nil {
		return err
	}
	res := r.res
	// Percentiles of the slices, weighted by their requests (wrk gives
	// no raw latencies to merge).
	total := res.requests + w.requests
	if total > 0 {
		res.p50 = (res.p50*time.Duration(res.requests) + w.p50*time.Duration(w.requests)) / time.Duration(total)
		res.p99 = (res.p99*time.Duration(res.requests) + w.p99*time.Duration(w.requests)) / time.Duration(total)
	}
	res.requests, res.elapsed = total, res.elapsed+w.duration
	res.errors += w.status + w.socket
	res.envoyCPU += e1 - e0
	res.authzCPU += a1 - a0
	return nil
}

// cpu is Envoy's and the authorizer's CPU time so far.
func (r *envoyRun) cpu() (envoy, authz time.Duration, err error) {
	if envoy, err = cpuTime(r.envoy.pid()); err != nil {
		return 0, 0, err
	}
	if r.authz != nil {
		authz, err = cpuTime(r.authz.pid())
	}
	return envoy, authz, err
}

// fixedResult is the open-loop run at a fixed rate.
type fixedResult struct {
	sent, errors       int64
	p50, p99           time.Duration
	envoyCPU, authzCPU time.Duration
}

// fixedRate sends e.eopts.rate requests per second for fixedWindow, each
// at its scheduled time whatever the answers before it (an open loop:
// latency counts from the scheduled time, so a stall is not hidden by the
// requests it held back).
func (r *envoyRun) fixedRate(ctx context.Context, e *env) error {
	rate, window := e.eopts.rate, e.eopts.fixedWindow
	n := int(window.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	const workers = 64
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers, DisableCompression: true,
	}}
	defer client.CloseIdleConnections()
	prefix := fmt.Sprintf("f%08d", r.tokens.Add(1))
	type job struct {
		i  int
		at time.Time
	}
	jobs := make(chan job, n)
	lat := make([]time.Duration, n)
	var errs atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				tok := opaqueToken('a', 1)
				if r.setup.newToken {
					tok = fmt.Sprintf("pbn%s%020d", prefix, j.i)
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = errors.New(resp.Status)
					}
				}
				if err != nil {
					errs.Add(1)
				}
				lat[j.i] = time.Since(j.at)
			}
		}()
	}
	e0, a0, err := r.cpu()
	if err != nil {
		return err
	}
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		if ctx.Err() != nil {
			break
		}
		jobs <- job{i, at}
	}
	close(jobs)
	wg.Wait()
	e1, a1, err := r.cpu()
	if err != nil {
		return err
	}
	slices.Sort(lat)
	r.res.fixed = fixedResult{sent: int64(n), errors: errs.Load(), p50: percentile(lat, 50), p99: percentile(lat, 99),
		envoyCPU: e1 - e0, authzCPU: a1 - a0}
	return ctx.Err()
}

// upstream is the API behind Envoy: it answers 200 and counts the requests
// that arrive without the Authorization header expected (the JWT for
// phantom-authz), which Envoy must never let through.
type upstream struct {
	port  int
	srv   *http.Server
	want  string
	wrong atomic.Int64
}

func startUpstream(want string) (*upstream, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &upstream{port: l.Addr().(*net.TCPAddr).Port, want: want}
	body := []byte(`{"id":"123","balance":"42.00"}`)
	u.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), u.want) {
			u.wrong.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})}
	go func() { _ = u.srv.Serve(l) }()
	return u, nil
}

func (u *upstream) close() { _ = u.srv.Close() }

// envoyMarkdown renders the Envoy-level table.
func envoyMarkdown(b *strings.Builder, rs []*envoyResult, o envoyOptions) {
	byID := map[string]*envoyResult{}
	var noopR *envoyResult
	for _, r := range rs {
		byID[r.setup.id] = r
		if r.setup.authz == "noop" && r.setup.edit == nil && noopR == nil {
			noopR = r
		}
	}
	fmt.Fprintf(b, "## Through Envoy\n\n")
	fmt.Fprintf(b, "HTTP/1.1 GET /api/accounts/123 through Envoy (the shipped `envoy/envoy.yaml`, one worker thread) to an upstream in the harness. "+
		"Closed loop: wrk, one thread, %d connections, %s per setup in 2 slices alternating between setups. "+
		"Fixed rate: %d requests/s for %s, open loop (latency from each request's scheduled time).\n\n",
		o.connections, o.window, o.rate, o.fixedWindow)
	b.WriteString("| setup | requests/s | p50 | p99 | p99 at fixed rate | errors | Envoy CPU/request | authorizer CPU/request | Envoy CPU − Envoy alone | authorizer CPU × no-op | Envoy + authorizer CPU × Envoy + no-op | at fixed rate: Envoy, authorizer CPU/request |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rs {
		envoyCPU, authzCPU := r.perRequest(r.envoyCPU), r.perRequest(r.authzCPU)
		extra, authzX, totalX := "", "", ""
		alone := byID[cmp.Or(r.setup.alone, "E0")]
		if alone != nil && alone.requests > 0 && r.setup.authz != "" {
			extra = us(envoyCPU - alone.perRequest(alone.envoyCPU))
		}
		if noopR != nil && noopR.requests > 0 && r.setup.authz != "" {
			if n := noopR.perRequest(noopR.authzCPU); n > 0 {
				authzX = fmt.Sprintf("%.2f", float64(authzCPU)/float64(n))
			}
			totalX = fmt.Sprintf("%.2f", float64(envoyCPU+authzCPU)/float64(noopR.perRequest(noopR.envoyCPU+noopR.authzCPU)))
		}
		authzCol := "–"
		if r.setup.authz != "" {
			authzCol = us(authzCPU)
		}
		fixedCPU := "–"
		if f := r.fixed; f.sent > 0 {
			fixedCPU = us(f.envoyCPU / time.Duration(f.sent))
			if r.setup.authz != "" {
				fixedCPU += ", " + us(f.authzCPU/time.Duration(f.sent))
			}
		}
		errs := fmt.Sprint(r.errors + r.fixed.errors)
		if r.wrongUpstream > 0 {
			errs += fmt.Sprintf(" (%d reached the upstream without the expected header)", r.wrongUpstream)
		}
		fmt.Fprintf(b, "| **%s**: %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.setup.id, r.setup.title, r.rps(), ms(r.p50), ms(r.p99), ms(r.fixed.p99), errs,
			us(envoyCPU), authzCol, extra, authzX, totalX, fixedCPU)
	}
	b.WriteString("\n")
	b.WriteString(envoyNotes)
}

const envoyNotes = `- **CPU/request** is each process's user + system time over the window
  (` + "`/proc/PID/stat`" + `) divided by the requests wrk completed in it. The
  upstream and wrk run in other processes and are not counted.
- **Envoy CPU − Envoy alone** is what the ext_authz filter and the gRPC
  call cost Envoy (E1t against E0t, both without tracing); **× no-op** compares with the no-op server (` + "`cmd/noop-authz`" + `,
  one pre-built OK answer) measured in the same run.
- p50 and p99 of the closed loop are the slices' percentiles weighted by
  their requests (wrk reports percentiles, not raw latencies).
- E3's tokens are never seen before: each is introspected at the harness's
  in-process IdP and a JWT is minted for it; the IdP's CPU is not counted.
- **errors** counts non-2xx answers and socket errors; the upstream also
  counts requests that arrive without the expected Authorization header
  (the minted JWT behind phantom-authz), which must never happen.

`
