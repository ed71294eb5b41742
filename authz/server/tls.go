package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// TLSFiles are the files a TLS server reads: its certificate chain and
// private key (PEM) and, for mutual TLS, the CA bundle (PEM) client
// certificates must chain to.
type TLSFiles struct {
	CertFile, KeyFile string
	// ClientCAFile, when set, makes a client certificate issued by one of
	// its CAs mandatory.
	ClientCAFile string
}

// fapiCipherSuites are the TLS 1.2 suites FAPI 2.0 (§5.2.1, by way of BCP
// 195 / RFC 9325 §4.2) allows and Go implements: ECDHE with AES-GCM. TLS 1.3
// suites are all acceptable and not configurable.
var fapiCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
}

// reloadCheckInterval is how often, at most, a handshake looks at the files'
// modification times.
const reloadCheckInterval = time.Second

// NewTLSConfig returns the configuration of a TLS server (TLS 1.2 at least,
// FAPI's cipher suites) serving files. It reads the files now; an error names
// the file at fault. It reads them again when one of them changes (a
// handshake checks their modification times at most once a second), so a
// renewed certificate or CA bundle is served without a restart; files caught
// half-written, or that do not load, leave the last good ones in service and
// are logged.
func NewTLSConfig(files TLSFiles, log *slog.Logger) (*tls.Config, error) {
	if files.CertFile == "" || files.KeyFile == "" {
		return nil, errors.New("tls: cert_file and key_file are both required")
	}
	if log == nil {
		log = slog.Default()
	}
	r := &tlsReloader{files: files, log: log, interval: reloadCheckInterval}
	stamps := r.stat()
	cfg, err := files.load()
	if err != nil {
		return nil, err
	}
	r.cur.Store(cfg)
	r.stamps = stamps
	r.checked.Store(time.Now().UnixNano())
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		CipherSuites:       fapiCipherSuites,
		GetConfigForClient: r.config,
	}, nil
}

// load reads the files into a complete server configuration.
func (f TLSFiles) load() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: cert_file %s, key_file %s: %w", f.CertFile, f.KeyFile, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: fapiCipherSuites,
		Certificates: []tls.Certificate{cert},
	}
	if f.ClientCAFile != "" {
		pem, err := os.ReadFile(f.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: client_ca_file %s holds no PEM certificate", f.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// tlsReloader serves the current configuration of a TLS server and replaces
// it when its files change.
type tlsReloader struct {
	files    TLSFiles
	log      *slog.Logger
	interval time.Duration

	cur     atomic.Pointer[tls.Config]
	checked atomic.Int64 // last look at the files, Unix nanoseconds

	mu     sync.Mutex // one look at a time; guards stamps and failed
	stamps [3]fileStamp
	failed [3]fileStamp // the versions that last failed to load, logged once
}

// fileStamp tells a file's versions apart.
type fileStamp struct {
	mod  time.Time
	size int64
}

func (r *tlsReloader) config(*tls.ClientHelloInfo) (*tls.Config, error) {
	now := time.Now().UnixNano()
	if now-r.checked.Load() >= int64(r.interval) && r.mu.TryLock() {
		// Handshakes that find the look under way go on with what is loaded.
		r.reloadIfChanged(now)
		r.mu.Unlock()
	}
	return r.cur.Load(), nil
}

func (r *tlsReloader) reloadIfChanged(now int64) {
	r.checked.Store(now)
	stamps := r.stat()
	if stamps == r.stamps || stamps == r.failed {
		return
	}
	cfg, err := r.files.load()
	if err != nil {
		r.failed = stamps
		// A renewal is often two writes (certificate, then key): the next
		// look, a second later, sees the pair complete.
		r.log.Warn("tls: renewed files do not load; serving the last good ones", "cert_file", r.files.CertFile, "error", err.Error())
		return
	}
	r.stamps = stamps
	r.cur.Store(cfg)
	r.log.Info("tls: certificate reloaded", "cert_file", r.files.CertFile)
}

// stat stamps the three files (zero stamps for a missing or unset one).
func (r *tlsReloader) stat() [3]fileStamp {
	var out [3]fileStamp
	for i, name := range [...]string{r.files.CertFile, r.files.KeyFile, r.files.ClientCAFile} {
		if name == "" {
			continue
		}
		if fi, err := os.Stat(name); err == nil {
			out[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
		}
	}
	return out
}
