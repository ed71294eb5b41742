// Package config loads and validates phantom-authz's YAML configuration.
// Every field is documented in README.md with its default; an unknown key or
// an invalid value is an error that names the key.
package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration file.
type Config struct {
	GRPC          GRPC           `yaml:"grpc"`
	HTTP          HTTP           `yaml:"http"`
	Policy        Policy         `yaml:"policy"`
	Log           Log            `yaml:"log"`
	Auth          Auth           `yaml:"auth"`
	Introspection *Introspection `yaml:"introspection"`
	Mint          Mint           `yaml:"mint"`
	JWT           JWT            `yaml:"jwt"`
	Cache         Cache          `yaml:"cache"`
	DPoP          DPoP           `yaml:"dpop"`
	Binding       Binding        `yaml:"binding"`
	Pairwise      *Pairwise      `yaml:"pairwise"`
	FAPI          FAPI           `yaml:"fapi"`
	Telemetry     Telemetry      `yaml:"telemetry"`
	DryRun        DryRun         `yaml:"dry_run"`
	Redis         Redis          `yaml:"redis"`
	Admin         Admin          `yaml:"admin"`
	Routes        []Route        `yaml:"routes"`
	// AuthorizationServers are several OAuth servers in one deployment, in
	// place of introspection and jwt.issuers (the one-server form).
	AuthorizationServers []AuthorizationServer `yaml:"authorization_servers"`
}

// AuthorizationServer is one OAuth server of authorization_servers.
type AuthorizationServer struct {
	Name   string `yaml:"name"`
	Issuer string `yaml:"issuer"`
	// Discovery reads the server's metadata (RFC 8414, OpenID Connect) for
	// the endpoints not given here.
	Discovery         bool `yaml:"discovery"`
	AllowInsecureHTTP bool `yaml:"allow_insecure_http"`
	// Introspection: as the top-level introspection block (its issuer
	// defaults to the server's).
	Introspection *Introspection `yaml:"introspection"`
	// JWT verifies the server's JWTs by value (as a jwt.issuers entry; its
	// issuer is the server's).
	JWT            *Issuer  `yaml:"jwt"`
	IntrospectJWTs bool     `yaml:"introspect_jwts"`
	TokenPrefixes  []string `yaml:"token_prefixes"`
	Default        bool     `yaml:"default"`
}

// Credentials reports whether any token source is configured (else every
// route is public and no token is read).
func (c *Config) Credentials() bool {
	return c.Introspection != nil || len(c.JWT.Issuers) > 0 || len(c.AuthorizationServers) > 0
}

// GRPC is the ext_authz gRPC server.
type GRPC struct {
	Addr string `yaml:"addr"`
	// MaxRecvBytes bounds one CheckRequest; larger ones are refused by gRPC
	// (Envoy then fails closed).
	MaxRecvBytes int `yaml:"max_recv_bytes"`
	// TLS, when set, serves gRPC over TLS (with client_ca_file, Envoy →
	// phantom-authz mutual TLS).
	TLS *TLS `yaml:"tls"`
}

// HTTP is the health, readiness and JWKS server.
type HTTP struct {
	Addr string `yaml:"addr"`
	TLS  *TLS   `yaml:"tls"`
}

// Policy is the Rego policy set.
type Policy struct {
	Dir          string   `yaml:"dir"`
	Query        string   `yaml:"query"`
	PollInterval Duration `yaml:"poll_interval"`
	// DecisionCacheBytes is the memory budget of the decision cache
	// (repeated requests answered without evaluating again); 0 turns it off.
	DecisionCacheBytes int64 `yaml:"decision_cache_bytes"`
	// Bundle, when its url is set, takes the policies from an OPA bundle
	// server instead of Dir.
	Bundle PolicyBundle `yaml:"bundle"`
	// EvalTimeout bounds one policy evaluation; past it the request is
	// denied with 503.
	EvalTimeout Duration `yaml:"eval_timeout"`
	// MaxBodyBytes bounds the request body handed to the policy; a larger
	// one is denied with 413.
	MaxBodyBytes int `yaml:"max_body_bytes"`
}

// Log is the structured logger.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Auth says when and how credentials are demanded.
type Auth struct {
	// Realm goes into WWW-Authenticate challenges.
	Realm string `yaml:"realm"`
	// PublicPaths need no credential: an exact path, or a prefix ending in "*".
	PublicPaths []string `yaml:"public_paths"`
	// OwnedHeaders are request headers phantom-authz owns: any the client
	// sends are removed before the request reaches the upstream. A trailing
	// "*" matches a prefix.
	OwnedHeaders []string `yaml:"owned_headers"`
	// MaxHeaderBytes bounds the total size of the request headers.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
}

// Introspection is the OAuth server's RFC 7662 endpoint.
type Introspection struct {
	Endpoint          string   `yaml:"endpoint"`
	ClientID          string   `yaml:"client_id"`
	ClientSecret      string   `yaml:"client_secret" secret:"true"`
	ClientSecretFile  string   `yaml:"client_secret_file"`
	AuthMethod        string   `yaml:"auth_method"`
	PrivateKeyFile    string   `yaml:"private_key_file"`
	PrivateKeyID      string   `yaml:"private_key_id"`
	PrivateKeyAlg     string   `yaml:"private_key_alg"`
	Response          string   `yaml:"response"`
	AllowInsecureHTTP bool     `yaml:"allow_insecure_http"`
	CAFile            string   `yaml:"ca_file"`
	Timeout           Duration `yaml:"timeout"`
	Issuer            string   `yaml:"issuer"`
	JWKSURI           string   `yaml:"jwks_uri"`
	Audience          string   `yaml:"audience"`
	// Audiences restrict the tokens accepted to those whose answer names
	// one of them in aud.
	Audiences     []string `yaml:"audiences"`
	TokenTypeHint string   `yaml:"token_type_hint"`
	// MaxConcurrent bounds the introspection calls in flight.
	MaxConcurrent int `yaml:"max_concurrent"`
	// CircuitBreaker stops calling an OAuth server that keeps failing.
	CircuitBreaker CircuitBreaker `yaml:"circuit_breaker"`
}

// CircuitBreaker is the circuit breaker toward the OAuth server.
type CircuitBreaker struct {
	// Failures in a row that open it.
	Failures int `yaml:"failures"`
	// Cooldown is how long it stays open before one probe call.
	Cooldown Duration `yaml:"cooldown"`
}

// Mint is the JWT phantom-authz signs for the upstream.
type Mint struct {
	Issuer          string     `yaml:"issuer"`
	Audience        StringList `yaml:"audience"`
	SigningKeyFile  string     `yaml:"signing_key_file"`
	SigningKeyFiles []string   `yaml:"signing_key_files"`
	MaxLifetime     Duration   `yaml:"max_lifetime"`
	CopyClaims      []string   `yaml:"copy_claims"`
}

// JWT configures by-value JWTs from internal clients.
type JWT struct {
	Issuers []Issuer `yaml:"issuers"`
	// CAFile is a PEM bundle for the issuers' JWKS endpoints (added to
	// introspection.ca_file's; together they replace the system roots).
	CAFile string `yaml:"ca_file"`
}

// Issuer is one trusted JWT issuer.
type Issuer struct {
	Issuer     string   `yaml:"issuer"`
	JWKSURI    string   `yaml:"jwks_uri"`
	Audiences  []string `yaml:"audiences"`
	Algorithms []string `yaml:"algorithms"`
	Type       string   `yaml:"type"`
	Skew       Duration `yaml:"skew"`
	// AllowInsecureHTTP permits an http:// jwks_uri (local runs only).
	AllowInsecureHTTP bool `yaml:"allow_insecure_http"`
}

// Cache is the resolved-token cache.
type Cache struct {
	MaxBytes    int64    `yaml:"max_bytes"`
	MaxTTL      Duration `yaml:"max_ttl"`
	InactiveTTL Duration `yaml:"inactive_ttl"`
}

// Default returns the configuration used when no file is given.
func Default() Config {
	return Config{
		GRPC: GRPC{Addr: "127.0.0.1:9191", MaxRecvBytes: 4 << 20},
		HTTP: HTTP{Addr: "127.0.0.1:9192"},
		Policy: Policy{Dir: "./policies", Query: "data.envoy.authz.allow", PollInterval: Duration(time.Second), DecisionCacheBytes: 16 << 20,
			EvalTimeout: Duration(100 * time.Millisecond), MaxBodyBytes: 1 << 20},
		Log: Log{Level: "info", Format: "json"},
		Auth: Auth{
			Realm:          "phantom-authz",
			OwnedHeaders:   []string{"x-jwt-*", "x-user-*"},
			MaxHeaderBytes: 64 << 10,
		},
		Mint: Mint{Issuer: "https://phantom-authz.local", Audience: StringList{"api"}, MaxLifetime: Duration(5 * time.Minute),
			// Upstreams see how the user authenticated (RFC 9470 step-up).
			CopyClaims: []string{"acr", "auth_time", "amr"}},
		FAPI:  FAPI{InteractionID: true},
		Cache: Cache{MaxBytes: 64 << 20, MaxTTL: Duration(5 * time.Minute), InactiveTTL: Duration(10 * time.Second)},

		Telemetry: defaultTelemetry(),
		DPoP:      defaultDPoP(),
		Redis:     defaultRedis(),
	}
}

// Error is an invalid configuration; Key names the offending field
// ("introspection.endpoint").
type Error struct {
	Key    string
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("config: %s: %s", e.Key, e.Reason) }

// Load reads the file at path over the defaults and validates the result.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return Parse(b)
}

var lineErr = regexp.MustCompile(`line (\d+): (.*)`)

// Parse reads YAML over the defaults and validates the result. Environment
// variables in values are expanded first (see expandEnv). No error repeats
// a secret of the file (see Masked).
func Parse(b []byte) (Config, error) {
	cfg := Default()
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if doc.Kind == 0 { // empty
		return cfg, cfg.Validate()
	}
	var fromEnv []string
	if err := expandEnv(&doc, "", lookupEnv, &fromEnv); err != nil {
		return Config{}, scrub(err, secretsOf(&doc, nil, fromEnv))
	}
	if err := checkKeys(&doc, reflect.TypeOf(cfg), ""); err != nil {
		return Config{}, scrub(err, secretsOf(&doc, nil, fromEnv))
	}
	if err := doc.Decode(&cfg); err != nil {
		keys := keysByLine(&doc)
		if m := lineErr.FindStringSubmatch(err.Error()); m != nil && keys[atoi(m[1])] != "" {
			err = &Error{Key: keys[atoi(m[1])], Reason: m[2] + " (line " + m[1] + ")"}
		} else {
			err = fmt.Errorf("config: %w", err)
		}
		return Config{}, scrub(err, secretsOf(&doc, nil, fromEnv))
	}
	return cfg, scrub(cfg.Validate(), secretsOf(&doc, &cfg, fromEnv))
}

// keysByLine maps each line of the document to the dotted key defined or
// valued there ("introspection.timeout", "jwt.issuers[0].jwks_uri"), so
// decoding errors, which know only a line, can name the key.
func keysByLine(doc *yaml.Node) map[int]string {
	keys := map[int]string{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				keys[k.Line] = p
				if v.Line != k.Line || v.Kind == yaml.ScalarNode {
					if _, ok := keys[v.Line]; !ok || v.Kind == yaml.ScalarNode {
						keys[v.Line] = p
					}
				}
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				if _, ok := keys[c.Line]; !ok {
					keys[c.Line] = p
				}
				walk(c, p)
			}
		}
	}
	walk(doc, "")
	return keys
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// Validate checks every field and names the first invalid one.
func (c *Config) Validate() error {
	if err := addr("grpc.addr", c.GRPC.Addr); err != nil {
		return err
	}
	if err := addr("http.addr", c.HTTP.Addr); err != nil {
		return err
	}
	if c.GRPC.MaxRecvBytes < 4<<10 {
		return &Error{"grpc.max_recv_bytes", "must be at least 4096"}
	}
	if c.Policy.Dir == "" {
		return &Error{"policy.dir", "must not be empty"}
	}
	if !strings.HasPrefix(c.Policy.Query, "data.") {
		return &Error{"policy.query", fmt.Sprintf("%q must be a reference under data (e.g. data.envoy.authz.allow)", c.Policy.Query)}
	}
	if c.Policy.PollInterval <= 0 {
		return &Error{"policy.poll_interval", "must be positive"}
	}
	if c.Policy.DecisionCacheBytes < 0 {
		return &Error{"policy.decision_cache_bytes", "must not be negative (0 turns the cache off)"}
	}
	if err := c.Policy.Bundle.validate(); err != nil {
		return err
	}
	if c.Policy.EvalTimeout <= 0 {
		return &Error{"policy.eval_timeout", "must be positive"}
	}
	if c.Policy.MaxBodyBytes <= 0 {
		return &Error{"policy.max_body_bytes", "must be positive"}
	}
	if !oneOf(c.Log.Level, "debug", "info", "warn", "error") {
		return &Error{"log.level", fmt.Sprintf("%q is not one of debug, info, warn, error", c.Log.Level)}
	}
	if !oneOf(c.Log.Format, "json", "text") {
		return &Error{"log.format", fmt.Sprintf("%q is not one of json, text", c.Log.Format)}
	}
	if c.Auth.Realm == "" || strings.ContainsAny(c.Auth.Realm, "\"\\\r\n") {
		return &Error{"auth.realm", "must be non-empty and contain no quote, backslash or line break"}
	}
	if c.Auth.MaxHeaderBytes < 1024 {
		return &Error{"auth.max_header_bytes", "must be at least 1024"}
	}
	for _, h := range c.Auth.OwnedHeaders {
		if h == "" || h == "*" || strings.ToLower(h) != h || strings.Contains(strings.TrimSuffix(h, "*"), "*") {
			return &Error{"auth.owned_headers", fmt.Sprintf("%q must be a lower-case header name, optionally ending in *", h)}
		}
		if h == "authorization" {
			return &Error{"auth.owned_headers", "authorization is always rewritten; do not list it"}
		}
	}
	for _, p := range c.Auth.PublicPaths {
		if !strings.HasPrefix(p, "/") {
			return &Error{"auth.public_paths", fmt.Sprintf("%q must start with /", p)}
		}
	}
	if c.Introspection != nil {
		if err := c.Introspection.validate(); err != nil {
			return err
		}
	}
	for i, is := range c.JWT.Issuers {
		if err := is.validate(i); err != nil {
			return err
		}
	}
	if err := c.validateServers(); err != nil {
		return err
	}
	if c.Credentials() {
		if c.Mint.Issuer == "" {
			return &Error{"mint.issuer", "must not be empty"}
		}
		if len(c.Mint.Audience) == 0 {
			return &Error{"mint.audience", "must name at least one audience"}
		}
	}
	if c.Mint.SigningKeyFile != "" && len(c.Mint.SigningKeyFiles) > 0 {
		return &Error{"mint.signing_key_file", "set signing_key_file or signing_key_files, not both"}
	}
	if c.Mint.MaxLifetime <= 0 {
		return &Error{"mint.max_lifetime", "must be positive"}
	}
	if c.Cache.MaxBytes < 1<<20 {
		return &Error{"cache.max_bytes", "must be at least 1048576"}
	}
	if c.Cache.MaxTTL <= 0 {
		return &Error{"cache.max_ttl", "must be positive"}
	}
	if c.Cache.InactiveTTL < 0 {
		return &Error{"cache.inactive_ttl", "must not be negative"}
	}
	if err := c.Telemetry.validate(); err != nil {
		return err
	}
	if err := c.DPoP.validate(); err != nil {
		return err
	}
	if err := c.Binding.XFCC.validate(); err != nil {
		return err
	}
	if err := c.validateFAPI(); err != nil {
		return err
	}
	if err := c.DryRun.validate(); err != nil {
		return err
	}
	if err := c.Redis.validate(); err != nil {
		return err
	}
	if err := c.Admin.validate(); err != nil {
		return err
	}
	return c.validateRoutes()
}

func (in *Introspection) validate() error { return in.validateAt("introspection.", false) }

// validateAt checks an introspection block whose keys start with p; with
// discovery, the endpoint may come from the server's metadata.
func (in *Introspection) validateAt(p string, discovery bool) error {
	if err := endpoint(p+"endpoint", in.Endpoint, in.AllowInsecureHTTP, !discovery); err != nil {
		return err
	}
	if in.ClientID == "" {
		return &Error{p + "client_id", "must not be empty"}
	}
	if in.AuthMethod == "" {
		in.AuthMethod = "client_secret_basic"
	}
	switch in.AuthMethod {
	case "client_secret_basic", "client_secret_post":
		if (in.ClientSecret == "") == (in.ClientSecretFile == "") {
			return &Error{p + "client_secret", "set exactly one of client_secret and client_secret_file"}
		}
		if in.ClientSecretFile != "" {
			b, err := os.ReadFile(in.ClientSecretFile)
			if err != nil {
				return &Error{p + "client_secret_file", err.Error()}
			}
			in.ClientSecret = strings.TrimSpace(string(b))
			if in.ClientSecret == "" {
				return &Error{p + "client_secret_file", "file is empty"}
			}
		}
	case "private_key_jwt":
		if in.PrivateKeyFile == "" {
			return &Error{p + "private_key_file", "required with auth_method private_key_jwt"}
		}
	default:
		return &Error{p + "auth_method", fmt.Sprintf("%q is not one of client_secret_basic, client_secret_post, private_key_jwt", in.AuthMethod)}
	}
	if in.Response == "" {
		in.Response = "json"
	}
	if !oneOf(in.Response, "json", "jwt", "rfc9701", "keycloak") {
		return &Error{p + "response", fmt.Sprintf("%q is not one of json, jwt, rfc9701, keycloak", in.Response)}
	}
	// In authorization_servers, issuer and jwks_uri default to the
	// server's (or its metadata's); token.New checks what remains.
	inServer := p != "introspection."
	if in.Response == "rfc9701" || (in.Response == "keycloak" && !inServer) {
		if in.Issuer == "" && !inServer {
			return &Error{p + "issuer", "required with response " + in.Response}
		}
		if err := endpoint(p+"jwks_uri", in.JWKSURI, in.AllowInsecureHTTP, !inServer); err != nil {
			return err
		}
	}
	if in.Timeout == 0 {
		in.Timeout = Duration(2 * time.Second)
	}
	if in.Timeout < 0 {
		return &Error{p + "timeout", "must be positive"}
	}
	for _, a := range in.Audiences {
		if a == "" {
			return &Error{p + "audiences", "must not hold an empty audience"}
		}
	}
	if in.TokenTypeHint != "" && in.TokenTypeHint != "access_token" {
		return &Error{p + "token_type_hint", "must be empty or access_token"}
	}
	if in.MaxConcurrent == 0 {
		in.MaxConcurrent = 64
	}
	if in.MaxConcurrent < 0 {
		return &Error{p + "max_concurrent", "must be positive"}
	}
	if in.CircuitBreaker.Failures == 0 {
		in.CircuitBreaker.Failures = 5
	}
	if in.CircuitBreaker.Failures < 0 {
		return &Error{p + "circuit_breaker.failures", "must be positive"}
	}
	if in.CircuitBreaker.Cooldown == 0 {
		in.CircuitBreaker.Cooldown = Duration(5 * time.Second)
	}
	if in.CircuitBreaker.Cooldown < 0 {
		return &Error{p + "circuit_breaker.cooldown", "must be positive"}
	}
	return nil
}

func (is *Issuer) validate(i int) error {
	if is.Issuer == "" {
		return &Error{fmt.Sprintf("jwt.issuers[%d].issuer", i), "must not be empty"}
	}
	return is.validateAt(fmt.Sprintf("jwt.issuers[%d].", i), false)
}

// validateAt checks an issuer whose keys start with p; with discovery,
// jwks_uri may come from the server's metadata.
func (is *Issuer) validateAt(p string, discovery bool) error {
	key := func(f string) string { return p + f }
	if err := endpoint(key("jwks_uri"), is.JWKSURI, is.AllowInsecureHTTP, !discovery); err != nil {
		return err
	}
	if len(is.Audiences) == 0 {
		return &Error{key("audiences"), "must name at least one audience"}
	}
	for _, a := range is.Algorithms {
		if !oneOf(a, "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "EdDSA") {
			return &Error{key("algorithms"), fmt.Sprintf("%q is not an allowed asymmetric algorithm", a)}
		}
	}
	if is.Skew < 0 || is.Skew > Duration(time.Minute) {
		return &Error{key("skew"), "must be between 0s and 60s"}
	}
	return nil
}

func addr(key, v string) error {
	if _, _, err := net.SplitHostPort(v); err != nil {
		return &Error{key, fmt.Sprintf("%q is not host:port", v)}
	}
	return nil
}

func endpoint(key, v string, insecure, required bool) error {
	if v == "" {
		if required {
			return &Error{key, "must not be empty"}
		}
		return nil
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" {
		return &Error{key, fmt.Sprintf("%q is not an absolute URL", v)}
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && insecure:
	case u.Scheme == "http":
		return &Error{key, "must be https (or set allow_insecure_http for local runs)"}
	default:
		return &Error{key, fmt.Sprintf("scheme %q is not https", u.Scheme)}
	}
	if u.User != nil {
		// Endpoints are logged; credentials go in their own keys (files).
		return &Error{key, "must not carry credentials (user:password@): use the client or token settings"}
	}
	return nil
}

func oneOf(v string, set ...string) bool {
	for _, s := range set {
		if v == s {
			return true
		}
	}
	return false
}

// Duration is a time.Duration written as "2s", "500ms", "5m" in YAML.
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 2s or 500ms", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// StringList is a YAML list of strings that also accepts one string.
type StringList []string

// UnmarshalYAML accepts "a" or ["a", "b"].
func (l *StringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*l = StringList{n.Value}
		return nil
	}
	var s []string
	if err := n.Decode(&s); err != nil {
		return err
	}
	*l = s
	return nil
}
