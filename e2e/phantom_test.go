package e2e

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// dialAuthz connects to phantom-authz's ext_authz gRPC service as Envoy does.
func dialAuthz(t *testing.T, addr string) authv3.AuthorizationClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// checkRequest is the CheckRequest Envoy sends for method path with the
// Authorization header value (none if "").
func checkRequest(method, path, authorization string) *authv3.CheckRequest {
	h := map[string]string{":method": method, ":path": path, ":authority": "api.local"}
	if authorization != "" {
		h["authorization"] = authorization
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "e2e", Method: method, Path: path, Host: "api.local", Scheme: "http", Protocol: "HTTP/1.1", Headers: h,
		}},
	}}
}

// The phantom-token exchange at the gRPC level: the allow carries the JWT in
// an Authorization header that overwrites the client's; a junk token is a
// 401 invalid_token.
func TestPhantomTokenCheckOverGRPC(t *testing.T) {
	t.Parallel()
	needTools(t)
	h := startHydra(t)
	a := startAuthz(t, h, authzOptions{})
	client := dialAuthz(t, a.grpcAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	tok := h.token(t, "read write")
	resp, err := client.Check(ctx, checkRequest("GET", "/api/accounts/7", "Bearer "+tok))
	if err != nil {
		t.Fatal(err)
	}
	if c := code.Code(resp.GetStatus().GetCode()); c != code.Code_OK {
		t.Fatalf("check status %s (%s), want OK", c, resp.GetStatus().GetMessage())
	}
	var jwt string
	for _, hv := range resp.GetOkResponse().GetHeaders() {
		if strings.EqualFold(hv.GetHeader().GetKey(), "authorization") {
			if jwt != "" {
				t.Error("two authorization headers in the OK response")
			}
			jwt = strings.TrimPrefix(hv.GetHeader().GetValue(), "Bearer ")
			if hv.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				t.Errorf("authorization append_action %s, want OVERWRITE_IF_EXISTS_OR_ADD", hv.GetAppendAction())
			}
		}
	}
	if jwt == "" {
		t.Fatalf("no authorization header in the OK response: %v", resp.GetOkResponse())
	}
	claims := verifyJWT(t, a.httpURL, jwt)
	hydraSaid := h.introspect(t, tok)
	for _, c := range []string{"sub", "client_id", "scope"} {
		if claims[c] != hydraSaid[c] || claims[c] == nil {
			t.Errorf("JWT %s = %v, Hydra says %v", c, claims[c], hydraSaid[c])
		}
	}

	resp, err = client.Check(ctx, checkRequest("GET", "/api/accounts/7", "Bearer ory_at_junk.junk"))
	if err != nil {
		t.Fatal(err)
	}
	if c := code.Code(resp.GetStatus().GetCode()); c != code.Code_UNAUTHENTICATED {
		t.Errorf("junk token: check status %s, want UNAUTHENTICATED", c)
	}
	denied := resp.GetDeniedResponse()
	if denied.GetStatus().GetCode() != 401 {
		t.Errorf("junk token: HTTP status %d, want 401", denied.GetStatus().GetCode())
	}
	found := false
	for _, hv := range denied.GetHeaders() {
		if strings.EqualFold(hv.GetHeader().GetKey(), "www-authenticate") {
			found = strings.Contains(hv.GetHeader().GetValue(), `error="invalid_token"`)
		}
	}
	if !found {
		t.Errorf("junk token: no WWW-Authenticate with error=\"invalid_token\": %v", denied.GetHeaders())
	}
}

// Hydra down: a token already cached keeps working until its entry expires
// (cache.max_ttl 4s here); a token never seen is a 503, never an allow.
func TestPhantomTokenWhileHydraIsDown(t *testing.T) {
	t.Parallel()
	const maxTTL = 4 * time.Second
	s := newStack(t, authzOptions{set: map[string]any{"cache.max_ttl": "4s", "cache.inactive_ttl": "4s"}})
	cached, unseen := s.hydra.token(t, "read"), s.hydra.token(t, "read")
	if r := s.call(t, http.MethodGet, "/api/accounts/1", cached, nil); r.status != http.StatusOK {
		t.Fatalf("before: %d %s", r.status, r.body)
	}
	cachedAt := time.Now()

	s.hydra.kill()
	if r := s.call(t, http.MethodGet, "/api/accounts/1", cached, nil); r.status != http.StatusOK {
		t.Errorf("cached token with Hydra down: %d %s, want 200", r.status, r.body)
	}
	s.call(t, http.MethodGet, "/api/accounts/1", unseen, nil).denial(t, http.StatusServiceUnavailable)

	// The cached token works until its entry expires, then gets 503 too.
	for {
		r := s.call(t, http.MethodGet, "/api/accounts/1", cached, nil)
		age := time.Since(cachedAt)
		if r.status != http.StatusOK {
			r.denial(t, http.StatusServiceUnavailable)
			if age < maxTTL-time.Second {
				t.Errorf("cached token refused after %s, before its entry expired (cache.max_ttl %s)", age, maxTTL)
			}
			t.Logf("cached token refused %s after it was cached", age.Round(time.Millisecond))
			break
		}
		if age > maxTTL+1500*time.Millisecond {
			t.Fatalf("cached token still allowed %s after it was cached, Hydra down (cache.max_ttl %s)", age, maxTTL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// 200 checks at once for one token never seen: exactly one introspection
// request reaches the OAuth server; the others wait for its answer.
func TestPhantomTokenConcurrentChecksIntrospectOnce(t *testing.T) {
	t.Parallel()
	needTools(t)
	h := startHydra(t)

	// A counting proxy in front of Hydra's introspection endpoint.
	intro := newIntrospectionCounter(t, h)
	a := startAuthz(t, h, authzOptions{introspectionURL: intro.url})
	client := dialAuthz(t, a.grpcAddr)
	tok := h.token(t, "read")

	burst := func() {
		t.Helper()
		const n = 200
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			allowed atomic.Int64
			errs    = make(chan error, n)
		)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				resp, err := client.Check(ctx, checkRequest("GET", "/api/accounts/1", "Bearer "+tok))
				if err != nil {
					errs <- err
					return
				}
				if resp.GetStatus().GetCode() == int32(code.Code_OK) {
					allowed.Add(1)
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("check: %v", err)
		}
		if allowed.Load() != n {
			t.Errorf("%d of %d checks allowed, want all", allowed.Load(), n)
		}
	}

	burst()
	if got := intro.total(); got != 1 {
		t.Errorf("200 concurrent checks of one new token made %d introspection requests, want exactly 1", got)
	}
	burst() // cached now: none more
	if got := intro.total(); got != 1 {
		t.Errorf("after a second burst, %d introspection requests in all, want still 1", got)
	}
}
