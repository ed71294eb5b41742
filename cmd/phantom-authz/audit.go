package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/phantom-authz/phantom-authz/authz/decisionlog"
)

func auditCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "audit [--format table|json] [FILE ...]",
		Short: "Report on decision logs: routes, how callers authenticated, allows and denials",
		Long: `audit reads decision logs (telemetry.decision_log, output stdout: JSON lines,
other log lines mixed in are skipped) from the files given, or from standard
input when none or "-" is given, and reports every route and method seen: how
callers authenticated (none, opaque, jwt, dpop, mtls), allow and deny counts,
routes only ever decided by the policy's default rule, and routes reached
without any credential.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "table" && format != "json" {
				return &exitError{2, fmt.Errorf("--format: %q is not one of table, json", format)}
			}
			rep := decisionlog.NewReport()
			read := func(name string, r io.Reader) error {
				_, skipped, err := decisionlog.Read(r, rep.Add)
				rep.Skipped += skipped
				if err != nil {
					return &exitError{1, fmt.Errorf("%s: %w", name, err)}
				}
				return nil
			}
			if len(args) == 0 {
				args = []string{"-"}
			}
			for _, name := range args {
				if name == "-" {
					if err := read("stdin", cmd.InOrStdin()); err != nil {
						return err
					}
					continue
				}
				f, err := os.Open(name)
				if err != nil {
					return &exitError{1, err}
				}
				err = read(name, f)
				f.Close()
				if err != nil {
					return err
				}
			}
			if format == "json" {
				return rep.WriteJSON(cmd.OutOrStdout())
			}
			return rep.WriteTable(cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&format, "format", "table", "table (for a terminal) or json")
	return cmd
}
