package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
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

// ---------------------------------------------------------------- Kubernetes and Istio

// The Kubernetes and Istio manifests hold together: a Deployment ready on
// /readyz, a Service the mesh's ext_authz provider points at (fail closed),
// and a CUSTOM AuthorizationPolicy naming that provider.
func TestKubernetesAndIstioManifests(t *testing.T) {
	t.Parallel()
	byKind := map[string][]map[string]any{}
	for _, rel := range []string{"envoy/kubernetes/phantom-authz.yaml", "envoy/istio/mesh-config.yaml", "envoy/istio/authorization-policy.yaml"} {
		for _, d := range readYAML(t, rel) {
			if str(d["apiVersion"]) == "" || str(d["kind"]) == "" || str(at(d, "metadata", "name")) == "" {
				t.Errorf("%s: a document without apiVersion, kind or metadata.name", rel)
			}
			byKind[str(d["kind"])] = append(byKind[str(d["kind"])], d)
		}
	}
	kinds := make([]string, 0, len(byKind))
	for k := range byKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range []string{"Deployment", "ConfigMap", "IstioOperator", "AuthorizationPolicy"} {
		if len(byKind[k]) != 1 {
			t.Fatalf("want one %s, have %d (kinds: %v)", k, len(byKind[k]), kinds)
		}
	}
	dep, cm := byKind["Deployment"][0], byKind["ConfigMap"][0]
	svc := named(t, byKind["Service"], "phantom-authz")
	ns := str(at(dep, "metadata", "namespace"))

	// Deployment: readiness on /readyz on the HTTP port; ports named.
	c := at(dep, "spec", "template", "spec", "containers", 0)
	ports := map[string]int{}
	for _, p := range list(at(c, "ports")) {
		n, _ := strconv.Atoi(str(at(p, "containerPort")))
		ports[str(at(p, "name"))] = n
	}
	if str(at(c, "readinessProbe", "httpGet", "path")) != "/readyz" {
		t.Errorf("readinessProbe %v, want httpGet /readyz", at(c, "readinessProbe"))
	}
	readyPort := str(at(c, "readinessProbe", "httpGet", "port"))
	if (readyPort != "http" && readyPort != strconv.Itoa(ports["http"])) || ports["http"] == 0 || ports["grpc"] == 0 {
		t.Errorf("readiness port %v, container ports %v: want /readyz on the http port", at(c, "readinessProbe", "httpGet", "port"), ports)
	}
	if at(dep, "spec", "template", "spec", "securityContext", "runAsNonRoot") != true {
		t.Error("the Deployment does not set runAsNonRoot")
	}
	if !reflect.DeepEqual(at(dep, "spec", "selector", "matchLabels"), at(svc, "spec", "selector")) {
		t.Errorf("Service selector %v does not match the Deployment's %v", at(svc, "spec", "selector"), at(dep, "spec", "selector", "matchLabels"))
	}

	// The configuration in the ConfigMap is valid and listens where the
	// ports say (its secret file replaced: it exists only in the cluster).
	raw := str(at(cm, "data", "config.yaml"))
	secret := filepath.Join(t.TempDir(), "client_secret")
	if err := os.WriteFile(secret, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	raw = strings.Replace(raw, "/etc/phantom-authz/secrets/client_secret", secret, 1)
	cfg, err := config.Parse([]byte(raw))
	if err != nil {
		t.Fatalf("ConfigMap config.yaml: %v", err)
	}
	for name, addr := range map[string]string{"grpc": cfg.GRPC.Addr, "http": cfg.HTTP.Addr} {
		if _, port, _ := net.SplitHostPort(addr); port != strconv.Itoa(ports[name]) {
			t.Errorf("%s.addr %s does not match containerPort %s %d", name, addr, name, ports[name])
		}
	}
	if cfg.Mint.SigningKeyFile == "" {
		t.Error("the cluster config generates a signing key per replica; replicas must share one (mint.signing_key_file)")
	}
	args := strings.Join(func() []string {
		var s []string
		for _, a := range list(at(c, "args")) {
			s = append(s, str(a))
		}
		return s
	}(), " ")
	if !strings.Contains(args, "--config /etc/phantom-authz/config.yaml") {
		t.Errorf("container args %q do not load the mounted config", args)
	}

	// Service: the gRPC port, spoken as gRPC.
	svcGRPC := 0
	for _, p := range list(at(svc, "spec", "ports")) {
		if str(at(p, "name")) == "grpc" {
			svcGRPC, _ = strconv.Atoi(str(at(p, "port")))
			if str(at(p, "appProtocol")) != "grpc" {
				t.Error("Service port grpc has no appProtocol: grpc")
			}
		}
	}
	if svcGRPC == 0 {
		t.Fatal("the Service has no port named grpc")
	}

	// Mesh config: the provider points at that Service and fails closed.
	var provider map[string]any
	for _, p := range list(at(byKind["IstioOperator"][0], "spec", "meshConfig", "extensionProviders")) {
		if g, ok := at(p, "envoyExtAuthzGrpc").(map[string]any); ok {
			provider = p.(map[string]any)
			wantHost := fmt.Sprintf("%s.%s.svc.cluster.local", str(at(svc, "metadata", "name")), ns)
			if str(g["service"]) != wantHost {
				t.Errorf("envoyExtAuthzGrpc.service %v, want %s", g["service"], wantHost)
			}
			if str(g["port"]) != strconv.Itoa(svcGRPC) {
				t.Errorf("envoyExtAuthzGrpc.port %v, want %d", g["port"], svcGRPC)
			}
			if str(g["timeout"]) == "" {
				t.Error("envoyExtAuthzGrpc has no timeout")
			}
			if v, ok := g["failOpen"]; !ok || v != false {
				t.Errorf("envoyExtAuthzGrpc.failOpen %v, want false, written out", v)
			}
		}
	}
	if provider == nil {
		t.Fatal("no extensionProviders entry with envoyExtAuthzGrpc")
	}

	// AuthorizationPolicy: CUSTOM, by that provider.
	ap := byKind["AuthorizationPolicy"][0]
	if !strings.HasPrefix(str(ap["apiVersion"]), "security.istio.io/") {
		t.Errorf("AuthorizationPolicy apiVersion %v", ap["apiVersion"])
	}
	if str(at(ap, "spec", "action")) != "CUSTOM" {
		t.Errorf("AuthorizationPolicy action %v, want CUSTOM", at(ap, "spec", "action"))
	}
	if str(at(ap, "spec", "provider", "name")) != str(provider["name"]) {
		t.Errorf("AuthorizationPolicy provider %v, want %v", at(ap, "spec", "provider", "name"), provider["name"])
	}
}

// named is the document of docs with metadata.name name.
func named(t *testing.T, docs []map[string]any, name string) map[string]any {
	t.Helper()
	for _, d := range docs {
		if str(at(d, "metadata", "name")) == name {
			return d
		}
	}
	t.Fatalf("no %s named %q", str(at(docs, 0, "kind")), name)
	return nil
}

// kinds groups documents by kind.
func kinds(docs []map[string]any) map[string][]map[string]any {
	out := map[string][]map[string]any{}
	for _, d := range docs {
		out[str(d["kind"])] = append(out[str(d["kind"])], d)
	}
	return out
}

// quantity parses a Kubernetes resource quantity as far as the manifests
// use it: a plain or decimal number, m (milli), Ki, Mi, Gi.
func quantity(t *testing.T, what string, v any) float64 {
	t.Helper()
	s := str(v)
	mult := 1.0
	for suffix, m := range map[string]float64{"m": 1e-3, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30} {
		if strings.HasSuffix(s, suffix) {
			s, mult = strings.TrimSuffix(s, suffix), m
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 {
		t.Fatalf("%s: %q is not a positive quantity", what, str(v))
	}
	return f * mult
}

// benchPeakRSS is the largest server RSS `make bench` recorded in
// e2e/bench/RESULTS.md (the "(max)" of every scenario), in bytes.
func benchPeakRSS(t *testing.T) float64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "e2e", "bench", "RESULTS.md"))
	if err != nil {
		t.Fatal(err)
	}
	peak := 0.0
	for _, m := range regexp.MustCompile(`\(([0-9.]+) MiB\)`).FindAllStringSubmatch(string(b), -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		peak = max(peak, v*(1<<20))
	}
	if peak == 0 {
		t.Fatal("e2e/bench/RESULTS.md has no RSS figures (\"(N MiB)\")")
	}
	return peak
}

// The Kubernetes Deployment scales: a HorizontalPodAutoscaler on CPU owns
// the replica count, a PodDisruptionBudget keeps all but one pod through
// drains, the resources cover what `make bench` measured, and a headless
// Service lets a plain Envoy balance over every pod.
func TestKubernetesScaling(t *testing.T) {
	t.Parallel()
	const rel = "envoy/kubernetes/phantom-authz.yaml"
	byKind := kinds(readYAML(t, rel))
	for _, k := range []string{"Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"} {
		if len(byKind[k]) != 1 {
			t.Fatalf("%s: want one %s, have %d", rel, k, len(byKind[k]))
		}
	}
	dep, hpa, pdb := byKind["Deployment"][0], byKind["HorizontalPodAutoscaler"][0], byKind["PodDisruptionBudget"][0]
	ns, labels := str(at(dep, "metadata", "namespace")), at(dep, "spec", "selector", "matchLabels")

	// The autoscaler owns the replica count and scales on CPU.
	if r := at(dep, "spec", "replicas"); r != nil {
		t.Errorf("the Deployment sets replicas: %v; with an autoscaler every kubectl apply would reset the count", r)
	}
	if str(hpa["apiVersion"]) != "autoscaling/v2" || str(at(hpa, "metadata", "namespace")) != ns {
		t.Errorf("HorizontalPodAutoscaler apiVersion %v namespace %v, want autoscaling/v2 in %s", hpa["apiVersion"], at(hpa, "metadata", "namespace"), ns)
	}
	ref := at(hpa, "spec", "scaleTargetRef")
	if str(at(ref, "kind")) != "Deployment" || str(at(ref, "apiVersion")) != "apps/v1" || str(at(ref, "name")) != str(at(dep, "metadata", "name")) {
		t.Errorf("HorizontalPodAutoscaler scaleTargetRef %v, want the Deployment", ref)
	}
	minReplicas, _ := strconv.Atoi(str(at(hpa, "spec", "minReplicas")))
	maxReplicas, _ := strconv.Atoi(str(at(hpa, "spec", "maxReplicas")))
	if minReplicas < 2 || maxReplicas <= minReplicas {
		t.Errorf("HorizontalPodAutoscaler replicas %d..%d, want at least 2 and room to grow", minReplicas, maxReplicas)
	}
	cpuTarget := 0
	for _, m := range list(at(hpa, "spec", "metrics")) {
		if str(at(m, "type")) == "Resource" && str(at(m, "resource", "name")) == "cpu" && str(at(m, "resource", "target", "type")) == "Utilization" {
			cpuTarget, _ = strconv.Atoi(str(at(m, "resource", "target", "averageUtilization")))
		}
	}
	if cpuTarget <= 0 || cpuTarget > 100 {
		t.Errorf("HorizontalPodAutoscaler has no CPU Utilization target between 1 and 100%% (metrics %v)", at(hpa, "spec", "metrics"))
	}

	// Drains take one pod at a time, and the autoscaler's minimum allows one.
	if !reflect.DeepEqual(at(pdb, "spec", "selector", "matchLabels"), labels) || str(at(pdb, "metadata", "namespace")) != ns {
		t.Errorf("PodDisruptionBudget selects %v in %v, want the Deployment's pods %v in %s", at(pdb, "spec", "selector", "matchLabels"), at(pdb, "metadata", "namespace"), labels, ns)
	}
	budget := at(pdb, "spec", "maxUnavailable")
	if budget == nil {
		t.Errorf("PodDisruptionBudget has no maxUnavailable (minAvailable %v does not follow the autoscaler's count)", at(pdb, "spec", "minAvailable"))
	} else if n, err := strconv.Atoi(str(budget)); err != nil || n < 1 || n >= minReplicas {
		t.Errorf("PodDisruptionBudget maxUnavailable %v, want a count from 1 to below minReplicas %d", budget, minReplicas)
	}

	// Resources: CPU requested (the autoscaler's utilisation is relative to
	// it), memory covering the peak RSS of `make bench`, with room for the
	// collector up to the limit, which GOMEMLIMIT follows.
	c := at(dep, "spec", "template", "spec", "containers", 0)
	res := at(c, "resources")
	quantity(t, "requests.cpu", at(res, "requests", "cpu"))
	reqMem := quantity(t, "requests.memory", at(res, "requests", "memory"))
	limMem := quantity(t, "limits.memory", at(res, "limits", "memory"))
	if peak := benchPeakRSS(t); reqMem < peak || limMem < 2*peak {
		t.Errorf("memory request %.0f MiB, limit %.0f MiB: want the request at least the benchmark's peak RSS (%.1f MiB, e2e/bench/RESULTS.md) and the limit twice it",
			reqMem/(1<<20), limMem/(1<<20), peak/(1<<20))
	}
	if lim := at(res, "limits", "cpu"); lim != nil && quantity(t, "limits.cpu", lim) < quantity(t, "requests.cpu", at(res, "requests", "cpu")) {
		t.Errorf("CPU limit %v below the request %v", lim, at(res, "requests", "cpu"))
	}
	gomemlimit := false
	for _, e := range list(at(c, "env")) {
		if str(at(e, "name")) == "GOMEMLIMIT" {
			gomemlimit = str(at(e, "valueFrom", "resourceFieldRef", "resource")) == "limits.memory"
		}
	}
	if !gomemlimit {
		t.Error("the container has no GOMEMLIMIT from resourceFieldRef limits.memory")
	}

	// The headless Service: one DNS record per pod, for STRICT_DNS.
	headless := named(t, byKind["Service"], "phantom-authz-headless")
	if str(at(headless, "spec", "clusterIP")) != "None" || !reflect.DeepEqual(at(headless, "spec", "selector"), labels) {
		t.Errorf("Service phantom-authz-headless: clusterIP %v selector %v, want None and the Deployment's pods", at(headless, "spec", "clusterIP"), at(headless, "spec", "selector"))
	}
	if str(at(headless, "spec", "ports", 0, "name")) != "grpc" || str(at(headless, "spec", "ports", 0, "appProtocol")) != "grpc" {
		t.Errorf("Service phantom-authz-headless ports %v, want grpc spoken as gRPC", at(headless, "spec", "ports"))
	}
}

// The Redis option (envoy/kubernetes/redis.yaml) fits the base manifests:
// its configuration is the base one plus redis and admin, valid, pointing
// at its Redis Service; the files it names are the Secrets the Deployment
// mounts and Redis itself reads; Redis keeps nothing on disk, never evicts a
// used DPoP proof, and takes connections from phantom-authz only.
func TestKubernetesRedisOption(t *testing.T) {
	t.Parallel()
	const baseRel, rel = "envoy/kubernetes/phantom-authz.yaml", "envoy/kubernetes/redis.yaml"
	base, red := kinds(readYAML(t, baseRel)), kinds(readYAML(t, rel))
	for k, docs := range red {
		for _, d := range docs {
			if str(d["apiVersion"]) == "" || str(at(d, "metadata", "name")) == "" || str(at(d, "metadata", "namespace")) == "" {
				t.Errorf("%s: a %s without apiVersion, metadata.name or metadata.namespace", rel, k)
			}
		}
	}
	for _, k := range []string{"ConfigMap", "Deployment", "Service", "NetworkPolicy"} {
		if len(red[k]) != 1 {
			t.Fatalf("%s: want one %s, have %d", rel, k, len(red[k]))
		}
	}
	authzDep, baseCM := base["Deployment"][0], base["ConfigMap"][0]
	ns := str(at(authzDep, "metadata", "namespace"))
	cm, redisDep, redisSvc, netpol := red["ConfigMap"][0], red["Deployment"][0], red["Service"][0], red["NetworkPolicy"][0]
	for _, d := range []map[string]any{cm, redisDep, redisSvc, netpol} {
		if got := str(at(d, "metadata", "namespace")); got != ns {
			t.Errorf("%s %s in namespace %q, want %q", d["kind"], at(d, "metadata", "name"), got, ns)
		}
	}

	// The ConfigMap replaces the base one: the same configuration plus redis
	// and admin.
	if str(at(cm, "metadata", "name")) != str(at(baseCM, "metadata", "name")) {
		t.Errorf("%s ConfigMap %v does not replace the base %v", rel, at(cm, "metadata", "name"), at(baseCM, "metadata", "name"))
	}
	raw := str(at(cm, "data", "config.yaml"))
	var withRedis, without map[string]any
	if err := yaml.Unmarshal([]byte(raw), &withRedis); err != nil {
		t.Fatalf("%s config.yaml: %v", rel, err)
	}
	if err := yaml.Unmarshal([]byte(str(at(baseCM, "data", "config.yaml"))), &without); err != nil {
		t.Fatalf("%s config.yaml: %v", baseRel, err)
	}
	redisCfg, _ := withRedis["redis"].(map[string]any)
	adminCfg, _ := withRedis["admin"].(map[string]any)
	if redisCfg == nil || adminCfg == nil {
		t.Fatalf("%s config.yaml has no redis or no admin section", rel)
	}
	if without["redis"] != nil || without["admin"] != nil {
		t.Errorf("%s config.yaml already has redis or admin", baseRel)
	}
	rest := map[string]any{}
	for k, v := range withRedis {
		if k != "redis" && k != "admin" {
			rest[k] = v
		}
	}
	if !reflect.DeepEqual(rest, without) {
		t.Errorf("%s config.yaml differs from %s's beyond redis and admin: keep them in step", rel, baseRel)
	}

	// redis.url names the Service, on its port.
	svcPort := ""
	for _, p := range list(at(redisSvc, "spec", "ports")) {
		if str(at(p, "name")) == "redis" {
			svcPort = str(at(p, "port"))
		}
	}
	u, err := url.Parse(str(redisCfg["url"]))
	if err != nil {
		t.Fatalf("redis.url: %v", err)
	}
	if want := fmt.Sprintf("%s.%s.svc.cluster.local:%s", at(redisSvc, "metadata", "name"), ns, svcPort); u.Scheme != "redis" || u.Host != want {
		t.Errorf("redis.url %s, want redis://%s/…", u, want)
	}
	if !reflect.DeepEqual(at(redisSvc, "spec", "selector"), at(redisDep, "spec", "selector", "matchLabels")) {
		t.Errorf("Redis Service selector %v does not match its Deployment's %v", at(redisSvc, "spec", "selector"), at(redisDep, "spec", "selector", "matchLabels"))
	}

	// Each file the configuration names is a key of a Secret the base
	// Deployment mounts (optional: the base configuration needs neither), and
	// the header says how to create it; Redis reads its password from the
	// same Secret and key.
	header, _ := os.ReadFile(filepath.Join(root, rel))
	secretOf := func(file string) (secret, key string) {
		t.Helper()
		c := at(authzDep, "spec", "template", "spec", "containers", 0)
		for _, m := range list(at(c, "volumeMounts")) {
			if str(at(m, "mountPath")) != filepath.Dir(file) {
				continue
			}
			for _, v := range list(at(authzDep, "spec", "template", "spec", "volumes")) {
				if str(at(v, "name")) == str(at(m, "name")) {
					if at(v, "secret", "optional") != true {
						t.Errorf("volume %v: the Secret is not optional, so the base manifests alone would not start", at(v, "name"))
					}
					secret, key = str(at(v, "secret", "secretName")), filepath.Base(file)
				}
			}
		}
		if secret == "" {
			t.Fatalf("%s: no Secret volume of %s is mounted at %s", file, baseRel, filepath.Dir(file))
		}
		if !strings.Contains(string(header), "create secret generic "+secret+" ") || !strings.Contains(string(header), "--from-literal="+key+"=") {
			t.Errorf("%s's header does not say how to create Secret %s with key %s", rel, secret, key)
		}
		return secret, key
	}
	pwSecret, pwKey := secretOf(str(redisCfg["password_file"]))
	secretOf(str(adminCfg["token_file"]))
	// The shared cache's key: a Secret the Redis pod never references.
	keySecret, _ := secretOf(str(redisCfg["cache_key_file"]))
	if keySecret == pwSecret {
		t.Errorf("redis.cache_key_file is in Secret %s with the Redis password: keep it where the Redis pod cannot read it", keySecret)
	}
	rc := at(redisDep, "spec", "template", "spec", "containers", 0)
	var pwEnv string
	for _, e := range list(at(rc, "env")) {
		if str(at(e, "valueFrom", "secretKeyRef", "name")) == pwSecret && str(at(e, "valueFrom", "secretKeyRef", "key")) == pwKey {
			pwEnv = str(at(e, "name"))
		}
	}
	if pwEnv == "" {
		t.Errorf("Redis reads no password from Secret %s key %s", pwSecret, pwKey)
	}

	// Redis: the password required, nothing on disk, no eviction.
	var args []string
	for _, a := range list(at(rc, "args")) {
		args = append(args, str(a))
	}
	joined := strings.Join(args, "\x00")
	for _, want := range [][]string{{"--requirepass", "$(" + pwEnv + ")"}, {"--save", ""}, {"--appendonly", "no"}, {"--maxmemory-policy", "noeviction"}} {
		if !strings.Contains(joined, strings.Join(want, "\x00")) {
			t.Errorf("Redis args %q lack %q", args, want)
		}
	}
	if img := str(at(rc, "image")); !strings.Contains(img, ":") || strings.HasSuffix(img, ":latest") {
		t.Errorf("Redis image %q: pin a tag or digest", img)
	}
	if at(redisDep, "spec", "template", "spec", "securityContext", "runAsNonRoot") != true {
		t.Error("the Redis Deployment does not set runAsNonRoot")
	}

	// Only phantom-authz's pods reach Redis.
	if !reflect.DeepEqual(at(netpol, "spec", "podSelector", "matchLabels"), at(redisDep, "spec", "selector", "matchLabels")) {
		t.Errorf("NetworkPolicy selects %v, not the Redis pods", at(netpol, "spec", "podSelector", "matchLabels"))
	}
	if from := at(netpol, "spec", "ingress", 0, "from", 0, "podSelector", "matchLabels"); len(list(at(netpol, "spec", "ingress"))) != 1 ||
		!reflect.DeepEqual(from, at(authzDep, "spec", "selector", "matchLabels")) {
		t.Errorf("NetworkPolicy admits %v, want phantom-authz's pods only", at(netpol, "spec", "ingress"))
	}

	// The configuration is valid (the Secrets' files stand in by temporary
	// ones: they exist only in the cluster).
	dir := t.TempDir()
	for _, f := range []string{"/etc/phantom-authz/secrets/client_secret", str(redisCfg["password_file"]), str(redisCfg["cache_key_file"]), str(adminCfg["token_file"])} {
		local := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(local, []byte("s3cret-0123456789-0123456789-0123456789"), 0o600); err != nil {
			t.Fatal(err)
		}
		raw = strings.Replace(raw, f, local, 1)
	}
	if _, err := config.Parse([]byte(raw)); err != nil {
		t.Errorf("%s config.yaml: %v", rel, err)
	}
}
