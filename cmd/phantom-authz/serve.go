package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/phantom-authz/phantom-authz/authz/server"
	"github.com/phantom-authz/phantom-authz/authz/telemetry"
)

// drainTimeout bounds how long SIGTERM waits for in-flight checks.
const drainTimeout = 10 * time.Second

func serveCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve Envoy's ext_authz gRPC API and the health/JWKS HTTP endpoints",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(path)
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "YAML configuration file (defaults serve without one)")
	return cmd
}

func serve(path string) error {
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	log := telemetry.NewLogger(os.Stderr, cfg.Log.Level, cfg.Log.Format)
	slog.SetDefault(log)
	limitMemory(cfg, log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	tel, err := setupTelemetry(ctx, cfg, log)
	if err != nil {
		return &exitError{1, err}
	}
	defer func() {
		// Flush buffered spans and log records on the way out.
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(sctx); err != nil {
			log.Warn("telemetry: flushing on exit failed", "err", err)
		}
	}()
	st, err := build(cfg, log, tel)
	if err != nil {
		return &exitError{1, err}
	}
	defer st.close()
	if err := registerStageMetrics(tel.Meter(), st); err != nil {
		return &exitError{1, fmt.Errorf("telemetry: %w", err)}
	}
	if err := registerSharedMetrics(tel.Meter(), st); err != nil {
		return &exitError{1, fmt.Errorf("telemetry: %w", err)}
	}
	go st.policy.Watch(ctx)
	if st.resolver != nil {
		go st.resolver.Warm(ctx) // discovery and JWKS before the first token
	}
	st.subscribeRevocations(ctx)

	glis, err := net.Listen("tcp", cfg.GRPC.Addr)
	if err != nil {
		return &exitError{1, fmt.Errorf("grpc.addr: %w", err)}
	}
	hlis, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return &exitError{1, fmt.Errorf("http.addr: %w", err)}
	}

	hs := health.NewServer()
	// TLS when configured; the files are re-read when renewed.
	gtls, err := serverTLS("grpc.tls", cfg.GRPC.TLS, log)
	if err != nil {
		return &exitError{2, err}
	}
	htls, err := serverTLS("http.tls", cfg.HTTP.TLS, log)
	if err != nil {
		return &exitError{2, err}
	}
	if htls != nil {
		hlis = tls.NewListener(hlis, htls)
	}
	gopts := append(grpcOptions(tel), grpc.MaxRecvMsgSize(cfg.GRPC.MaxRecvBytes), server.StreamWorkers())
	gs := server.NewGRPC(st.engine, hs, append(gopts, grpcTLS(gtls)...)...)
	// SERVING only while a compiled policy set is loaded.
	status := func() healthpb.HealthCheckResponse_ServingStatus {
		if st.engine.Ready() {
			return healthpb.HealthCheckResponse_SERVING
		}
		return healthpb.HealthCheckResponse_NOT_SERVING
	}
	setStatus := func() {
		s := status()
		hs.SetServingStatus("", s)
		hs.SetServingStatus("envoy.service.auth.v3.Authorization", s)
	}
	setStatus()
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				setStatus()
			}
		}
	}()

	hsrv := &http.Server{
		Handler:           server.NewHTTPHandler(server.HTTPConfig{Ready: st.engine.Ready, JWKS: st.jwks, Extra: extraHandlers(tel), Admin: adminConfig(cfg, st, log)}),
		ReadHeaderTimeout: 5 * time.Second,
	}

	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(glis) }()
	go func() {
		if err := hsrv.Serve(hlis); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	log.Info("serving", slog.String("grpc", glis.Addr().String()), slog.String("http", hlis.Addr().String()),
		slog.String("policy_revision", st.policy.Revision()), slog.String("version", version))

	select {
	case <-ctx.Done():
	case err := <-errc:
		return &exitError{1, err}
	}

	// Drain: report NOT_SERVING so Envoy's health checks move away, finish
	// in-flight checks, then exit 0.
	log.Info("draining")
	hs.Shutdown()
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(drainTimeout):
		gs.Stop()
	}
	sctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	_ = hsrv.Shutdown(sctx)
	log.Info("stopped")
	return nil
}
