package config_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz/config"
)

func TestTelemetryDefaults(t *testing.T) {
	cfg, err := config.Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	tel := cfg.Telemetry
	if tel.Tracing.Enabled || tel.Tracing.ServiceName != "phantom-authz" || !tel.Metrics.Enabled ||
		tel.DecisionLog.Enabled || tel.DecisionLog.Output != "stdout" {
		t.Errorf("telemetry defaults = %+v", tel)
	}
	if cfg.DryRun.All || len(cfg.DryRun.Routes) > 0 || len(cfg.DryRun.Paths) > 0 {
		t.Errorf("dry_run defaults = %+v", cfg.DryRun)
	}
}

func TestTelemetryParse(t *testing.T) {
	cfg, err := config.Parse([]byte(`
telemetry:
  tracing: { enabled: true, service_name: edge-authz, safe_claims: [acr, client_id] }
  metrics: { enabled: false }
  decision_log: { enabled: true, output: otlp, mask: [client_id, path] }
dry_run: { routes: [accounts], paths: ["/beta/*"] }
`))
	if err != nil {
		t.Fatal(err)
	}
	tel := cfg.Telemetry
	if !tel.Tracing.Enabled || tel.Tracing.ServiceName != "edge-authz" || !slices.Equal(tel.Tracing.SafeClaims, []string{"acr", "client_id"}) ||
		tel.Metrics.Enabled || !tel.DecisionLog.Enabled || tel.DecisionLog.Output != "otlp" ||
		!slices.Equal(tel.DecisionLog.Mask, []string{"client_id", "path"}) {
		t.Errorf("telemetry = %+v", tel)
	}
	if !slices.Equal(cfg.DryRun.Routes, []string{"accounts"}) || !slices.Equal(cfg.DryRun.Paths, []string{"/beta/*"}) {
		t.Errorf("dry_run = %+v", cfg.DryRun)
	}
}

// Every invalid telemetry or dry-run value names its key.
func TestTelemetryInvalid(t *testing.T) {
	tests := []struct{ yaml, key string }{
		{"telemetry:\n  tracing:\n    service_name: \"\"\n", "telemetry.tracing.service_name"},
		{"telemetry:\n  tracing:\n    safe_claims: [\"\"]\n", "telemetry.tracing.safe_claims"},
		{"telemetry:\n  decision_log:\n    output: file\n", "telemetry.decision_log.output"},
		{"telemetry:\n  decision_log:\n    mask: [token]\n", "telemetry.decision_log.mask"},
		{"telemetry:\n  decision_log:\n    mask: [decision]\n", "telemetry.decision_log.mask"},
		{"telemetry:\n  tracing:\n    sampler: always\n", "telemetry.tracing.sampler"},
		{"telemetry:\n  metrics:\n    enabled: maybe\n", "telemetry.metrics.enabled"},
		{"dry_run:\n  paths: [api]\n", "dry_run.paths"},
		{"dry_run:\n  paths: [\"/a*/b\"]\n", "dry_run.paths"},
		{"dry_run:\n  routes: [\"\"]\n", "dry_run.routes"},
		{"dry_run:\n  everything: true\n", "dry_run.everything"},
	}
	for _, tc := range tests {
		_, err := config.Parse([]byte(tc.yaml))
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Key != tc.key {
			t.Errorf("%q: error %v, want one naming %s", tc.yaml, err, tc.key)
		}
	}
}
