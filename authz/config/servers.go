package config

import (
	"fmt"
	"strings"
)

// validateServers checks authorization_servers: each server names its
// issuer and a way to check its tokens, and every token can belong to one
// server only (distinct issuers, prefixes that do not overlap, one
// default). The token stage checks the rest.
func (c *Config) validateServers() error {
	if len(c.AuthorizationServers) == 0 {
		return nil
	}
	if c.Introspection != nil || len(c.JWT.Issuers) > 0 {
		return &Error{"authorization_servers", "set authorization_servers, or introspection and jwt.issuers (the one-server form), not both"}
	}
	issuers := map[string]int{}
	prefixes := map[string]int{}
	defaults := 0
	for i := range c.AuthorizationServers {
		s := &c.AuthorizationServers[i]
		p := fmt.Sprintf("authorization_servers[%d].", i)
		if s.Issuer == "" {
			return &Error{p + "issuer", "must not be empty"}
		}
		if s.Discovery {
			if err := endpoint(p+"issuer", s.Issuer, s.AllowInsecureHTTP, true); err != nil {
				return err
			}
		}
		if j, ok := issuers[s.Issuer]; ok {
			return &Error{p + "issuer", fmt.Sprintf("%q is also authorization_servers[%d]'s", s.Issuer, j)}
		}
		issuers[s.Issuer] = i
		if s.Introspection == nil && s.JWT == nil {
			return &Error{p + "introspection", "configure introspection, jwt or both"}
		}
		if s.Introspection == nil && (s.IntrospectJWTs || len(s.TokenPrefixes) > 0 || s.Default) {
			return &Error{p + "introspection", "introspect_jwts, token_prefixes and default need introspection"}
		}
		if s.Introspection != nil {
			if err := s.Introspection.validateAt(p+"introspection.", s.Discovery); err != nil {
				return err
			}
		}
		if s.JWT != nil {
			if s.JWT.Issuer != "" && s.JWT.Issuer != s.Issuer {
				return &Error{p + "jwt.issuer", "must be empty or the server's issuer"}
			}
			if err := s.JWT.validateAt(p+"jwt.", s.Discovery); err != nil {
				return err
			}
		}
		for _, pre := range s.TokenPrefixes {
			if pre == "" {
				return &Error{p + "token_prefixes", "must not hold an empty prefix"}
			}
			for other, j := range prefixes {
				if strings.HasPrefix(pre, other) || strings.HasPrefix(other, pre) {
					return &Error{p + "token_prefixes", fmt.Sprintf("%q overlaps %q of authorization_servers[%d]: a token must belong to one server", pre, other, j)}
				}
			}
			prefixes[pre] = i
		}
		if s.Default {
			defaults++
		}
	}
	if defaults > 1 {
		return &Error{"authorization_servers", "at most one server is the default"}
	}
	return nil
}

// hasServer reports whether name is an authorization_servers entry's name
// (which defaults to its issuer).
func (c *Config) hasServer(name string) bool {
	for _, s := range c.AuthorizationServers {
		if s.Name == name || (s.Name == "" && s.Issuer == name) {
			return true
		}
	}
	return false
}
