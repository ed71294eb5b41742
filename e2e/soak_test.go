package e2e

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// soakEnv sets the soak's length (a Go duration); `make test` runs the
// default, PHANTOM_SOAK=10m is the long run.
const soakEnv = "PHANTOM_SOAK"

// Soak: saturation load through the real binary's gRPC Check (a cached
// token, the default policy) for PHANTOM_SOAK, with an OAuth server outage
// in the middle (it accepts connections and never answers), and no growth:
// the goroutines once the load stops are those after the warm-up, within a
// few; resident memory grows less than 20% after the warm-up; goroutines
// during the outage stay bounded (the introspection semaphore and circuit
// breaker). Figures are logged as a table.
func TestSoak(t *testing.T) {
	needBinaries(t)
	total := 30 * time.Second
	if v := os.Getenv(soakEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 20*time.Second {
			t.Fatalf("%s=%q: want a duration of at least 20s", soakEnv, v)
		}
		total = d
	}
	warm := max(5*time.Second, total/20)
	outage := max(5*time.Second, total/10)
	recovery := max(3*time.Second, total/40)
	steady := total - warm - outage - recovery
	every := max(time.Second, total/60)

	idp := startFakeIdP(t)
	a := startAuthz(t, nil, authzOptions{introspectionURL: idp.url(), set: map[string]any{
		"introspection.timeout":          "500ms",
		"introspection.circuit_breaker":  map[string]any{"failures": 5, "cooldown": "2s"},
		"telemetry.decision_log.enabled": false, // a line per check would fill the disk
		"cache.max_ttl":                  "5m",
		"telemetry.metrics.enabled":      true,
		"introspection.max_concurrent":   64,
		"log.level":                      "info",
	}})
	pid := a.cmd.Process.Pid

	// Four connections, 32 callers: the load harness's shape.
	var conns []authv3.AuthorizationClient
	for range 4 {
		c, err := grpc.NewClient(a.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, authv3.NewAuthorizationClient(c))
	}
	cached := checkRequest("GET", "/api/accounts/1", "Bearer soak-cached-token")

	var stats loadStats
	sampler := &soakSampler{httpURL: a.httpURL, pid: pid, stats: &stats, begin: time.Now(), lastAt: time.Now()}

	// run drives the cached-token load for d, plus extra (nil: none) in its
	// own goroutines, sampling every tick.
	run := func(phase string, d time.Duration, extra func(ctx context.Context)) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var wg sync.WaitGroup
		for i := range 32 {
			client := conns[i%len(conns)]
			wg.Go(func() {
				for ctx.Err() == nil {
					cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
					resp, err := client.Check(cctx, cached)
					ccancel()
					switch {
					case err != nil:
						stats.rpcErrors.Add(1)
					case resp.GetStatus().GetCode() != int32(code.Code_OK):
						stats.wrong.Add(1)
					default:
						stats.ok.Add(1)
					}
				}
			})
		}
		if extra != nil {
			wg.Go(func() { extra(ctx) })
		}
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			time.Sleep(min(every, time.Until(deadline)))
			sampler.sample(t, phase)
		}
		wg.Wait()
	}
	// quiet samples the server with no load, once in-flight work settled.
	quiet := func(phase string) soakSample {
		time.Sleep(time.Second)
		return sampler.sample(t, phase)
	}

	run("warm-up", warm, nil)
	q0 := quiet("idle after warm-up")
	run("steady", steady, nil)

	// The outage: the OAuth server accepts and never answers. New tokens
	// (as Envoy would, with a 250ms deadline) keep coming beside the
	// cached-token load; they must be refused without goroutines piling up.
	idp.mode.Store("hang")
	var newOK, newDenied, newErr atomic.Int64
	newTokens := func(ctx context.Context) {
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					cctx, ccancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
					resp, err := conns[w].Check(cctx, checkRequest("GET", "/api/accounts/1", fmt.Sprintf("Bearer outage-%d-%d", w, i)))
					ccancel()
					switch {
					case err != nil:
						newErr.Add(1) // the caller's deadline: Envoy fails closed
					case resp.GetStatus().GetCode() == int32(code.Code_OK):
						newOK.Add(1)
					default:
						newDenied.Add(1)
					}
					time.Sleep(10 * time.Millisecond)
				}
			})
		}
		wg.Wait()
	}
	run("outage", outage, newTokens)
	if newOK.Load() != 0 {
		t.Errorf("%d new tokens allowed with the OAuth server hanging", newOK.Load())
	}
	m := scrape(t, a.httpURL)
	rejected, failed := m[`phantom_authz_introspection_rejected_total{reason=circuit_open}`], m[`phantom_authz_introspections_total{outcome=failed}`]
	if rejected == 0 {
		t.Errorf("the breaker refused no introspection during the outage (%v failed)", failed)
	}

	// Recovery: the server answers again; a new token passes once the
	// breaker's cool-down is over.
	idp.mode.Store("ok")
	var recovered atomic.Value
	run("recovery", recovery, func(ctx context.Context) {
		start := time.Now()
		for i := 0; ctx.Err() == nil; i++ {
			if faultCheckQuiet(conns[0], fmt.Sprintf("Bearer back-%d", i)) {
				recovered.Store(time.Since(start))
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	q1 := quiet("idle at the end")

	// The figures.
	var b strings.Builder
	fmt.Fprintf(&b, "soak %s (warm-up %s, steady %s, outage %s, recovery %s); load average %s\n",
		total, warm, steady, outage, recovery, loadAverage())
	fmt.Fprintf(&b, "%8s  %-20s %10s %11s %9s %10s\n", "t", "phase", "checks/s", "goroutines", "RSS MiB", "heap MiB")
	for _, s := range sampler.samples {
		fmt.Fprintf(&b, "%8s  %-20s %10.0f %11.0f %9.1f %10.1f\n", s.at.Round(time.Second), s.phase, s.rate, s.goroutines, s.rss/(1<<20), s.heap/(1<<20))
	}
	fmt.Fprintf(&b, "checks: %d allowed, %d wrong decisions, %d RPC errors; outage new tokens: %d denied, %d past the caller's 250ms deadline, %d allowed\n",
		stats.ok.Load(), stats.wrong.Load(), stats.rpcErrors.Load(), newDenied.Load(), newErr.Load(), newOK.Load())
	fmt.Fprintf(&b, "outage: %.0f introspections failed (timeouts), %.0f refused by the open breaker\n", failed, rejected)
	t.Log("\n" + b.String())

	// The assertions.
	if stats.wrong.Load() != 0 || stats.rpcErrors.Load() != 0 {
		t.Errorf("the cached token: %d wrong decisions, %d RPC errors; want none (outage included)", stats.wrong.Load(), stats.rpcErrors.Load())
	}
	if recovered.Load() == nil {
		t.Errorf("no new token allowed within %s after the OAuth server came back", recovery)
	}
	if q1.goroutines > q0.goroutines+10 {
		t.Errorf("goroutines idle: %.0f after warm-up, %.0f at the end (bound +10)", q0.goroutines, q1.goroutines)
	}
	steadyMax, outageMax := sampler.max("steady"), sampler.max("outage")
	// 64 introspections at most (introspection.max_concurrent) and the
	// callers' streams; without the breaker every new token would hold a
	// goroutine for the whole timeout.
	if outageMax > steadyMax+64+16 {
		t.Errorf("goroutines under the outage peaked at %.0f, under steady load %.0f: not bounded", outageMax, steadyMax)
	}
	// RSS: idle at the end against idle after the warm-up.
	if growth := q1.rss/q0.rss - 1; growth > 0.20 {
		t.Errorf("RSS grew %.1f%% after the warm-up (%.1f → %.1f MiB), want under 20%%", growth*100, q0.rss/(1<<20), q1.rss/(1<<20))
	}
}

// faultCheckQuiet reports whether a check with the authorization value is
// allowed, failing nothing.
func faultCheckQuiet(client authv3.AuthorizationClient, authorization string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := client.Check(ctx, checkRequest("GET", "/api/accounts/1", authorization))
	return err == nil && resp.GetStatus().GetCode() == int32(code.Code_OK)
}

// loadStats counts the cached-token load's answers.
type loadStats struct {
	ok, wrong, rpcErrors atomic.Int64
}

// soakSample is the server at one moment, from its /metrics (the Go and
// process collectors) and /proc.
type soakSample struct {
	at         time.Duration
	phase      string
	rate       float64 // allowed checks per second since the previous sample
	goroutines float64
	rss, heap  float64
}

type soakSampler struct {
	httpURL string
	pid     int
	stats   *loadStats
	begin   time.Time

	mu      sync.Mutex
	samples []soakSample
	lastOK  int64
	lastAt  time.Time
}

func (s *soakSampler) sample(t *testing.T, phase string) soakSample {
	t.Helper()
	m := scrape(t, s.httpURL)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ok := s.stats.ok.Load()
	smp := soakSample{
		at:         now.Sub(s.begin),
		phase:      phase,
		rate:       float64(ok-s.lastOK) / now.Sub(s.lastAt).Seconds(),
		goroutines: m["go_goroutines{}"],
		rss:        m["process_resident_memory_bytes{}"],
		heap:       m["go_memstats_heap_inuse_bytes{}"],
	}
	if smp.rss == 0 {
		// /proc says the same when the process collector is not there.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid)); err == nil {
			var kb float64
			for _, line := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(line, "VmRSS:") {
					fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), "%f", &kb)
				}
			}
			smp.rss = kb * 1024
		}
	}
	if smp.goroutines == 0 || smp.rss == 0 {
		t.Fatalf("/metrics has no go_goroutines or process_resident_memory_bytes")
	}
	s.lastOK, s.lastAt = ok, now
	s.samples = append(s.samples, smp)
	return smp
}

// max is the highest goroutine count sampled in the phase.
func (s *soakSampler) max(phase string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var g []float64
	for _, smp := range s.samples {
		if smp.phase == phase {
			g = append(g, smp.goroutines)
		}
	}
	if len(g) == 0 {
		return 0
	}
	sort.Float64s(g)
	return g[len(g)-1]
}

// loadAverage is /proc/loadavg's first three fields.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
