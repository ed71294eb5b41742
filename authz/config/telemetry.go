package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/phantom-authz/phantom-authz/authz/decisionlog"
)

// Telemetry is what phantom-authz reports: traces, metrics, decision logs.
// The standard OTEL_* environment variables configure the exporters and win
// where they overlap (OTEL_SERVICE_NAME, OTEL_TRACES_EXPORTER, OTEL_SDK_DISABLED).
type Telemetry struct {
	Tracing     Tracing     `yaml:"tracing"`
	Metrics     Metrics     `yaml:"metrics"`
	DecisionLog DecisionLog `yaml:"decision_log"`
}

// Tracing exports OpenTelemetry spans over OTLP (OTEL_EXPORTER_OTLP_*).
type Tracing struct {
	Enabled     bool   `yaml:"enabled"`
	ServiceName string `yaml:"service_name"`
	// SafeClaims are claims whose values may be put on spans (acr, say);
	// no other claim value ever is.
	SafeClaims []string `yaml:"safe_claims"`
}

// Metrics serves Prometheus metrics on GET /metrics of http.addr.
type Metrics struct {
	Enabled bool `yaml:"enabled"`
}

// DecisionLog writes one record per decision.
type DecisionLog struct {
	Enabled bool `yaml:"enabled"`
	// Output is stdout (JSON lines) or otlp (OpenTelemetry logs, configured
	// by OTEL_EXPORTER_OTLP_* / OTEL_LOGS_EXPORTER).
	Output string `yaml:"output"`
	// Mask lists record fields left out.
	Mask []string `yaml:"mask"`
}

// DryRun selects the requests whose decision is computed, logged and
// counted but not enforced (OPA-Envoy's dry-run).
type DryRun struct {
	// All puts every route in dry-run mode.
	All bool `yaml:"all"`
	// Routes are API names as Envoy's context_extensions api sets them.
	Routes []string `yaml:"routes"`
	// Paths are exact paths, or prefixes ending in "*".
	Paths []string `yaml:"paths"`
}

func defaultTelemetry() Telemetry {
	return Telemetry{
		Tracing:     Tracing{ServiceName: "phantom-authz"},
		Metrics:     Metrics{Enabled: true},
		DecisionLog: DecisionLog{Output: "stdout"},
	}
}

func (t *Telemetry) validate() error {
	if strings.TrimSpace(t.Tracing.ServiceName) == "" {
		return &Error{"telemetry.tracing.service_name", "must not be empty"}
	}
	for _, c := range t.Tracing.SafeClaims {
		if strings.TrimSpace(c) == "" {
			return &Error{"telemetry.tracing.safe_claims", "claim names must not be empty"}
		}
	}
	if !oneOf(t.DecisionLog.Output, "stdout", "otlp") {
		return &Error{"telemetry.decision_log.output", fmt.Sprintf("%q is not one of stdout, otlp", t.DecisionLog.Output)}
	}
	for _, f := range t.DecisionLog.Mask {
		if !slices.Contains(decisionlog.Maskable, f) {
			return &Error{"telemetry.decision_log.mask", fmt.Sprintf("%q is not one of %s", f, strings.Join(decisionlog.Maskable, ", "))}
		}
	}
	return nil
}

func (d *DryRun) validate() error {
	for _, r := range d.Routes {
		if strings.TrimSpace(r) == "" {
			return &Error{"dry_run.routes", "route names must not be empty"}
		}
	}
	for _, p := range d.Paths {
		if !strings.HasPrefix(p, "/") || strings.Contains(strings.TrimSuffix(p, "*"), "*") {
			return &Error{"dry_run.paths", fmt.Sprintf("%q must start with / and may only end in *", p)}
		}
	}
	return nil
}
