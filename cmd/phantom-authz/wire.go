package main

import (
	"cmp"
	"fmt"
	"log/slog"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/config"
	"github.com/phantom-authz/phantom-authz/authz/mint"
	"github.com/phantom-authz/phantom-authz/authz/policy"
	"github.com/phantom-authz/phantom-authz/authz/redisstore"
	"github.com/phantom-authz/phantom-authz/authz/route"
	"github.com/phantom-authz/phantom-authz/authz/telemetry"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// stack is the assembled engine and the parts the servers need.
type stack struct {
	engine   *authz.Engine
	policy   *policy.Engine
	resolver *token.Resolver   // nil when no credentials are configured
	replays  *replayCounter    // nil when no credentials are configured
	minter   *mint.Minter      // nil when no credentials are configured
	redis    *redisstore.Store // nil without redis.url
}

func (s *stack) close() {
	if s.resolver != nil {
		s.resolver.Close()
	}
	if s.minter != nil {
		_ = s.minter.Close()
	}
	if s.redis != nil {
		_ = s.redis.Close()
	}
}

func (s *stack) jwks() []byte {
	if s.minter == nil {
		return []byte(`{"keys":[]}`)
	}
	return s.minter.JWKS()
}

// build wires configuration to stages to engine; tel (nil: none) is where
// they report.
func build(cfg config.Config, log *slog.Logger, tel *telemetry.Telemetry) (*stack, error) {
	pol, err := policy.New(policy.Config{
		Dir:          cfg.Policy.Dir,
		Query:        cfg.Policy.Query,
		Logger:       log,
		PollInterval: cfg.Policy.PollInterval.D(),
		// 0 is "off" in the file, "the default" in policy.Config.
		DecisionCacheBytes: cmp.Or(cfg.Policy.DecisionCacheBytes, -1),
		EvalTimeout:        cfg.Policy.EvalTimeout.D(),
		Bundle:             policyBundle(cfg.Policy.Bundle),
	})
	if err != nil {
		return nil, err
	}
	s := &stack{policy: pol}
	if s.redis, err = openRedis(cfg, log); err != nil {
		return nil, err
	}
	credentials := cfg.Credentials()
	if credentials {
		keys := cfg.Mint.SigningKeyFiles
		if cfg.Mint.SigningKeyFile != "" {
			keys = []string{cfg.Mint.SigningKeyFile}
		}
		s.minter, err = mint.New(mint.Config{
			Issuer:      cfg.Mint.Issuer,
			Audience:    cfg.Mint.Audience,
			KeyFiles:    keys,
			Generate:    len(keys) == 0,
			MaxLifetime: cfg.Mint.MaxLifetime.D(),
			CopyClaims:  cfg.Mint.CopyClaims,
			Logger:      log,

			PairwiseKeys: pairwiseKeys(cfg.Pairwise),
		})
		if err != nil {
			return nil, err
		}
	}
	ecfg := authz.Config{
		Decider:        pol,
		Realm:          cfg.Auth.Realm,
		PublicPaths:    cfg.Auth.PublicPaths,
		OwnedHeaders:   cfg.Auth.OwnedHeaders,
		MaxHeaderBytes: cfg.Auth.MaxHeaderBytes,
		MaxBodyBytes:   cfg.Policy.MaxBodyBytes,
		Logger:         log,

		InteractionID: cfg.FAPI.InteractionID,
	}
	if s.minter != nil {
		ecfg.Minter = s.minter
	}
	if credentials {
		if ecfg.Binder, err = binder(cfg, s.countReplays(replayStore(cfg, s.redis))); err != nil {
			return nil, err
		}
	}
	if err := observeEngine(&ecfg, cfg, tel); err != nil {
		return nil, err
	}
	if s.minter != nil {
		ecfg.Upstream = s.minter
	}
	if cfg.Pairwise != nil {
		ecfg.PairwiseSectors = cfg.Pairwise.Sectors
	}
	if ecfg.Routes, err = route.NewTable(config.Entries(cfg.Routes)); err != nil {
		return nil, err
	}
	for _, r := range cfg.Routes {
		if u := ecfg.Routes.Upstream(r.API); u != nil && s.minter != nil {
			if err := s.minter.CheckUpstream(mint.Upstream{Audience: u.Audience, CopyClaims: u.CopyClaims, Scopes: u.Scopes}); err != nil {
				return nil, fmt.Errorf("routes: %s: upstream_jwt: %w", r.Name, err)
			}
		}
	}
	if credentials {
		// The resolver prepares each token through the engine (mint, policy
		// input) before caching it; the engine is built after the resolver.
		var eng *authz.Engine
		s.resolver, err = token.New(token.Config{
			Introspection: introspectionConfig(cfg.Introspection),
			Issuers:       issuerConfigs(cfg.JWT.Issuers),
			Servers:       serverConfigs(cfg.AuthorizationServers),
			CAFile:        cfg.JWT.CAFile,
			Cache: token.CacheConfig{
				MaxCost:     cfg.Cache.MaxBytes,
				MaxTTL:      cfg.Cache.MaxTTL.D(),
				InactiveTTL: cfg.Cache.InactiveTTL.D(),
			},
			Prepare: func(t *token.Token) error { return eng.PrepareToken(t) },
			Logger:  log,

			Shared:    sharedCache(cfg, s.redis),
			SharedKey: cfg.Redis.CacheKey,
			Publisher: revocationPublisher(s.redis),

			Tracer:        tel.Tracer(),
			Meter:         tel.Meter(),
			WrapTransport: wrapTransport(tel),
		})
		if err != nil {
			return nil, err
		}
		ecfg.Resolver = s.resolver
		eng, err = authz.New(ecfg)
		s.engine = eng
	} else {
		s.engine, err = authz.New(ecfg)
	}
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	return s, nil
}

func introspectionConfig(in *config.Introspection) *token.IntrospectionConfig {
	if in == nil {
		return nil
	}
	return &token.IntrospectionConfig{
		Endpoint:          in.Endpoint,
		ClientID:          in.ClientID,
		ClientSecret:      in.ClientSecret,
		AuthMethod:        in.AuthMethod,
		PrivateKeyFile:    in.PrivateKeyFile,
		PrivateKeyID:      in.PrivateKeyID,
		PrivateKeyAlg:     in.PrivateKeyAlg,
		Response:          in.Response,
		AllowInsecureHTTP: in.AllowInsecureHTTP,
		CAFile:            in.CAFile,
		Timeout:           in.Timeout.D(),
		Issuer:            in.Issuer,
		JWKSURI:           in.JWKSURI,
		Audience:          in.Audience,
		Audiences:         in.Audiences,
		TokenTypeHint:     in.TokenTypeHint,
		MaxConcurrent:     in.MaxConcurrent,
		Breaker: token.BreakerConfig{
			Failures: in.CircuitBreaker.Failures,
			Cooldown: in.CircuitBreaker.Cooldown.D(),
		},
	}
}

func serverConfigs(in []config.AuthorizationServer) []token.ServerConfig {
	out := make([]token.ServerConfig, len(in))
	for i, s := range in {
		out[i] = token.ServerConfig{
			Name:              s.Name,
			Issuer:            s.Issuer,
			Discovery:         s.Discovery,
			AllowInsecureHTTP: s.AllowInsecureHTTP,
			Introspection:     introspectionConfig(s.Introspection),
			IntrospectJWTs:    s.IntrospectJWTs,
			TokenPrefixes:     s.TokenPrefixes,
			Default:           s.Default,
		}
		if s.JWT != nil {
			is := issuerConfigs([]config.Issuer{*s.JWT})[0]
			out[i].JWT = &is
		}
	}
	return out
}

func issuerConfigs(in []config.Issuer) []token.IssuerConfig {
	out := make([]token.IssuerConfig, len(in))
	for i, is := range in {
		out[i] = token.IssuerConfig{
			Issuer:     is.Issuer,
			JWKSURI:    is.JWKSURI,
			Audiences:  is.Audiences,
			Algorithms: is.Algorithms,
			Type:       is.Type,
			Skew:       is.Skew.D(),

			AllowInsecureHTTP: is.AllowInsecureHTTP,
		}
	}
	return out
}

func pairwiseKeys(p *config.Pairwise) []mint.PairwiseKey {
	if p == nil {
		return nil
	}
	out := make([]mint.PairwiseKey, len(p.Keys))
	for i, k := range p.Keys {
		out[i] = mint.PairwiseKey{ID: k.ID, Secret: k.Secret}
	}
	return out
}
