package token

import (
	"fmt"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/metric"
)

// Which authorization server a token belongs to is decided once, from the
// token alone, before anything is sent anywhere: a JWT by its iss, an
// opaque token by its prefix, else the default server. A token is never
// tried at one server after another, since each would learn it: a token of
// the retail server must not reach the partners' server, nor a Keycloak
// token Hydra's introspection endpoint.

// prefixRoute sends opaque tokens starting with prefix to in.
type prefixRoute struct {
	prefix string
	in     *introspector
}

// source returns where raw is resolved: by value (is), or by introspection
// (in); or why it belongs to no configured server.
func (r *Resolver) source(raw string) (*issuer, *introspector, error) {
	if iss, ok := peekIssuer(raw); ok {
		if is := r.issuers[iss]; is != nil {
			return is, nil, nil
		}
		if in := r.jwtIntro[iss]; in != nil {
			return nil, in, nil
		}
		if r.strict {
			return nil, nil, fmt.Errorf("%w: the JWT's issuer is not a configured authorization server", ErrInvalid)
		}
	} else {
		for _, p := range r.prefixes {
			if strings.HasPrefix(raw, p.prefix) {
				return nil, p.in, nil
			}
		}
	}
	if r.intro == nil {
		if r.strict {
			return nil, nil, fmt.Errorf("%w: no authorization server takes this token (no prefix matches, no default server)", ErrInvalid)
		}
		return nil, nil, fmt.Errorf("%w: not a JWT of a configured issuer", ErrInvalid)
	}
	return nil, r.intro, nil
}

// buildSources makes the introspectors, issuers and metadata of cfg.
func (r *Resolver) buildSources(cfg Config, client *http.Client, duration metric.Float64Histogram) error {
	timeout := defaultTimeout
	if cfg.Introspection != nil {
		timeout = cfg.Introspection.Timeout
	}
	newKeySet := func(uri string, meta *metadata) *keySet {
		ks := &keySet{uri: uri, where: loggable(uri), meta: meta, client: client, timeout: timeout,
			now: r.now, log: r.log, stats: &r.stats, tracer: cfg.Tracer}
		if uri == "" && meta != nil {
			ks.where = "jwks_uri of " + loggable(meta.issuer)
		}
		r.keySets = append(r.keySets, ks)
		return ks
	}
	newIntrospector := func(in IntrospectionConfig, meta *metadata) (*introspector, error) {
		x := &introspector{cfg: in, where: loggable(in.Endpoint), client: client, now: r.now, log: r.log,
			stats: &r.stats, shared: &r.shared, tracer: cfg.Tracer, duration: duration}
		if in.Endpoint == "" && meta != nil {
			x.meta = meta
			x.where = "introspection_endpoint of " + loggable(meta.issuer)
		}
		var err error
		if x.guard, err = newGuard(in, cfg.Meter, r.log); err != nil {
			return nil, fmt.Errorf("token: introspection metrics: %w", err)
		}
		if in.AuthMethod == AuthPrivateKeyJWT {
			if err := x.loadClientKey(); err != nil {
				return nil, err
			}
		}
		if in.Response == ResponseRFC9701 || in.Response == ResponseKeycloak {
			x.keys = newKeySet(in.JWKSURI, meta)
		}
		return x, nil
	}
	newIssuer := func(ic IssuerConfig, meta *metadata) *issuer {
		algs, _ := newAlgSet("", ic.Algorithms) // checked by withDefaults
		return &issuer{cfg: ic, algs: algs, keys: newKeySet(ic.JWKSURI, meta), now: r.now, shared: &r.shared}
	}

	var err error
	if in := cfg.Introspection; in != nil {
		if r.intro, err = newIntrospector(*in, nil); err != nil {
			return err
		}
	}
	for _, ic := range cfg.Issuers {
		r.issuers[ic.Issuer] = newIssuer(ic, nil)
	}

	r.strict = len(cfg.Servers) > 0
	r.jwtIntro = make(map[string]*introspector)
	for _, sc := range cfg.Servers {
		var meta *metadata
		if sc.Discovery {
			meta = &metadata{issuer: sc.Issuer, urls: metadataURLs(sc.Issuer), allowHTTP: sc.AllowInsecureHTTP,
				client: client, timeout: timeout, now: r.now, log: r.log}
			r.metas = append(r.metas, meta)
		}
		var in *introspector
		if sc.Introspection != nil {
			if in, err = newIntrospector(*sc.Introspection, meta); err != nil {
				return err
			}
			r.lockTTL = max(r.lockTTL, sc.Introspection.Timeout)
		}
		if sc.JWT != nil && !sc.IntrospectJWTs {
			r.issuers[sc.Issuer] = newIssuer(*sc.JWT, meta)
		} else {
			r.jwtIntro[sc.Issuer] = in
		}
		for _, p := range sc.TokenPrefixes {
			r.prefixes = append(r.prefixes, prefixRoute{prefix: p, in: in})
		}
		if sc.Default {
			r.intro = in
		}
	}
	return nil
}
