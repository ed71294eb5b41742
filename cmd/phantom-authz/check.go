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

	"github.com/phantom-authz/phantom-authz/authz/server"
	"github.com/phantom-authz/phantom-authz/authz/telemetry"
)

// checkResult is what `check` prints: the decision and why.
type checkResult struct {
	Allowed bool              `json:"allowed"`
	Status  int               `json:"status"`
	Reason  string            `json:"reason"`
	Detail  string            `json:"detail,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Remove  []string          `json:"headers_to_remove,omitempty"`
	Body    string            `json:"body,omitempty"`
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
			d := st.engine.Check(context.Background(), server.ToRequest(&req))
			res := checkResult{Allowed: d.Allowed, Status: d.Status, Reason: d.Reason, Detail: d.Detail,
				Remove: d.RemoveHeaders, Body: d.Body}
			if d.Allowed {
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
