package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// options are the command's flags.
type options struct {
	root                     string
	out                      string
	only                     []string
	warmup, window, soak     time.Duration
	callers, conns           int
	serverProcs, clientProcs int
	slices                   int
	binDir                   string
	strict                   bool
	profiles                 string
	envoy                    envoyOptions
}

func main() {
	var o options
	var only string
	flag.StringVar(&o.out, "out", "e2e/bench/RESULTS.md", "where to write the Markdown report (relative to the repository root)")
	flag.StringVar(&only, "only", "", "comma-separated scenario ids to run: a,b,b1,c,e,d,envoy (default all)")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "load before each measured window")
	flag.DurationVar(&o.window, "window", 8*time.Second, "measured window per scenario, and of the no-op server beside it")
	flag.IntVar(&o.slices, "slices", 4, "parts the window is cut into, alternating with the no-op server's")
	flag.DurationVar(&o.soak, "soak", 2*time.Minute, "measured window of scenario d (RSS over time)")
	flag.IntVar(&o.callers, "callers", 32, "concurrent closed-loop callers")
	flag.IntVar(&o.conns, "conns", 4, "gRPC connections the callers share")
	flag.IntVar(&o.serverProcs, "server-procs", 0, "GOMAXPROCS of the servers (0: all cores)")
	flag.IntVar(&o.clientProcs, "client-procs", 0, "GOMAXPROCS of the load generator (0: all cores)")
	flag.StringVar(&o.binDir, "bin", "", "directory with phantom-authz and noop-authz already built (default: build them)")
	flag.BoolVar(&o.strict, "strict", false, "exit 1 when a target is not met")
	flag.StringVar(&o.profiles, "profiles", "", "directory to keep the servers' raw CPU profiles in (<scenario>-<server>.pb.gz; default: discarded)")
	flag.DurationVar(&o.envoy.window, "envoy-window", 6*time.Second, "closed-loop window per setup through Envoy (scenario envoy)")
	flag.DurationVar(&o.envoy.fixedWindow, "envoy-fixed-window", 5*time.Second, "fixed-rate window per setup through Envoy")
	flag.IntVar(&o.envoy.connections, "envoy-conns", 32, "wrk connections to Envoy")
	flag.IntVar(&o.envoy.rate, "envoy-rate", 1000, "requests per second of the fixed-rate run through Envoy")
	flag.Parse()
	if only != "" {
		o.only = strings.Split(only, ",")
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.clientProcs > 0 {
		runtime.GOMAXPROCS(o.clientProcs)
	}
	var err error
	if o.root, err = repoRoot(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	e := &env{opts: o}
	if e.dir, err = os.MkdirTemp("", "phantom-authz-bench-"); err != nil {
		return err
	}
	defer os.RemoveAll(e.dir)
	if err := e.build(); err != nil {
		return err
	}
	if err := e.writeAdminToken(); err != nil {
		return err
	}
	if o.profiles != "" {
		if err := os.MkdirAll(o.profiles, 0o755); err != nil {
			return err
		}
	}
	// On one thread while nothing else of the harness runs.
	e.es256 = measureES256(es256Ops)
	if e.es256.err == nil {
		fmt.Fprintf(os.Stderr, "bench: ES256 on this machine: verify %s, sign %s (CPU time of one thread)\n", us(e.es256.verify), us(e.es256.sign))
	}
	if e.idp, err = startIDP(); err != nil {
		return err
	}
	defer e.idp.close()

	h := header{
		commit: commit(o.root), date: time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		goVersion: runtime.Version(), cpu: cpuModel(), cores: runtime.NumCPU(),
		loadBefore: loadAverage(), opts: o, es256: e.es256,
	}
	var results []*pair
	for i, sc := range scenarios(o.soak) {
		if len(o.only) > 0 && !slices.Contains(o.only, sc.id) {
			continue
		}
		p, err := e.runPair(ctx, &sc, fmt.Sprintf("%02d-%s", i, sc.id))
		if err != nil {
			return fmt.Errorf("scenario %s: %w", sc.id, err)
		}
		results = append(results, p)
		for _, r := range []*result{p.scenario, p.noop} {
			fmt.Fprintf(os.Stderr, "bench: %-4s %-4s %7.0f checks/s  p99 %s  server CPU %s/check  errors %d  wrong %d%s\n",
				sc.id, r.sc.id, r.rps(), ms(r.p(99)), us(r.cpuPerCheck()), r.s.errors, r.s.wrong, noteSuffix(r.note))
		}
	}
	var envoyResults []*envoyResult
	if len(o.only) == 0 || slices.Contains(o.only, "envoy") {
		e.setups, e.eopts = envoySetups(), o.envoy
		if envoyResults, err = e.runEnvoy(ctx); err != nil {
			return fmt.Errorf("envoy: %w", err)
		}
		for _, r := range envoyResults {
			fmt.Fprintf(os.Stderr, "bench: %-4s %7.0f requests/s  p99 %s  p99 at %d/s %s  Envoy CPU %s/request  authorizer CPU %s/request  errors %d\n",
				r.setup.id, r.rps(), ms(r.p99), o.envoy.rate, ms(r.fixed.p99), us(r.perRequest(r.envoyCPU)), us(r.perRequest(r.authzCPU)),
				r.errors+r.fixed.errors+r.wrongUpstream)
		}
	}
	h.loadAfter = loadAverage()

	report, met := markdown(h, results, envoyResults)
	fmt.Println(report)
	out := o.out
	if !filepath.IsAbs(out) && out != "/dev/stdout" {
		out = filepath.Join(o.root, out)
	}
	if out != "/dev/stdout" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "bench: wrote", out)
	}
	if !met && o.strict {
		return errors.New("some targets were not met")
	}
	return nil
}

func noteSuffix(n string) string {
	if n == "" {
		return ""
	}
	return "  (" + n + ")"
}

// pair is a scenario and the no-op server, measured side by side.
type pair struct {
	scenario, noop *result
}

// runPair starts the scenario's server and the no-op server, and loads
// them in turn, slice by slice (noop, scenario, scenario, noop, ...), so
// that both see the same machine: whatever else runs on it (a build, a
// test) weighs on both alike.
func (e *env) runPair(ctx context.Context, sc *scenario, name string) (*pair, error) {
	slicesN := cmp.Or(sc.slices, e.opts.slices)
	window := cmp.Or(sc.window, e.opts.window)
	warmup := cmp.Or(sc.warmup, e.opts.warmup)
	sides := []struct {
		sc     *scenario
		window time.Duration
	}{{&noop, e.opts.window}, {sc, window}}
	// The no-op server gets the scenario's requests (a JWT, a DPoP proof),
	// so the floor receives and decodes as many bytes.
	str, err := sc.traffic(e)
	if err != nil {
		return nil, err
	}
	trs := []traffic{str.forNoop(), str}

	loads := make([]*load, 2)
	srvs := make([]*server, 2)
	rs := make([]*result, 2)
	for i, side := range sides {
		tr := trs[i]
		srv, addr, err := side.sc.start(e, name+"-"+side.sc.id)
		if err != nil {
			return nil, err
		}
		defer srv.stop()
		ok := allowWithJWT
		if side.sc.noop {
			ok = allowNoop
		}
		if err := waitReady(ctx, srv, addr, tr.tmpl.b, ok); err != nil {
			return nil, err
		}
		l := &load{addr: addr, callers: e.opts.callers, conns: e.opts.conns, tmpl: tr.tmpl, fill: tr.fill, ok: ok}
		if err := l.dial(); err != nil {
			return nil, err
		}
		defer l.close()
		if err := l.run(ctx, srv.pid(), warmup, nil); err != nil {
			return nil, err
		}
		loads[i], srvs[i] = l, srv
		rs[i] = &result{sc: side.sc, s: &sample{}}
		if tr.note != nil {
			defer func() { rs[i].note = tr.note() }()
		}
	}
	intro0 := e.idp.introspections.Load()
	profs := make([]*profiling, 2)
	for k := range slicesN {
		for j := range 2 {
			i := j
			if k%2 == 1 {
				i = 1 - j // noop, scenario, scenario, noop, noop, ...
			}
			d := sides[i].window / time.Duration(slicesN)
			if k == 0 && !sc.unprofiled {
				// A CPU profile over the side's first slice, taken by the
				// server while the slice runs: what is measured is the same.
				profs[i] = e.startProfile(ctx, srvs[i], profileSeconds(d), name+"-"+sides[i].sc.id)
			}
			if err := loads[i].run(ctx, srvs[i].pid(), d, rs[i].s); err != nil {
				return nil, err
			}
			if srvs[i].exited() {
				return nil, fmt.Errorf("%s exited during the run: %v\n%s", srvs[i].name, srvs[i].err, srvs[i].tail())
			}
		}
	}
	for i, r := range rs {
		r.s.finish()
		var err error
		if r.prof, err = profs[i].wait(); err != nil {
			r.profErr = err.Error()
			fmt.Fprintf(os.Stderr, "bench: %s: no CPU profile of %s: %v\n", sc.id, sides[i].sc.id, err)
		}
	}
	if n := e.idp.introspections.Load() - intro0; n > 0 && sc.id == "c" {
		rs[1].note = fmt.Sprintf("%d introspections", n)
	}
	return &pair{scenario: rs[1], noop: rs[0]}, nil
}

// writeAdminToken makes the servers' admin credential (their profiles
// demand it) and the file admin.token_file names.
func (e *env) writeAdminToken() error {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	e.adminToken = hex.EncodeToString(b)
	e.adminTokenFile = filepath.Join(e.dir, "admin-token")
	return os.WriteFile(e.adminTokenFile, []byte(e.adminToken+"\n"), 0o600)
}

// build compiles the two servers, unless -bin names a directory with them.
func (e *env) build() error {
	dir := e.opts.binDir
	if dir == "" {
		dir = filepath.Join(e.dir, "bin")
		cmd := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "./cmd/phantom-authz", "./cmd/noop-authz")
		cmd.Dir = e.opts.root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	e.bins.authz = filepath.Join(dir, "phantom-authz")
	e.bins.noop = filepath.Join(dir, "noop-authz")
	for _, p := range []string{e.bins.authz, e.bins.noop} {
		if _, err := os.Stat(p); err != nil {
			return err
		}
	}
	return nil
}

// repoRoot is the directory of go.mod, looking up from the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// commit is the short commit hash, with "+changes" when the tree differs
// from it.
func commit(root string) string {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		c += "+changes"
	}
	return c
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}
