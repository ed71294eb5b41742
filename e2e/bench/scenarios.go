package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// scenario is one configuration of server and traffic.
type scenario struct {
	id    string
	title string
	// noop runs the no-op reference server instead of phantom-authz.
	noop bool
	// config is the scenario's part of phantom-authz's YAML.
	config func(e *env) string
	// traffic makes the requests.
	traffic func(e *env) (traffic, error)
	// warmup and window override the run's durations when set; slices
	// overrides how many parts the window is cut into.
	warmup, window time.Duration
	slices         int
	// targets are checked against the no-op server's figures.
	targets []target
	// verifies and signs are the ES256 operations every check of the
	// scenario cannot avoid (its floor is the no-op server's CPU plus
	// them).
	verifies, signs int
	// unprofiled: no CPU profile is taken (d: the profiler's own buffers
	// showed in the RSS it is judged by, +11% in one run).
	unprofiled bool
}

// traffic is the requests of a scenario: a pre-encoded template and, when
// the token changes, what writes caller c's n-th token into the template.
type traffic struct {
	tmpl template
	fill func(c, n int, dst []byte)
	// again, when fill keeps state of its own (values handed out in turn),
	// is a fill over the same values with a state of its own, for the no-op
	// server beside the scenario: it must not use up values the scenario
	// needs new. nil when fill depends only on c and n (each server's load
	// counts its own n).
	again func() func(c, n int, dst []byte)
	// note says something about the run once it is over (optional).
	note func() string
}

// env is what scenarios share within one invocation.
type env struct {
	opts options
	dir  string // temporary files and server logs
	bins struct{ authz, noop string }
	idp  *idp
	// adminToken is the servers' admin credential (admin.token_file), for
	// their profiles; adminTokenFile holds it.
	adminToken, adminTokenFile string
	// es256 is what an ES256 verification and signature cost here.
	es256 es256Cost
	// setups and eopts are the Envoy-level benchmark's (envoy.go).
	setups []envoySetup
	eopts  envoyOptions
}

// forNoop is the same requests for the no-op server beside the scenario.
func (t traffic) forNoop() traffic {
	n := traffic{tmpl: t.tmpl, fill: t.fill}
	if t.again != nil {
		n.fill = t.again()
	}
	return n
}

// inTurn hands vals out in turn to all callers, from one counter: next
// counts what it handed out.
func inTurn(vals []string, next *atomic.Int64) func(c, n int, dst []byte) {
	return func(_, _ int, dst []byte) { copy(dst, vals[int(next.Add(1))%len(vals)]) }
}

// opaqueToken is a made-up opaque access token the harness's IdP knows:
// 32 characters, "pb" + kind + digits.
func opaqueToken(kind byte, n int) string {
	return fmt.Sprintf("pb%c%029d", kind, n)
}

// writeToken writes the opaque token of kind and n into dst (32 bytes).
func writeToken(dst []byte, kind byte, n int) {
	dst[0], dst[1], dst[2] = 'p', 'b', kind
	for i := len(dst) - 1; i >= 3; i-- {
		dst[i] = byte('0' + n%10)
		n /= 10
	}
}

// The phantom-authz configurations.
func introspectionConfig(e *env) string {
	return fmt.Sprintf(`introspection:
  endpoint: %s/introspect
  client_id: phantom-authz
  client_secret: bench-secret
  response: json
  allow_insecure_http: true
`, e.idp.url)
}

func issuerConfig(e *env) string {
	return fmt.Sprintf(`jwt:
  issuers:
    - issuer: %s
      jwks_uri: %s/jwks
      audiences: [api]
      algorithms: [ES256]
      type: at+jwt
      allow_insecure_http: true
`, e.idp.issuer, e.idp.url)
}

// staticOpaque sends one token on every request.
func staticOpaque(*env) (traffic, error) {
	t, err := newTemplate(opaqueToken('a', 1), true)
	return traffic{tmpl: t}, err
}

// jwtPool cycles through n pre-signed JWTs: each is verified once, then
// served from the token cache, as a service's JWT is reused until it
// expires. n = 0 signs a fresh JWT for every request of the run (up to a
// bound), so every request pays a signature check.
func jwtPool(n int) func(e *env) (traffic, error) {
	return func(e *env) (traffic, error) {
		count := n
		if n == 0 {
			// Should a run go faster, later requests repeat earlier JWTs
			// (the report says how many were sent).
			count = freshCount(e.opts)
		}
		jwts, err := e.idp.signJWTs(count, fmt.Sprintf("p%d", n))
		if err != nil {
			return traffic{}, err
		}
		t, err := newTemplate(jwts[0], false)
		if err != nil {
			return traffic{}, err
		}
		if n > 0 {
			return traffic{tmpl: t, fill: func(c, i int, dst []byte) { copy(dst, jwts[(c*7919+i)%len(jwts)]) }}, nil
		}
		// Every request a new JWT: a shared counter hands them out.
		var next atomic.Int64
		return traffic{
			tmpl:  t,
			fill:  inTurn(jwts, &next),
			again: func() func(c, n int, dst []byte) { return inTurn(jwts, new(atomic.Int64)) },
			note: func() string {
				if sent := next.Load(); sent >= int64(len(jwts)) {
					return fmt.Sprintf("%d JWTs for %d requests: some repeated", len(jwts), sent)
				}
				return ""
			},
		}, nil
	}
}

// uniqueOpaque sends a token never seen before on every request: each one
// is a cache miss, introspected.
func uniqueOpaque(e *env) (traffic, error) {
	t, err := newTemplate(opaqueToken('c', 0), false)
	if err != nil {
		return traffic{}, err
	}
	// Caller c's n-th token; callers < 1000 keep them apart.
	return traffic{tmpl: t, fill: func(c, n int, dst []byte) { writeToken(dst, 'c', n*1000+c) }}, nil
}

// cyclingOpaque cycles through n distinct tokens.
func cyclingOpaque(n int) func(*env) (traffic, error) {
	return func(*env) (traffic, error) {
		t, err := newTemplate(opaqueToken('d', 0), false)
		if err != nil {
			return traffic{}, err
		}
		return traffic{tmpl: t, fill: func(c, i int, dst []byte) { writeToken(dst, 'd', (c*31+i)%n) }}, nil
	}
}

// noop is the reference every scenario runs side by side with (with the
// scenario's traffic; staticOpaque when alone, as through Envoy).
var noop = scenario{id: "noop", title: "no-op server", noop: true, traffic: staticOpaque}

// dpopBound sends one DPoP-bound opaque token (cached) with a new DPoP
// proof on every request: each proof's signature is checked and its jti
// recorded against replay.
func dpopBound(e *env) (traffic, error) {
	token := opaqueToken('e', 1)
	proofs, err := e.idp.signProofs(freshCount(e.opts), token)
	if err != nil {
		return traffic{}, err
	}
	t, err := encodeTemplate(checkRequest("DPoP", token, proofs[0]), proofs[0])
	if err != nil {
		return traffic{}, err
	}
	var next atomic.Int64
	return traffic{
		tmpl:  t,
		fill:  inTurn(proofs, &next),
		again: func() func(c, n int, dst []byte) { return inTurn(proofs, new(atomic.Int64)) },
		note: func() string {
			if sent := next.Load(); sent >= int64(len(proofs)) {
				return fmt.Sprintf("%d proofs for %d requests: replays refused", len(proofs), sent)
			}
			return ""
		},
	}, nil
}

// freshCount is how many JWTs (b1) or DPoP proofs (e) a scenario signs
// before it starts: more than the default warm-up and window use at 16,000
// checks/s, the fastest seen on this class of machine (e once ran out of
// 120,000 proofs, and each replay refused counted as wrong). A long window,
// -window 60s for the RSS of a stream of new tokens, gets more, though not
// one per check: memory for them is bounded (3,500 a second of window).
func freshCount(o options) int {
	return max(160000, int(o.window.Seconds()*3500))
}

// scenarios are the runs of `make bench`, in order.
func scenarios(soak time.Duration) []scenario {
	return []scenario{
		{id: "a", title: "cached opaque token, default policy, JWT injected",
			config: introspectionConfig, traffic: staticOpaque,
			targets: []target{cpuAtMost(1.3), rpsAtLeast(0.7), p99AtMost(1.5)}},
		{id: "b", title: "by-value JWT (ES256), 100 JWTs cycling, each verified once",
			config: issuerConfig, traffic: jwtPool(100),
			targets: []target{cpuAtMost(2.5), p99AtMost(1.5)}},
		{id: "b1", title: "by-value JWT (ES256), a new JWT every request",
			config: issuerConfig, traffic: jwtPool(0),
			targets: []target{cpuAtMost(3.5)}, verifies: 1},
		{id: "c", title: "cache miss: a new opaque token every request, introspected, JWT minted",
			config: introspectionConfig, traffic: uniqueOpaque,
			targets: []target{cpuAtMost(4.5)}, signs: 1},
		{id: "e", title: "DPoP-bound opaque token (cached), a new DPoP proof (ES256) every request",
			config: introspectionConfig, traffic: dpopBound,
			targets: []target{cpuAtMost(2.8)}, verifies: 1},
		{id: "d", title: "1,000 distinct opaque tokens cycling",
			config: introspectionConfig, traffic: cyclingOpaque(1000),
			warmup: 5 * time.Second, window: soak, slices: 12, unprofiled: true,
			targets: []target{p99AtMost(1.5), rssFlat(0.10)}},
	}
}

// start runs the scenario's server and returns it with its gRPC address.
func (s *scenario) start(e *env, name string) (*server, string, error) {
	grpcPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(grpcPort)
	httpPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	httpAddr := "127.0.0.1:" + strconv.Itoa(httpPort)
	if s.noop {
		srv, err := startServer(e.dir, name, e.opts.serverProcs, e.bins.noop, "-addr", addr, "-pprof", httpAddr)
		if srv != nil {
			srv.pprof = "http://" + httpAddr + "/debug/pprof/"
		}
		return srv, addr, err
	}
	cfg := fmt.Sprintf(`grpc:
  addr: %s
http:
  addr: %s
policy:
  dir: %s
log:
  level: warn
admin:
  token_file: %s
  pprof: true
`, addr, httpAddr, filepath.Join(e.opts.root, "policies"), e.adminTokenFile)
	if s.config != nil {
		cfg += s.config(e)
	}
	path := filepath.Join(e.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, "", err
	}
	srv, err := startServer(e.dir, name, e.opts.serverProcs, e.bins.authz, "serve", "--config", path)
	if srv != nil {
		srv.pprof = "http://" + httpAddr + "/debug/pprof/"
	}
	return srv, addr, err
}

// waitReady sends the first request until it gets the expected answer.
func waitReady(ctx context.Context, srv *server, addr string, req []byte, ok func(*authv3.CheckResponse) bool) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if srv.exited() {
			return fmt.Errorf("%s exited: %v\n%s", srv.name, srv.err, srv.tail())
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp := &authv3.CheckResponse{}
		err := conn.Invoke(cctx, checkMethod, &rawRequest{b: req}, resp)
		cancel()
		switch {
		case err == nil && ok(resp):
			return nil
		case err == nil:
			last = errors.New("unexpected answer: " + shortResponse(resp))
		default:
			last = err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after 30s: %v\n%s", srv.name, last, srv.tail())
}
