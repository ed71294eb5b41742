package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
)

// ---------------------------------------------------------------- Jaeger

// jaeger is a real Jaeger v2 (the shipped envoy/local/jaeger.yaml: memory
// storage) on free loopback ports.
type jaeger struct {
	*process
	otlpGRPC, otlpHTTP int
	queryURL           string
}

func startJaeger(t *testing.T) *jaeger {
	t.Helper()
	needJaeger(t)
	og, oh, q, qg, h := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	addr := func(p int) string { return fmt.Sprintf("127.0.0.1:%d", p) }
	j := &jaeger{otlpGRPC: og, otlpHTTP: oh, queryURL: "http://" + addr(q)}
	j.process = startProcess(t, "jaeger", []string{
		"JAEGER_OTLP_GRPC_ADDR=" + addr(og), "JAEGER_OTLP_HTTP_ADDR=" + addr(oh),
		"JAEGER_QUERY_ADDR=" + addr(q), "JAEGER_QUERY_GRPC_ADDR=" + addr(qg), "JAEGER_HEALTH_ADDR=" + addr(h),
	}, []int{og, oh, q, qg, h}, tools.jaeger, "--config", "file:"+filepath.Join(root, "envoy", "local", "jaeger.yaml"))
	j.waitHTTP(t, "http://"+addr(h)+"/status", 30*time.Second)
	return j
}

// jaegerTrace is one trace as Jaeger's query API (/api/traces) answers it.
type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		References    []struct {
			RefType string `json:"refType"`
			TraceID string `json:"traceID"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		Tags []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
		ProcessID string `json:"processID"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// traces asks Jaeger for the recent traces of service.
func (j *jaeger) traces(t *testing.T, service string) []jaegerTrace {
	t.Helper()
	resp, err := http.Get(j.queryURL + "/api/traces?service=" + service + "&lookback=1h&limit=50")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data []jaegerTrace `json:"data"`
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusBadRequest {
		return nil // the service has not reported yet
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("jaeger /api/traces: %d %s", resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("jaeger /api/traces: %v: %s", err, b)
	}
	return out.Data
}

// spanInfo is a span of a trace with its service and parent.
type spanInfo struct {
	id, name, service, parent string
	tags                      map[string]string
}

func (tr jaegerTrace) spans() map[string]*spanInfo {
	out := map[string]*spanInfo{}
	for _, s := range tr.Spans {
		si := &spanInfo{id: s.SpanID, name: s.OperationName, service: tr.Processes[s.ProcessID].ServiceName, tags: map[string]string{}}
		for _, r := range s.References {
			if r.RefType == "CHILD_OF" && r.TraceID == tr.TraceID {
				si.parent = r.SpanID
			}
		}
		for _, tag := range s.Tags {
			si.tags[tag.Key] = fmt.Sprint(tag.Value)
		}
		out[s.SpanID] = si
	}
	return out
}

// under reports whether span id descends from ancestor.
func under(spans map[string]*spanInfo, id, ancestor string) bool {
	for hops := 0; id != "" && hops < 64; hops++ {
		s := spans[id]
		if s == nil {
			return false
		}
		if s.parent == ancestor {
			return true
		}
		id = s.parent
	}
	return false
}

// One request through Envoy with an opaque token never seen before is one
// trace in Jaeger: Envoy's spans, phantom-authz's Check span beneath Envoy's
// ext_authz call, the introspection beneath Check and the HTTP call to the
// OAuth server beneath that. The decision log names the same trace.
func TestTraceAcrossEnvoyAndPhantomAuthz(t *testing.T) {
	t.Parallel()
	j := startJaeger(t)
	s := newStack(t, authzOptions{
		set: map[string]any{"telemetry.tracing.enabled": true, "telemetry.tracing.safe_claims": []string{"client_id"}},
		env: []string{
			fmt.Sprintf("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:%d", j.otlpHTTP),
			"OTEL_BSP_SCHEDULE_DELAY=100", // export within 100 ms
		},
		collectorPort: j.otlpGRPC,
	})
	tok := s.hydra.token(t, "read")
	if r := s.call(t, http.MethodGet, "/api/accounts/42", tok, nil); r.status != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", r.status, r.body)
	}

	// Envoy flushes its spans every 5 s.
	var (
		tr    jaegerTrace
		spans map[string]*spanInfo
		check *spanInfo
	)
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, candidate := range j.traces(t, "phantom-authz") {
			sp := candidate.spans()
			var hasEnvoy, hasIntrospect bool
			for _, si := range sp {
				hasEnvoy = hasEnvoy || si.service == "envoy"
				hasIntrospect = hasIntrospect || si.name == "token.introspect"
			}
			if hasEnvoy && hasIntrospect {
				tr, spans = candidate, sp
			}
		}
		if spans != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if spans == nil {
		t.Fatalf("no trace in Jaeger with both Envoy's spans and phantom-authz's introspection after 30s; phantom-authz traces: %+v",
			j.traces(t, "phantom-authz"))
	}
	t.Logf("trace %s: %s", tr.TraceID, strings.Join(tree(spans), "; "))
	for _, si := range spans {
		if si.service == "phantom-authz" && si.name == "envoy.service.auth.v3.Authorization/Check" {
			check = si
		}
	}
	if check == nil {
		t.Fatalf("trace %s has no phantom-authz Check span: %v", tr.TraceID, names(spans))
	}
	if p := spans[check.parent]; p == nil || p.service != "envoy" {
		t.Errorf("Check's parent is %+v, want an Envoy span (the ext_authz call)", p)
	}
	var introspect *spanInfo
	for _, si := range spans {
		if si.name == "token.introspect" {
			introspect = si
		}
	}
	if !under(spans, introspect.id, check.id) {
		t.Errorf("token.introspect is not beneath Check: %v", names(spans))
	}
	var httpCall bool
	for _, si := range spans {
		if si.parent == introspect.id && si.tags["span.kind"] == "client" {
			httpCall = true
		}
	}
	if !httpCall {
		t.Errorf("no HTTP client span beneath token.introspect: %v", names(spans))
	}
	want := map[string]string{
		"phantom_authz.decision": "allow", "phantom_authz.cache.hit": "false", "http.response.status_code": "200",
		"phantom_authz.auth": "opaque", "phantom_authz.route": "accounts", "phantom_authz.claim.client_id": clientID,
	}
	for k, v := range want {
		if check.tags[k] != v {
			t.Errorf("Check tag %s = %q, want %q", k, check.tags[k], v)
		}
	}
	for _, si := range spans {
		for k, v := range si.tags {
			if strings.Contains(v, tok) || strings.Contains(v, clientSecret) {
				t.Errorf("span %s tag %s holds the token or the client secret", si.name, k)
			}
		}
	}

	// The decision record carries the trace id, so a log line leads to
	// the trace.
	b, _ := os.ReadFile(s.authz.logPath)
	if !bytes.Contains(b, []byte(`"trace_id":"`+tr.TraceID+`"`)) {
		t.Errorf("no decision record or log line of phantom-authz names trace %s", tr.TraceID)
	}
}

// tree lists each span as service:name < its parent's name.
func tree(spans map[string]*spanInfo) []string {
	var out []string
	for _, s := range spans {
		parent := "(root)"
		if p := spans[s.parent]; p != nil {
			parent = p.name
		}
		out = append(out, s.service+":"+s.name+" < "+parent)
	}
	sort.Strings(out)
	return out
}

func names(spans map[string]*spanInfo) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.service+":"+s.name)
	}
	return out
}

// ---------------------------------------------------------------- metrics

// sample is one Prometheus sample: a name and its labels.
var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// scrape reads GET /metrics into "name{k=v,...}" (labels sorted, as the
// exporter writes them) → value.
func scrape(t *testing.T, httpURL string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(httpURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics content-type %q, want the Prometheus text format", ct)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("/metrics line %q is not a sample", line)
		}
		var labels []string
		for _, p := range labelPair.FindAllStringSubmatch(m[2], -1) {
			labels = append(labels, p[1]+"="+p[2])
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[m[1]+"{"+strings.Join(labels, ",")+"}"] = v
	}
	return out
}

// GET /metrics counts what passes: checks by decision and status, their
// latency, the cache, introspections; the policy reloads are there.
func TestMetricsMoveAsRequestsPass(t *testing.T) {
	t.Parallel()
	s := newStack(t, authzOptions{})
	before := scrape(t, s.authz.httpURL)
	tok := s.hydra.token(t, "read")
	for i := 0; i < 2; i++ { // an introspection, then a cache hit
		if r := s.call(t, http.MethodGet, "/api/accounts/1", tok, nil); r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	}
	s.call(t, http.MethodGet, "/api/accounts/1", "", nil).denial(t, http.StatusUnauthorized)
	s.call(t, http.MethodGet, "/api/accounts/1", "ory_at_junk.junk", nil).denial(t, http.StatusUnauthorized)
	s.call(t, http.MethodPost, "/api/accounts/1", tok, nil).denial(t, http.StatusForbidden)
	after := scrape(t, s.authz.httpURL)

	moved := func(name string) float64 { return after[name] - before[name] }
	wantExactly := map[string]float64{
		`phantom_authz_checks_total{decision=allow,dry_run=false,status=200}`: 2,
		`phantom_authz_checks_total{decision=deny,dry_run=false,status=401}`:  2,
		`phantom_authz_checks_total{decision=deny,dry_run=false,status=403}`:  1,
		`phantom_authz_check_duration_seconds_count{decision=allow}`:          2,
		`phantom_authz_check_duration_seconds_count{decision=deny}`:           3,
		`phantom_authz_introspections_total{outcome=active}`:                  1,
		`phantom_authz_introspections_total{outcome=inactive}`:                1,
		`phantom_authz_introspection_duration_seconds_count{outcome=active}`:  1,
		`phantom_authz_cache_hits_total{}`:                                    2, // the second call and the POST
		`phantom_authz_cache_misses_total{}`:                                  2, // the first call and the junk token
		`phantom_authz_introspections_total{outcome=failed}`:                  0,
		`phantom_authz_policy_reloads_total{outcome=failed}`:                  0,
	}
	for name, want := range wantExactly {
		if _, ok := after[name]; !ok {
			t.Errorf("/metrics has no %s", name)
			continue
		}
		if got := moved(name); got != want {
			t.Errorf("%s moved by %v, want %v", name, got, want)
		}
	}
	for _, name := range []string{`phantom_authz_cache_size_bytes{}`, `phantom_authz_coalesced_waits_total{}`,
		`phantom_authz_cache_evictions_total{}`, `phantom_authz_jwks_refreshes_total{outcome=ok}`, `phantom_authz_policy_reloads_total{outcome=ok}`} {
		if _, ok := after[name]; !ok {
			t.Errorf("/metrics has no %s", name)
		}
	}
	if after[`phantom_authz_cache_size_bytes{}`] <= 0 {
		t.Errorf("cache size %v bytes with two tokens cached", after[`phantom_authz_cache_size_bytes{}`])
	}
}

// ---------------------------------------------------------------- decision logs, dry-run, audit

// Every check leaves one decision record; a dry-run route lets a denial
// through and says so; `phantom-authz audit` turns the records into the
// report: routes, how callers authenticated, what only the default rule
// decided, what was reached without a credential.
func TestDecisionLogDryRunAndAudit(t *testing.T) {
	t.Parallel()
	needTools(t)
	h := startHydra(t)
	a := startAuthz(t, h, authzOptions{})
	client := dialAuthz(t, a.grpcAddr)
	tok := h.token(t, "read")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	check := func(method, path, auth string, ext map[string]string) *authv3.CheckResponse {
		t.Helper()
		req := checkRequest(method, path, auth)
		req.Attributes.ContextExtensions = ext
		resp, err := client.Check(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	accounts := map[string]string{"api": "accounts"}
	if c := check("GET", "/api/accounts/1", "Bearer "+tok, accounts).GetStatus().GetCode(); c != int32(code.Code_OK) {
		t.Fatalf("allowed check: status %d", c)
	}
	if c := check("GET", "/api/accounts/1", "", accounts).GetStatus().GetCode(); c != int32(code.Code_UNAUTHENTICATED) {
		t.Fatalf("no token: status %d", c)
	}
	// POST needs write: denied, but the route is in dry-run mode.
	dry := check("POST", "/api/accounts/1", "Bearer "+tok, map[string]string{"api": "accounts", "dry_run": "true"})
	if dry.GetStatus().GetCode() != int32(code.Code_OK) || dry.GetOkResponse() == nil {
		t.Fatalf("dry-run route: %v, want an OK response", dry)
	}
	var jwtForwarded bool
	for _, hv := range dry.GetOkResponse().GetHeaders() {
		jwtForwarded = jwtForwarded || (strings.EqualFold(hv.GetHeader().GetKey(), "authorization") && strings.Count(hv.GetHeader().GetValue(), ".") == 2)
	}
	if !jwtForwarded {
		t.Errorf("dry-run allow does not forward the JWT in place of the opaque token: %v", dry.GetOkResponse())
	}
	// No route: the default rule decides.
	if c := check("GET", "/nowhere", "Bearer "+tok, nil).GetStatus().GetCode(); c != int32(code.Code_PERMISSION_DENIED) {
		t.Fatalf("/nowhere: status %d", c)
	}
	// The public health path, without a credential.
	if c := check("GET", "/healthz", "", nil).GetStatus().GetCode(); c != int32(code.Code_OK) {
		t.Fatalf("/healthz: status %d", c)
	}
	if err := a.stop(); err != nil {
		t.Fatalf("phantom-authz exit: %v", err)
	}

	var records []map[string]any
	b, _ := os.ReadFile(a.logPath)
	for _, line := range strings.Split(string(b), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "decision" {
			records = append(records, m)
		}
	}
	if len(records) != 5 {
		t.Fatalf("%d decision records, want 5:\n%s", len(records), b)
	}
	if r := records[2]; r["decision"] != "deny" || r["dry_run"] != true || r["status"] != float64(403) || r["route"] != "accounts" {
		t.Errorf("dry-run record %v, want the denial it would have been, marked dry_run", r)
	}
	for _, r := range records {
		for _, k := range []string{"time", "decision", "reason", "method", "path", "auth", "policy_revision"} {
			if _, ok := r[k]; !ok {
				t.Errorf("record %v lacks %s", r, k)
			}
		}
	}

	out, err := exec.Command(bins.authz, "audit", "--format", "json", a.logPath).Output()
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	var rep struct {
		Records int `json:"records"`
		Routes  []struct {
			Route, Method            string
			Requests, Allowed        int
			Denied                   int
			DryRunDenied             int            `json:"dry_run_denied"`
			Auth                     map[string]int `json:"auth"`
			ReachedWithoutCredential int            `json:"reached_without_credential"`
		} `json:"routes"`
		DefaultRuleOnly []string `json:"default_rule_only"`
		NoCredential    []string `json:"reached_without_credential"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("audit --format json: %v: %s", err, out)
	}
	if rep.Records != 5 {
		t.Errorf("audit read %d records, want 5", rep.Records)
	}
	byKey := map[string]int{}
	for i, r := range rep.Routes {
		byKey[r.Route+" "+r.Method] = i
	}
	get, ok := byKey["accounts GET"]
	if !ok || rep.Routes[get].Allowed != 1 || rep.Routes[get].Denied != 1 || rep.Routes[get].Auth["opaque"] != 1 || rep.Routes[get].Auth["none"] != 1 {
		t.Errorf("accounts GET: %+v", rep.Routes)
	}
	if post, ok := byKey["accounts POST"]; !ok || rep.Routes[post].DryRunDenied != 1 {
		t.Errorf("accounts POST: %+v", rep.Routes)
	}
	if strings.Join(rep.DefaultRuleOnly, ",") != "/nowhere GET" {
		t.Errorf("default_rule_only %v, want [/nowhere GET]", rep.DefaultRuleOnly)
	}
	if strings.Join(rep.NoCredential, ",") != "/healthz GET" {
		t.Errorf("reached_without_credential %v, want [/healthz GET]", rep.NoCredential)
	}

	table, err := exec.Command(bins.authz, "audit", a.logPath).Output()
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	for _, want := range []string{"ROUTE", "accounts", "none=1 opaque=1", "Routes only ever decided by a default rule:\n  /nowhere GET"} {
		if !strings.Contains(string(table), want) {
			t.Errorf("audit table lacks %q:\n%s", want, table)
		}
	}
}

// The collector port Envoy traces to, run.sh's Jaeger and the Jaeger config
// agree.
func TestTracingFilesAgree(t *testing.T) {
	t.Parallel()
	ports := runPorts(t)
	p := parseEnvoy(t, "envoy/envoy.yaml")
	provider := at(p.hcm, "tracing", "provider")
	if str(at(provider, "name")) != "envoy.tracers.opentelemetry" {
		t.Fatalf("envoy/envoy.yaml traces with %v, want the OpenTelemetry tracer", provider)
	}
	cluster := str(at(provider, "typed_config", "grpc_service", "envoy_grpc", "cluster_name"))
	port := at(p.clusters[cluster], "load_assignment", "endpoints", 0, "lb_endpoints", 0, "endpoint", "address", "socket_address", "port_value")
	if str(port) != strconv.Itoa(ports["JAEGER_OTLP_GRPC"]) || ports["JAEGER_OTLP_GRPC"] != envoyCollectorPort {
		t.Errorf("Envoy's collector cluster %q port %v, run.sh JAEGER_OTLP_GRPC %d", cluster, port, ports["JAEGER_OTLP_GRPC"])
	}
	b, err := os.ReadFile(filepath.Join(root, "envoy", "local", "jaeger.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	for key, path := range map[string][]any{
		"JAEGER_OTLP_GRPC": {"receivers", "otlp", "protocols", "grpc", "endpoint"},
		"JAEGER_OTLP_HTTP": {"receivers", "otlp", "protocols", "http", "endpoint"},
		"JAEGER_QUERY":     {"extensions", "jaeger_query", "http", "endpoint"},
		"JAEGER_HEALTH":    {"extensions", "healthcheckv2", "http", "endpoint"},
	} {
		if v := str(at(cfg, path...)); !strings.HasSuffix(v, fmt.Sprintf(":%d}", ports[key])) {
			t.Errorf("envoy/local/jaeger.yaml %v = %q, want the default port %d of run.sh's %s", path, v, ports[key], key)
		}
	}
}
