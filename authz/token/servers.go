package token

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/phantom-authz/phantom-authz/authz/credential"

	"go.opentelemetry.io/otel/metric"
)

// Which authorization server a token belongs to is decided once, from the
// token alone, before anything is sent anywhere: a JWT by its iss, an
// opaque token by its prefix, else the default server. A token is never
// tried at one server after another, since each would learn it: a token of
// the retail server must not reach the partners' server, nor a Keycloak
// token Hydra's introspection endpoint.

// A route may name the server its API accepts tokens from (ResolveAt):
// an opaque token that neither prefix nor iss assigns then goes to that
// server instead of the default one, and a token another server vouches
// for (by iss, prefix, or an earlier answer in the cache) is refused on
// that route without being sent anywhere.

// namedServer is a server of Config.Servers as a route names it.
type namedServer struct {
	issuer string
	in     *introspector // nil: no introspection
}

// routeServerKey carries the route's server (a *namedServer) from ResolveAt
// into the resolution; it survives context.WithoutCancel.
type routeServerKey struct{}

// ResolveAt is Resolve on a route that accepts the tokens of the server
// named server only (authorization_servers[].name). An unknown name is
// ErrUnavailable (the route is misconfigured); a token of another server
// is ErrInvalid.
func (r *Resolver) ResolveAt(ctx context.Context, cred credential.Credential, server string) (*Token, error) {
	ns := r.named[server]
	if ns == nil {
		return nil, fmt.Errorf("%w: the route names the authorization server %q, which is not configured", ErrUnavailable, server)
	}
	// A cached token is checked below; a token to resolve, in source.
	tok, err := r.Resolve(context.WithValue(ctx, routeServerKey{}, ns), cred)
	if err == nil && tok.Issuer != ns.issuer {
		// Vouched for by another server (cached, or a flight of a request
		// on another route): not this route's token.
		return nil, errOtherServer
	}
	return tok, err
}

var errOtherServer = fmt.Errorf("%w: a token of another authorization server than the route's", ErrInvalid)

// assigned is the server raw's own form names: its iss, or its prefix;
// both nil when neither does (an opaque token for the default server).
func (r *Resolver) assigned(raw string, c *compact) (*issuer, *introspector, error) {
	if iss, ok := issuerOf(raw, c); ok {
		if is := r.issuers[iss]; is != nil {
			return is, nil, nil
		}
		if in := r.jwtIntro[iss]; in != nil {
			return nil, in, nil
		}
		return nil, nil, fmt.Errorf("%w: the JWT's issuer is not a configured authorization server", ErrInvalid)
	}
	for _, p := range r.prefixes {
		if strings.HasPrefix(raw, p.prefix) {
			return nil, p.in, nil
		}
	}
	return nil, nil, nil
}

// prefixRoute sends opaque tokens starting with prefix to in.
type prefixRoute struct {
	prefix string
	in     *introspector
}

// source returns where raw is resolved: by value (is), or by introspection
// (in); or why it belongs to no configured server. ctx may carry the
// route's server (ResolveAt), which takes the tokens nothing else assigns.
func (r *Resolver) source(ctx context.Context, raw string, c *compact) (*issuer, *introspector, error) {
	if ns, ok := ctx.Value(routeServerKey{}).(*namedServer); ok {
		is, in, err := r.assigned(raw, c)
		switch {
		case err != nil:
			return nil, nil, err
		case (is != nil && is.cfg.Issuer != ns.issuer) || (in != nil && in != ns.in):
			return nil, nil, errOtherServer
		case is != nil || in != nil:
			return is, in, nil
		case ns.in == nil:
			return nil, nil, fmt.Errorf("%w: the route's authorization server takes no opaque tokens (no introspection)", ErrInvalid)
		default:
			return nil, ns.in, nil
		}
	}
	if iss, ok := issuerOf(raw, c); ok {
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
		x.guard.endpoint = x.where // a discovered endpoint is named by its issuer
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
	r.named = make(map[string]*namedServer)
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
		r.named[sc.Name] = &namedServer{issuer: sc.Issuer, in: in}
	}
	return nil
}

// Warm fetches, once, the servers' metadata (discovery) and the key sets,
// so the first tokens do not wait for them: behind Envoy's short ext_authz
// timeout, a cold metadata + JWKS + introspection path can outlast it. A
// failure is logged and tried again on use, as always. Call it in the
// background after New; it returns when done or when ctx ends.
func (r *Resolver) Warm(ctx context.Context) {
	for _, m := range r.metas {
		_, _ = m.get(ctx)
	}
	for _, ks := range r.keySets {
		if ks.keys.load() == nil {
			_, _ = ks.refresh(ctx)
		}
	}
}
