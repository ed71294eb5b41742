package route

import (
	"fmt"
	"strings"
)

// Normalize returns the path a route is matched on, so that a path spelled
// differently from a route's cannot reach what that route guards, nor escape
// the route it is really on:
//
//   - a percent-encoded unreserved character (RFC 3986 §2.3: letters,
//     digits, "-", ".", "_", "~") is decoded ("/%61ccounts" is /accounts,
//     "%2E%2E" is ".."); every other escape stays encoded, its hex in upper
//     case;
//   - an encoded slash or backslash (%2F, %5C), an encoded NUL (%00), a
//     backslash, a control character or an invalid escape is refused
//     (ErrPath): an upstream that decodes them would see other segments
//     than the route table did;
//   - runs of slashes are merged ("//admin" is /admin);
//   - "." and ".." segments are removed (RFC 3986 §5.2.4), so
//     "/accounts/../admin" is /admin, and matches only what /admin matches;
//   - a path with both an empty segment and a ".." segment ("/a//../b") is
//     refused (ErrPath): upstreams disagree on which goes first.
//
// These are the rules of Envoy's normalize_path, merge_slashes and
// path_with_escaped_slashes_action: REJECT_REQUEST, so behind an Envoy set
// up that way (envoy/envoy.yaml) the path arrives already normalised and is
// used as is, without allocating. The query is not part of the path.
func Normalize(p string) (string, error) {
	if clean(p) {
		return p, nil
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return "", fmt.Errorf("%w: invalid percent-encoding", ErrPath)
			}
			d := unhex(p[i+1])<<4 | unhex(p[i+2])
			switch {
			case d == '/' || d == '\\' || d == 0:
				return "", fmt.Errorf("%w: an encoded slash, backslash or NUL", ErrPath)
			case unreserved(d):
				b.WriteByte(d)
			default:
				b.WriteByte('%')
				b.WriteByte(upperHex[d>>4])
				b.WriteByte(upperHex[d&15])
			}
			i += 2
		case c == '\\' || c < 0x20 || c == 0x7f:
			return "", fmt.Errorf("%w: a backslash or control character", ErrPath)
		default:
			b.WriteByte(c)
		}
	}
	return removeDots(b.String())
}

// clean reports whether p needs no change: no escape, no backslash or
// control character, no empty, "." or ".." segment.
func clean(p string) bool {
	if p == "" || p[0] != '/' {
		return p != "" && !strings.ContainsAny(p, "%\\") && !hasControl(p)
	}
	segStart := 1
	for i := 1; i <= len(p); i++ {
		if i < len(p) {
			c := p[i]
			if c == '%' || c == '\\' || c < 0x20 || c == 0x7f {
				return false
			}
			if c != '/' {
				continue
			}
		}
		seg := p[segStart:i]
		if (seg == "" && i < len(p)) || seg == "." || seg == ".." {
			return false
		}
		segStart = i + 1
	}
	return true
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// removeDots merges slashes and removes dot segments of a decoded path. A
// path with both an empty and a ".." segment is refused: "/a//../b" is /b
// to an upstream that merges slashes first (Go's path.Clean) and /a/b to
// one that removes dot segments first (RFC 3986, Envoy's normalize_path
// before merge_slashes), so no route can be chosen that both agree on.
func removeDots(p string) (string, error) {
	if p == "" || p[0] != '/' {
		return p, nil
	}
	trailing := strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")
	segs := strings.Split(p[1:], "/")
	var empty, up bool
	for i, seg := range segs {
		empty = empty || seg == "" && i < len(segs)-1
		up = up || seg == ".."
	}
	if empty && up {
		return "", fmt.Errorf("%w: empty and .. segments together are ambiguous", ErrPath)
	}
	var out []string
	for _, seg := range segs {
		switch seg {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, seg)
		}
	}
	s := "/" + strings.Join(out, "/")
	if trailing && len(out) > 0 {
		s += "/"
	}
	return s, nil
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

const upperHex = "0123456789ABCDEF"
