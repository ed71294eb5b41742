package main

import (
	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/binding"
	"github.com/phantom-authz/phantom-authz/authz/config"
)

// binder is the bind stage of the configuration: DPoP proofs (dpop) and
// where sender-constrained tokens are demanded (binding), with replay as
// the DPoP replay store (this replica's memory, or Redis).
func binder(cfg config.Config, replay binding.ReplayStore) (authz.Binder, error) {
	bc := binding.Config{
		Algorithms:               cfg.DPoP.Algorithms,
		IATWindow:                cfg.DPoP.IATWindow.D(),
		Replay:                   replay,
		RequireSenderConstrained: cfg.Binding.RequireSenderConstrained,
		Origins:                  cfg.DPoP.Origins,
	}
	if x := cfg.Binding.XFCC; len(x.TrustedPrincipals) > 0 || len(x.TrustedAddresses) > 0 {
		bc.XFCC = &binding.XFCCConfig{TrustedPrincipals: x.TrustedPrincipals, TrustedAddresses: x.TrustedAddresses}
	}
	if n := cfg.DPoP.Nonce; n.Enabled {
		bc.Nonce = &binding.NonceConfig{Secret: n.Secret, Lifetime: n.Lifetime.D()}
	}
	b, err := binding.New(bc)
	if err != nil {
		return nil, err
	}
	return b, nil
}
