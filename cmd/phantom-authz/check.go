package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/phantom-authz/phantom-authz/authz/route"
	"github.com/phantom-authz/phantom-authz/authz/server"
	"github.com/phantom-authz/phantom-authz/authz/telemetry"
)

// checkResult is what `check` prints: the decision and why.
type checkResult struct {
	Allowed bool   `json:"allowed"`
	Status  int    `json:"status"`
	Reason  string `json:"reason"`
	// DryRun: a denial let through by dry-run mode; Status is the denial's.
	DryRun  bool              `json:"dry_run,omitempty"`
	Detail  string            `json:"detail,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Remove  []string          `json:"headers_to_remove,omitempty"`
	Body    string            `json:"body,omitempty"`
	Route   checkRoute        `json:"route"`
}

// checkRoute is the route the request got, and why.
type checkRoute struct {
	Name              string            `json:"name,omitempty"`
	API               string            `json:"api,omitempty"`
	Template          string            `json:"template,omitempty"`
	Params            map[string]string `json:"params,omitempty"`
	Public            bool              `json:"public"`
	SenderConstrained string            `json:"sender_constrained,omitempty"`
	PairwiseSector    string            `json:"pairwise_sector,omitempty"`
	DryRun            bool              `json:"dry_run"`
	UpstreamAudience  []string          `json:"upstream_audience,omitempty"`
	UpstreamScopes    []string          `json:"upstream_scopes,omitempty"`
	Why               string            `json:"why"`
}

func explainRoute(rt *route.Route) checkRoute {
	c := checkRoute{Name: rt.Name(), API: rt.API, Template: rt.Template(), Public: rt.Public,
		SenderConstrained: rt.SenderConstrained, PairwiseSector: rt.PairwiseSector, DryRun: rt.DryRun, Why: rt.Why()}
	for _, p := range rt.Params() {
		if c.Params == nil {
			c.Params = map[string]string{}
		}
		c.Params[p.Name] = p.Value
	}
	if up := rt.Upstream; up != nil {
		c.UpstreamAudience, c.UpstreamScopes = up.Audience, up.Scopes
	}
	return c
}

func checkCmd() *cobra.Command {
	var cfgPath, reqPath string
	cmd := &cobra.Command{
		Use:   "check --request FILE [--config FILE]",
		Short: "Explain the decision for one Envoy CheckRequest (protojson) without starting servers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cfgPath)
			if err != nil {
				return err
			}
			var in []byte
			if reqPath == "-" {
				in, err = io.ReadAll(cmd.InOrStdin())
			} else {
				in, err = os.ReadFile(reqPath)
			}
			if err != nil {
				return &exitError{2, fmt.Errorf("--request: %w", err)}
			}
			var req authv3.CheckRequest
			if err := protojson.Unmarshal(in, &req); err != nil {
				return &exitError{2, fmt.Errorf("--request: not a CheckRequest in protojson: %w", err)}
			}
			log := telemetry.NewLogger(cmd.ErrOrStderr(), "warn", cfg.Log.Format)
			// Offline: a DPoP proof checked here must not be spent in Redis.
			cfg.Redis.URL = ""
			st, err := build(cfg, log, nil)
			if err != nil {
				return &exitError{1, err}
			}
			defer st.close()
			// With policy.bundle, one download (or the persisted copy).
			if err := st.policy.Fetch(context.Background()); err != nil {
				return &exitError{1, err}
			}
			r := server.ToRequest(&req)
			d := st.engine.Check(context.Background(), r)
			res := checkResult{Allowed: d.Allowed, Status: d.Status, Reason: d.Reason, Detail: d.Detail,
				Remove: d.RemoveHeaders, Body: d.Body, Route: explainRoute(&r.Route), DryRun: d.DryRun}
			if d.Allowed && !d.DryRun {
				res.Status = 200
			}
			if len(d.Headers) > 0 {
				res.Headers = map[string]string{}
				for _, h := range d.Headers {
					res.Headers[h.Key] = h.Value
				}
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(res)
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "YAML configuration file")
	cmd.Flags().StringVar(&reqPath, "request", "", "CheckRequest as protojson (- for stdin)")
	_ = cmd.MarkFlagRequired("request")
	return cmd
}
