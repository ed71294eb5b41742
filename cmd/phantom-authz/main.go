// Command phantom-authz is the Envoy ext_authz server: it wires the
// configuration to the engine and the servers, and nothing more.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/phantom-authz/phantom-authz/authz/config"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// exitError carries the process exit status of a failed command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func main() {
	root := &cobra.Command{
		Use:           "phantom-authz",
		Short:         "Envoy ext_authz server: phantom tokens, Rego policies, banking-grade checks",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCmd(), checkCmd(), auditCmd(), configCmd(), versionCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "phantom-authz:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(2) // usage errors
	}
}

// loadConfig reads the file, or the defaults when path is empty. An invalid
// configuration is exit status 2.
func loadConfig(path string) (config.Config, error) {
	if path == "" {
		cfg := config.Default()
		return cfg, nil
	}
	cfg, err := config.Load(path)
	if err != nil {
		return cfg, &exitError{2, err}
	}
	return cfg, nil
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "phantom-authz", version)
		},
	}
}
