package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const checkMethod = "/envoy.service.auth.v3.Authorization/Check"

// checkRequest is a CheckRequest as Envoy sends it for GET
// /api/accounts/123 with `Authorization: <scheme> <token>` (and a DPoP
// proof when proof is not empty), through the route of envoy/envoy.yaml
// that names its API.
func checkRequest(scheme, token, proof string) *authv3.CheckRequest {
	addr := func(ip string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
	}
	headers := map[string]string{
		":authority": "api.example.com", ":method": "GET", ":path": "/api/accounts/123", ":scheme": "https",
		"accept": "application/json", "user-agent": "bench/1.0", "x-forwarded-proto": "https",
		"x-request-id": "9f1c6a52-3b2e-4c4e-9a57-0d3c1c2f8e11", "x-forwarded-for": "203.0.113.7",
		"x-envoy-expected-rq-timeout-ms": "15000",
		"authorization":                  scheme + " " + token,
	}
	if proof != "" {
		headers["dpop"] = proof
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: addr("203.0.113.7", 51234)},
		Destination: &authv3.AttributeContext_Peer{Address: addr("10.0.0.5", 8443)},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)),
			Http: &authv3.AttributeContext_HttpRequest{
				Id:      "9f1c6a52-3b2e-4c4e-9a57-0d3c1c2f8e11",
				Method:  "GET",
				Headers: headers,
				Path:    "/api/accounts/123", Host: "api.example.com", Scheme: "https", Protocol: "HTTP/1.1",
			},
		},
		ContextExtensions: map[string]string{"api": "accounts"},
	}}
}

// template is a pre-encoded CheckRequest with the place of the value that
// changes (the token, or the DPoP proof), so a caller sends a new one by
// overwriting those bytes in its own copy.
type template struct {
	b    []byte
	slot int // offset of the changing value; -1 when nothing changes
	n    int // its length
}

// newTemplate encodes a request with a Bearer token, whose place is the
// slot unless fixed.
func newTemplate(token string, fixed bool) (template, error) {
	patch := token
	if fixed {
		patch = ""
	}
	return encodeTemplate(checkRequest("Bearer", token, ""), patch)
}

// encodeTemplate encodes req and finds patch in it (none when empty).
func encodeTemplate(req *authv3.CheckRequest, patch string) (template, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		return template{}, err
	}
	t := template{b: b, slot: -1, n: len(patch)}
	if patch != "" {
		if bytes.Count(b, []byte(patch)) != 1 {
			return template{}, errors.New("the value to patch occurs more than once in the request")
		}
		t.slot = bytes.Index(b, []byte(patch))
	}
	return t, nil
}

// rawCodec sends pre-encoded requests as they are and decodes answers as
// protobuf. It goes by "proto" so the server sees an ordinary gRPC call.
type rawCodec struct{}

type rawRequest struct{ b []byte }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	r, ok := v.(*rawRequest)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot send %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(r.b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("rawCodec: cannot decode into %T", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

func (rawCodec) Name() string { return "proto" }

// load is closed-loop traffic to one server. Its connections stay open
// across the slices of a run, and each caller's request count carries on
// (so tokens meant to be new are never repeated).
type load struct {
	addr    string
	callers int
	conns   int
	tmpl    template
	// fill writes the token of caller c's n-th request into dst; nil when
	// the template's token never changes.
	fill func(c, n int, dst []byte)
	// ok checks an answer.
	ok func(*authv3.CheckResponse) bool

	cc   []*grpc.ClientConn
	reqs [][]byte // each caller's copy of the template
	sent []int    // requests each caller has sent
}

// sample is what the measured slices of a run added up to.
type sample struct {
	requests, errors, wrong int64
	elapsed                 time.Duration
	latencies               []time.Duration // sorted by finish()
	serverCPU, clientCPU    time.Duration
	rssStart, rssEnd        int64 // first and last reading
	rssMax, rssMin          int64
	firstErr                string
}

func (l *load) dial() error {
	for range l.conns {
		c, err := grpc.NewClient(l.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
		if err != nil {
			l.close()
			return err
		}
		l.cc = append(l.cc, c)
	}
	l.reqs = make([][]byte, l.callers)
	for c := range l.reqs {
		l.reqs[c] = slices.Clone(l.tmpl.b)
	}
	l.sent = make([]int, l.callers)
	return nil
}

func (l *load) close() {
	for _, c := range l.cc {
		c.Close()
	}
	l.cc = nil
}

// run loads the server (process pid) for d. With rec, what it measured is
// added to rec; without, it is a warm-up.
func (l *load) run(ctx context.Context, pid int, d time.Duration, rec *sample) error {
	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr string
		errs     atomic.Int64
		wrong    atomic.Int64
		lat      = make([][]time.Duration, l.callers)
	)
	var cpu0, self0 time.Duration
	if rec != nil {
		var err error
		if cpu0, err = cpuTime(pid); err != nil {
			return fmt.Errorf("server CPU time: %w", err)
		}
		self0 = selfCPU()
		l.readRSS(pid, rec)
	}
	start := time.Now()
	for c := range l.callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn := l.cc[c%len(l.cc)]
			req := &rawRequest{b: l.reqs[c]}
			var slot []byte
			if l.fill != nil && l.tmpl.slot >= 0 {
				slot = req.b[l.tmpl.slot : l.tmpl.slot+l.tmpl.n]
			}
			resp := &authv3.CheckResponse{}
			var mine []time.Duration
			if rec != nil {
				mine = make([]time.Duration, 0, 1<<14)
			}
			for !stop.Load() {
				if slot != nil {
					l.fill(c, l.sent[c], slot)
				}
				l.sent[c]++
				t0 := time.Now()
				err := conn.Invoke(ctx, checkMethod, req, resp)
				took := time.Since(t0)
				switch {
				case err != nil:
					errs.Add(1)
					mu.Lock()
					if firstErr == "" {
						firstErr = err.Error()
					}
					mu.Unlock()
					if ctx.Err() != nil {
						return
					}
					time.Sleep(time.Millisecond) // a dead server must not spin the loop
				case !l.ok(resp):
					wrong.Add(1)
					mu.Lock()
					if firstErr == "" {
						firstErr = "wrong decision: " + shortResponse(resp)
					}
					mu.Unlock()
				}
				if rec != nil && !stop.Load() {
					mine = append(mine, took)
				}
			}
			lat[c] = mine
		}()
	}

	var tick <-chan time.Time
	if rec != nil {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tick = t.C
	}
	deadline := time.After(d)
loop:
	for {
		select {
		case <-tick:
			l.readRSS(pid, rec)
		case <-deadline:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	stop.Store(true)
	elapsed := time.Since(start)
	var cpu1 time.Duration
	var cpuErr error
	if rec != nil {
		cpu1, cpuErr = cpuTime(pid)
		rec.clientCPU += selfCPU() - self0
		l.readRSS(pid, rec)
	}
	wg.Wait()
	if rec == nil {
		return ctx.Err()
	}
	if cpuErr != nil {
		return fmt.Errorf("server CPU time: %w", cpuErr)
	}
	rec.serverCPU += cpu1 - cpu0
	rec.elapsed += elapsed
	for _, m := range lat {
		rec.latencies = append(rec.latencies, m...)
		rec.requests += int64(len(m))
	}
	// Errors and wrong answers count whenever they happen, warm-up aside.
	rec.errors += errs.Load()
	rec.wrong += wrong.Load()
	if rec.firstErr == "" {
		rec.firstErr = firstErr
	}
	return ctx.Err()
}

// readRSS records a reading of the server's resident memory.
func (l *load) readRSS(pid int, rec *sample) {
	r, err := rss(pid)
	if err != nil {
		return
	}
	if rec.rssStart == 0 {
		rec.rssStart, rec.rssMin = r, r
	}
	rec.rssEnd = r
	rec.rssMax, rec.rssMin = max(rec.rssMax, r), min(rec.rssMin, r)
}

// finish sorts the latencies for the percentiles.
func (s *sample) finish() { slices.Sort(s.latencies) }

// percentile returns the p-th percentile (0 < p ≤ 100) of sorted values,
// nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// selfCPU is the harness's own CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// allowWithJWT is phantom-authz's allow: OK with the JWT it forwards.
func allowWithJWT(r *authv3.CheckResponse) bool {
	if r.GetStatus().GetCode() != 0 {
		return false
	}
	for _, h := range r.GetOkResponse().GetHeaders() {
		if h.GetHeader().GetKey() == "authorization" {
			return strings.HasPrefix(h.GetHeader().GetValue(), "Bearer ey")
		}
	}
	return false
}

// allowNoop is the no-op server's answer.
func allowNoop(r *authv3.CheckResponse) bool {
	h := r.GetOkResponse().GetHeaders()
	return r.GetStatus().GetCode() == 0 && len(h) == 1 && h[0].GetHeader().GetKey() == "authorization"
}

func shortResponse(r *authv3.CheckResponse) string {
	if d := r.GetDeniedResponse(); d != nil {
		return fmt.Sprintf("denied %d %.200s", d.GetStatus().GetCode(), d.GetBody())
	}
	return fmt.Sprintf("status %d", r.GetStatus().GetCode())
}
