package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// configCmd prints the effective configuration: the file over the
// defaults, validated (secret files read, defaults of optional sections
// filled in), with every secret masked. What `serve` would run with,
// safe to paste into a ticket.
func configCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "config [--config FILE]",
		Short: "Print the effective configuration (defaults applied, secrets masked) as YAML",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cfgPath)
			if err != nil {
				return err
			}
			out, err := cfg.Masked()
			if err != nil {
				return &exitError{1, fmt.Errorf("config: %w", err)}
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "configuration file (YAML; ${VAR} expanded); without it, the defaults")
	return cmd
}
