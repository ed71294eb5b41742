// Package route selects the route of a request: which API it is for and how
// phantom-authz treats it (public, sender-constrained, dry-run, pairwise
// sector, the upstream JWT it gets).
//
// A route's settings come from three places, the first that says something
// winning, key by key:
//
//  1. Envoy's per-route context_extensions (check_settings.context_extensions);
//  2. Envoy's route metadata under the "phantom-authz" namespace
//     (route_metadata_context filter_metadata, which Envoy sends for the
//     namespaces listed in route_metadata_context_namespaces);
//  3. phantom-authz's own route table (Table), an ordered list matched on
//     host, normalised path and method, first match wins.
//
// Only the route's own configuration is authority: dynamic metadata
// (metadata_context) is not read, because other filters can derive it from
// what the client sends (header_to_metadata, Lua).
//
// The engine selects the route once per request, early; later stages read
// the selected Route instead of looking at context extensions themselves.
package route

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Namespace is the filter metadata namespace whose route metadata sets a
// route's settings, as context extensions do.
const Namespace = "phantom-authz"

// The keys of context extensions and route metadata that set a route's
// settings.
const (
	KeyAPI               = "api"
	KeyPublic            = "public"
	KeySenderConstrained = "sender_constrained"
	KeyPairwiseSector    = "pairwise_sector"
	KeyDryRun            = "dry_run"
	// KeyAuthorizationServer names the authorization server (its
	// authorization_servers[].name) whose tokens the route accepts.
	KeyAuthorizationServer = "authorization_server"
)

// MaxParams bounds the parameters of one path template, so a selected Route
// holds them without allocating.
const MaxParams = 8

// Settings are what a route decides about the requests it matches.
type Settings struct {
	// API names the upstream API (metrics, logs, dry_run.routes,
	// pairwise.sectors and the per-API upstream JWT are keyed by it).
	API string
	// Public routes need no credential.
	Public bool
	// SenderConstrained is "", "optional", "required", "dpop" or "mtls"
	// (see binding.ParseRequirement).
	SenderConstrained string
	// PairwiseSector, when set, gives the upstream a pairwise pseudonymous sub.
	PairwiseSector string
	// DryRun logs the route's denials without enforcing them.
	DryRun bool
	// AuthorizationServer, when set, names the only authorization server
	// whose tokens the route accepts; its opaque tokens without a prefix go
	// there rather than to the default server.
	AuthorizationServer string
	// Upstream shapes the JWT the upstream receives; nil: the token's own
	// JWT (or the one minted with mint's defaults).
	Upstream *Upstream
}

// Upstream is the JWT an API receives: minted for it alone (RFC 8693 token
// exchange semantics, done locally).
type Upstream struct {
	// Audience is the JWT's aud; empty: mint.audience.
	Audience []string
	// CopyClaims are the introspection claims copied into the JWT; nil:
	// mint.copy_claims.
	CopyClaims []string
	// Scopes narrow the JWT's scope to those the token has among them; nil:
	// the token's scopes unchanged.
	Scopes []string
	// Reissue mints a JWT for this API even when the OAuth server gave its
	// own (jwt mode), which is otherwise forwarded unchanged.
	Reissue bool
	// Key identifies these settings among the JWTs kept with a token: one
	// JWT is minted per token and Key. Set by the Table (the API's name).
	Key string
}

// Param is one parameter of a path template and the path segment it matched.
type Param struct {
	Name, Value string
}

// Route is the route selected for one request. Its zero value is "no route":
// every setting off. It is small (it travels in every authz.Request): the
// matching entry is a pointer, the parameters offsets into the path.
type Route struct {
	Settings
	// entry is the matching table entry; nil when none matched.
	entry *entry
	// path is the normalised path the parameters are in.
	path    string
	params  [MaxParams]span
	nParams uint8
	// from records which sources set something: fromTable,
	// fromMetadata, fromContext.
	from uint8
}

// span is a parameter's value: path[start:end].
type span struct{ start, end uint16 }

// Name is the matching table entry's name; "" when none matched.
func (r *Route) Name() string {
	if r.entry == nil {
		return ""
	}
	return r.entry.Name
}

// Template is the matching entry's path pattern ("/accounts/{id}", "/health*"
// for a prefix); "" when none matched.
func (r *Route) Template() string {
	if r.entry == nil {
		return ""
	}
	return r.entry.template
}

// NumParams is the number of template parameters.
func (r *Route) NumParams() int { return int(r.nParams) }

// ParamAt is the i-th template parameter and the path segment it matched.
func (r *Route) ParamAt(i int) Param {
	return Param{Name: r.entry.paramNames[i], Value: r.path[r.params[i].start:r.params[i].end]}
}

const (
	fromTable uint8 = 1 << iota
	fromMetadata
	fromContext
)

// Params are the template's parameters and the segments they matched, as
// they appear in the normalised path (see Normalize). It allocates; the
// request path uses NumParams and ParamAt.
func (r *Route) Params() []Param {
	ps := make([]Param, r.nParams)
	for i := range ps {
		ps[i] = r.ParamAt(i)
	}
	return ps
}

// Param returns the value of the named template parameter.
func (r *Route) Param(name string) (string, bool) {
	for i := range int(r.nParams) {
		if p := r.ParamAt(i); p.Name == name {
			return p.Value, true
		}
	}
	return "", false
}

// Matched reports whether a route was selected (a table entry, or settings
// from Envoy).
func (r *Route) Matched() bool { return r.from != 0 }

// Why says, for people, how the route was chosen (phantom-authz check).
func (r *Route) Why() string {
	var parts []string
	if r.from&fromTable != 0 {
		s := fmt.Sprintf("route table entry %q matched path %s", r.Name(), r.Template())
		if r.entry.hostList != "" {
			s += " on host " + r.entry.hostList
		}
		if len(r.entry.Methods) > 0 {
			s += " for methods " + strings.Join(r.entry.Methods, ",")
		}
		if ps := r.Params(); len(ps) > 0 {
			s += " (" + paramsString(ps) + ")"
		}
		parts = append(parts, s)
	} else {
		parts = append(parts, "no route table entry matched")
	}
	if r.from&fromMetadata != 0 {
		parts = append(parts, "route metadata ("+Namespace+") set some settings, over the table")
	}
	if r.from&fromContext != 0 {
		parts = append(parts, "context_extensions set some settings, over route metadata and the table")
	}
	return strings.Join(parts, "; ")
}

// Request is what route selection reads of a request.
type Request struct {
	Method, Host, Path string
	// ContextExtensions and Metadata (the route metadata under Namespace,
	// values as strings) override the table, in that order.
	ContextExtensions, Metadata map[string]string
}

// Errors of Select; each denies the request.
var (
	// ErrPath: the path cannot be matched safely (an encoded slash or
	// backslash, a NUL, an invalid escape): 400.
	ErrPath = errors.New("route: the request path cannot be matched")
	// ErrSetting: a context extension or route metadata value is invalid
	// (e.g. public: "yes"): the route is misconfigured, 500.
	ErrSetting = errors.New("route: invalid route setting")
)

// override applies the settings of one source (context extensions or route
// metadata) that are present; src names it in errors, bit in Why.
func (r *Route) override(m map[string]string, src string, bit uint8) error {
	if len(m) == 0 {
		return nil
	}
	set := false
	if v, ok := m[KeyAPI]; ok {
		r.API, set = v, true
	}
	if v, ok := m[KeyPublic]; ok {
		b, err := boolSetting(v, src, KeyPublic)
		if err != nil {
			return err
		}
		r.Public, set = b, true
	}
	if v, ok := m[KeyDryRun]; ok {
		b, err := boolSetting(v, src, KeyDryRun)
		if err != nil {
			return err
		}
		r.DryRun, set = b, true
	}
	if v, ok := m[KeySenderConstrained]; ok {
		r.SenderConstrained, set = v, true
	}
	if v, ok := m[KeyPairwiseSector]; ok {
		r.PairwiseSector, set = v, true
	}
	if v, ok := m[KeyAuthorizationServer]; ok {
		r.AuthorizationServer, set = v, true
	}
	if set {
		r.from |= bit
	}
	return nil
}

func boolSetting(v, src, key string) (bool, error) {
	switch v {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("%w: %s %s: %q is not true or false", ErrSetting, src, key, v)
}

// paramsString renders params for Why.
func paramsString(ps []Param) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(p.Name)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(p.Value))
	}
	return b.String()
}
