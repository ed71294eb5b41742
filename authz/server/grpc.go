// Package server is the transport: Envoy's ext_authz gRPC service (v3) and
// the HTTP server for health, readiness and the JWKS. It converts between
// Envoy's protobufs and the engine's Request and Decision; nothing below it
// sees a protobuf.
package server

import (
	"context"
	"runtime"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/phantom-authz/phantom-authz/authz"
)

// Checker decides requests; *authz.Engine is one.
type Checker interface {
	Check(ctx context.Context, r *authz.Request) authz.Decision
}

// Authorization implements envoy.service.auth.v3.Authorization.
type Authorization struct {
	authv3.UnimplementedAuthorizationServer
	Checker Checker
}

// Check answers one CheckRequest. It never returns an error: every failure
// is a denial, so Envoy never has to guess (fail closed).
func (a *Authorization) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return ToResponse(a.Checker.Check(ctx, ToRequest(req))), nil
}

// StreamWorkers serves each Check on a long-lived worker goroutine rather
// than a new one per stream (gRPC's default). A check that resolves a new
// token or evaluates a policy uncached runs deep (OPA's evaluator, ECDSA),
// and a fresh goroutine grows its stack to that depth by copying it several
// times on every such check: 15% of the server's CPU in scenario b1 of
// e2e/bench (7% for a cached token), 1-3% with workers, whose stacks stay
// grown. There are more workers than Envoy usually keeps checks in flight
// (an idle one costs its stack, some KiB); when every worker is busy (checks
// waiting on introspections) gRPC starts a goroutine as before, so no check
// ever queues behind another.
func StreamWorkers() grpc.ServerOption {
	return grpc.NumStreamWorkers(uint32(max(64, 8*runtime.GOMAXPROCS(0))))
}

// NewGRPC returns a gRPC server with the Authorization service, the standard
// health service (answered by hs) and server reflection registered.
func NewGRPC(c Checker, hs *health.Server, opts ...grpc.ServerOption) *grpc.Server {
	s := grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(s, &Authorization{Checker: c})
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s
}
