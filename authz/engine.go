package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/phantom-authz/phantom-authz/authz/credential"
	"github.com/phantom-authz/phantom-authz/authz/route"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// Config assembles an Engine from its stages.
type Config struct {
	// Resolver resolves credentials. Nil turns the credential and resolve
	// stages off: the policy alone decides and reads the headers itself, as
	// OPA-Envoy policies do.
	Resolver Resolver
	// Decider is the policy stage; required.
	Decider Decider
	// Minter signs the upstream JWT when the token came without one; nil
	// forwards only tokens that carry their own JWT.
	Minter Minter
	// Binder checks sender-constrained tokens (DPoP, certificate-bound)
	// after resolve, before decide. Nil with a Resolver: a binding.Binder
	// with its defaults, so a bound token never passes as a bearer token.
	Binder Binder
	// Realm is the realm of WWW-Authenticate challenges (default "phantom-authz").
	Realm string
	// Routes is the route table (nil: routes come from Envoy's context
	// extensions and route metadata alone).
	Routes *route.Table
	// PublicPaths need no credential: exact paths, or prefixes ending in "*",
	// matched on the normalised path. A route can be public too.
	PublicPaths []string
	// OwnedHeaders are request headers phantom-authz owns (exact names, or
	// prefixes ending in "*"); any a client sends are removed on allow.
	OwnedHeaders []string
	// MaxHeaderBytes bounds the total size of request headers (default 64 KiB).
	MaxHeaderBytes int
	// MaxBodyBytes bounds the request body Envoy hands over for the policy
	// (default 1 MiB); a larger one is denied with 413, as Envoy itself
	// answers a body over with_request_body.max_request_bytes.
	MaxBodyBytes int
	// Logger receives one line per denial (default slog.Default()).
	Logger *slog.Logger

	// InteractionID echoes the client's x-fapi-interaction-id (a UUID) to
	// the upstream and the response, or generates one (FAPI).
	InteractionID bool
	// Upstream mints the JWT of one upstream API: a route's upstream_jwt
	// (its own aud, claims, narrowed scope) or pairwise sector (a
	// pseudonymous sub). Nil: a route that asks for either is refused.
	Upstream UpstreamMinter
	// PairwiseSectors maps an API (context_extensions api) to its pairwise
	// sector. A route can name its sector with context_extensions
	// pairwise_sector instead.
	PairwiseSectors map[string]string

	// Tracer makes a span per check and per stage (nil: none).
	Tracer trace.Tracer
	// Meter counts checks and times them (nil: no metrics).
	Meter metric.Meter
	// DecisionLog receives one record per decision (nil: none).
	DecisionLog DecisionLogger
	// SafeClaims are the claims whose values may appear on spans.
	SafeClaims []string
	// DryRun selects routes whose denials are logged but not enforced.
	DryRun DryRun
}

// Engine runs the stages in order for each request: credential → resolve →
// decide → respond. It is safe for concurrent use.
type Engine struct {
	cfg         Config
	ownedExact  map[string]bool
	ownedPrefix []string
	publicExact map[string]bool
	publicPref  []string
	obs         *observer
}

// New checks cfg and returns an Engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Decider == nil {
		return nil, errors.New("authz: a Decider is required")
	}
	if cfg.Realm == "" {
		cfg.Realm = "phantom-authz"
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 64 << 10
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	e := &Engine{cfg: cfg, ownedExact: map[string]bool{}, publicExact: map[string]bool{}}
	var err error
	if err = defaultBinder(&e.cfg); err != nil {
		return nil, fmt.Errorf("authz: binding: %w", err)
	}
	if e.obs, err = newObserver(cfg); err != nil {
		return nil, fmt.Errorf("authz: telemetry: %w", err)
	}
	for _, h := range cfg.OwnedHeaders {
		if p, ok := strings.CutSuffix(strings.ToLower(h), "*"); ok {
			e.ownedPrefix = append(e.ownedPrefix, p)
		} else {
			e.ownedExact[strings.ToLower(h)] = true
		}
	}
	for _, p := range cfg.PublicPaths {
		if pre, ok := strings.CutSuffix(p, "*"); ok {
			e.publicPref = append(e.publicPref, pre)
		} else {
			e.publicExact[p] = true
		}
	}
	return e, nil
}

// Ready reports whether the engine can decide (policies compiled).
func (e *Engine) Ready() bool { return e.cfg.Decider.Ready() }

// PrepareToken does, once per resolved token, the work every later request
// with it would otherwise repeat: it mints the upstream JWT when the OAuth
// server gave none, then lets the decider precompute the token's policy
// input. The resolver runs it before caching the token.
func (e *Engine) PrepareToken(tok *token.Token) error {
	if tok.JWT == "" && e.cfg.Minter != nil {
		if err := e.cfg.Minter.Mint(tok); err != nil {
			return err
		}
	}
	if p, ok := e.cfg.Decider.(TokenPreparer); ok {
		return p.PrepareToken(tok)
	}
	return nil
}

// Check decides one request. It never fails: every error becomes a denial
// (fail closed). On a dry-run route a denial (not an error) lets the request
// through once it is logged and counted.
func (e *Engine) Check(ctx context.Context, r *Request) Decision {
	var start time.Time
	if e.obs.timed() {
		start = time.Now()
	}
	ctx, span, own := e.obs.startCheck(ctx)
	var st checkState
	d := e.check(ctx, r, &st)
	d.DecisionID = newDecisionID()
	dry := false
	if !d.Allowed {
		e.denialScheme(r, &d)
		e.finishDenial(&d)
		dry = d.Status < 500 && e.dryRun(r)
		e.logDenial(ctx, r, &d, &st, dry)
	}
	e.obs.finish(ctx, span, r, &d, &st, start, dry)
	if own {
		span.End()
	}
	if dry {
		d = e.dryRunAllow(r, st.tok, d)
	}
	e.interaction(r, &d)
	return d
}

func (e *Engine) check(ctx context.Context, r *Request, st *checkState) Decision {
	// A request without HTTP attributes (Envoy's network filter) goes
	// through the same stages: the policy decides on its peers, and where a
	// credential is required it is missing, so it is denied.
	size := 0
	for k, v := range r.Headers {
		size += len(k) + len(v)
	}
	if size > e.cfg.MaxHeaderBytes {
		return deny(431, "headers_too_large", "", "The request headers are too large.")
	}
	if len(r.Body) > e.cfg.MaxBodyBytes || len(r.RawBody) > e.cfg.MaxBodyBytes {
		return deny(413, "body_too_large", "", "The request body is too large.")
	}
	if denied := e.selectRoute(r, st); denied != nil {
		return *denied
	}

	var tok *token.Token
	var b bound
	if e.cfg.Resolver != nil && !e.public(r) {
		// The header map holds every occurrence (authz/server joins raw
		// headers with commas), so duplicates are seen without RawHeaders.
		_, span := e.obs.stage(ctx, "credential")
		cred, err := credential.FromHeaders(r.Headers, nil, r.Path)
		endCredential(span, cred, err)
		if err != nil {
			return credentialDenial(err)
		}
		st.auth = presentedAuth(cred)
		tok, err = e.resolve(ctx, r, cred)
		if err != nil {
			st.err = err
			return tokenDenial(err)
		}
		st.tok = tok
		var denied *Decision
		bctx, span := e.obs.stage(ctx, "binding")
		b, denied = e.bind(bctx, r, cred, tok)
		endBinding(span, b.checked, denied)
		if denied != nil {
			return *denied
		}
	}

	pctx, span := e.obs.stage(ctx, "policy.evaluate")
	d, err := e.cfg.Decider.Decide(pctx, r, tok)
	e.obs.endPolicy(span, &d, err)
	switch {
	case errors.Is(err, ErrInvalidInput):
		// Not an OAuth error (the credential was fine, or not needed): no
		// challenge, as OPA-Envoy answers such a request.
		return deny(400, "invalid_request", "", sentence(err))
	case err != nil:
		st.err = err
		return deny(503, "policy_error", "", "The authorization policy could not be evaluated.")
	case !d.Allowed:
		return d
	}
	if _, err := e.upstreamJWT(r, tok); err != nil {
		// An API's own JWT (or its pairwise sector's) could not be made:
		// a JWT meant for others, or the real subject, must not go.
		st.err = err
		return deny(503, "upstream_jwt_error", "", "The token for the upstream API could not be issued.")
	}
	e.forward(r, tok, &d)
	e.forwardBound(r, b, &d)
	return d
}

// forward puts the JWT on the upstream request and strips the headers
// phantom-authz owns, so a client can never spoof them.
func (e *Engine) forward(r *Request, tok *token.Token, d *Decision) {
	switch {
	case tok == nil && e.cfg.Resolver != nil:
		// A public route: whatever credential the client sent stays here,
		// as on every other route; the upstream never sees an opaque token.
		for _, h := range [...]string{"authorization", "dpop"} {
			if _, sent := r.Headers[h]; sent && !hasHeader(d.Headers, h) {
				d.RemoveHeaders = append(d.RemoveHeaders, h)
			}
		}
	case tok != nil:
		// The token's JWT, or its API's or pairwise sector's (kept with
		// the token once check has minted it).
		jwt, err := e.upstreamJWT(r, tok)
		if err != nil || jwt == "" {
			// An active token without an upstream JWT means minting is off;
			// never pass the client's opaque token (or, for a pairwise
			// sector, the real subject) on.
			d.RemoveHeaders = append(d.RemoveHeaders, "authorization")
		} else {
			d.Headers = append(d.Headers, Header{Key: "authorization", Value: "Bearer " + jwt})
		}
	}
	for k := range r.Headers {
		if e.owned(k) && !hasHeader(d.Headers, k) {
			d.RemoveHeaders = append(d.RemoveHeaders, k)
		}
	}
	e.forwardedCert(r, d)
}

func (e *Engine) owned(name string) bool {
	if e.ownedExact[name] {
		return true
	}
	for _, p := range e.ownedPrefix {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// resolve is the resolve stage: the credential's token, at the
// authorization server the route names when it names one (its opaque tokens
// go there; another server's tokens are refused).
func (e *Engine) resolve(ctx context.Context, r *Request, cred credential.Credential) (*token.Token, error) {
	if server := r.Route.AuthorizationServer; server != "" {
		at, ok := e.cfg.Resolver.(ServerResolver)
		if !ok {
			return nil, fmt.Errorf("%w: the route names an authorization server; configure authorization_servers", token.ErrUnavailable)
		}
		return at.ResolveAt(ctx, cred, server)
	}
	return e.cfg.Resolver.Resolve(ctx, cred)
}

// selectRoute is the route stage: it selects r's route once, for every
// later stage to read (r.Route), or returns the denial.
func (e *Engine) selectRoute(r *Request, st *checkState) *Decision {
	var err error
	r.Route, err = e.cfg.Routes.Select(&route.Request{
		Method: r.Method, Host: r.Host, Path: r.Path,
		ContextExtensions: r.ContextExtensions, Metadata: r.RouteMetadata,
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, route.ErrPath):
		// An encoded slash or backslash: the upstream could see other
		// segments than the route table did.
		d := deny(400, "invalid_path", "invalid_request", "The request path cannot be matched to a route.")
		return &d
	default:
		st.err = err
		d := deny(500, "route_misconfigured", "", "This route is misconfigured.")
		return &d
	}
}

func (e *Engine) public(r *Request) bool {
	if r.Route.Public {
		return true
	}
	if len(e.publicExact) == 0 && len(e.publicPref) == 0 {
		return false
	}
	// The normalised path, so that /health/../admin is not public; a path
	// that cannot be normalised needs a credential.
	p, err := route.Normalize(pathOnly(r.Path))
	if err != nil {
		return false
	}
	if e.publicExact[p] {
		return true
	}
	for _, pre := range e.publicPref {
		if strings.HasPrefix(p, pre) {
			return true
		}
	}
	return false
}

func hasHeader(hs []Header, name string) bool {
	for _, h := range hs {
		if strings.EqualFold(h.Key, name) {
			return true
		}
	}
	return false
}

func pathOnly(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		return p[:i]
	}
	return p
}

// sentence is the reason an error carries after its "stage: " prefixes, for
// a client-facing detail.
func sentence(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	if s == "" {
		return "The request is invalid."
	}
	return strings.ToUpper(s[:1]) + s[1:] + "."
}

func credentialDenial(err error) Decision {
	if errors.Is(err, credential.ErrMissing) {
		return deny(401, "missing_token", "", "The request carries no access token.")
	}
	return deny(400, "invalid_request", "invalid_request", sentence(err))
}

func tokenDenial(err error) Decision {
	switch {
	case errors.Is(err, token.ErrInactive):
		return deny(401, "invalid_token", "invalid_token", "The access token is not active.")
	case errors.Is(err, token.ErrInvalid):
		return deny(401, "invalid_token", "invalid_token", "The access token is invalid.")
	default:
		return deny(503, "unavailable", "", "The authorization server could not be reached; try again later.")
	}
}

func deny(status int, reason, code, detail string) Decision {
	return Decision{Status: status, Reason: reason, Error: code, Detail: detail}
}
