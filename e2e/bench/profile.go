package main

// Where a scenario's server CPU goes: a CPU profile of the server
// (/debug/pprof/profile, admin.pprof) over one measured slice, each sample
// put in one bucket by its stack, and each bucket's share turned into
// microseconds per check with the CPU time measured over the whole window.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

// bucketRule names a part of the work by the frames that do it: a function
// name starting with one of funcs, or a source file ending with one of files.
type bucketRule struct {
	name  string
	funcs []string
	files []string
}

func (r *bucketRule) matches(fn *profile.Function) bool {
	for _, p := range r.funcs {
		if strings.HasPrefix(fn.Name, p) {
			return true
		}
	}
	for _, f := range r.files {
		if strings.HasSuffix(fn.Filename, f) {
			return true
		}
	}
	return false
}

// componentRules are what the work is for: a sample whose stack passes
// through one of their frames anywhere belongs to the first that matches,
// whatever it was doing at the leaf (allocating, collecting garbage on the
// allocation's behalf, a system call). Most specific first.
var componentRules = []bucketRule{
	{name: "ES256 verify", funcs: []string{
		"crypto/ecdsa.Verify", "crypto/ecdsa.verify", "crypto/internal/fips140/ecdsa.Verify",
		"crypto/internal/fips140/ecdsa.verify"}},
	{name: "ES256 sign", funcs: []string{
		"crypto/ecdsa.Sign", "crypto/ecdsa.sign", "crypto/ecdsa.(*PrivateKey).Sign",
		"crypto/internal/fips140/ecdsa.Sign", "crypto/internal/fips140/ecdsa.sign"}},
	{name: "other crypto", funcs: []string{"crypto/", "golang.org/x/crypto/", "vendor/golang.org/x/crypto/"}},
	// Input first: it is built as OPA AST values, before any evaluation.
	{name: "policy input", files: []string{"authz/policy/input.go", "authz/policy/token.go"}},
	{name: "policy evaluation (OPA topdown)", funcs: []string{
		"github.com/open-policy-agent/opa/v1/topdown", "github.com/open-policy-agent/opa/topdown",
		"github.com/open-policy-agent/opa/v1/rego.", "github.com/open-policy-agent/opa/rego."}},
	{name: "introspection HTTP client", funcs: []string{
		"net/http.(*Client)", "net/http.(*Transport)", "net/http.(*persistConn)", "net/http.send",
		"net/http.(*Request).write", "net/http.ReadResponse", "net/http.(*body)"},
		files: []string{"authz/token/introspect.go", "authz/token/introspection.go"}},
	{name: "JSON", funcs: []string{
		"encoding/json.", "github.com/goccy/go-json", "github.com/lestrrat-go/jwx/v3/internal/json",
		"github.com/segmentio/asm", "github.com/valyala/fastjson"}},
	{name: "JOSE, other than JSON and crypto (jwx, dsig)", funcs: []string{"github.com/lestrrat-go/"}},
	{name: "caches (ristretto)", funcs: []string{"github.com/dgraph-io/ristretto"}},
}

// leafRules are where the rest goes: the frame nearest the leaf that one
// of them matches decides. gRPC's own allocation and system calls are
// therefore "GC + allocation" and "scheduler + syscalls", for phantom-authz
// and the no-op server alike.
var leafRules = []bucketRule{
	{name: "GC + allocation", funcs: []string{
		"runtime.gc", "runtime.mallocgc", "runtime.scan", "internal/runtime/gc/",
		"runtime.markroot", "runtime.greyobject", "runtime.findObject", "runtime.bgsweep", "runtime.sweepone",
		"runtime.(*sweepLocked)", "runtime.(*mspan)", "runtime.(*mheap)", "runtime.(*mcache)", "runtime.(*mcentral)",
		"runtime.(*gcWork)", "runtime.(*gcControllerState)", "runtime.wbBufFlush", "runtime.bulkBarrier",
		"runtime.heapSetType", "runtime.newobject", "runtime.makeslice", "runtime.growslice", "runtime.makemap",
		"runtime.newarray", "runtime.rawstring", "runtime.rawbyteslice", "runtime.(*mspan).", "runtime.memclrNoHeapPointers",
		"runtime.typePointers", "runtime.(*typePointers)", "runtime.bgscavenge", "runtime.(*scavenger", "runtime.(*pageAlloc)",
		"runtime.madvise", "runtime.sysUnused", "runtime.sysUsed", "runtime.tryDeferToSpanScan", "runtime.spanOf"}},
	{name: "scheduler + syscalls", funcs: []string{
		"runtime.futex", "runtime.schedule", "runtime.findRunnable", "runtime.netpoll", "runtime.park_m",
		"runtime.mcall", "runtime.gopark", "runtime.goready", "runtime.ready", "runtime.wakep", "runtime.startm",
		"runtime.stopm", "runtime.notesleep", "runtime.notewakeup", "runtime.usleep", "runtime.osyield",
		"runtime.stealWork", "runtime.runqgrab", "runtime.checkTimers", "runtime.(*timers)", "runtime.nanotime",
		"runtime.epollwait", "runtime.newproc", "runtime.execute",
		"runtime.lock", "runtime.unlock", "runtime.chansend", "runtime.chanrecv", "runtime.selectgo",
		"runtime.semacquire", "runtime.semrelease", "runtime.morestack", "runtime.newstack", "runtime.copystack",
		"runtime.sysmon", "runtime.retake", "runtime.resetspinning", "runtime.write1", "runtime.read",
		"syscall.", "internal/runtime/syscall.", "internal/poll.", "net.(*conn)", "net.(*netFD)", "sync.(*Mutex)",
		"sync.(*Cond)", "sync.(*WaitGroup)", "internal/sync."}},
	{name: "gRPC + protobuf", funcs: []string{
		"google.golang.org/grpc", "google.golang.org/protobuf", "golang.org/x/net/http2",
		"github.com/envoyproxy/go-control-plane", "bufio."}},
	{name: "other phantom-authz", funcs: []string{"github.com/phantom-authz/phantom-authz/"}},
}

// bucketNames lists every bucket in report order.
var bucketNames = func() []string {
	var n []string
	for _, r := range componentRules {
		n = append(n, r.name)
	}
	for _, r := range leafRules {
		n = append(n, r.name)
	}
	return append(n, "other")
}()

// cpuProfile is a profile reduced to the share of CPU each bucket took.
type cpuProfile struct {
	duration time.Duration
	samples  int64
	sampled  time.Duration // CPU time the samples stand for
	share    map[string]float64
}

// classify puts each sample of p in its bucket.
func classify(p *profile.Profile) (*cpuProfile, error) {
	vi := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" && st.Unit == "nanoseconds" {
			vi = i
		}
	}
	if vi < 0 {
		return nil, fmt.Errorf("not a CPU profile (sample types %v)", p.SampleType)
	}
	c := &cpuProfile{duration: time.Duration(p.DurationNanos), share: map[string]float64{}}
	var total int64
	by := map[string]int64{}
	for _, s := range p.Sample {
		v := s.Value[vi]
		total += v
		c.samples++
		by[bucketOf(s)] += v
	}
	c.sampled = time.Duration(total)
	if total == 0 {
		return c, nil
	}
	for b, v := range by {
		c.share[b] = float64(v) / float64(total)
	}
	return c, nil
}

// bucketOf is the sample's bucket: the first component rule any frame of
// its stack matches, else the leaf rule its leaf-most recognised frame
// matches, else "other".
func bucketOf(s *profile.Sample) string {
	for i := range componentRules {
		if stackHas(s, &componentRules[i]) {
			return componentRules[i].name
		}
	}
	for _, loc := range s.Location { // leaf first
		for _, l := range loc.Line { // inlined frames: the innermost first
			fn := l.Function
			if fn == nil {
				continue
			}
			for k := range leafRules {
				if leafRules[k].matches(fn) {
					return leafRules[k].name
				}
			}
		}
	}
	return "other"
}

func stackHas(s *profile.Sample, r *bucketRule) bool {
	for _, loc := range s.Location {
		for _, l := range loc.Line {
			if l.Function != nil && r.matches(l.Function) {
				return true
			}
		}
	}
	return false
}

// profiling is a CPU profile being taken while a slice runs.
type profiling struct {
	done chan struct{}
	prof *cpuProfile
	err  error
}

// profileSeconds is the length of the profile of a slice of d: d rounded
// down to whole seconds, at least 1 s.
func profileSeconds(d time.Duration) int { return max(1, int(d/time.Second)) }

// startProfile asks srv for a CPU profile of seconds, in the background,
// and keeps the raw profile as dir/name.pb.gz.
func (e *env) startProfile(ctx context.Context, srv *server, seconds int, name string) *profiling {
	pr := &profiling{done: make(chan struct{})}
	go func() {
		defer close(pr.done)
		pr.prof, pr.err = e.fetchProfile(ctx, srv, seconds, name)
	}()
	return pr
}

// wait is the profile, or why there is none.
func (pr *profiling) wait() (*cpuProfile, error) {
	if pr == nil {
		return nil, errNoProfile
	}
	<-pr.done
	return pr.prof, pr.err
}

var errNoProfile = fmt.Errorf("no profile was asked for")

func (e *env) fetchProfile(ctx context.Context, srv *server, seconds int, name string) (*cpuProfile, error) {
	if srv.pprof == "" {
		return nil, errNoProfile
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds)*time.Second+30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%sprofile?seconds=%d", srv.pprof, seconds), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+e.adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %.200s", resp.Status, body)
	}
	if dir := e.profileDir(); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, name+".pb.gz"), body, 0o644)
	}
	p, err := profile.ParseData(body)
	if err != nil {
		return nil, err
	}
	return classify(p)
}

// profileDir is where raw profiles are kept: -profiles, else the run's
// temporary directory.
func (e *env) profileDir() string {
	if e.opts.profiles != "" {
		return e.opts.profiles
	}
	return e.dir
}

// profileMarkdown writes, for each pair with a profile, the share and the
// CPU per check of each bucket, the no-op server's beside it.
func profileMarkdown(b *strings.Builder, ps []*pair) {
	b.WriteString("## Where the server CPU goes (profiles)\n\n")
	b.WriteString("A CPU profile of each server over one measured slice (`/debug/pprof/profile`, `admin.pprof`), each sample in one bucket by its stack; " +
		"µs/check is the bucket's share × the server CPU/check measured over the whole window. Buckets under 0.5% in both columns are left out.\n\n")
	for _, p := range ps {
		s, n := p.scenario, p.noop
		if s.sc.unprofiled {
			fmt.Fprintf(b, "**%s**: %s — not profiled: the profiler's own memory would be in the RSS it is judged by.\n\n", s.sc.id, s.sc.title)
			continue
		}
		fmt.Fprintf(b, "**%s**: %s — server CPU/check %s (%s); no-op server %s (%s).\n\n", s.sc.id, s.sc.title,
			us(s.cpuPerCheck()), profileSummary(s), us(n.cpuPerCheck()), profileSummary(n))
		if s.prof == nil {
			continue
		}
		b.WriteString("| bucket | share | µs/check | no-op share | no-op µs/check |\n|---|--:|--:|--:|--:|\n")
		for _, name := range bucketNames {
			sv := s.prof.share[name]
			var nv float64
			if n.prof != nil {
				nv = n.prof.share[name]
			}
			if sv < 0.005 && nv < 0.005 {
				continue
			}
			ns, nu := "–", "–"
			if n.prof != nil {
				ns, nu = pct(nv), usF(nv*float64(n.cpuPerCheck()))
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", name, pct(sv), usF(sv*float64(s.cpuPerCheck())), ns, nu)
		}
		b.WriteString("\n")
	}
}

func profileSummary(r *result) string {
	if r.prof == nil {
		return "profile missing: " + strings.NewReplacer("|", "/", "\n", " ").Replace(r.profErr)
	}
	return fmt.Sprintf("profile of %s, %d samples (%s of CPU)", r.prof.duration.Round(100*time.Millisecond), r.prof.samples, r.prof.sampled.Round(time.Millisecond))
}

func pct(f float64) string { return fmt.Sprintf("%.1f%%", f*100) }
func usF(ns float64) string {
	return fmt.Sprintf("%.1f", ns/float64(time.Microsecond))
}
