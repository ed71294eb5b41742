package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/phantom-authz/phantom-authz/authz/config"
)

// The static files: what Docker, Kubernetes and Istio would read, checked
// without them (none runs here).

// ---------------------------------------------------------------- YAML helpers

// readYAML parses every document of a repository file.
func readYAML(t *testing.T, rel string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
	return docs
}

// at walks maps (string keys) and lists (int indexes); nil when absent.
func at(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

// ---------------------------------------------------------------- Envoy

// envoyParts are the pieces of an Envoy config the tests look at.
type envoyParts struct {
	listener  string // host:port
	hcm       map[string]any
	filters   []any
	routes    []any
	clusters  map[string]any
	extAuthz  map[string]any
	authzName string // the ext_authz gRPC cluster
}

func parseEnvoy(t *testing.T, rel string) envoyParts {
	t.Helper()
	docs := readYAML(t, rel)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want 1", rel, len(docs))
	}
	cfg := docs[0]
	listeners := list(at(cfg, "static_resources", "listeners"))
	if len(listeners) != 1 {
		t.Fatalf("%s: %d listeners, want 1", rel, len(listeners))
	}
	l := listeners[0]
	p := envoyParts{
		listener: net.JoinHostPort(str(at(l, "address", "socket_address", "address")), str(at(l, "address", "socket_address", "port_value"))),
		clusters: map[string]any{},
	}
	p.hcm, _ = at(l, "filter_chains", 0, "filters", 0, "typed_config").(map[string]any)
	if p.hcm == nil {
		t.Fatalf("%s: no http_connection_manager", rel)
	}
	p.filters = list(p.hcm["http_filters"])
	p.routes = list(at(p.hcm, "route_config", "virtual_hosts", 0, "routes"))
	for _, c := range list(at(cfg, "static_resources", "clusters")) {
		p.clusters[str(at(c, "name"))] = c
	}
	for _, f := range p.filters {
		if str(at(f, "name")) == "envoy.filters.http.ext_authz" {
			p.extAuthz, _ = at(f, "typed_config").(map[string]any)
		}
	}
	if p.extAuthz == nil {
		t.Fatalf("%s: no envoy.filters.http.ext_authz filter", rel)
	}
	p.authzName = str(at(p.extAuthz, "grpc_service", "envoy_grpc", "cluster_name"))
	return p
}

// The shipped Envoy config has the settings the issue asks for: ext_authz
// over gRPC/HTTP2, fail closed, 250 ms, peer certificate, a public health
// route without ext_authz, per-route API names the policy knows, router last.
func TestEnvoyConfigShipsTheIntendedSettings(t *testing.T) {
	t.Parallel()
	p := parseEnvoy(t, "envoy/envoy.yaml")
	if p.listener != "127.0.0.1:10000" {
		t.Errorf("listener %s, want 127.0.0.1:10000", p.listener)
	}
	if n := len(p.filters); n < 2 || str(at(p.filters[0], "name")) != "envoy.filters.http.ext_authz" ||
		str(at(p.filters[n-1], "name")) != "envoy.filters.http.router" {
		t.Errorf("http_filters %v: want ext_authz first, router last", p.filters)
	}
	checks := []struct {
		path []any
		want any
	}{
		{[]any{"failure_mode_allow"}, false},
		{[]any{"include_peer_certificate"}, true},
		{[]any{"transport_api_version"}, "V3"},
		{[]any{"grpc_service", "timeout"}, "0.25s"},
	}
	for _, c := range checks {
		if got := at(p.extAuthz, c.path...); got != c.want {
			t.Errorf("ext_authz %v = %v, want %v", c.path, got, c.want)
		}
	}
	cluster := p.clusters[p.authzName]
	if cluster == nil {
		t.Fatalf("ext_authz cluster %q is not defined", p.authzName)
	}
	h2 := at(cluster, "typed_extension_protocol_options", "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
		"explicit_http_config", "http2_protocol_options")
	if h2 == nil {
		t.Errorf("cluster %s does not speak HTTP/2 (gRPC needs it)", p.authzName)
	}
	if got := at(cluster, "load_assignment", "endpoints", 0, "lb_endpoints", 0, "endpoint", "address", "socket_address", "port_value"); str(got) != "9191" {
		t.Errorf("cluster %s port %v, want 9191 (phantom-authz grpc.addr)", p.authzName, got)
	}

	// Virtual hosts name their domains: a catch-all "*" would route any
	// Host a client chooses to the API (issue 13 item 5).
	for _, vh := range list(at(p.hcm, "route_config", "virtual_hosts")) {
		domains := list(at(vh, "domains"))
		if len(domains) == 0 {
			t.Errorf("virtual host %v has no domains", at(vh, "name"))
		}
		for _, d := range domains {
			if strings.Contains(str(d), "*") {
				t.Errorf("virtual host %v routes domain %q: name the API's hosts instead", at(vh, "name"), d)
			}
		}
	}

	// Routes: the health path skips ext_authz; every API route names its API,
	// and the default policy has that API.
	var data struct {
		Routes struct {
			APIs map[string]any `json:"apis"`
		} `json:"routes"`
	}
	b, err := os.ReadFile(filepath.Join(root, "policies", "data.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &data); err != nil {
		t.Fatalf("policies/data.json: %v", err)
	}
	var health, named bool
	for _, r := range p.routes {
		per := at(r, "typed_per_filter_config", "envoy.filters.http.ext_authz")
		if str(at(r, "match", "path")) == "/healthz" {
			health = at(per, "disabled") == true
			continue
		}
		if at(per, "disabled") == true {
			t.Errorf("route %v switches ext_authz off; only /healthz may", at(r, "match"))
		}
		if api := str(at(per, "check_settings", "context_extensions", "api")); api != "" {
			named = true
			if _, ok := data.Routes.APIs[api]; !ok {
				t.Errorf("route %v names api %q, which policies/data.json does not define", at(r, "match"), api)
			}
		}
	}
	if !health {
		t.Error("no /healthz route with ext_authz disabled")
	}
	if !named {
		t.Error("no route names its API in context_extensions")
	}
}

// The compose variant differs only where a container network must: same
// filters, same routes.
func TestEnvoyComposeConfigMatchesLocal(t *testing.T) {
	t.Parallel()
	local, compose := parseEnvoy(t, "envoy/envoy.yaml"), parseEnvoy(t, "envoy/compose/envoy.yaml")
	if !reflect.DeepEqual(local.filters, compose.filters) {
		t.Error("envoy/compose/envoy.yaml http_filters differ from envoy/envoy.yaml")
	}
	if !reflect.DeepEqual(local.hcm["route_config"], compose.hcm["route_config"]) {
		t.Error("envoy/compose/envoy.yaml route_config differs from envoy/envoy.yaml")
	}
	if _, port, _ := net.SplitHostPort(compose.listener); port != "10000" {
		t.Errorf("compose listener %s, want port 10000 as in the local stack", compose.listener)
	}
	for name := range local.clusters {
		if compose.clusters[name] == nil {
			t.Errorf("compose config lacks cluster %s", name)
		}
	}
}

// Envoy itself accepts both configurations.
func TestEnvoyConfigsValidate(t *testing.T) {
	t.Parallel()
	needTools(t)
	for _, rel := range []string{"envoy/envoy.yaml", "envoy/compose/envoy.yaml"} {
		out, err := exec.Command(tools.envoy, "--mode", "validate", "--disable-hot-restart", "-l", "warning",
			"-c", filepath.Join(root, rel)).CombinedOutput()
		if err != nil {
			t.Errorf("envoy --mode validate %s: %v\n%s", rel, err, out)
		}
	}
}

// ---------------------------------------------------------------- make run

// runPorts reads the fixed ports of envoy/local/run.sh (NAME=PORT lines).
func runPorts(t *testing.T) map[string]int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "envoy", "local", "run.sh"))
	if err != nil {
		t.Fatal(err)
	}
	ports := map[string]int{}
	re := regexp.MustCompile(`^([A-Z_]+)=(\d{2,5})$`)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if m := re.FindStringSubmatch(strings.TrimSpace(sc.Text())); m != nil {
			ports[m[1]], _ = strconv.Atoi(m[2])
		}
	}
	return ports
}

// The local stack's script parses, and its configs agree on the ports.
func TestLocalStackFilesAgree(t *testing.T) {
	t.Parallel()
	if out, err := exec.Command("bash", "-n", filepath.Join(root, "envoy", "local", "run.sh")).CombinedOutput(); err != nil {
		t.Errorf("bash -n envoy/local/run.sh: %v\n%s", err, out)
	}
	ports := runPorts(t)
	want := map[string]int{"HYDRA_PUBLIC": 4444, "HYDRA_ADMIN": 4445, "ENVOY_PORT": 10000, "ENVOY_ADMIN": 9901,
		"AUTHZ_GRPC": 9191, "AUTHZ_HTTP": 9192, "DEMO_PORT": 8080,
		"JAEGER_OTLP_GRPC": 4317, "JAEGER_OTLP_HTTP": 4318, "JAEGER_QUERY": 16686, "JAEGER_QUERY_GRPC": 16685, "JAEGER_HEALTH": 13133}
	if !reflect.DeepEqual(ports, want) {
		t.Errorf("run.sh ports %v, want %v", ports, want)
	}
	b, err := os.ReadFile(filepath.Join(root, "envoy", "local", "phantom-authz.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(b)
	if err != nil {
		t.Fatalf("envoy/local/phantom-authz.yaml: %v", err)
	}
	if cfg.GRPC.Addr != "127.0.0.1:9191" || cfg.HTTP.Addr != "127.0.0.1:9192" {
		t.Errorf("local config listens on %s / %s, want 127.0.0.1:9191 / 127.0.0.1:9192", cfg.GRPC.Addr, cfg.HTTP.Addr)
	}
	if cfg.Introspection == nil || cfg.Introspection.Endpoint != "http://127.0.0.1:4445/admin/oauth2/introspect" {
		t.Errorf("local config introspection %+v, want Hydra's admin port 4445", cfg.Introspection)
	}
}

// ---------------------------------------------------------------- docker compose

// Every service the compose file names is defined, every file it mounts
// exists, images are the pinned ones and ports are those of `make run`.
func TestDockerCompose(t *testing.T) {
	t.Parallel()
	docs := readYAML(t, "docker-compose.yaml")
	if len(docs) != 1 {
		t.Fatalf("docker-compose.yaml: %d documents", len(docs))
	}
	services, _ := docs[0]["services"].(map[string]any)
	for _, name := range []string{"envoy", "phantom-authz", "hydra", "hydra-bootstrap", "demo-api", "jaeger"} {
		if services[name] == nil {
			t.Errorf("service %s is not defined", name)
		}
	}
	images := map[string]string{"envoy": "envoyproxy/envoy:v1.40.0", "hydra": "oryd/hydra:v2.3.0", "hydra-bootstrap": "oryd/hydra:v2.3.0"}
	for svc, want := range images {
		if got := str(at(services, svc, "image")); got != want {
			t.Errorf("%s image %q, want %q", svc, got, want)
		}
	}
	stages := dockerfileStages(t)

	published := map[int]string{}
	mounts := map[string]string{} // container path -> host path, per service "svc:path"
	for name, svc := range services {
		// depends_on: a list of names or a map of name -> condition.
		deps := at(svc, "depends_on")
		var depNames []string
		switch d := deps.(type) {
		case []any:
			for _, n := range d {
				depNames = append(depNames, str(n))
			}
		case map[string]any:
			for n := range d {
				depNames = append(depNames, n)
			}
		}
		for _, d := range depNames {
			if services[d] == nil {
				t.Errorf("%s depends on %s, which is not defined", name, d)
			}
		}
		// Bind mounts: "./host:/container[:ro]".
		for _, v := range list(at(svc, "volumes")) {
			parts := strings.Split(str(v), ":")
			if len(parts) < 2 || !(strings.HasPrefix(parts[0], "./") || strings.HasPrefix(parts[0], "/")) {
				continue
			}
			if _, err := os.Stat(filepath.Join(root, parts[0])); err != nil {
				t.Errorf("%s mounts %s, which does not exist", name, parts[0])
			}
			mounts[name+":"+parts[1]] = parts[0]
		}
		if b := at(svc, "build"); b != nil {
			ctx, file := str(at(b, "context")), str(at(b, "dockerfile"))
			if file == "" {
				file = "Dockerfile"
			}
			if _, err := os.Stat(filepath.Join(root, ctx, file)); err != nil {
				t.Errorf("%s builds %s/%s, which does not exist", name, ctx, file)
			}
			if target := str(at(b, "target")); target != "" && !stages[target] {
				t.Errorf("%s builds target %s, which the Dockerfile does not define", name, target)
			}
		}
		for _, p := range list(at(svc, "ports")) {
			f := strings.Split(str(p), ":")
			if n, err := strconv.Atoi(f[len(f)-2]); err == nil {
				published[n] = name
			}
		}
	}

	// Same host ports as `make run`.
	run := runPorts(t)
	for v, svc := range map[string]string{"ENVOY_PORT": "envoy", "AUTHZ_GRPC": "phantom-authz", "AUTHZ_HTTP": "phantom-authz",
		"HYDRA_PUBLIC": "hydra", "HYDRA_ADMIN": "hydra", "DEMO_PORT": "demo-api"} {
		if got := published[run[v]]; got != svc {
			t.Errorf("host port %d (%s in run.sh) is published by %q, want %s", run[v], v, got, svc)
		}
	}

	// The configs mounted are the compose variants, and valid.
	if got := mounts["envoy:/etc/envoy/envoy.yaml"]; got != "./envoy/compose/envoy.yaml" {
		t.Errorf("envoy mounts %q as its config, want ./envoy/compose/envoy.yaml", got)
	}
	cfgPath := mounts["phantom-authz:/etc/phantom-authz/config.yaml"]
	if cfgPath == "" {
		t.Fatal("phantom-authz mounts no /etc/phantom-authz/config.yaml")
	}
	b, err := os.ReadFile(filepath.Join(root, cfgPath))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(b)
	if err != nil {
		t.Fatalf("%s: %v", cfgPath, err)
	}
	if !strings.HasPrefix(cfg.Introspection.Endpoint, "http://hydra:") {
		t.Errorf("compose introspection endpoint %s, want the hydra service", cfg.Introspection.Endpoint)
	}
	if mounts["phantom-authz:"+cfg.Policy.Dir] == "" {
		t.Errorf("policy.dir %s is not mounted into phantom-authz", cfg.Policy.Dir)
	}
	if got := mounts["hydra-bootstrap:/bootstrap/hydra-bootstrap.sh"]; got == "" {
		t.Error("hydra-bootstrap does not mount its script")
	} else if out, err := exec.Command("sh", "-n", filepath.Join(root, got)).CombinedOutput(); err != nil {
		t.Errorf("sh -n %s: %v\n%s", got, err, out)
	}
}

// dockerfileStages checks the Dockerfile's shape — multi-stage, static,
// distroless or scratch, non-root — and returns its stage names.
func dockerfileStages(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	stages := map[string]bool{}
	var froms []string
	var lastUser string
	text := strings.ReplaceAll(string(b), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			froms = append(froms, f[1])
			lastUser = ""
			if len(f) >= 4 && strings.EqualFold(f[2], "AS") {
				stages[f[3]] = true
			}
		case "USER":
			lastUser = f[1]
		case "COPY":
			if strings.Contains(line, "--from=") {
				continue
			}
			for _, src := range f[1 : len(f)-1] {
				if strings.HasPrefix(src, "--") {
					continue
				}
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("Dockerfile copies %s, which does not exist", src)
				}
			}
		}
	}
	if len(froms) < 2 {
		t.Errorf("Dockerfile has %d stages, want a multi-stage build", len(froms))
	}
	if final := froms[len(froms)-1]; !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		t.Errorf("final stage FROM %s, want distroless static or scratch", final)
	}
	if lastUser == "" || strings.HasPrefix(lastUser, "root") || strings.HasPrefix(lastUser, "0") {
		t.Errorf("final stage runs as %q, want a non-root USER", lastUser)
	}
	if !strings.Contains(text, "CGO_ENABLED=0") {
		t.Error("Dockerfile does not build with CGO_ENABLED=0 (a static binary)")
	}
	return stages
}

// The Kubernetes, Istio and Envoy Gateway manifests are checked in the Go
// module e2e/manifests, by decoding them strictly into those projects' own
// API types (kept out of this module so the service binary never links them).
