package main

import (
	"fmt"
	"strings"
	"time"
)

// result is one scenario's run.
type result struct {
	sc *scenario
	s  *sample
	// verifications or introspections the server asked for in the window,
	// when the scenario counts them (informational).
	note string
	// prof is the server's CPU profile over one slice; profErr says why
	// there is none.
	prof    *cpuProfile
	profErr string
}

func (r *result) rps() float64 { return float64(r.s.requests) / r.s.elapsed.Seconds() }

func (r *result) cpuPerCheck() time.Duration {
	if r.s.requests == 0 {
		return 0
	}
	return r.s.serverCPU / time.Duration(r.s.requests)
}

func (r *result) clientCPUPerCheck() time.Duration {
	if r.s.requests == 0 {
		return 0
	}
	return r.s.clientCPU / time.Duration(r.s.requests)
}

func (r *result) p(q float64) time.Duration { return percentile(r.s.latencies, q) }

// floor is the no-op server's figures a scenario is compared with.
type floor struct {
	cpu time.Duration
	rps float64
	p99 time.Duration
}

func floorOf(r *result) (floor, bool) {
	if r.s.requests == 0 {
		return floor{}, false
	}
	return floor{cpu: r.cpuPerCheck(), rps: r.rps(), p99: r.p(99)}, true
}

// target is one requirement of a scenario, relative to the floor.
type target struct {
	name  string
	check func(r *result, f floor) (got string, met bool)
	// cpuX is the ratio of a CPU target (0 for others).
	cpuX float64
}

func cpuAtMost(x float64) target {
	return target{fmt.Sprintf("server CPU/check ≤ %.1f× no-op", x), func(r *result, f floor) (string, bool) {
		ratio := float64(r.cpuPerCheck()) / float64(f.cpu)
		return fmt.Sprintf("%.2f×", ratio), ratio <= x
	}, x}
}

func rpsAtLeast(x float64) target {
	return target{fmt.Sprintf("throughput ≥ %.1f× no-op", x), func(r *result, f floor) (string, bool) {
		ratio := r.rps() / f.rps
		return fmt.Sprintf("%.2f×", ratio), ratio >= x
	}, 0}
}

func p99AtMost(x float64) target {
	return target{fmt.Sprintf("p99 ≤ %.1f× no-op", x), func(r *result, f floor) (string, bool) {
		ratio := float64(r.p(99)) / float64(f.p99)
		return fmt.Sprintf("%.2f×", ratio), ratio <= x
	}, 0}
}

// rssFlat: every RSS sample of the window within ±x of the first.
func rssFlat(x float64) target {
	return target{fmt.Sprintf("RSS flat (±%.0f%%) over the window", x*100), func(r *result, _ floor) (string, bool) {
		start := float64(r.s.rssStart)
		lo, hi := float64(r.s.rssMin)/start-1, float64(r.s.rssMax)/start-1
		return fmt.Sprintf("%+.1f%% / %+.1f%%", lo*100, hi*100), lo >= -x && hi <= x
	}, 0}
}

// floorMarkdown writes, for each scenario with crypto it cannot avoid, its
// floor here: the no-op server's CPU per check (with the same requests)
// plus that crypto, beside its CPU target.
func floorMarkdown(b *strings.Builder, ps []*pair, c es256Cost) {
	var rows []string
	for _, p := range ps {
		sc := p.scenario.sc
		if sc.verifies == 0 && sc.signs == 0 {
			continue
		}
		f, ok := floorOf(p.noop)
		if !ok || c.err != nil {
			rows = append(rows, fmt.Sprintf("| %s | – | – | – | – | – | – |", sc.id))
			continue
		}
		var what []string
		if sc.verifies > 0 {
			what = append(what, fmt.Sprintf("%d ES256 verify", sc.verifies))
		}
		if sc.signs > 0 {
			what = append(what, fmt.Sprintf("%d ES256 sign", sc.signs))
		}
		crypto := time.Duration(sc.verifies)*c.verify + time.Duration(sc.signs)*c.sign
		floor := f.cpu + crypto
		target := "–"
		for _, t := range sc.targets {
			if t.cpuX > 0 {
				target = fmt.Sprintf("%.1f× (%s)", t.cpuX, us(time.Duration(t.cpuX*float64(f.cpu))))
			}
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s: %s | %s | %.2f× | %s | %s (%.2f×) |", sc.id, us(f.cpu),
			strings.Join(what, " + "), us(crypto), us(floor), float64(floor)/float64(f.cpu), target,
			us(p.scenario.cpuPerCheck()), float64(p.scenario.cpuPerCheck())/float64(f.cpu)))
	}
	if len(rows) == 0 {
		return
	}
	b.WriteString("## Floors of the cold scenarios\n\n")
	b.WriteString("What a check cannot cost less than here: the no-op server's CPU/check (with the same requests) plus the ES256 operations the scenario cannot avoid, at this machine's cost of one (header).\n\n")
	b.WriteString("| scenario | no-op CPU/check | unavoidable crypto | floor | floor × no-op | CPU target | measured |\n|---|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rows {
		b.WriteString(r + "\n")
	}
	b.WriteString("\n")
}

// header is what the report says about the run.
type header struct {
	commit, date, goVersion, cpu string
	cores                        int
	loadBefore, loadAfter        string
	opts                         options
	es256                        es256Cost
}

// markdown renders the report, and whether every target was met.
func markdown(h header, ps []*pair, envoy []*envoyResult) (string, bool) {
	var b strings.Builder
	allMet := true

	fmt.Fprintf(&b, "# phantom-authz load results\n\n")
	fmt.Fprintf(&b, "Written by `make bench` (`go run ./e2e/bench`); compare this file across commits.\n\n")
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| commit | `%s` |\n", h.commit)
	fmt.Fprintf(&b, "| date | %s |\n", h.date)
	fmt.Fprintf(&b, "| machine | %s, %d cores (shared by servers and client) |\n", h.cpu, h.cores)
	fmt.Fprintf(&b, "| load average (1, 5, 15 min) | before %s; after %s |\n", h.loadBefore, h.loadAfter)
	fmt.Fprintf(&b, "| Go | %s |\n", h.goVersion)
	fmt.Fprintf(&b, "| load | closed loop, %d callers over %d connections, pre-built CheckRequest (GET /api/accounts/123, 11 headers) |\n",
		h.opts.callers, h.opts.conns)
	fmt.Fprintf(&b, "| window | %s per server and scenario in %d slices, alternating with the no-op server, after a %s warm-up (d: %s in 12 slices after 5s) |\n",
		h.opts.window, h.opts.slices, h.opts.warmup, h.opts.soak)
	fmt.Fprintf(&b, "| GOMAXPROCS | servers %s, client %s |\n", procs(h.opts.serverProcs), procs(h.opts.clientProcs))
	if h.es256.err != nil {
		fmt.Fprintf(&b, "| ES256 here | not measured: %v |\n", h.es256.err)
	} else {
		fmt.Fprintf(&b, "| ES256 here | verify %s, sign %s (`crypto/ecdsa` P-256 with SHA-256, %d each, CPU time of one thread) |\n",
			us(h.es256.verify), us(h.es256.sign), es256Ops)
	}
	b.WriteString("\n")

	b.WriteString("| scenario | checks/s | p50 | p99 | p99.9 | errors | wrong | server CPU/check | client CPU/check | server RSS first → last (max) | CPU × no-op | checks/s × no-op | p99 × no-op |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, p := range ps {
		for _, r := range []*result{p.scenario, p.noop} {
			cpuX, rpsX, p99X := "", "", ""
			name := "**" + r.sc.id + "**: " + r.sc.title
			if r.sc.noop {
				name = "↳ no-op server, side by side with " + p.scenario.sc.id
			} else if f, ok := floorOf(p.noop); ok && r.s.requests > 0 {
				cpuX = fmt.Sprintf("%.2f", float64(r.cpuPerCheck())/float64(f.cpu))
				rpsX = fmt.Sprintf("%.2f", r.rps()/f.rps)
				p99X = fmt.Sprintf("%.2f", float64(r.p(99))/float64(f.p99))
			}
			if r.note != "" {
				name += " (" + r.note + ")"
			}
			fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %s | %d | %d | %s | %s | %s → %s (%s) | %s | %s | %s |\n",
				name, r.rps(), ms(r.p(50)), ms(r.p(99)), ms(r.p(99.9)), r.s.errors, r.s.wrong,
				us(r.cpuPerCheck()), us(r.clientCPUPerCheck()),
				mib(r.s.rssStart), mib(r.s.rssEnd), mib(r.s.rssMax), cpuX, rpsX, p99X)
		}
	}
	b.WriteString("\n")

	b.WriteString("## Targets\n\n| scenario | target | measured | met |\n|---|---|--:|---|\n")
	for _, p := range ps {
		for _, r := range []*result{p.scenario, p.noop} {
			if r.s.errors > 0 || r.s.wrong > 0 {
				fmt.Fprintf(&b, "| %s | no errors, no wrong decisions | %d errors, %d wrong (first: %s) | **no** |\n",
					r.sc.id, r.s.errors, r.s.wrong, strings.ReplaceAll(r.s.firstErr, "|", "/"))
				allMet = false
			}
		}
		f, ok := floorOf(p.noop)
		for _, t := range p.scenario.sc.targets {
			if !ok {
				fmt.Fprintf(&b, "| %s | %s | no no-op figures to compare with | **no** |\n", p.scenario.sc.id, t.name)
				allMet = false
				continue
			}
			got, met := t.check(p.scenario, f)
			mark := "yes"
			if !met {
				mark, allMet = "**no**", false
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", p.scenario.sc.id, t.name, got, mark)
		}
	}
	b.WriteString("\n")
	floorMarkdown(&b, ps, h.es256)
	if len(ps) > 0 {
		profileMarkdown(&b, ps)
	}
	if len(envoy) > 0 {
		envoyMarkdown(&b, envoy, h.opts.envoy)
	}
	b.WriteString(notes)
	return b.String(), allMet
}

const notes = `## How to read it

- **server CPU/check** is the server process's user + system CPU time over
  the window (` + "`/proc/PID/stat`" + `, all threads) divided by the checks answered
  in it: it does not depend on how much CPU the client takes. Server and
  client share the machine's cores, so checks/s and latency do depend on
  it; the ratios to the no-op server, measured in the same run with the same
  client, are what compares across machines.
- The **no-op server** (` + "`cmd/noop-authz`" + `) answers every check with one
  pre-built OK response carrying one header (an ` + "`authorization`" + ` value as
  long as a JWT) on the same gRPC stack: the floor of any ext_authz server
  here. Each scenario runs side by side with it: both servers are up, and
  the load moves from one to the other slice by slice (noop, scenario,
  scenario, noop, …), so whatever else the machine runs weighs on both
  alike. The ratios are to the no-op row under the scenario. The no-op
  server gets the same requests as the scenario beside it (the same
  template and the same tokens, JWTs or DPoP proofs, from a counter of its
  own), so it receives and decodes as many bytes: its CPU/check differs
  from scenario to scenario.
- **wrong** counts answers other than the expected allow with a forwarded
  JWT (` + "`Bearer ey…`" + `); **errors** counts failed RPCs.
- Scenarios **b1**, **c** and **e** show what a signature check, an
  introspection plus minting, and a DPoP proof check (signature, claims,
  replay store) cost on every request; their targets are issue 17's. The IdP
  (introspection, JWKS) runs in the harness's process, so its CPU is in
  *client CPU/check* for c. JWTs and proofs are signed before the run.
- **ES256 here** (header) is one ES256 verification and one signature
  (` + "`crypto/ecdsa`" + `, P-256, with the SHA-256 of a 600-byte input) timed at the
  start of the run, 2,000 of each, by the CPU time of the one thread that
  ran them. **Floors of the cold scenarios** adds to the no-op server's
  CPU/check the ES256 operations a scenario cannot avoid (b1: one
  verification; c: one signature; e: one verification): no server on this
  gRPC stack can check for less on this machine. Where the floor is above the CPU target (or
  close to it), the target asks for less than the crypto costs here.
- **Where the server CPU goes**: each server (phantom-authz with
  ` + "`admin.pprof`" + `, the no-op server with ` + "`-pprof`" + `) is asked for a CPU profile
  (` + "`/debug/pprof/profile?seconds=N`" + `, N the slice's length in whole seconds,
  at least 1) while its first measured slice runs; the load and what is
  measured stay as they are (the profiler's 100 Hz signal costs the server
  a little CPU in that slice).
  Each sample goes to one bucket: the first of ES256 verify, ES256 sign,
  other crypto, policy input (the input built as OPA AST values, with the
  claims it decodes), policy evaluation (OPA topdown), introspection HTTP
  client, JSON, JOSE (jwx, dsig: parsing, algorithm dispatch), caches
  (ristretto) whose frames appear anywhere in its stack — so a component's
  allocation and its share of GC assist count as the component's — else the
  bucket of the frame nearest the leaf among GC + allocation (the rest of
  the allocation, the collector's background work), scheduler + syscalls
  (goroutine scheduling, stack growth, socket reads and writes, locks),
  gRPC + protobuf (the transport and the messages' decoding and encoding),
  other phantom-authz (its own code: engine, credential parsing, decision
  cache keys, claims), else other. **µs/check** is the bucket's share of
  the samples times the server CPU/check measured over the whole window;
  a profile of 2 s holds a few hundred samples, so shares under a few per
  cent are noise. A missing profile is said so (the tables are written all
  the same). ` + "`-profiles DIR`" + ` keeps the raw profiles
  (` + "`go tool pprof -top DIR/02-b1-b1.pb.gz`" + `).
- Scenario **d** runs for the longest window: its RSS columns show whether
  memory stays flat while 1,000 tokens cycle through the caches.
- Reference (not reproducible here: OPA-Envoy does not install from the
  module proxy): OPA-Envoy v1.19 measured on this class of machine at 32
  callers spent about 330 µs of server CPU per check with a JWT-decoding
  policy and 650 µs with an ES256-verifying one, against about 40 µs for
  the no-op server.

Reproduce: ` + "`make bench`" + ` (about 6 minutes; builds both servers, runs every
scenario, then the setups through Envoy, rewrites this file). One scenario: ` + "`go run ./e2e/bench -only a -window 5s -out /dev/stdout`" + `.
`

func procs(n int) string {
	if n <= 0 {
		return "all cores"
	}
	return fmt.Sprint(n)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond)) }
func mib(n int64) string        { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
