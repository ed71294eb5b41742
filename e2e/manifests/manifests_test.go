package manifests

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	egv1alpha1 "github.com/envoyproxy/gateway/api/v1alpha1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/phantom-authz/phantom-authz/authz/config"
	"github.com/phantom-authz/phantom-authz/authz/route"
)

// root is the repository.
var root = filepath.Join("..", "..")

// manifests are every Kubernetes, Istio and Envoy Gateway file.
func manifests(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, dir := range []string{"envoy/kubernetes", "envoy/istio", "envoy/gateway"} {
		m, err := filepath.Glob(filepath.Join(root, dir, "*.yaml"))
		if err != nil || len(m) == 0 {
			t.Fatalf("%s: no manifests (%v)", dir, err)
		}
		files = append(files, m...)
	}
	return files
}

// objects decodes the files (relative to the repository) strictly.
func objects(t *testing.T, rels ...string) []any {
	t.Helper()
	var out []any
	for _, rel := range rels {
		objs, err := DecodeFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, objs...)
	}
	return out
}

// only returns the one object of type T in objs.
func only[T any](t *testing.T, objs []any) T {
	t.Helper()
	all := every[T](objs)
	if len(all) != 1 {
		var zero T
		t.Fatalf("want one %T, have %d", zero, len(all))
	}
	return all[0]
}

func every[T any](objs []any) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// Every manifest decodes into its project's Go type, every object has a
// name, and a misspelt field anywhere fails the decoding.
func TestManifestsDecodeStrictly(t *testing.T) {
	for _, f := range manifests(t) {
		objs, err := DecodeFile(f)
		if err != nil {
			t.Error(err)
			continue
		}
		if len(objs) == 0 {
			t.Errorf("%s: no objects", f)
		}
	}

	// The decoder refuses what the API server or istioctl would.
	for name, c := range map[string]struct{ file, from, to string }{
		"Deployment field":             {"envoy/kubernetes/phantom-authz.yaml", "  replicas:", "  replicass:"},
		"container field":              {"envoy/kubernetes/phantom-authz.yaml", "readinessProbe:", "readynessProbe:"},
		"wrong type":                   {"envoy/kubernetes/phantom-authz.yaml", "containerPort: 9191", "containerPort: grpc-port"},
		"AuthorizationPolicy spec":     {"envoy/istio/authorization-policy.yaml", "action: CUSTOM", "actoin: CUSTOM"},
		"AuthorizationPolicy enum":     {"envoy/istio/authorization-policy.yaml", "action: CUSTOM", "action: CUSTOMISED"},
		"mesh config":                  {"envoy/istio/mesh-config.yaml", "failOpen:", "failOpn:"},
		"mesh config nested":           {"envoy/istio/mesh-config.yaml", "forwardClientCertDetails:", "forwardClientCertDetail:"},
		"SecurityPolicy":               {"envoy/gateway/security-policy.yaml", "failOpen:", "failopen:"},
		"HTTPRoute":                    {"envoy/gateway/security-policy.yaml", "hostnames:", "hostname:"},
		"ReferenceGrant":               {"envoy/gateway/security-policy.yaml", "  from:", "  form:"},
		"unknown kind":                 {"envoy/gateway/security-policy.yaml", "kind: SecurityPolicy", "kind: SecurityPolicies"},
		"ConfigMap data is not a list": {"envoy/istio/phantom-authz.yaml", "data:\n  config.yaml: |", "data:\n  - config.yaml: |"},
	} {
		b, err := os.ReadFile(filepath.Join(root, c.file))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), c.from) {
			if name == "Deployment field" {
				// The Deployment leaves replicas to the autoscaler: add one.
				c.from, c.to = "  selector:\n    matchLabels:", "  replicass: 2\n  selector:\n    matchLabels:"
			}
			if !strings.Contains(string(b), c.from) {
				t.Fatalf("%s: %s has no %q to spoil", name, c.file, c.from)
			}
		}
		if _, err := Decode([]byte(strings.Replace(string(b), c.from, c.to, 1))); err == nil {
			t.Errorf("%s: %s with %q decodes; want an error", name, c.file, c.to)
		}
	}
}

// base is the Deployment, its ConfigMap and its Services.
type base struct {
	dep       *appsv1.Deployment
	cm        *corev1.ConfigMap
	svc       *corev1.Service
	headless  *corev1.Service
	container corev1.Container
	ports     map[string]int32
}

func loadBase(t *testing.T) base {
	t.Helper()
	objs := objects(t, "envoy/kubernetes/phantom-authz.yaml")
	b := base{dep: only[*appsv1.Deployment](t, objs), cm: only[*corev1.ConfigMap](t, objs), ports: map[string]int32{}}
	for _, s := range every[*corev1.Service](objs) {
		switch s.Name {
		case "phantom-authz":
			b.svc = s
		case "phantom-authz-headless":
			b.headless = s
		}
	}
	if b.svc == nil || b.headless == nil {
		t.Fatal("want Services phantom-authz and phantom-authz-headless")
	}
	b.container = b.dep.Spec.Template.Spec.Containers[0]
	for _, p := range b.container.Ports {
		b.ports[p.Name] = p.ContainerPort
	}
	return b
}

// parseConfig validates a config.yaml of a ConfigMap, its cluster-only files
// replaced by temporary ones.
func parseConfig(t *testing.T, raw string, files ...string) config.Config {
	t.Helper()
	dir := t.TempDir()
	for _, f := range append([]string{"/etc/phantom-authz/secrets/client_secret"}, files...) {
		local := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(local, []byte("s3cret-0123456789-0123456789-0123456789"), 0o600); err != nil {
			t.Fatal(err)
		}
		raw = strings.ReplaceAll(raw, f, local)
	}
	cfg, err := config.Parse([]byte(raw))
	if err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	return cfg
}

func TestKubernetesAndIstioManifests(t *testing.T) {
	b := loadBase(t)
	c := b.container

	// Deployment: readiness on /readyz on the HTTP port; ports named.
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Fatalf("readinessProbe %+v, want httpGet /readyz", c.ReadinessProbe)
	}
	if p := c.ReadinessProbe.HTTPGet.Port; (p.String() != "http" && p.IntValue() != int(b.ports["http"])) || b.ports["http"] == 0 || b.ports["grpc"] == 0 {
		t.Errorf("readiness port %v, container ports %v: want /readyz on the http port", p.String(), b.ports)
	}
	if sc := b.dep.Spec.Template.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("the Deployment does not set runAsNonRoot")
	}
	if !reflect.DeepEqual(b.dep.Spec.Selector.MatchLabels, b.svc.Spec.Selector) {
		t.Errorf("Service selector %v does not match the Deployment's %v", b.svc.Spec.Selector, b.dep.Spec.Selector.MatchLabels)
	}

	// The configuration in the ConfigMap is valid and listens where the
	// ports say.
	cfg := parseConfig(t, b.cm.Data["config.yaml"])
	for name, addr := range map[string]string{"grpc": cfg.GRPC.Addr, "http": cfg.HTTP.Addr} {
		if _, port, _ := net.SplitHostPort(addr); port != strconv.Itoa(int(b.ports[name])) {
			t.Errorf("%s.addr %s does not match containerPort %s %d", name, addr, name, b.ports[name])
		}
	}
	if cfg.Mint.SigningKeyFile == "" {
		t.Error("the cluster config generates a signing key per replica; replicas must share one (mint.signing_key_file)")
	}
	if args := strings.Join(c.Args, " "); !strings.Contains(args, "--config /etc/phantom-authz/config.yaml") {
		t.Errorf("container args %q do not load the mounted config", args)
	}

	// Service: the gRPC port, spoken as gRPC.
	var svcGRPC int32
	for _, p := range b.svc.Spec.Ports {
		if p.Name == "grpc" {
			svcGRPC = p.Port
			if p.AppProtocol == nil || *p.AppProtocol != "grpc" {
				t.Error("Service port grpc has no appProtocol: grpc")
			}
		}
	}
	if svcGRPC == 0 {
		t.Fatal("the Service has no port named grpc")
	}

	// Mesh config: the provider points at that Service and fails closed;
	// the gateway sanitises and sets XFCC.
	istio := objects(t, "envoy/istio/mesh-config.yaml", "envoy/istio/authorization-policy.yaml")
	mesh := only[*IstioOperator](t, istio).Mesh
	var providerName string
	for _, p := range mesh.GetExtensionProviders() {
		g := p.GetEnvoyExtAuthzGrpc()
		if g == nil {
			continue
		}
		providerName = p.GetName()
		if want := fmt.Sprintf("%s.%s.svc.cluster.local", b.svc.Name, b.svc.Namespace); g.GetService() != want {
			t.Errorf("envoyExtAuthzGrpc.service %s, want %s", g.GetService(), want)
		}
		if int32(g.GetPort()) != svcGRPC {
			t.Errorf("envoyExtAuthzGrpc.port %d, want %d", g.GetPort(), svcGRPC)
		}
		if g.GetTimeout() == nil || g.GetTimeout().AsDuration() <= 0 {
			t.Error("envoyExtAuthzGrpc has no timeout")
		}
		if g.GetFailOpen() {
			t.Error("envoyExtAuthzGrpc.failOpen is true; want false (fail closed)")
		}
	}
	if providerName == "" {
		t.Fatal("no extensionProviders entry with envoyExtAuthzGrpc")
	}
	if f := mesh.GetDefaultConfig().GetGatewayTopology().GetForwardClientCertDetails().String(); f != "SANITIZE_SET" {
		t.Errorf("gatewayTopology.forwardClientCertDetails %s, want SANITIZE_SET (binding.xfcc trusts the gateway's header)", f)
	}

	// AuthorizationPolicy: CUSTOM, by that provider.
	ap := only[*securityv1.AuthorizationPolicy](t, istio)
	if ap.Spec.GetAction().String() != "CUSTOM" || ap.Spec.GetProvider().GetName() != providerName {
		t.Errorf("AuthorizationPolicy action %s provider %q, want CUSTOM by %q", ap.Spec.GetAction(), ap.Spec.GetProvider().GetName(), providerName)
	}
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
	objs := objects(t, "envoy/kubernetes/phantom-authz.yaml")
	b := loadBase(t)
	hpa, pdb := only[*autoscalingv2.HorizontalPodAutoscaler](t, objs), only[*policyv1.PodDisruptionBudget](t, objs)
	ns, labels := b.dep.Namespace, b.dep.Spec.Selector.MatchLabels

	if b.dep.Spec.Replicas != nil {
		t.Errorf("the Deployment sets replicas: %d; with an autoscaler every kubectl apply would reset the count", *b.dep.Spec.Replicas)
	}
	if hpa.Namespace != ns {
		t.Errorf("HorizontalPodAutoscaler in %q, want %s", hpa.Namespace, ns)
	}
	if ref := hpa.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || ref.Name != b.dep.Name {
		t.Errorf("HorizontalPodAutoscaler scaleTargetRef %+v, want the Deployment", ref)
	}
	minReplicas := int32(1)
	if hpa.Spec.MinReplicas != nil {
		minReplicas = *hpa.Spec.MinReplicas
	}
	if minReplicas < 2 || hpa.Spec.MaxReplicas <= minReplicas {
		t.Errorf("HorizontalPodAutoscaler replicas %d..%d, want at least 2 and room to grow", minReplicas, hpa.Spec.MaxReplicas)
	}
	var cpuTarget int32
	for _, m := range hpa.Spec.Metrics {
		if m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU &&
			m.Resource.Target.Type == autoscalingv2.UtilizationMetricType && m.Resource.Target.AverageUtilization != nil {
			cpuTarget = *m.Resource.Target.AverageUtilization
		}
	}
	if cpuTarget <= 0 || cpuTarget > 100 {
		t.Errorf("HorizontalPodAutoscaler has no CPU Utilization target between 1 and 100%% (metrics %+v)", hpa.Spec.Metrics)
	}

	if pdb.Spec.Selector == nil || !reflect.DeepEqual(pdb.Spec.Selector.MatchLabels, labels) || pdb.Namespace != ns {
		t.Errorf("PodDisruptionBudget selects %v in %v, want the Deployment's pods %v in %s", pdb.Spec.Selector, pdb.Namespace, labels, ns)
	}
	if u := pdb.Spec.MaxUnavailable; u == nil {
		t.Errorf("PodDisruptionBudget has no maxUnavailable (minAvailable %v does not follow the autoscaler's count)", pdb.Spec.MinAvailable)
	} else if n := u.IntValue(); u.String() != strconv.Itoa(n) || n < 1 || int32(n) >= minReplicas {
		t.Errorf("PodDisruptionBudget maxUnavailable %v, want a count from 1 to below minReplicas %d", u.String(), minReplicas)
	}

	// Resources: CPU requested (the autoscaler's utilisation is relative to
	// it), memory covering the peak RSS of `make bench`, with room for the
	// collector up to the limit, which GOMEMLIMIT follows.
	res := b.container.Resources
	reqCPU, ok := res.Requests[corev1.ResourceCPU]
	if !ok || reqCPU.Sign() <= 0 {
		t.Error("no CPU request")
	}
	reqMem, limMem := res.Requests[corev1.ResourceMemory], res.Limits[corev1.ResourceMemory]
	if peak := benchPeakRSS(t); reqMem.AsApproximateFloat64() < peak || limMem.AsApproximateFloat64() < 2*peak {
		t.Errorf("memory request %s, limit %s: want the request at least the benchmark's peak RSS (%.1f MiB, e2e/bench/RESULTS.md) and the limit twice it",
			reqMem.String(), limMem.String(), peak/(1<<20))
	}
	if lim, ok := res.Limits[corev1.ResourceCPU]; ok && lim.Cmp(reqCPU) < 0 {
		t.Errorf("CPU limit %s below the request %s", lim.String(), reqCPU.String())
	}
	if !slices.ContainsFunc(b.container.Env, func(e corev1.EnvVar) bool {
		return e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory"
	}) {
		t.Error("the container has no GOMEMLIMIT from resourceFieldRef limits.memory")
	}

	// The headless Service: one DNS record per pod, for STRICT_DNS.
	h := b.headless
	if h.Spec.ClusterIP != corev1.ClusterIPNone || !reflect.DeepEqual(h.Spec.Selector, labels) {
		t.Errorf("Service phantom-authz-headless: clusterIP %v selector %v, want None and the Deployment's pods", h.Spec.ClusterIP, h.Spec.Selector)
	}
	if len(h.Spec.Ports) == 0 || h.Spec.Ports[0].Name != "grpc" || h.Spec.Ports[0].AppProtocol == nil || *h.Spec.Ports[0].AppProtocol != "grpc" {
		t.Errorf("Service phantom-authz-headless ports %+v, want grpc spoken as gRPC", h.Spec.Ports)
	}

}

// overlay checks that a ConfigMap replacing the base one holds the base
// configuration plus exactly the top-level keys extra.
func overlay(t *testing.T, rel string, cm *corev1.ConfigMap, b base, extra ...string) map[string]any {
	t.Helper()
	if cm.Name != b.cm.Name || cm.Namespace != b.cm.Namespace {
		t.Errorf("%s ConfigMap %s/%s does not replace the base %s/%s", rel, cm.Namespace, cm.Name, b.cm.Namespace, b.cm.Name)
	}
	var with, without map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &with); err != nil {
		t.Fatalf("%s config.yaml: %v", rel, err)
	}
	if err := yaml.Unmarshal([]byte(b.cm.Data["config.yaml"]), &without); err != nil {
		t.Fatal(err)
	}
	rest := map[string]any{}
	for k, v := range with {
		if !slices.Contains(extra, k) {
			rest[k] = v
		} else if without[k] != nil {
			t.Errorf("the base config.yaml already has %s", k)
		}
	}
	if !reflect.DeepEqual(rest, without) {
		t.Errorf("%s config.yaml differs from the base beyond %v: keep them in step", rel, extra)
	}
	return with
}

// The Redis option (envoy/kubernetes/redis.yaml) fits the base manifests:
// its configuration is the base one plus redis and admin, valid, pointing
// at its Redis Service; the files it names are the Secrets the Deployment
// mounts and Redis itself reads; Redis keeps nothing on disk, never evicts a
// used DPoP proof, and takes connections from phantom-authz only.
func TestKubernetesRedisOption(t *testing.T) {
	const rel = "envoy/kubernetes/redis.yaml"
	b := loadBase(t)
	objs := objects(t, rel)
	cm, redisDep := only[*corev1.ConfigMap](t, objs), only[*appsv1.Deployment](t, objs)
	redisSvc, netpol := only[*corev1.Service](t, objs), only[*networkingv1.NetworkPolicy](t, objs)
	for _, m := range []struct{ kind, ns string }{{"ConfigMap", cm.Namespace}, {"Deployment", redisDep.Namespace}, {"Service", redisSvc.Namespace}, {"NetworkPolicy", netpol.Namespace}} {
		if m.ns != b.dep.Namespace {
			t.Errorf("%s %s in namespace %q, want %q", rel, m.kind, m.ns, b.dep.Namespace)
		}
	}
	with := overlay(t, rel, cm, b, "redis", "admin")
	redisCfg, _ := with["redis"].(map[string]any)
	adminCfg, _ := with["admin"].(map[string]any)
	if redisCfg == nil || adminCfg == nil {
		t.Fatalf("%s config.yaml has no redis or no admin section", rel)
	}

	// redis.url names the Service, on its port.
	var svcPort int32
	for _, p := range redisSvc.Spec.Ports {
		if p.Name == "redis" {
			svcPort = p.Port
		}
	}
	u, err := url.Parse(fmt.Sprint(redisCfg["url"]))
	if err != nil {
		t.Fatalf("redis.url: %v", err)
	}
	if want := fmt.Sprintf("%s.%s.svc.cluster.local:%d", redisSvc.Name, redisSvc.Namespace, svcPort); u.Scheme != "redis" || u.Host != want {
		t.Errorf("redis.url %s, want redis://%s/…", u, want)
	}
	if !reflect.DeepEqual(redisSvc.Spec.Selector, redisDep.Spec.Selector.MatchLabels) {
		t.Errorf("Redis Service selector %v does not match its Deployment's %v", redisSvc.Spec.Selector, redisDep.Spec.Selector.MatchLabels)
	}

	// Each file the configuration names is a key of an optional Secret the
	// base Deployment mounts, and the header says how to create it; Redis
	// reads its password from the same Secret and key.
	header, _ := os.ReadFile(filepath.Join(root, rel))
	secretOf := func(file string) (secret, key string) {
		t.Helper()
		for _, m := range b.container.VolumeMounts {
			if m.MountPath != filepath.Dir(file) {
				continue
			}
			for _, v := range b.dep.Spec.Template.Spec.Volumes {
				if v.Name == m.Name && v.Secret != nil {
					if v.Secret.Optional == nil || !*v.Secret.Optional {
						t.Errorf("volume %s: the Secret is not optional, so the base manifests alone would not start", v.Name)
					}
					secret, key = v.Secret.SecretName, filepath.Base(file)
				}
			}
		}
		if secret == "" {
			t.Fatalf("%s: no Secret volume is mounted at %s", file, filepath.Dir(file))
		}
		if !strings.Contains(string(header), "create secret generic "+secret+" ") || !strings.Contains(string(header), "--from-literal="+key+"=") {
			t.Errorf("%s's header does not say how to create Secret %s with key %s", rel, secret, key)
		}
		return secret, key
	}
	pwFile, tokenFile := fmt.Sprint(redisCfg["password_file"]), fmt.Sprint(adminCfg["token_file"])
	pwSecret, pwKey := secretOf(pwFile)
	secretOf(tokenFile)
	// The shared cache's key: a Secret the Redis pod never references.
	keyFile := fmt.Sprint(redisCfg["cache_key_file"])
	if keySecret, _ := secretOf(keyFile); keySecret == pwSecret {
		t.Errorf("redis.cache_key_file is in Secret %s with the Redis password: keep it where the Redis pod cannot read it", keySecret)
	}
	rc := redisDep.Spec.Template.Spec.Containers[0]
	var pwEnv string
	for _, e := range rc.Env {
		if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil && r.SecretKeyRef.Name == pwSecret && r.SecretKeyRef.Key == pwKey {
			pwEnv = e.Name
		}
	}
	if pwEnv == "" {
		t.Errorf("Redis reads no password from Secret %s key %s", pwSecret, pwKey)
	}

	// Redis: the password required, nothing on disk, no eviction.
	joined := strings.Join(rc.Args, "\x00")
	for _, want := range [][]string{{"--requirepass", "$(" + pwEnv + ")"}, {"--save", ""}, {"--appendonly", "no"}, {"--maxmemory-policy", "noeviction"}} {
		if !strings.Contains(joined, strings.Join(want, "\x00")) {
			t.Errorf("Redis args %q lack %q", rc.Args, want)
		}
	}
	if !strings.Contains(rc.Image, ":") || strings.HasSuffix(rc.Image, ":latest") {
		t.Errorf("Redis image %q: pin a tag or digest", rc.Image)
	}
	if sc := redisDep.Spec.Template.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("the Redis Deployment does not set runAsNonRoot")
	}

	// Only phantom-authz's pods reach Redis.
	if !reflect.DeepEqual(netpol.Spec.PodSelector.MatchLabels, redisDep.Spec.Selector.MatchLabels) {
		t.Errorf("NetworkPolicy selects %v, not the Redis pods", netpol.Spec.PodSelector.MatchLabels)
	}
	if in := netpol.Spec.Ingress; len(in) != 1 || len(in[0].From) == 0 || in[0].From[0].PodSelector == nil ||
		!reflect.DeepEqual(in[0].From[0].PodSelector.MatchLabels, b.dep.Spec.Selector.MatchLabels) {
		t.Errorf("NetworkPolicy admits %+v, want phantom-authz's pods only", in)
	}

	parseConfig(t, cm.Data["config.yaml"], pwFile, tokenFile, keyFile)
}

// envoy/istio/phantom-authz.yaml gives, with a route table and no context
// extensions, what envoy/envoy.yaml's routes give with them, plus a
// FAPI-only API and a dry-run API; it trusts the ingress gateway's XFCC.
func TestIstioRouteTable(t *testing.T) {
	const rel = "envoy/istio/phantom-authz.yaml"
	b := loadBase(t)
	cm := only[*corev1.ConfigMap](t, objects(t, rel))
	overlay(t, rel, cm, b, "routes", "binding")
	cfg := parseConfig(t, cm.Data["config.yaml"])
	if len(cfg.Binding.XFCC.TrustedPrincipals) == 0 {
		t.Error("binding.xfcc.trusted_principals is empty: certificate-bound tokens cannot work behind the ingress gateway")
	}
	tb, err := route.NewTable(config.Entries(cfg.Routes))
	if err != nil {
		t.Fatal(err)
	}

	// What envoy/envoy.yaml's routes set with context_extensions.
	apis := envoyRouteAPIs(t)
	if len(apis) == 0 {
		t.Fatal("envoy/envoy.yaml has no route with context_extensions api")
	}
	for prefix, api := range apis {
		r, err := tb.Select(&route.Request{Method: "GET", Host: "api.example.com", Path: prefix + "x"})
		if err != nil || r.API != api {
			t.Errorf("%sx: api %q (%v), want %q as envoy/envoy.yaml's route", prefix, r.API, err, api)
		}
	}
	for _, c := range []struct {
		path              string
		public, dry, fapi bool
	}{
		{"/healthz", true, false, false},
		{"/healthz/../api/admin/x", false, false, true},
		{"/api/admin/users", false, false, true},
		{"/api/payments/1", false, true, false},
		{"/api/accounts/1", false, false, false},
	} {
		r, err := tb.Select(&route.Request{Method: "GET", Host: "api.example.com", Path: c.path})
		if err != nil || r.Public != c.public || r.DryRun != c.dry || (r.SenderConstrained == "required") != c.fapi {
			t.Errorf("%s: public %v dry_run %v sender_constrained %q (%v); want public %v dry_run %v FAPI-only %v",
				c.path, r.Public, r.DryRun, r.SenderConstrained, err, c.public, c.dry, c.fapi)
		}
	}
}

// envoyRouteAPIs maps each prefix route of envoy/envoy.yaml that sets
// context_extensions api to that api.
func envoyRouteAPIs(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		StaticResources struct {
			Listeners []struct {
				FilterChains []struct {
					Filters []struct {
						TypedConfig struct {
							RouteConfig struct {
								VirtualHosts []struct {
									Routes []struct {
										Match struct {
											Prefix string `json:"prefix"`
										} `json:"match"`
										TypedPerFilterConfig map[string]struct {
											CheckSettings struct {
												ContextExtensions map[string]string `json:"context_extensions"`
											} `json:"check_settings"`
										} `json:"typed_per_filter_config"`
									} `json:"routes"`
								} `json:"virtual_hosts"`
							} `json:"route_config"`
						} `json:"typed_config"`
					} `json:"filters"`
				} `json:"filter_chains"`
			} `json:"listeners"`
		} `json:"static_resources"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range cfg.StaticResources.Listeners {
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				for _, vh := range f.TypedConfig.RouteConfig.VirtualHosts {
					for _, r := range vh.Routes {
						if api := r.TypedPerFilterConfig["envoy.filters.http.ext_authz"].CheckSettings.ContextExtensions["api"]; api != "" {
							out[r.Match.Prefix] = api
						}
					}
				}
			}
		}
	}
	return out
}

// envoy/gateway: the SecurityPolicy sends its HTTPRoute's requests to the
// phantom-authz Service over gRPC, fails closed, and may name it across
// namespaces.
func TestEnvoyGatewaySecurityPolicy(t *testing.T) {
	b := loadBase(t)
	objs := objects(t, "envoy/gateway/security-policy.yaml")
	sp, hr, rg := only[*egv1alpha1.SecurityPolicy](t, objs), only[*gwapiv1.HTTPRoute](t, objs), only[*gwapiv1beta1.ReferenceGrant](t, objs)

	if refs := sp.Spec.TargetRefs; len(refs) != 1 || string(refs[0].Kind) != "HTTPRoute" || string(refs[0].Name) != hr.Name || sp.Namespace != hr.Namespace {
		t.Errorf("SecurityPolicy targets %+v in %s, want HTTPRoute %s/%s", refs, sp.Namespace, hr.Namespace, hr.Name)
	}
	ea := sp.Spec.ExtAuth
	if ea == nil || ea.GRPC == nil || ea.HTTP != nil {
		t.Fatalf("SecurityPolicy extAuth %+v, want gRPC", ea)
	}
	var grpcPort int32
	for _, p := range b.svc.Spec.Ports {
		if p.Name == "grpc" {
			grpcPort = p.Port
		}
	}
	br := ea.GRPC.BackendRefs
	if len(br) != 1 || string(br[0].Name) != b.svc.Name || br[0].Namespace == nil || string(*br[0].Namespace) != b.svc.Namespace ||
		br[0].Port == nil || int32(*br[0].Port) != grpcPort {
		t.Errorf("extAuth.grpc.backendRefs %+v, want Service %s/%s port %d", br, b.svc.Namespace, b.svc.Name, grpcPort)
	}
	if ea.FailOpen == nil || *ea.FailOpen {
		t.Error("extAuth.failOpen must be false, written out (fail closed)")
	}
	if ea.Timeout == nil {
		t.Error("extAuth has no timeout")
	}
	for _, ce := range ea.ContextExtensions {
		if ce.Value != nil && ce.Name == route.KeySenderConstrained && *ce.Value != "required" {
			t.Errorf("contextExtensions %s: %q", ce.Name, *ce.Value)
		}
	}

	// The ReferenceGrant, in the Service's namespace, lets the policy's
	// namespace name that Service, and nothing else.
	if rg.Namespace != b.svc.Namespace || len(rg.Spec.From) != 1 || string(rg.Spec.From[0].Kind) != "SecurityPolicy" ||
		string(rg.Spec.From[0].Namespace) != sp.Namespace || len(rg.Spec.To) != 1 || string(rg.Spec.To[0].Kind) != "Service" ||
		rg.Spec.To[0].Name == nil || string(*rg.Spec.To[0].Name) != b.svc.Name {
		t.Errorf("ReferenceGrant %s/%s %+v, want SecurityPolicies of %s to name Service %s only", rg.Namespace, rg.Name, rg.Spec, sp.Namespace, b.svc.Name)
	}
}
