package token

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Config configures a Resolver. The zero value of every field but the token
// sources is usable; New fills the defaults and refuses what cannot work.
type Config struct {
	// Introspection is the OAuth server that resolves opaque tokens. Nil: opaque
	// tokens are refused (ErrInvalid).
	Introspection *IntrospectionConfig
	// Issuers are the issuers whose JWTs are verified by value. A JWT whose iss
	// matches none of them is introspected when Introspection is set, refused
	// otherwise.
	Issuers []IssuerConfig
	// Servers are the authorization servers of a deployment with several
	// (retail, corporate, partners...), in place of Introspection and
	// Issuers, which are the one-server form. A JWT goes to the server its
	// iss names (no server: refused); an opaque token to the server whose
	// TokenPrefixes it starts with, else to the Default one (none: refused).
	// A token is never tried at one server after another: it must not reach
	// a server that did not issue it.
	Servers []ServerConfig
	Cache   CacheConfig
	// Prepare runs once per resolved active token before it is cached (mint the
	// JWT, build the policy input). An error keeps the token out of the cache and
	// is returned wrapped in ErrUnavailable.
	Prepare func(*Token) error
	// CAFile is a PEM bundle that replaces the system roots, together with
	// Introspection.CAFile, for every endpoint the resolver calls: the
	// issuers' JWKS when there is no introspection.
	CAFile string
	// HTTPClient overrides the client used for introspection and JWKS (tests).
	// When set, the CA files are not used.
	HTTPClient *http.Client
	// WrapTransport, when set, wraps the transport of the resolver's own
	// client (not of HTTPClient): the hook for tracing instrumentation.
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// Tracer makes the spans of cache lookups, introspections, JWT
	// verifications, JWKS fetches and token preparation; nil makes none.
	Tracer trace.Tracer
	// Meter records introspection latency; nil records nothing. The counters
	// are in Stats.
	Meter metric.Meter
	// Logger receives warnings about the OAuth server and JWKS endpoints; nil
	// discards them. Tokens and secrets are never logged.
	Logger *slog.Logger
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// Shared is the second-level cache shared by replicas (Redis); nil: none,
	// every replica resolves on its own.
	Shared SharedCache
	// SharedKey is the secret that authenticates Shared's entries, the same
	// on every replica and known to nothing else (redis.cache_key_file): at
	// least MinSharedKey bytes; required with Shared.
	SharedKey []byte
	// Publisher tells the other replicas of a Revoke; nil: revocations stay
	// on this replica (and, with Shared, in the shared cache).
	Publisher RevocationPublisher
}

// Client authentication methods at the introspection endpoint (RFC 6749
// §2.3.1, RFC 7523).
const (
	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"
	AuthPrivateKeyJWT     = "private_key_jwt"
)

// Introspection answer formats.
const (
	// ResponseJSON is the plain RFC 7662 JSON answer; the JWT to forward is
	// minted by Prepare.
	ResponseJSON = "json"
	// ResponseJWT is the phantom-token answer (Accept: application/jwt): the
	// body is the JWT to forward, 204 means inactive.
	ResponseJWT = "jwt"
	// ResponseRFC9701 is the signed introspection answer of RFC 9701
	// (application/token-introspection+jwt), verified against JWKSURI.
	ResponseRFC9701 = "rfc9701"
	// ResponseKeycloak is Keycloak's answer to Accept: application/jwt: the
	// RFC 7662 JSON with a "jwt" field, the token's claims signed with the
	// realm's key. The field is read only when active is true and forwarded
	// only once it verifies against JWKSURI with iss Issuer; without it the
	// JWT is minted as in json mode.
	ResponseKeycloak = "keycloak"
)

// IntrospectionConfig is the OAuth server's introspection endpoint (RFC 7662)
// and how phantom-authz authenticates to it.
type IntrospectionConfig struct {
	// Endpoint is the introspection URL; https unless AllowInsecureHTTP.
	Endpoint string
	// ClientID and ClientSecret authenticate phantom-authz at the endpoint.
	ClientID, ClientSecret string
	// AuthMethod is client_secret_basic (default), client_secret_post or
	// private_key_jwt.
	AuthMethod string
	// PrivateKeyFile (PEM or JWK), PrivateKeyID (kid, default: the JWK's) and
	// PrivateKeyAlg (default by key type: RS256, ES256/384/512, EdDSA) sign the
	// RFC 7523 client assertion of private_key_jwt.
	PrivateKeyFile, PrivateKeyID, PrivateKeyAlg string
	// Response is json (default), jwt or rfc9701.
	Response string
	// AllowInsecureHTTP permits http:// for Endpoint and JWKSURI (local
	// development only: the token and the client secret cross in clear).
	AllowInsecureHTTP bool
	// CAFile is a PEM bundle that replaces the system roots for every
	// endpoint the resolver calls (introspection and all JWKS URIs).
	CAFile string
	// Timeout bounds one introspection or JWKS fetch (default 2s).
	Timeout time.Duration
	// Issuer, JWKSURI and Audience check rfc9701 answers: the expected iss,
	// where its signing keys are, and the expected aud (default ClientID).
	Issuer, JWKSURI, Audience string
	// Audiences, when set, restrict the tokens accepted to those issued for
	// this resource server (RFC 9700 §2.3): an active answer must name one
	// of them in aud; an answer without aud is refused.
	Audiences []string
	// TokenTypeHint is sent as token_type_hint when set (e.g. "access_token").
	TokenTypeHint string
	// MaxConcurrent bounds the introspection calls in flight (default 64).
	// A call beyond it waits up to Timeout for a place, then fails
	// (ErrUnavailable): an outage or a flood of new tokens never piles up
	// goroutines without bound.
	MaxConcurrent int
	// Breaker is the circuit breaker toward the endpoint.
	Breaker BreakerConfig

	// discovered: Endpoint (and for keycloak, JWKSURI) may be empty, the
	// server's metadata gives them.
	discovered bool
}

// ServerConfig is one authorization server of Config.Servers.
type ServerConfig struct {
	// Name names the server in errors and logs (default: Issuer).
	Name string
	// Issuer is the server's issuer identifier (required): JWTs whose iss
	// is exactly this come here, and the policy sees it as
	// input.token.iss for every token this server answered for.
	Issuer string
	// Discovery reads the server's metadata from Issuer (RFC 8414
	// /.well-known/oauth-authorization-server, else OpenID Connect
	// /.well-known/openid-configuration) for the JWKS URI and the
	// introspection endpoint not set here. The metadata must name Issuer
	// exactly (RFC 8414 §3.3); it is refreshed as the JWKS is, and a
	// failed refresh keeps the last good copy.
	Discovery bool
	// AllowInsecureHTTP permits http:// for the metadata (local development
	// only).
	AllowInsecureHTTP bool
	// Introspection is the server's introspection endpoint; nil: its tokens
	// are JWTs verified by value only. Its Issuer and JWKSURI default to the
	// server's.
	Introspection *IntrospectionConfig
	// JWT verifies the server's JWTs by value (its Issuer is the server's);
	// nil: its JWTs are introspected.
	JWT *IssuerConfig
	// IntrospectJWTs sends the server's JWTs to introspection even when JWT
	// could verify them by value: for lightweight tokens that carry almost
	// no claims (Keycloak), and to see revocations at once.
	IntrospectJWTs bool
	// TokenPrefixes route opaque tokens that start with one of them to this
	// server (Hydra's ory_at_, say).
	TokenPrefixes []string
	// Default receives the opaque tokens that match no prefix; at most one
	// server is the default.
	Default bool
}

// Token types of IssuerConfig.Type.
const (
	// DefaultType is the typ a JWT access token must have (RFC 9068 §4)
	// unless the issuer's Type says otherwise.
	DefaultType = "at+jwt"
	// AnyType opts an issuer out of the typ check, for issuers that do
	// not set at+jwt. Refresh and ID token types are refused all the same.
	AnyType = "any"
)

// IssuerConfig is an issuer whose JWT access tokens are verified by value.
type IssuerConfig struct {
	// Issuer is the exact iss value.
	Issuer string
	// JWKSURI is where the issuer publishes its keys; https unless
	// AllowInsecureHTTP.
	JWKSURI string
	// Audiences: a token is accepted when its aud holds any of them. Required.
	Audiences []string
	// Algorithms allowed for signatures (default ES256, PS256, EdDSA). none and
	// the HMAC algorithms are refused: the keys are public.
	Algorithms []string
	// Type is the expected typ header (default at+jwt, RFC 9068 §4); AnyType
	// accepts any typ, or none. Compared as RFC 8725 §3.11 says:
	// case-insensitive, "application/" optional.
	Type string
	// Skew is the clock leeway for exp, nbf and iat (default and maximum 60s).
	Skew time.Duration
	// AllowInsecureHTTP permits an http:// JWKSURI (local development only).
	AllowInsecureHTTP bool

	// discovered: JWKSURI may be empty, the server's metadata gives it.
	discovered bool
}

// CacheConfig bounds the resolved-token cache.
type CacheConfig struct {
	// MaxCost is the cache's memory budget in bytes (default 64 MiB).
	MaxCost int64
	// MaxTTL caps how long an active token is kept (default 5m); tokens are
	// never kept past their exp or the exp of the JWT to forward.
	MaxTTL time.Duration
	// InactiveTTL is how long an inactive answer is remembered, so a flood of
	// junk tokens does not reach the OAuth server (default 10s; negative: not
	// remembered).
	InactiveTTL time.Duration
}

const (
	defaultTimeout     = 2 * time.Second
	defaultMaxCost     = 64 << 20
	defaultMaxTTL      = 5 * time.Minute
	defaultInactiveTTL = 10 * time.Second
	maxSkew            = 60 * time.Second
)

// defaultAlgorithms are the issuer algorithms allowed when none are configured.
var defaultAlgorithms = []string{"ES256", "PS256", "EdDSA"}

// asymmetricAlgorithms are all the signature algorithms a JWKS can verify:
// none and HS* never, whatever is configured.
var asymmetricAlgorithms = []string{
	"RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
	"EdDSA", "Ed25519",
}

// algSet is an allow-list of signature algorithms.
type algSet map[string]jwa.SignatureAlgorithm

func newAlgSet(field string, names []string) (algSet, error) {
	set := make(algSet, len(names))
	for _, name := range names {
		if name == "none" || strings.HasPrefix(strings.ToUpper(name), "HS") {
			return nil, fmt.Errorf("token: %s: %q is not allowed (tokens must be signed with a private key)", field, name)
		}
		alg, ok := jwa.LookupSignatureAlgorithm(name)
		if !ok || !slices.Contains(asymmetricAlgorithms, name) {
			return nil, fmt.Errorf("token: %s: unknown algorithm %q (one of %s)", field, name, strings.Join(asymmetricAlgorithms, ", "))
		}
		set[name] = alg
	}
	return set, nil
}

// withDefaults returns a copy of cfg with defaults filled in, or the first
// configuration error, naming the field.
func (cfg Config) withDefaults() (Config, error) {
	if len(cfg.Servers) > 0 {
		if cfg.Introspection != nil || len(cfg.Issuers) > 0 {
			return cfg, fmt.Errorf("token: configure authorization_servers, or introspection and jwt.issuers (the one-server form), not both")
		}
		servers := make([]ServerConfig, len(cfg.Servers))
		seen := map[string]string{}
		defaults := 0
		for i, s := range cfg.Servers {
			field := fmt.Sprintf("authorization_servers[%d]", i)
			if err := s.validate(field); err != nil {
				return cfg, err
			}
			if other, ok := seen["iss "+s.Issuer]; ok {
				return cfg, fmt.Errorf("token: %s.issuer %q is also %s's", field, s.Issuer, other)
			}
			seen["iss "+s.Issuer] = field
			for _, p := range s.TokenPrefixes {
				for key, other := range seen {
					if q, ok := strings.CutPrefix(key, "prefix "); ok && (strings.HasPrefix(p, q) || strings.HasPrefix(q, p)) {
						return cfg, fmt.Errorf("token: %s.token_prefixes %q overlaps %q of %s: a token must belong to one server", field, p, q, other)
					}
				}
				seen["prefix "+p] = field
			}
			if s.Default {
				defaults++
			}
			servers[i] = s
		}
		if defaults > 1 {
			return cfg, fmt.Errorf("token: at most one of authorization_servers is the default")
		}
		cfg.Servers = servers
		return cfg.cacheDefaults()
	}
	if cfg.Introspection == nil && len(cfg.Issuers) == 0 {
		return cfg, fmt.Errorf("token: configure introspection or at least one issuer")
	}
	if cfg.Introspection != nil {
		in := *cfg.Introspection
		if err := in.validate(); err != nil {
			return cfg, err
		}
		cfg.Introspection = &in
	}
	issuers := make([]IssuerConfig, len(cfg.Issuers))
	seen := make(map[string]bool, len(cfg.Issuers))
	for i, is := range cfg.Issuers {
		if err := is.validate(fmt.Sprintf("issuers[%d]", i)); err != nil {
			return cfg, err
		}
		if seen[is.Issuer] {
			return cfg, fmt.Errorf("token: issuers[%d].issuer %q is configured twice", i, is.Issuer)
		}
		seen[is.Issuer] = true
		issuers[i] = is
	}
	cfg.Issuers = issuers
	return cfg.cacheDefaults()
}

// validate checks one server of Config.Servers and fills its defaults.
func (s *ServerConfig) validate(field string) error {
	if s.Issuer == "" {
		return fmt.Errorf("token: %s.issuer is required", field)
	}
	if s.Name == "" {
		s.Name = s.Issuer
	}
	if s.Discovery {
		if err := checkURL(field+".issuer", s.Issuer, s.AllowInsecureHTTP); err != nil {
			return err
		}
	}
	if s.Introspection == nil && s.JWT == nil {
		return fmt.Errorf("token: %s: configure introspection, jwt or both", field)
	}
	if s.Introspection == nil && (s.IntrospectJWTs || len(s.TokenPrefixes) > 0 || s.Default) {
		return fmt.Errorf("token: %s: introspect_jwts, token_prefixes and default need introspection", field)
	}
	if slices.Contains(s.TokenPrefixes, "") {
		return fmt.Errorf("token: %s.token_prefixes must not hold an empty prefix", field)
	}
	if s.Introspection != nil {
		in := *s.Introspection
		if in.Issuer == "" {
			in.Issuer = s.Issuer
		}
		if in.JWKSURI == "" && s.JWT != nil {
			in.JWKSURI = s.JWT.JWKSURI
		}
		in.discovered = s.Discovery
		if err := in.validate(); err != nil {
			return fmt.Errorf("token: %s: %w", field, err)
		}
		s.Introspection = &in
	}
	if s.JWT != nil {
		is := *s.JWT
		if is.Issuer != "" && is.Issuer != s.Issuer {
			return fmt.Errorf("token: %s.jwt.issuer %q is not the server's issuer %q", field, is.Issuer, s.Issuer)
		}
		is.Issuer = s.Issuer
		is.discovered = s.Discovery
		if err := is.validate(field + ".jwt"); err != nil {
			return err
		}
		s.JWT = &is
	}
	return nil
}

// cacheDefaults fills the cache's and the hooks' defaults.
func (cfg Config) cacheDefaults() (Config, error) {
	if cfg.Shared != nil && len(cfg.SharedKey) < MinSharedKey {
		return cfg, fmt.Errorf("token: the shared cache needs a secret of at least %d bytes (redis.cache_key_file); %d given", MinSharedKey, len(cfg.SharedKey))
	}
	c := &cfg.Cache
	switch {
	case c.MaxCost < 0:
		return cfg, fmt.Errorf("token: cache.max_cost must not be negative")
	case c.MaxCost == 0:
		c.MaxCost = defaultMaxCost
	}
	switch {
	case c.MaxTTL < 0:
		return cfg, fmt.Errorf("token: cache.max_ttl must not be negative")
	case c.MaxTTL == 0:
		c.MaxTTL = defaultMaxTTL
	}
	if c.InactiveTTL == 0 {
		c.InactiveTTL = defaultInactiveTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg, nil
}

func (in *IntrospectionConfig) validate() error {
	if in.Endpoint != "" || !in.discovered {
		if err := checkURL("introspection.endpoint", in.Endpoint, in.AllowInsecureHTTP); err != nil {
			return err
		}
	}
	if in.ClientID == "" {
		return fmt.Errorf("token: introspection.client_id is required")
	}
	if in.AuthMethod == "" {
		in.AuthMethod = AuthClientSecretBasic
	}
	switch in.AuthMethod {
	case AuthClientSecretBasic, AuthClientSecretPost:
		if in.ClientSecret == "" {
			return fmt.Errorf("token: introspection.client_secret is required for auth_method %s", in.AuthMethod)
		}
	case AuthPrivateKeyJWT:
		if in.PrivateKeyFile == "" {
			return fmt.Errorf("token: introspection.private_key_file is required for auth_method %s", in.AuthMethod)
		}
	default:
		return fmt.Errorf("token: introspection.auth_method %q is not one of %s, %s, %s",
			in.AuthMethod, AuthClientSecretBasic, AuthClientSecretPost, AuthPrivateKeyJWT)
	}
	if slices.Contains(in.Audiences, "") {
		return fmt.Errorf("token: introspection.audiences must not hold an empty audience")
	}
	if in.Response == "" {
		in.Response = ResponseJSON
	}
	switch in.Response {
	case ResponseJSON, ResponseJWT:
	case ResponseRFC9701:
		if in.Issuer == "" {
			return fmt.Errorf("token: introspection.issuer is required for response %s", in.Response)
		}
		if err := checkURL("introspection.jwks_uri", in.JWKSURI, in.AllowInsecureHTTP); err != nil {
			return err
		}
		if in.Audience == "" {
			in.Audience = in.ClientID
		}
	case ResponseKeycloak:
		if in.Issuer == "" {
			return fmt.Errorf("token: introspection.issuer is required for response %s", in.Response)
		}
		if in.JWKSURI != "" || !in.discovered {
			if err := checkURL("introspection.jwks_uri", in.JWKSURI, in.AllowInsecureHTTP); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("token: introspection.response %q is not one of %s, %s, %s, %s",
			in.Response, ResponseJSON, ResponseJWT, ResponseRFC9701, ResponseKeycloak)
	}
	switch {
	case in.Timeout < 0:
		return fmt.Errorf("token: introspection.timeout must not be negative")
	case in.Timeout == 0:
		in.Timeout = defaultTimeout
	}
	switch {
	case in.MaxConcurrent < 0:
		return fmt.Errorf("token: introspection.max_concurrent must not be negative")
	case in.MaxConcurrent == 0:
		in.MaxConcurrent = defaultMaxConcurrent
	}
	switch {
	case in.Breaker.Failures < 0:
		return fmt.Errorf("token: introspection.circuit_breaker.failures must not be negative")
	case in.Breaker.Failures == 0:
		in.Breaker.Failures = defaultBreakerFailures
	}
	switch {
	case in.Breaker.Cooldown < 0:
		return fmt.Errorf("token: introspection.circuit_breaker.cooldown must not be negative")
	case in.Breaker.Cooldown == 0:
		in.Breaker.Cooldown = defaultBreakerCooldown
	}
	return nil
}

func (is *IssuerConfig) validate(field string) error {
	if is.Issuer == "" {
		return fmt.Errorf("token: %s.issuer is required", field)
	}
	if is.JWKSURI != "" || !is.discovered {
		if err := checkURL(field+".jwks_uri", is.JWKSURI, is.AllowInsecureHTTP); err != nil {
			return err
		}
	}
	if len(is.Audiences) == 0 || slices.Contains(is.Audiences, "") {
		return fmt.Errorf("token: %s.audiences must list the audiences this service accepts (RFC 8725 §3.9)", field)
	}
	if len(is.Algorithms) == 0 {
		is.Algorithms = defaultAlgorithms
	}
	if is.Type == "" {
		is.Type = DefaultType
	}
	if _, err := newAlgSet(field+".algorithms", is.Algorithms); err != nil {
		return err
	}
	switch {
	case is.Skew < 0 || is.Skew > maxSkew:
		return fmt.Errorf("token: %s.skew must be between 0 and %s", field, maxSkew)
	case is.Skew == 0:
		is.Skew = maxSkew
	}
	return nil
}

// loggable is raw as it may be logged or named in an error: scheme, host and
// path, without user information or query, which may hold secrets (an API
// gateway in front of the OAuth server often takes a subscription key in
// the query).
func loggable(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}).String()
}

// scrubURL replaces the URL an *url.Error quotes (http.Client's errors name
// the request's URL, query included) with where.
func scrubURL(err error, where string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s %q: %w", ue.Op, where, ue.Err)
	}
	return err
}

func checkURL(field, raw string, allowHTTP bool) error {
	if raw == "" {
		return fmt.Errorf("token: %s is required", field)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("token: %s must be an absolute URL", field)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && allowHTTP:
	case u.Scheme == "http":
		return fmt.Errorf("token: %s must be https (or set allow_insecure_http)", field)
	default:
		return fmt.Errorf("token: %s must be an https URL", field)
	}
	return nil
}

// newHTTPClient is the client for the OAuth server and JWKS endpoints. It
// never follows redirects: a 307 would resend the token elsewhere. caFiles
// maps a configuration key to a PEM bundle; together they replace the
// system roots.
func newHTTPClient(caFiles map[string]string) (*http.Client, *http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	for _, key := range slices.Sorted(maps.Keys(caFiles)) {
		caFile := caFiles[key]
		if caFile == "" {
			continue
		}
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, nil, fmt.Errorf("token: %s: %w", key, err)
		}
		if tr.TLSClientConfig.RootCAs == nil {
			tr.TLSClientConfig.RootCAs = x509.NewCertPool()
		}
		if !tr.TLSClientConfig.RootCAs.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("token: %s %s holds no PEM certificate", key, caFile)
		}
	}
	client := &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return client, tr, nil
}
