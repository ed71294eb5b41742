package config

import (
	"fmt"
	"strings"

	"github.com/phantom-authz/phantom-authz/authz/route"
)

// Route is one entry of the route table: what it matches and the settings
// it gives the requests it matches. Envoy's context extensions and route
// metadata override these settings (see authz/route).
type Route struct {
	Name       string   `yaml:"name"`
	Hosts      []string `yaml:"hosts"`
	Path       string   `yaml:"path"`
	PathPrefix string   `yaml:"path_prefix"`
	Methods    []string `yaml:"methods"`
	API        string   `yaml:"api"`
	Public     bool     `yaml:"public"`
	// SenderConstrained is optional, required, dpop or mtls.
	SenderConstrained string `yaml:"sender_constrained"`
	PairwiseSector    string `yaml:"pairwise_sector"`
	DryRun            bool   `yaml:"dry_run"`
	// AuthorizationServer names the authorization_servers entry whose
	// tokens the route accepts.
	AuthorizationServer string `yaml:"authorization_server"`
	// UpstreamJWT shapes the JWT minted for the route's API.
	UpstreamJWT *UpstreamJWT `yaml:"upstream_jwt"`
}

// UpstreamJWT is the JWT one API receives, minted for it alone.
type UpstreamJWT struct {
	Audience   StringList `yaml:"audience"`
	CopyClaims []string   `yaml:"copy_claims"`
	Scopes     []string   `yaml:"scopes"`
	// Reissue mints the API's JWT even when the OAuth server gave one.
	Reissue bool `yaml:"reissue"`
}

// Entries converts the route table for authz/route.
func Entries(rs []Route) []route.Entry {
	out := make([]route.Entry, len(rs))
	for i, r := range rs {
		out[i] = route.Entry{
			Name: r.Name, Hosts: r.Hosts, Path: r.Path, PathPrefix: r.PathPrefix, Methods: r.Methods,
			Settings: route.Settings{
				API: r.API, Public: r.Public, SenderConstrained: r.SenderConstrained,
				PairwiseSector: r.PairwiseSector, DryRun: r.DryRun, AuthorizationServer: r.AuthorizationServer,
			},
		}
		if u := r.UpstreamJWT; u != nil {
			out[i].Upstream = &route.Upstream{Audience: u.Audience, CopyClaims: u.CopyClaims, Scopes: u.Scopes, Reissue: u.Reissue}
		}
	}
	return out
}

// validateRoutes compiles the table (which names the entry and field of an
// error) and checks what it needs of the rest of the configuration.
func (c *Config) validateRoutes() error {
	if _, err := route.NewTable(Entries(c.Routes)); err != nil {
		key, reason, _ := strings.Cut(err.Error(), ": ")
		return &Error{key, reason}
	}
	credentials := c.Credentials()
	for i, r := range c.Routes {
		key := func(f string) string { return fmt.Sprintf("routes[%d].", i) + f }
		if r.PairwiseSector != "" && c.Pairwise == nil {
			return &Error{key("pairwise_sector"), "needs a pairwise section (its keys derive the subjects)"}
		}
		if r.AuthorizationServer != "" && !c.hasServer(r.AuthorizationServer) {
			return &Error{key("authorization_server"), fmt.Sprintf("%q is not the name of an authorization_servers entry", r.AuthorizationServer)}
		}
		if u := r.UpstreamJWT; u != nil {
			if !credentials {
				return &Error{key("upstream_jwt"), "needs introspection or jwt.issuers: without tokens there is no JWT to mint"}
			}
			for _, s := range append(append([]string{}, u.Audience...), append(u.CopyClaims, u.Scopes...)...) {
				if strings.TrimSpace(s) == "" || strings.ContainsAny(s, " \t") {
					return &Error{key("upstream_jwt"), "audiences, claim names and scopes must be non-empty and contain no space"}
				}
			}
		}
	}
	return nil
}
