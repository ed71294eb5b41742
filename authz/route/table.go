package route

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Entry is one route of the table, as configured.
type Entry struct {
	// Name identifies the entry (logs, input.route.name); required, unique.
	Name string
	// Hosts the entry matches: exact names, or "*.suffix" for any name
	// ending in ".suffix". Empty: any host. Compared without the port and
	// case-insensitively.
	Hosts []string
	// Path is an exact path or a template with {name} segments
	// ("/accounts/{id}/transactions"); PathPrefix a prefix ("/api/" matches
	// below /api/; "/api" matches /api and below /api/, never /apix). Exactly
	// one of them is set, in normalised form (see Normalize).
	Path, PathPrefix string
	// Methods the entry matches (upper case); empty: any.
	Methods []string
	// Settings the entry gives the requests it matches. Settings.Upstream
	// applies to every route of the entry's API.
	Settings
}

// Table is a compiled route table. Its zero value (and nil) has no entries:
// only Envoy's context extensions and route metadata set routes.
type Table struct {
	entries []entry
	// upstream holds each API's upstream JWT settings.
	upstream map[string]*Upstream
}

type entry struct {
	Entry
	// segs are the template's segments; param marks a {name} segment.
	segs []segment
	// exact: Path has no parameters; prefix: PathPrefix is set.
	exact, prefix bool
	// template is Route.Template: Path, or PathPrefix and "*".
	template string
	hosts    []string // lower case
	hostList string   // for Why
	// paramNames are the names of the {name} segments, in order.
	paramNames []string
}

type segment struct {
	lit   string
	param bool
}

// NewTable checks entries and compiles them, in order. Errors name the
// entry ("routes[2].path").
func NewTable(entries []Entry) (*Table, error) {
	t := &Table{upstream: map[string]*Upstream{}}
	seen := map[string]bool{}
	upFrom := map[string]int{}
	for i, e := range entries {
		key := func(f string) string { return fmt.Sprintf("routes[%d].%s", i, f) }
		if e.Name == "" || seen[e.Name] {
			return nil, fmt.Errorf("%s: %q must be non-empty and unique", key("name"), e.Name)
		}
		seen[e.Name] = true
		c := entry{Entry: e}
		for _, h := range e.Hosts {
			lh := strings.ToLower(strings.TrimSuffix(h, "."))
			if lh == "" || strings.ContainsAny(lh, ":/ ") || strings.Contains(strings.TrimPrefix(lh, "*."), "*") {
				return nil, fmt.Errorf("%s: %q must be a host name, or *.suffix", key("hosts"), h)
			}
			c.hosts = append(c.hosts, lh)
		}
		for _, m := range e.Methods {
			if m == "" || strings.ToUpper(m) != m || strings.ContainsAny(m, " \t") {
				return nil, fmt.Errorf("%s: %q must be an upper-case method name", key("methods"), m)
			}
		}
		c.hostList = strings.Join(e.Hosts, ",")
		switch {
		case (e.Path == "") == (e.PathPrefix == ""):
			return nil, fmt.Errorf("%s: set exactly one of path and path_prefix", key("path"))
		case e.PathPrefix != "":
			if n, err := Normalize(e.PathPrefix); err != nil || n != e.PathPrefix && n+"/" != e.PathPrefix {
				return nil, fmt.Errorf("%s: %q must be a normalised path (no //, no . or .. segments, no encoded / or \\)", key("path_prefix"), e.PathPrefix)
			}
			c.prefix, c.template = true, e.PathPrefix+"*"
		default:
			segs, err := parseTemplate(e.Path)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", key("path"), err)
			}
			c.segs = segs
			for _, s := range segs {
				if s.param {
					c.paramNames = append(c.paramNames, s.lit)
				}
			}
			c.template = e.Path
			c.exact = !slices.ContainsFunc(segs, func(s segment) bool { return s.param })
		}
		switch e.SenderConstrained {
		case "", "optional", "required", "dpop", "mtls":
		default:
			return nil, fmt.Errorf("%s: %q is not one of optional, required, dpop, mtls", key("sender_constrained"), e.SenderConstrained)
		}
		if e.Upstream != nil {
			if e.API == "" {
				return nil, fmt.Errorf("%s: needs api: the upstream JWT is minted per API", key("upstream_jwt"))
			}
			up := *e.Upstream
			up.Key = "api\x00" + e.API
			if j, ok := upFrom[e.API]; ok && !reflect.DeepEqual(*t.upstream[e.API], up) {
				return nil, fmt.Errorf("%s: API %q already has different upstream_jwt settings in routes[%d]", key("upstream_jwt"), e.API, j)
			}
			upFrom[e.API] = i
			t.upstream[e.API] = &up
			c.Upstream = &up
		}
		t.entries = append(t.entries, c)
	}
	// Every route of an API gets its upstream settings, whichever entry set them.
	for i := range t.entries {
		if up := t.upstream[t.entries[i].API]; up != nil {
			t.entries[i].Upstream = up
		}
	}
	return t, nil
}

// parseTemplate splits a path template into segments.
func parseTemplate(p string) ([]segment, error) {
	n, err := Normalize(strings.NewReplacer("{", "x", "}", "x").Replace(p))
	if err != nil || n != strings.NewReplacer("{", "x", "}", "x").Replace(p) {
		return nil, fmt.Errorf("%q must be a normalised path (no //, no . or .. segments, no encoded / or \\)", p)
	}
	var segs []segment
	names := map[string]bool{}
	for _, s := range strings.Split(p[1:], "/") {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			name := s[1 : len(s)-1]
			if name == "" || strings.ContainsAny(name, "{}") || names[name] {
				return nil, fmt.Errorf("%q: parameter %q must be a unique non-empty name", p, s)
			}
			names[name] = true
			segs = append(segs, segment{lit: name, param: true})
			continue
		}
		if strings.ContainsAny(s, "{}") {
			return nil, fmt.Errorf("%q: a parameter must be a whole segment ({name})", p)
		}
		segs = append(segs, segment{lit: s})
	}
	if len(names) > MaxParams {
		return nil, fmt.Errorf("%q has more than %d parameters", p, MaxParams)
	}
	return segs, nil
}

// maxPath is the longest path a table matches (parameters are 16-bit
// offsets); Envoy's default header limit (60 KiB) keeps paths under it.
const maxPath = 1<<16 - 1

// Upstream returns the upstream JWT settings of api (nil: none).
func (t *Table) Upstream(api string) *Upstream {
	if t == nil || api == "" {
		return nil
	}
	return t.upstream[api]
}

// Len is the number of entries.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.entries)
}

// Select returns the route of req: the first table entry that matches its
// host, normalised path and method, with the settings of its route metadata
// and then its context extensions over the entry's. An error denies the
// request: the path cannot be matched safely, or an override is invalid.
func (t *Table) Select(req *Request) (Route, error) {
	var r Route
	if t != nil && len(t.entries) > 0 {
		path, err := Normalize(pathOnly(req.Path))
		if err != nil {
			return Route{}, err
		}
		if len(path) > maxPath {
			return Route{}, fmt.Errorf("%w: the path is longer than %d bytes", ErrPath, maxPath)
		}
		host := hostOnly(req.Host)
		for i := range t.entries {
			e := &t.entries[i]
			if e.match(&r, req.Method, host, path) {
				r.Settings, r.entry, r.path, r.from = e.Settings, e, path, fromTable
				break
			}
			r.nParams = 0
		}
	}
	api := r.API
	if err := r.override(req.Metadata, "route metadata "+Namespace, fromMetadata); err != nil {
		return Route{}, err
	}
	if err := r.override(req.ContextExtensions, "context_extensions", fromContext); err != nil {
		return Route{}, err
	}
	if r.API != api {
		// Upstream settings belong to the API.
		r.Upstream = t.Upstream(r.API)
	}
	return r, nil
}

// match reports whether e matches; it fills r's params as it goes.
func (e *entry) match(r *Route, method, host, path string) bool {
	if len(e.Methods) > 0 && !slices.Contains(e.Methods, method) {
		return false
	}
	if len(e.hosts) > 0 && !matchHost(e.hosts, host) {
		return false
	}
	switch {
	case e.prefix:
		p := e.PathPrefix
		if !strings.HasPrefix(path, p) {
			return false
		}
		// "/api" matches /api and /api/…, never /apix.
		return strings.HasSuffix(p, "/") || len(path) == len(p) || path[len(p)] == '/'
	case e.exact:
		return path == e.Path
	}
	rest := path[1:]
	for i, s := range e.segs {
		seg, tail, more := strings.Cut(rest, "/")
		if more == (i == len(e.segs)-1) {
			return false // too many or too few segments
		}
		if s.param {
			if seg == "" {
				return false
			}
			start := len(path) - len(rest)
			r.params[r.nParams] = span{uint16(start), uint16(start + len(seg))}
			r.nParams++
		} else if seg != s.lit {
			return false
		}
		rest = tail
	}
	return true
}

func matchHost(hosts []string, host string) bool {
	for _, h := range hosts {
		if suffix, ok := strings.CutPrefix(h, "*"); ok {
			// "*.example.com" matches a.example.com and a.b.example.com,
			// never example.com itself.
			if len(host) > len(suffix) && strings.HasSuffix(host, suffix) {
				return true
			}
		} else if host == h {
			return true
		}
	}
	return false
}

// hostOnly is the host without its port or a trailing dot, lower case.
func hostOnly(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

func pathOnly(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		return p[:i]
	}
	return p
}
