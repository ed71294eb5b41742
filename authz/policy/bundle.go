package policy

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/download"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins/rest"
)

// BundleConfig makes the engine serve the policies of an OPA bundle, polled
// from a bundle server, instead of a directory. Downloading (ETag and
// If-None-Match, jittered polling between PollMin and PollMax, back-off on
// errors), reading the tarball and checking its signature are OPA's own
// code (packages download and bundle); the engine compiles and activates.
type BundleConfig struct {
	// URL is the bundle's full URL (a .tar.gz as `opa build` writes it).
	URL string
	// PollMin and PollMax bound the delay between two polls; each delay is
	// picked at random between them. OPA's downloader counts in whole
	// seconds: the values are rounded up to one. Defaults 10s and 30s.
	PollMin, PollMax time.Duration
	// Timeout bounds one download, body included. Default 10s.
	Timeout time.Duration
	// CAFile is a PEM bundle trusted for the server's certificate instead of
	// the system roots.
	CAFile string
	// TokenFile holds a bearer credential for the bundle server, re-read for
	// every download (so it can be rotated in place); never logged.
	TokenFile string
	// AllowInsecureHTTP permits an http:// URL.
	AllowInsecureHTTP bool
	// PersistDir, when set, keeps the last activated bundle on disk
	// (bundle.tar.gz); when the first download after start fails, the
	// engine serves that copy until the server answers.
	PersistDir string
	// Verification, when set, demands a signed bundle (OPA's
	// .signatures.json) and verifies it; nil accepts unsigned bundles only.
	Verification *BundleVerification
}

// BundleVerification is the key that signs bundles, as OPA's
// bundles[_].signing and keys configuration describe it.
type BundleVerification struct {
	// PublicKeyFile holds the PEM public key (or certificate).
	PublicKeyFile string
	// KeyID, when set, must be the signature's kid; empty accepts any kid
	// (the one key verifies).
	KeyID string
	// Algorithm is the signature's algorithm (RS256, PS256, ES256, …);
	// the signature's own header is not trusted for it. Default RS256.
	Algorithm string
	// Scope is the scope the signature must carry; default none.
	Scope string
}

// Defaults for BundleConfig.
const (
	DefaultBundlePollMin = 10 * time.Second
	DefaultBundlePollMax = 30 * time.Second
	DefaultBundleTimeout = 10 * time.Second
)

// persistFile is the name of the persisted bundle in BundleConfig.PersistDir.
const persistFile = "bundle.tar.gz"

// anyKeyID names the verification key when BundleVerification.KeyID is
// empty: OPA then verifies every signature with it, whatever its kid.
const anyKeyID = "phantom-authz"

// bundleSource polls a bundle server and activates what it serves in its
// engine. Its state is touched only by the downloader's goroutine (and
// Fetch, which runs alone), under the engine's reloadMu.
type bundleSource struct {
	e      *Engine
	cfg    BundleConfig
	client rest.Client
	path   string // of the bundle, relative to the client's URL
	where  string // the URL without credentials or query, for logs
	verify *bundle.VerificationConfig

	d *download.Downloader
	// etag is the ETag of the active bundle: a failed download or
	// activation puts it back into If-None-Match, so the next poll fetches
	// again unless the server still serves the good bundle (OPA's plugin
	// does the same).
	etag string
	// triedPersisted is set once the persisted copy has been tried.
	triedPersisted bool
	// first is closed after the first download has been handled.
	first     chan struct{}
	firstOnce sync.Once
}

// bundleHTTP is the rest client's "auth plugin": the HTTP client (CA
// bundle, timeout) and the bearer credential read from its file.
type bundleHTTP struct {
	client    *http.Client
	tokenFile string
}

// NewClient implements rest.HTTPAuthPlugin.
func (p *bundleHTTP) NewClient(rest.Config) (*http.Client, error) { return p.client, nil }

// Prepare implements rest.HTTPAuthPlugin: it adds the bearer credential.
func (p *bundleHTTP) Prepare(req *http.Request) error {
	if p.tokenFile == "" {
		return nil
	}
	b, err := os.ReadFile(p.tokenFile)
	if err != nil {
		return fmt.Errorf("token_file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return errors.New("token_file: empty")
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return nil
}

const bundleAuthPlugin = "phantom-authz"

func newBundleSource(e *Engine, cfg BundleConfig) (*bundleSource, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("policy: bundle url %q is not an absolute URL", cfg.URL)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && cfg.AllowInsecureHTTP:
	default:
		return nil, fmt.Errorf("policy: bundle url %q: must be https (or allow insecure http)", cfg.URL)
	}
	cfg.PollMin = cmp.Or(cfg.PollMin, DefaultBundlePollMin)
	cfg.PollMax = cmp.Or(cfg.PollMax, DefaultBundlePollMax)
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultBundleTimeout)
	if cfg.PollMax < cfg.PollMin {
		return nil, fmt.Errorf("policy: bundle poll max %s is less than poll min %s", cfg.PollMax, cfg.PollMin)
	}

	s := &bundleSource{e: e, cfg: cfg, first: make(chan struct{})}
	// The rest client joins its URL and the path with a slash: split the
	// bundle's URL at its last one.
	dir, file := path.Split(u.EscapedPath())
	service := *u
	service.RawPath, service.Path, service.RawQuery, service.Fragment = "", "", "", ""
	s.path = file
	if u.RawQuery != "" {
		s.path += "?" + u.RawQuery
	}
	redacted := service
	redacted.User = nil
	s.where = redacted.String() + u.EscapedPath()

	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("policy: bundle ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("policy: bundle ca_file %s: no PEM certificate", cfg.CAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	plugin := &bundleHTTP{client: &http.Client{Transport: tr, Timeout: cfg.Timeout}, tokenFile: cfg.TokenFile}
	restCfg := fmt.Appendf(nil, `{"url": %q, "credentials": {"plugin": %q}}`,
		strings.TrimSuffix(service.String()+dir, "/"), bundleAuthPlugin)
	s.client, err = rest.New(restCfg, nil,
		rest.AuthPluginLookup(func(string) rest.HTTPAuthPlugin { return plugin }),
		// Failures reach the log through the update callback, once each.
		rest.Logger(logging.NewNoOpLogger()))
	if err != nil {
		return nil, fmt.Errorf("policy: bundle client: %w", err)
	}

	if v := cfg.Verification; v != nil {
		key, err := os.ReadFile(v.PublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("policy: bundle verification key: %w", err)
		}
		id, kid := v.KeyID, ""
		if id == "" {
			id, kid = anyKeyID, anyKeyID
		}
		s.verify = bundle.NewVerificationConfig(map[string]*bundle.KeyConfig{
			id: {Key: string(key), Algorithm: cmp.Or(v.Algorithm, "RS256"), Scope: v.Scope},
		}, kid, v.Scope, nil)
	}
	return s, nil
}

// wholeSeconds rounds d up to whole seconds, at least one.
func wholeSeconds(d time.Duration) int64 {
	return max(1, int64((d+time.Second-1)/time.Second))
}

func (s *bundleSource) downloader() (*download.Downloader, error) {
	lo, hi := wholeSeconds(s.cfg.PollMin), wholeSeconds(s.cfg.PollMax)
	dc := download.Config{Polling: download.PollingConfig{MinDelaySeconds: &lo, MaxDelaySeconds: &hi}}
	if err := dc.ValidateAndInjectDefaults(); err != nil {
		return nil, fmt.Errorf("policy: bundle polling: %w", err)
	}
	return download.New(dc, s.client, s.path).
		WithCallback(s.update).
		WithBundleVerificationConfig(s.verify).
		// Persistence keeps the raw tarball in the update: it is hashed
		// for the revision and written to PersistDir.
		WithBundlePersistence(true).
		WithBundleParserOpts(ast.ParserOptions{RegoVersion: ast.RegoV1}), nil
}

// run polls until ctx ends.
func (s *bundleSource) run(ctx context.Context) {
	d, err := s.downloader()
	if err != nil {
		s.e.log.Error("policy: bundle polling not started", "url", s.where, "error", err.Error())
		return
	}
	s.d = d
	d.Start(ctx)
	<-ctx.Done()
	d.Stop(context.Background())
}

// fetch handles one download (falling back to the persisted copy when it
// fails), then stops.
func (s *bundleSource) fetch(ctx context.Context) error {
	d, err := s.downloader()
	if err != nil {
		return err
	}
	s.d = d
	d.Start(ctx)
	defer d.Stop(context.Background())
	select {
	case <-s.first:
	case <-ctx.Done():
		return fmt.Errorf("policy: bundle %s: %w", s.where, ctx.Err())
	}
	if !s.e.Ready() {
		return fmt.Errorf("policy: bundle %s: no bundle activated", s.where)
	}
	return nil
}

// update is the downloader's callback: it activates a new bundle, or
// records why there is none, keeping the set being served.
func (s *bundleSource) update(ctx context.Context, u download.Update) error {
	e := s.e
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	defer s.firstOnce.Do(func() { close(s.first) })

	if u.Error != nil {
		if ctx.Err() != nil {
			return nil // stopping: the download was cancelled, nothing failed
		}
		stage, err := s.explain(u.Error)
		s.refuse(stage, err, u.ETag)
		return nil
	}
	if u.Bundle == nil { // 304 Not Modified: the active bundle is current
		return nil
	}
	var raw []byte
	if u.Raw != nil {
		var err error
		if raw, err = io.ReadAll(u.Raw); err != nil {
			s.refuse("download", err, u.ETag)
			return nil
		}
	}
	set, err := loadBundle(ctx, u.Bundle, raw, e.query)
	if err != nil {
		s.refuse("activate", err, u.ETag)
		return nil
	}
	e.log.Info("policy: bundle activated", "url", s.where, "revision", set.revision, "etag", u.ETag)
	e.set.Store(set)
	e.reloadsOK.Add(1)
	s.etag = u.ETag
	s.persist(raw)
	return nil
}

// refuse records a failed download or activation: one log line, one
// failed reload, and the active bundle's ETag back in If-None-Match. With
// nothing served yet it tries the persisted copy.
func (s *bundleSource) refuse(stage string, err error, etag string) {
	e := s.e
	if s.d != nil {
		s.d.SetCache(s.etag)
	}
	serving := ""
	if set := e.set.Load(); set != nil {
		serving = set.revision
	}
	attrs := []any{"url", s.where, "stage", stage, "serving_revision", serving, "error", err.Error()}
	if etag != "" {
		attrs = append(attrs, "etag", etag)
	}
	msg := "policy: bundle refused, keeping the last good policy set"
	if serving == "" {
		msg = "policy: bundle refused, not ready until a bundle is activated"
	}
	e.log.Error(msg, attrs...)
	e.reloadsFailed.Add(1)
	if serving == "" {
		s.loadPersisted()
	}
}

// explain names the stage of a failed download: "download" (the request
// or the server's answer) or "read" (the tarball, its manifest or its
// signature). It keeps the URL's query (a pre-signed URL's signature, say)
// and credentials out of a transport error.
func (s *bundleSource) explain(err error) (string, error) {
	var ue *url.Error
	if errors.As(err, &ue) {
		return "download", fmt.Errorf("%s %s: %w", ue.Op, s.where, ue.Err)
	}
	var he download.HTTPError
	if errors.As(err, &he) {
		return "download", fmt.Errorf("server answered %d %s", he.StatusCode, http.StatusText(he.StatusCode))
	}
	if strings.HasPrefix(err.Error(), "request failed") {
		return "download", err
	}
	return "read", err
}

// persist writes the activated bundle to PersistDir, atomically.
func (s *bundleSource) persist(raw []byte) {
	if s.cfg.PersistDir == "" || raw == nil {
		return
	}
	err := func() error {
		if err := os.MkdirAll(s.cfg.PersistDir, 0o700); err != nil {
			return err
		}
		f, err := os.CreateTemp(s.cfg.PersistDir, ".bundle-*")
		if err != nil {
			return err
		}
		defer os.Remove(f.Name())
		if _, err := f.Write(raw); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		return os.Rename(f.Name(), filepath.Join(s.cfg.PersistDir, persistFile))
	}()
	if err != nil {
		s.e.log.Warn("policy: bundle not persisted", "dir", s.cfg.PersistDir, "error", err.Error())
	}
}

// loadPersisted serves the persisted bundle, once, when nothing else is.
func (s *bundleSource) loadPersisted() {
	if s.cfg.PersistDir == "" || s.triedPersisted {
		return
	}
	s.triedPersisted = true
	file := filepath.Join(s.cfg.PersistDir, persistFile)
	raw, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var set *policySet
	if err == nil {
		var b bundle.Bundle
		b, err = bundle.NewReader(bytes.NewReader(raw)).
			WithBundleVerificationConfig(s.verify).
			WithRegoVersion(ast.RegoV1).
			Read()
		if err == nil {
			set, err = loadBundle(context.Background(), &b, raw, s.e.query)
		}
	}
	if err != nil {
		s.e.log.Error("policy: persisted bundle refused", "file", file, "error", err.Error())
		return
	}
	s.e.log.Warn("policy: bundle server unavailable, serving the persisted bundle",
		"file", file, "revision", set.revision)
	s.e.set.Store(set)
}

// loadBundle compiles a snapshot bundle's modules and data. Its revision is
// the manifest's, or a short hash of the tarball when the manifest has none.
// *_test.rego modules are left out, as from a directory; Wasm modules and
// plans are not evaluated.
func loadBundle(ctx context.Context, b *bundle.Bundle, raw []byte, query string) (*policySet, error) {
	if b.Type() != bundle.SnapshotBundleType {
		return nil, fmt.Errorf("policy: %s bundles are not supported, only snapshots", b.Type())
	}
	modules := make(map[string]*ast.Module, len(b.Modules))
	for _, m := range b.Modules {
		if strings.HasSuffix(m.Path, "_test.rego") {
			continue
		}
		modules[m.Path] = m.Parsed
	}
	if len(modules) == 0 {
		return nil, errors.New("policy: the bundle has no .rego files")
	}
	data := b.Data
	if data == nil {
		data = map[string]any{}
	}
	set, err := compileSet(ctx, query, modules, data,
		func(err error) string { return describe(err, &snapshot{}) })
	if err != nil {
		return nil, err
	}
	set.hash = sha256.Sum256(raw)
	set.revision = cmp.Or(b.Manifest.Revision, hex.EncodeToString(set.hash[:6]))
	return set, nil
}
