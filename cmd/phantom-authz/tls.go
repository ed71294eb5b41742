package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/phantom-authz/phantom-authz/authz/config"
	"github.com/phantom-authz/phantom-authz/authz/server"
)

// serverTLS returns the TLS configuration of a server's tls section (key
// names it in errors), nil when the server serves plaintext.
func serverTLS(key string, t *config.TLS, log *slog.Logger) (*tls.Config, error) {
	if t == nil {
		return nil, nil
	}
	c, err := server.NewTLSConfig(server.TLSFiles{CertFile: t.CertFile, KeyFile: t.KeyFile, ClientCAFile: t.ClientCAFile}, log)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", key, err)
	}
	return c, nil
}

// grpcTLS is the server option that serves gRPC over c (none when nil).
func grpcTLS(c *tls.Config) []grpc.ServerOption {
	if c == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(c))}
}
