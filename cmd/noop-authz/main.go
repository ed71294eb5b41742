// Command noop-authz is the reference the load scenarios of e2e/bench are
// measured against: an Envoy ext_authz gRPC server on the same stack as
// phantom-authz (grpc-go, go-control-plane's v3 types, the same server
// options) that answers every Check with one pre-built OK response carrying
// one header, and does nothing else. What it costs per check is the floor
// of any ext_authz server on the machine: receiving, decoding and answering
// the RPC.
//
//	noop-authz -addr 127.0.0.1:9291 [-header-bytes 600] [-pprof 127.0.0.1:9292]
//
// -pprof serves Go's profiles (net/http/pprof, /debug/pprof/) on a loopback
// address without authentication, so e2e/bench can profile the floor as it
// profiles phantom-authz.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9291", "gRPC listen address")
	headerBytes := flag.Int("header-bytes", 600,
		"length of the authorization header value, so the answer is as large as one carrying a JWT")
	pprofAddr := flag.String("pprof", "", "loopback address to serve /debug/pprof/ on (default: off)")
	flag.Parse()
	if *pprofAddr != "" {
		if err := servePProf(*pprofAddr); err != nil {
			fmt.Fprintln(os.Stderr, "noop-authz:", err)
			os.Exit(1)
		}
	}
	if err := run(*addr, *headerBytes); err != nil {
		fmt.Fprintln(os.Stderr, "noop-authz:", err)
		os.Exit(1)
	}
}

func run(addr string, headerBytes int) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	// The options phantom-authz serves with (grpc.max_recv_bytes default,
	// server.StreamWorkers).
	s := grpc.NewServer(grpc.MaxRecvMsgSize(4<<20), grpc.NumStreamWorkers(uint32(max(64, 8*runtime.GOMAXPROCS(0)))))
	authv3.RegisterAuthorizationServer(s, &noop{resp: okResponse(headerBytes)})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		s.GracefulStop()
	}()
	fmt.Fprintln(os.Stderr, "noop-authz: serving on", lis.Addr())
	return s.Serve(lis)
}

// servePProf serves net/http/pprof's handlers on addr, which must be a
// loopback address: they have no authentication.
func servePProf(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-pprof: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-pprof %s: must be a loopback IP address (the profiles have no authentication)", addr)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	return nil
}

// noop answers every check with the same response.
type noop struct {
	authv3.UnimplementedAuthorizationServer
	resp *authv3.CheckResponse
}

// Check returns the pre-built response. gRPC only reads it (to marshal),
// so one value serves every call.
func (n *noop) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return n.resp, nil
}

// okResponse is an allow with one header, `authorization: Bearer x…x`.
func okResponse(headerBytes int) *authv3.CheckResponse {
	value := "Bearer " + strings.Repeat("x", max(headerBytes-len("Bearer "), 0))
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code.Code_OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{{
				Header:       &corev3.HeaderValue{Key: "authorization", Value: value},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}},
		}},
	}
}
