package config_test

import (
	"errors"
	"testing"
	"time"

	"github.com/phantom-authz/phantom-authz/authz/config"
)

const limitsIntrospectionYAML = "introspection:\n  endpoint: https://as.example/introspect\n  client_id: a\n  client_secret: b\n"

// The resource limits have their defaults, take values, and refuse
// nonsense naming the key.
func TestResourceLimits(t *testing.T) {
	cfg, err := config.Parse([]byte(limitsIntrospectionYAML))
	if err != nil {
		t.Fatal(err)
	}
	in := cfg.Introspection
	if in.MaxConcurrent != 64 || in.CircuitBreaker.Failures != 5 || in.CircuitBreaker.Cooldown.D() != 5*time.Second {
		t.Errorf("introspection limits default to %d, %+v; want 64, 5 failures, 5s", in.MaxConcurrent, in.CircuitBreaker)
	}
	if cfg.Policy.EvalTimeout.D() != 100*time.Millisecond || cfg.Policy.MaxBodyBytes != 1<<20 {
		t.Errorf("policy limits default to %s, %d; want 100ms, 1 MiB", cfg.Policy.EvalTimeout.D(), cfg.Policy.MaxBodyBytes)
	}

	cfg, err = config.Parse([]byte(limitsIntrospectionYAML +
		"  max_concurrent: 8\n  circuit_breaker: { failures: 3, cooldown: 2s }\npolicy:\n  eval_timeout: 20ms\n  max_body_bytes: 4096\n"))
	if err != nil {
		t.Fatal(err)
	}
	in = cfg.Introspection
	if in.MaxConcurrent != 8 || in.CircuitBreaker.Failures != 3 || in.CircuitBreaker.Cooldown.D() != 2*time.Second ||
		cfg.Policy.EvalTimeout.D() != 20*time.Millisecond || cfg.Policy.MaxBodyBytes != 4096 {
		t.Errorf("parsed %+v, %+v", in, cfg.Policy)
	}

	for _, c := range []struct{ yaml, key string }{
		{limitsIntrospectionYAML + "  max_concurrent: -1\n", "introspection.max_concurrent"},
		{limitsIntrospectionYAML + "  circuit_breaker: { failures: -2 }\n", "introspection.circuit_breaker.failures"},
		{limitsIntrospectionYAML + "  circuit_breaker:\n    cooldown: -1s\n", "introspection.circuit_breaker.cooldown"},
		{limitsIntrospectionYAML + "  circuit_breaker:\n    cooldwn: 1s\n", "introspection.circuit_breaker.cooldwn"},
		{"policy:\n  eval_timeout: 0s\n", "policy.eval_timeout"},
		{"policy:\n  eval_timeout: fast\n", "policy.eval_timeout"},
		{"policy:\n  max_body_bytes: 0\n", "policy.max_body_bytes"},
	} {
		_, err := config.Parse([]byte(c.yaml))
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Key != c.key {
			t.Errorf("%q: err %v, want one naming %s", c.yaml, err, c.key)
		}
	}
}
