package main

import (
	"github.com/phantom-authz/phantom-authz/authz/config"
	"github.com/phantom-authz/phantom-authz/authz/policy"
)

// policyBundle is the policy engine's bundle server, nil when policy.bundle
// has no url (the policies come from policy.dir).
func policyBundle(b config.PolicyBundle) *policy.BundleConfig {
	if b.URL == "" {
		return nil
	}
	out := &policy.BundleConfig{
		URL:               b.URL,
		PollMin:           b.PollMin.D(),
		PollMax:           b.PollMax.D(),
		Timeout:           b.Timeout.D(),
		CAFile:            b.CAFile,
		TokenFile:         b.TokenFile,
		AllowInsecureHTTP: b.AllowInsecureHTTP,
		PersistDir:        b.PersistDir,
	}
	if v := b.Verification; v != nil {
		out.Verification = &policy.BundleVerification{
			PublicKeyFile: v.PublicKeyFile,
			KeyID:         v.KeyID,
			Algorithm:     v.Algorithm,
			Scope:         v.Scope,
		}
	}
	return out
}
