package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// Test PKI: a CA, generated for each test, that issues server and client
// leaf certificates and writes everything as PEM files for Envoy and
// phantom-authz to read.

// testCA is a self-signed CA whose certificate is written to file.
type testCA struct {
	dir  string // where the CA and its leaves are written
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
	pool *x509.CertPool
}

// leafCert is a certificate the test CA issued, in memory and on disk.
type leafCert struct {
	der               []byte
	tls               tls.Certificate
	certFile, keyFile string // PEM
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	ca := &testCA{dir: t.TempDir(), key: newECKey(t)}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ca.key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if ca.cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	ca.pool = x509.NewCertPool()
	ca.pool.AddCert(ca.cert)
	ca.file = writePEM(t, ca.dir, "ca.pem", "CERTIFICATE", der)
	return ca
}

// server issues a server certificate for hosts (DNS names or IPs).
func (ca *testCA) server(t testing.TB, name string, hosts ...string) *leafCert {
	t.Helper()
	return ca.issue(t, name, x509.ExtKeyUsageServerAuth, hosts)
}

// client issues a client certificate, with hosts (DNS names, IPs or URIs)
// as subject alternative names if any.
func (ca *testCA) client(t testing.TB, name string, hosts ...string) *leafCert {
	t.Helper()
	return ca.issue(t, name, x509.ExtKeyUsageClientAuth, hosts)
}

// issue signs a leaf certificate with common name name and writes it to
// name.pem and its key to name-key.pem in the CA's directory.
func (ca *testCA) issue(t testing.TB, name string, usage x509.ExtKeyUsage, hosts []string) *leafCert {
	t.Helper()
	key := newECKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(t),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	for _, h := range hosts {
		if strings.Contains(h, "://") { // a URI SAN, e.g. a SPIFFE id
			u, err := url.Parse(h)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, u)
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &leafCert{
		der:      der,
		tls:      tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		certFile: writePEM(t, ca.dir, name+".pem", "CERTIFICATE", der),
		keyFile:  writePEM(t, ca.dir, name+"-key.pem", "PRIVATE KEY", kder),
	}
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func randomSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}

func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ---------------------------------------------------------------- Envoy with TLS

// startEnvoyEdited runs envoy/envoy.yaml, its ports swapped as startEnvoy
// does, after edit has changed the parsed config; name is the file the
// edited config is written to. It returns Envoy and its listener port.
func startEnvoyEdited(t *testing.T, authzPort, demoPort int, name string, edit func(cfg map[string]any)) (*envoyProxy, int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	lis, adm := freePort(t), freePort(t)
	text := string(b)
	for from, to := range map[int]int{envoyListenerPort: lis, envoyAdminPort: adm, envoyAuthzPort: authzPort, envoyDemoPort: demoPort} {
		old := fmt.Sprintf("port_value: %d ", from)
		if n := strings.Count(text, old); n != 1 {
			t.Fatalf("envoy/envoy.yaml has %q %d times, want once", old, n)
		}
		text = strings.Replace(text, old, fmt.Sprintf("port_value: %d ", to), 1)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
		t.Fatal(err)
	}
	edit(cfg)
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	e := &envoyProxy{url: fmt.Sprintf("http://127.0.0.1:%d", lis), adminURL: fmt.Sprintf("http://127.0.0.1:%d", adm)}
	e.process = startProcess(t, "envoy", nil, []int{lis, adm}, tools.envoy,
		"-c", path, "--disable-hot-restart", "--concurrency", "1", "-l", "info")
	e.waitHTTP(t, e.adminURL+"/ready", 30*time.Second)
	return e, lis
}

// envoyTLSSocket is an Envoy TLS transport socket of contextType
// (DownstreamTlsContext or UpstreamTlsContext) presenting cert and trusting
// ca. Callers add the settings of their side under typed_config.
func envoyTLSSocket(contextType string, cert *leafCert, ca *testCA) map[string]any {
	return map[string]any{
		"name": "envoy.transport_sockets.tls",
		"typed_config": map[string]any{
			"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3." + contextType,
			"common_tls_context": map[string]any{
				"tls_certificates": []any{map[string]any{
					"certificate_chain": map[string]any{"filename": cert.certFile},
					"private_key":       map[string]any{"filename": cert.keyFile},
				}},
				"validation_context": map[string]any{"trusted_ca": map[string]any{"filename": ca.file}},
			},
		},
	}
}
