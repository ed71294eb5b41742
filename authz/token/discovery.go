package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// An authorization server configured by its issuer alone publishes where
// its keys and endpoints are: RFC 8414 metadata, or OpenID Connect
// Discovery's. Whoever answers at those URLs is believed only about the
// issuer it was asked for: metadata naming another issuer is refused (RFC
// 8414 §3.3), so a server (or a path on it) that impersonates another
// cannot point phantom-authz at keys of its own. The metadata is kept and
// refreshed on the JWKS's schedule; a failed refresh keeps the last good
// copy.

// metadata is one server's discovered metadata.
type metadata struct {
	issuer    string
	urls      []string // where to look, in order (see metadataURLs)
	allowHTTP bool
	client    *http.Client
	timeout   time.Duration
	now       func() time.Time
	log       *slog.Logger

	kept kept[serverMetadata]
}

// serverMetadata is one fetched copy, immutable once stored.
type serverMetadata struct {
	jwksURI, introspection string
	fetched                time.Time
}

// metadataURLs are the well-known URLs of issuer: RFC 8414 §3.1 inserts the
// well-known segment between host and path; OpenID Connect Discovery §4
// appends it to the issuer.
func metadataURLs(issuer string) []string {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil
	}
	path := strings.TrimSuffix(u.Path, "/")
	rfc8414 := *u
	rfc8414.Path, rfc8414.RawPath = "/.well-known/oauth-authorization-server"+path, ""
	return []string{rfc8414.String(), strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"}
}

// get returns the metadata, fetching it when none was ever fetched, and
// refreshing it in the background when it has grown old.
func (m *metadata) get(ctx context.Context) (*serverMetadata, error) {
	if cur := m.kept.load(); cur != nil {
		if m.now().Sub(cur.fetched) > keysMaxAge {
			m.refreshInBackground()
		}
		return cur, nil
	}
	cur, err := m.refresh(ctx)
	if cur == nil {
		return nil, fmt.Errorf("no metadata of %s could be fetched: %v", m.issuer, err)
	}
	return cur, nil
}

// refresh fetches the metadata unless it was tried too recently, and
// returns the copy to use: the new one, or the last good one.
func (m *metadata) refresh(ctx context.Context) (*serverMetadata, error) {
	return m.kept.refresh(ctx, m.now(), m.timeout, func(ctx context.Context) (*serverMetadata, error) {
		next, err := m.fetch(ctx)
		if err != nil {
			m.log.Warn("token: metadata fetch failed; keeping the last good copy", "issuer", loggable(m.issuer), "err", err)
		}
		return next, err
	})
}

func (m *metadata) refreshInBackground() {
	m.kept.inBackground(func(ctx context.Context) { _, _ = m.refresh(ctx) })
}

func (m *metadata) close() { m.kept.close() }

// fetch reads the first of the well-known URLs that exists (404: the next).
func (m *metadata) fetch(ctx context.Context) (*serverMetadata, error) {
	var last error
	for _, u := range m.urls {
		md, err := m.fetchOne(ctx, u)
		if errors.Is(err, errNotFound) {
			last = err
			continue
		}
		return md, err
	}
	return nil, last
}

var errNotFound = errors.New("status 404")

func (m *metadata) fetchOne(ctx context.Context, u string) (*serverMetadata, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, scrubURL(err, loggable(u))
	}
	defer drainClose(resp.Body)
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, fmt.Errorf("%s: %w", loggable(u), errNotFound)
	default:
		return nil, fmt.Errorf("%s: status %d", loggable(u), resp.StatusCode)
	}
	body, err := readBody(resp.Body)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Issuer        string `json:"issuer"`
		JWKSURI       string `json:"jwks_uri"`
		Introspection string `json:"introspection_endpoint"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("%s: not a JSON metadata document", loggable(u))
	}
	if doc.Issuer != m.issuer {
		// RFC 8414 §3.3: MUST NOT be used.
		return nil, fmt.Errorf("%s names the issuer %.100q, not %q (RFC 8414 §3.3)", loggable(u), doc.Issuer, m.issuer)
	}
	for field, v := range map[string]string{"jwks_uri": doc.JWKSURI, "introspection_endpoint": doc.Introspection} {
		if v == "" {
			continue
		}
		if err := checkURL("metadata "+field, v, m.allowHTTP); err != nil {
			return nil, err
		}
	}
	return &serverMetadata{jwksURI: doc.JWKSURI, introspection: doc.Introspection, fetched: m.now()}, nil
}
