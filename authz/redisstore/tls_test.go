package redisstore_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/phantom-authz/phantom-authz/authz/redisstore"
)

// newTLSRedis starts a fake Redis over TLS requiring password, with a
// certificate for 127.0.0.1 signed by a CA written to the returned file.
func newTLSRedis(t *testing.T) (*miniredis.Miniredis, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test redis"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	mr, err := miniredis.RunTLS(&tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	mr.RequireAuth(password)
	t.Cleanup(mr.Close)
	return mr, caFile
}

// A rediss:// URL with ca_file and a password reaches a TLS Redis; without
// the CA (system roots), without the password or without TLS, Redis is
// unreachable: Ping fails and the replay store fails closed.
func TestTLSAndPassword(t *testing.T) {
	mr, caFile := newTLSRedis(t)
	url := "rediss://" + mr.Addr() + "/0"
	s, err := redisstore.New(redisstore.Config{URL: url, CAFile: caFile, Password: password, KeyPrefix: "tls:", Timeout: time.Second})
	if err != nil {
		t.Fatalf("rediss with ca_file and password: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	replay := s.ReplayStore(nil)
	key := string(bytes.Repeat([]byte{9}, 32))
	until := time.Now().Add(time.Minute)
	if fresh, err := replay.Use(context.Background(), key, until); err != nil || !fresh {
		t.Fatalf("first use over TLS: fresh=%v err=%v", fresh, err)
	}
	if fresh, err := replay.Use(context.Background(), key, until); err != nil || fresh {
		t.Fatalf("replay over TLS: fresh=%v err=%v, want a replay", fresh, err)
	}
	if keys := mr.Keys(); len(keys) != 1 {
		t.Errorf("keys in Redis = %v, want the one proof", keys)
	}

	for name, cfg := range map[string]redisstore.Config{
		"system roots do not trust the test CA": {URL: url, Password: password, Timeout: time.Second},
		"no password":                           {URL: url, CAFile: caFile, Timeout: time.Second},
		"plain redis:// to a TLS port":          {URL: "redis://" + mr.Addr() + "/0", Password: password, Timeout: 300 * time.Millisecond},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := redisstore.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			err = s.Ping(context.Background())
			if err == nil {
				t.Fatal("Ping succeeded, want an error")
			}
			if bytes.Contains([]byte(err.Error()), []byte(password)) {
				t.Errorf("error shows the password: %v", err)
			}
			other := string(bytes.Repeat([]byte{10}, 32))
			if fresh, err := s.ReplayStore(nil).Use(context.Background(), other, until); err == nil || fresh {
				t.Errorf("replay store: fresh=%v err=%v, want an error (fail closed)", fresh, err)
			}
		})
	}
}
