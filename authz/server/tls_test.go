package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA issues certificates for the tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf certificate and key, PEM, with the serial number.
func (ca *testCA) issue(t *testing.T, serial int64, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "phantom-authz"},
		DNSNames: []string{"phantom-authz"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func (ca *testCA) clientCert(t *testing.T) tls.Certificate {
	t.Helper()
	c, k := ca.issue(t, 99, x509.ExtKeyUsageClientAuth)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func write(t *testing.T, path string, b []byte, mod time.Time) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

// tlsServer serves cfg on loopback, completing handshakes and nothing more.
func tlsServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return l.Addr().String()
}

// dial completes a handshake and returns the server certificate's serial.
func dial(addr string, cfg *tls.Config) (int64, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	// TLS 1.3 reports a refused client certificate after the handshake.
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
		return 0, err
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

type tlsFixture struct {
	ca, clientCA *testCA
	files        TLSFiles
	cfg          *tls.Config
	addr         string
}

func newTLSFixture(t *testing.T, mutual bool) *tlsFixture {
	t.Helper()
	dir := t.TempDir()
	f := &tlsFixture{ca: newTestCA(t, "server CA"), clientCA: newTestCA(t, "client CA")}
	f.files = TLSFiles{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}
	c, k := f.ca.issue(t, 1, x509.ExtKeyUsageServerAuth)
	old := time.Now().Add(-time.Minute)
	write(t, f.files.CertFile, c, old)
	write(t, f.files.KeyFile, k, old)
	if mutual {
		f.files.ClientCAFile = filepath.Join(dir, "client-ca.pem")
		write(t, f.files.ClientCAFile, f.clientCA.pem, old)
	}
	cfg, err := NewTLSConfig(f.files, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = cfg
	f.addr = tlsServer(t, cfg)
	return f
}

func (f *tlsFixture) client(certs ...tls.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.ca.pem)
	return &tls.Config{RootCAs: pool, ServerName: "phantom-authz", Certificates: certs}
}

func TestTLSServes(t *testing.T) {
	f := newTLSFixture(t, false)
	if serial, err := dial(f.addr, f.client()); err != nil || serial != 1 {
		t.Fatalf("handshake: serial %d, %v", serial, err)
	}
	// TLS 1.1 and a TLS 1.2 suite outside FAPI's list are refused.
	for name, cfg := range map[string]*tls.Config{
		"TLS 1.1":        {MaxVersion: tls.VersionTLS11},
		"TLS 1.2 CBC":    {MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}},
		"TLS 1.2 ChaCha": {MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}},
	} {
		c := f.client()
		c.MaxVersion, c.CipherSuites = cfg.MaxVersion, cfg.CipherSuites
		if _, err := dial(f.addr, c); err == nil {
			t.Errorf("%s: handshake succeeded", name)
		}
	}
	c := f.client()
	c.MaxVersion, c.CipherSuites = tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}
	if _, err := dial(f.addr, c); err != nil {
		t.Errorf("TLS 1.2 ECDHE-ECDSA-AES256-GCM: %v", err)
	}
}

func TestTLSRequiresClientCertificate(t *testing.T) {
	f := newTLSFixture(t, true)
	if _, err := dial(f.addr, f.client(f.clientCA.clientCert(t))); err != nil {
		t.Fatalf("client certificate from the client CA: %v", err)
	}
	if _, err := dial(f.addr, f.client()); err == nil {
		t.Error("no client certificate: handshake succeeded")
	}
	stranger := newTestCA(t, "other CA")
	if _, err := dial(f.addr, f.client(stranger.clientCert(t))); err == nil {
		t.Error("client certificate from another CA: handshake succeeded")
	}
}

func TestTLSReloadsRenewedFiles(t *testing.T) {
	f := newTLSFixture(t, true)
	client := f.client(f.clientCA.clientCert(t))

	// A renewal: new certificate and key, written in place.
	c, k := f.ca.issue(t, 2, x509.ExtKeyUsageServerAuth)
	now := time.Now()
	write(t, f.files.CertFile, c, now)
	write(t, f.files.KeyFile, k, now)
	waitSerial(t, f.addr, client, 2)

	// A half-done renewal (a certificate without its key) keeps serving the
	// last good pair.
	c3, _ := f.ca.issue(t, 3, x509.ExtKeyUsageServerAuth)
	write(t, f.files.CertFile, c3, now.Add(time.Second))
	time.Sleep(1100 * time.Millisecond)
	if serial, err := dial(f.addr, client); err != nil || serial != 2 {
		t.Fatalf("after a broken renewal: serial %d, %v; want the last good certificate (2)", serial, err)
	}

	// The client CA rotates too: the old client certificate is refused.
	newClientCA := newTestCA(t, "client CA 2")
	c4, k4 := f.ca.issue(t, 4, x509.ExtKeyUsageServerAuth)
	write(t, f.files.CertFile, c4, now.Add(2*time.Second))
	write(t, f.files.KeyFile, k4, now.Add(2*time.Second))
	write(t, f.files.ClientCAFile, newClientCA.pem, now.Add(2*time.Second))
	waitSerial(t, f.addr, f.client(newClientCA.clientCert(t)), 4)
	if _, err := dial(f.addr, client); err == nil {
		t.Error("a client certificate of the replaced CA is still accepted")
	}
}

// waitSerial waits (handshakes look at the files once a second) until the
// server presents the certificate with serial.
func waitSerial(t *testing.T, addr string, client *tls.Config, serial int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := dial(addr, client)
		if err == nil && got == serial {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server still presents serial %d (%v), want %d", got, err, serial)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	f := newTLSFixture(t, false)
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	write(t, junk, []byte("not pem"), time.Now())
	for name, tt := range map[string]struct {
		files TLSFiles
		want  string
	}{
		"no key":          {TLSFiles{CertFile: f.files.CertFile}, "cert_file and key_file"},
		"missing cert":    {TLSFiles{CertFile: filepath.Join(dir, "none"), KeyFile: f.files.KeyFile}, "cert_file"},
		"key of another":  {TLSFiles{CertFile: f.files.CertFile, KeyFile: junk}, "key_file"},
		"missing ca":      {TLSFiles{CertFile: f.files.CertFile, KeyFile: f.files.KeyFile, ClientCAFile: filepath.Join(dir, "none")}, "client_ca_file"},
		"ca without PEMs": {TLSFiles{CertFile: f.files.CertFile, KeyFile: f.files.KeyFile, ClientCAFile: junk}, "client_ca_file"},
	} {
		if _, err := NewTLSConfig(tt.files, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want one naming %s", name, err, tt.want)
		}
	}
}
