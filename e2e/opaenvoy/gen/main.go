// Command gen records OPA-Envoy's answers for the parity corpus. It is run by
// hand, never by CI (OPA-Envoy cannot be installed from the Go module proxy):
//
//	git -C <opa-envoy-plugin repository> checkout v1.19.1-envoy
//	CGO_ENABLED=0 go build -ldflags '-X github.com/open-policy-agent/opa/v1/version.Version=1.19.1-envoy' \
//	    -o /tmp/opa-envoy-plugin ./cmd/opa-envoy-plugin
//	go run ./e2e/opaenvoy/gen -opa-envoy /tmp/opa-envoy-plugin
//
// For each policy of the corpus it starts OPA-Envoy on loopback with that one
// policy, sends every request of the policy over gRPC, and writes
// e2e/opaenvoy/testdata/<policy>.rego and <policy>.json: the query, and for
// each request the CheckRequest and OPA-Envoy's whole CheckResponse (or the
// gRPC error it answered), both as protojson. The test in e2e/opaenvoy
// replays them against phantom-authz.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Golden is one policy's recorded answers (the file format the test reads).
type Golden struct {
	// Source names where the policy comes from.
	Source string `json:"source"`
	// Query is the decision OPA-Envoy was run with (its `path`, as data.x.y).
	Query string `json:"query"`
	// OPAEnvoy is the version that answered.
	OPAEnvoy string `json:"opa_envoy"`
	Cases    []Case `json:"cases"`
}

// Case is one request and OPA-Envoy's answer.
type Case struct {
	Name     string          `json:"name"`
	Request  json.RawMessage `json:"request"`
	Response json.RawMessage `json:"response,omitempty"`
	// Error is the gRPC error OPA-Envoy answered instead of a response
	// (Envoy then answers the client its status_on_error, 403 by default).
	Error *RPCError `json:"error,omitempty"`
}

// RPCError is a gRPC status.
type RPCError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func main() {
	bin := flag.String("opa-envoy", "", "the opa-envoy-plugin binary (v1.19.1-envoy)")
	out := flag.String("out", "e2e/opaenvoy/testdata", "where to write the golden files")
	only := flag.String("only", "", "record only the policy of this name")
	flag.Parse()
	if *bin == "" {
		log.Fatal("gen: -opa-envoy is required")
	}
	version, err := exec.Command(*bin, "version").Output()
	if err != nil {
		log.Fatalf("gen: %s version: %v", *bin, err)
	}
	v := strings.TrimSpace(strings.TrimPrefix(strings.SplitN(string(version), "\n", 2)[0], "Version:"))
	total := 0
	for _, p := range corpus() {
		if *only != "" && p.name != *only {
			continue
		}
		g, err := record(*bin, p)
		if err != nil {
			log.Fatalf("gen: policy %s: %v", p.name, err)
		}
		g.OPAEnvoy = v
		if err := write(*out, p, g); err != nil {
			log.Fatal(err)
		}
		total += len(g.Cases)
		log.Printf("gen: %s: %d requests", p.name, len(g.Cases))
	}
	log.Printf("gen: %d requests recorded", total)
}

func write(dir string, p policy, g *Golden) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, p.name+".rego"), []byte(strings.TrimLeft(p.rego, "\n")), 0o644); err != nil {
		return err
	}
	b, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, p.name+".json"), append(b, '\n'), 0o644)
}

// record runs OPA-Envoy with p's policy and sends it every request of p.
func record(bin string, p policy) (*Golden, error) {
	dir, err := os.MkdirTemp("", "opaenvoy-gen-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "policy.rego")
	if err := os.WriteFile(file, []byte(p.rego), 0o644); err != nil {
		return nil, err
	}
	grpcAddr, httpAddr := freeAddr(), freeAddr()
	path := strings.ReplaceAll(strings.TrimPrefix(p.query, "data."), ".", "/")
	cmd := exec.Command(bin, "run", "--server", "--addr="+httpAddr,
		"--set=plugins.envoy_ext_authz_grpc.addr="+grpcAddr,
		"--set=plugins.envoy_ext_authz_grpc.path="+path,
		"--set=decision_logs.console=false", "--log-level=error", "policy.rego")
	// Run beside the policy, so error messages name policy.rego, not a
	// temporary directory that differs from one recording to the next.
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	if err := waitReady(client); err != nil {
		return nil, err
	}

	g := &Golden{Source: p.source, Query: p.query}
	seen := map[string]bool{}
	for _, c := range p.cases() {
		if seen[c.name] {
			return nil, fmt.Errorf("two requests named %q", c.name)
		}
		seen[c.name] = true
		req := &authv3.CheckRequest{}
		if err := protojson.Unmarshal([]byte(c.req), req); err != nil {
			return nil, fmt.Errorf("request %s: %w", c.name, err)
		}
		reqJSON, err := canonical(req)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := client.Check(ctx, req)
		cancel()
		cs := Case{Name: c.name, Request: reqJSON}
		if err != nil {
			st, _ := status.FromError(err)
			if st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded {
				return nil, fmt.Errorf("request %s: %w", c.name, err)
			}
			cs.Error = &RPCError{Code: st.Code().String(), Message: st.Message()}
		} else {
			sortLists(resp)
			if cs.Response, err = canonical(resp); err != nil {
				return nil, err
			}
		}
		g.Cases = append(g.Cases, cs)
	}
	return g, nil
}

// sortLists sorts the header and query parameter lists of resp by name,
// keeping the order of the values of one name: OPA-Envoy builds them from
// a map, in random order, and Envoy applies names independently; sorted,
// the files stay the same from one recording to the next.
func sortLists(resp *authv3.CheckResponse) {
	byKey := func(a, b *corev3.HeaderValueOption) int {
		return strings.Compare(a.GetHeader().GetKey(), b.GetHeader().GetKey())
	}
	if ok := resp.GetOkResponse(); ok != nil {
		slices.SortStableFunc(ok.Headers, byKey)
		slices.SortStableFunc(ok.ResponseHeadersToAdd, byKey)
		slices.SortStableFunc(ok.QueryParametersToSet, func(a, b *corev3.QueryParameter) int { return strings.Compare(a.GetKey(), b.GetKey()) })
	}
	if d := resp.GetDeniedResponse(); d != nil {
		slices.SortStableFunc(d.Headers, byKey)
	}
}

// canonical is m's protojson, compacted so the files diff well.
func canonical(m proto.Message) (json.RawMessage, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

func waitReady(c authv3.AuthorizationClient) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.Check(ctx, &authv3.CheckRequest{})
		cancel()
		if st, _ := status.FromError(err); err == nil || st.Code() != codes.Unavailable {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("OPA-Envoy did not start")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
