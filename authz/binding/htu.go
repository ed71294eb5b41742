package binding

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// The htu check (RFC 9449 §4.3 item 9): the proof names the URI the client
// meant to call, and the request must be that URI. Envoy's :scheme and
// :authority are what the client sent, so a proof made for another site
// (https://evil.example/x, handed to a malicious server by the client) would
// match a request replayed here with Host: evil.example, whenever Envoy
// routes any host (domains: ["*"]). With Config.Origins the origin is taken
// from configuration instead: the htu's must be one of the API's external
// origins, whatever Host says.

// origin is a scheme, a host and a port, lower-case, the port defaulted.
type origin struct {
	scheme, host, port string
}

// parseOrigin reads a configured origin: http or https, a host, an optional
// port, and nothing else (no userinfo, path, query or fragment).
func parseOrigin(s string) (origin, error) {
	u, err := url.Parse(s)
	if err != nil {
		return origin{}, errors.New("not a URL")
	}
	scheme := strings.ToLower(u.Scheme)
	switch {
	case scheme != "https" && scheme != "http":
		return origin{}, errors.New("must be https://host[:port] (or http:// for local runs)")
	case u.Host == "" || u.Hostname() == "":
		return origin{}, errors.New("no host")
	case u.User != nil:
		return origin{}, errors.New("userinfo is not part of an origin")
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.ForceQuery, u.Fragment != "":
		return origin{}, errors.New("an origin has no path, query or fragment (https://api.example.com[:port])")
	}
	host, port := splitHostPort(u.Host, scheme)
	return origin{scheme: scheme, host: strings.ToLower(host), port: port}, nil
}

// ValidateOrigin says what is wrong with an origin of Config.Origins (for
// configuration errors at load time), or nil.
func ValidateOrigin(s string) error {
	_, err := parseOrigin(s)
	return err
}

// parseOrigins reads Config.Origins.
func parseOrigins(list []string) ([]origin, error) {
	out := make([]origin, 0, len(list))
	for i, s := range list {
		o, err := parseOrigin(s)
		if err != nil {
			return nil, fmt.Errorf("binding: dpop.origins[%d] %q: %w", i, s, err)
		}
		out = append(out, o)
	}
	return out, nil
}

// matches reports whether the origin is scheme://authority, scheme and host
// without regard to case, the default port implied.
func (o origin) matches(scheme, authority string) bool {
	host, port := splitHostPort(authority, scheme)
	return strings.EqualFold(o.scheme, scheme) && port == o.port && strings.EqualFold(o.host, host)
}

// htuMatches compares the proof's htu with the request: scheme and host
// without regard to case, the default port implied (RFC 3986 §6.2.2), the
// path after the normalisation Envoy applies (normalize_path, then
// merge_slashes), so the proof of a client that wrote //a/./b matches the
// /a/b Envoy forwards. The htu must not carry userinfo, a query or a
// fragment (§4.2); the request's query is ignored.
//
// Without configured origins the htu's origin must be the request's
// (Envoy's :scheme and :authority). With them, it must be one of them; and
// when the request's own origin is one of them, that one: Host can narrow
// the choice, never widen it.
func (b *Binder) htuMatches(htu string, in *Input) bool {
	uScheme, rest, ok := strings.Cut(htu, "://")
	if !ok || uScheme == "" || strings.ContainsAny(htu, "?# \t") {
		return false
	}
	authority, uPath := rest, "/"
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		authority, uPath = rest[:i], rest[i:]
	}
	if authority == "" || strings.IndexByte(authority, '@') >= 0 {
		return false
	}
	path := in.Path
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	if normalPath(uPath) != normalPath(path) {
		return false
	}
	if len(b.origins) == 0 {
		return origin{scheme: in.URLScheme}.withAuthority(in.Host).matches(uScheme, authority)
	}
	for _, o := range b.origins {
		if o.matches(in.URLScheme, in.Host) {
			return o.matches(uScheme, authority)
		}
	}
	for _, o := range b.origins {
		if o.matches(uScheme, authority) {
			return true
		}
	}
	return false
}

// withAuthority is o with the host and port of authority.
func (o origin) withAuthority(authority string) origin {
	o.host, o.port = splitHostPort(authority, o.scheme)
	return o
}

// splitHostPort splits an authority into host and port, the port defaulted
// from the scheme.
func splitHostPort(authority, scheme string) (host, port string) {
	host = authority
	if i := strings.LastIndexByte(authority, ':'); i >= 0 && i > strings.LastIndexByte(authority, ']') {
		host, port = authority[:i], authority[i+1:]
	}
	if port == "" {
		switch strings.ToLower(scheme) {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return host, port
}

// normalPath is p as Envoy forwards it with normalize_path and
// merge_slashes: percent-encoded unreserved characters decoded (RFC 3986
// §6.2.2.2) and other escapes upper-cased, dot segments removed (§5.2.4),
// then runs of slashes merged. "" is "/". A path with nothing to normalise
// is returned as it is, without allocating.
func normalPath(p string) string {
	if p == "" {
		return "/"
	}
	if !strings.Contains(p, "//") && !strings.Contains(p, "/.") && strings.IndexByte(p, '%') < 0 {
		return p
	}
	p = normalEscapes(p)
	p = removeDotSegments(p)
	if strings.Contains(p, "//") {
		var sb strings.Builder
		sb.Grow(len(p))
		for i := 0; i < len(p); i++ {
			if p[i] == '/' && i > 0 && p[i-1] == '/' {
				continue
			}
			sb.WriteByte(p[i])
		}
		p = sb.String()
	}
	if p == "" {
		return "/"
	}
	return p
}

// normalEscapes decodes the percent-escapes of unreserved characters and
// upper-cases the hex digits of the others; a malformed escape stays as it
// is (it then matches only itself).
func normalEscapes(p string) string {
	if strings.IndexByte(p, '%') < 0 {
		return p
	}
	var sb strings.Builder
	sb.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != '%' || i+2 >= len(p) {
			sb.WriteByte(c)
			continue
		}
		h, l := unhex(p[i+1]), unhex(p[i+2])
		if h < 0 || l < 0 {
			sb.WriteByte(c)
			continue
		}
		d := byte(h<<4 | l)
		if unreserved(d) {
			sb.WriteByte(d)
		} else {
			sb.WriteByte('%')
			sb.WriteByte("0123456789ABCDEF"[h])
			sb.WriteByte("0123456789ABCDEF"[l])
		}
		i += 2
	}
	return sb.String()
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// removeDotSegments is RFC 3986 §5.2.4 for an absolute path.
func removeDotSegments(in string) string {
	if !strings.HasPrefix(in, "/") || !strings.Contains(in, "/.") {
		return in
	}
	out := make([]string, 0, strings.Count(in, "/"))
	segs := strings.Split(in, "/")[1:] // in starts with "/"
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}
