package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// One real Keycloak 26.7 for every Keycloak test of the run: started by the
// first test that needs it (1–3 minutes on two busy cores), configured
// through the admin REST API, stopped by TestMain when the run ends.

// The realm every Keycloak test uses, and its clients.
const (
	kcRealm = "phantom"
	// kcIntrospector is phantom-authz's own client: it introspects, and has
	// client.introspection.response.allow.jwt.claim.enabled.
	kcIntrospector       = "phantom-authz"
	kcIntrospectorSecret = "kc-introspector-secret-0123456789"
	// kcIntrospectorAnyAud introspects without Keycloak's audience check
	// (allow.token.introspection.without.audience.check): Keycloak then
	// vouches for refresh tokens and tokens for other audiences too, and
	// phantom-authz must refuse them itself. Same secret.
	kcIntrospectorAnyAud = "phantom-authz-any-aud"
	// The TPP clients (client credentials); all confidential ones share a
	// secret. kcTPP gets typ at+jwt tokens with every claim, and a refresh
	// token with them; kcLight gets lightweight tokens; kcDPoP must bind
	// its tokens to a DPoP key; kcMTLS authenticates with its certificate
	// (tls_client_auth) and gets certificate-bound tokens.
	kcTPP       = "tpp-client"
	kcLight     = "tpp-light"
	kcDPoP      = "tpp-dpop"
	kcMTLS      = "tpp-mtls"
	kcTPPSecret = "kc-tpp-secret-0123456789"
	// kcMTLSSubject is the certificate subject kcMTLS authenticates with.
	kcMTLSSubject = "kc-mtls-client"

	kcAdminUser     = "admin"
	kcAdminPassword = "kc-admin-password-0123456789"
	kcTrustPassword = "kc-trust-store-password"
)

// keycloakServer is the run's Keycloak, on free loopback ports: HTTPS only
// for the realm (client certificates requested, trusted from ca), plain
// HTTP for the management interface (readiness).
type keycloakServer struct {
	// url is https://127.0.0.1:port, Keycloak's fixed hostname: the issuer
	// does not depend on how it is called.
	url    string
	issuer string // url/realms/phantom
	// ca signs Keycloak's server certificate and the TPP clients'
	// certificates; Keycloak trusts it for client authentication.
	ca *testCA
	// mtlsCert authenticates kcMTLS; otherCert is another certificate of the
	// same CA.
	mtlsCert, otherCert *leafCert
	// startup is how long starting took, configuring the realm how long that did.
	startup, configure time.Duration

	*process                // the watchdog shell (see startKeycloak)
	dir      string         // the instance folder, logs, PKI; removed at the end
	stdin    io.WriteCloser // closing it stops Keycloak
}

var kc struct {
	once   sync.Once
	server *keycloakServer
	err    error
}

// needKeycloak returns the run's Keycloak, starting it on first use. A
// missing Keycloak fails the test, or skips it as needTools says.
func needKeycloak(t *testing.T) *keycloakServer {
	t.Helper()
	needTools(t)
	bin, err := findTool("keycloak")
	if err != nil {
		msg := fmt.Sprintf("keycloak not found in .tools/bin (%v): run `make tools` (installs Keycloak 26.7.3 into .tools)", err)
		if os.Getenv(skipEnv) == "1" {
			t.Skipf("%s; skipped because %s=1", msg, skipEnv)
		}
		t.Fatalf("%s, or set %s=1 to skip the end-to-end tests", msg, skipEnv)
	}
	kc.once.Do(func() {
		// Stays the error should start-up end in t.Fatal.
		kc.err = errors.New("keycloak: start-up failed in another test")
		kc.err = startKeycloak(t, bin)
		if kc.err == nil {
			t.Logf("keycloak: ready in %s, realm configured in %s", kc.server.startup.Round(time.Second), kc.server.configure.Round(time.Millisecond))
		}
	})
	if kc.err != nil {
		t.Fatal(kc.err)
	}
	return kc.server
}

// stopKeycloak stops the run's Keycloak, if one started; TestMain calls it.
func stopKeycloak() {
	if kc.server != nil {
		kc.server.stopAll()
	}
}

// dirTB is the first Keycloak test with TempDir pointing at the Keycloak
// folder: the PKI outlives that test.
type dirTB struct {
	testing.TB
	dir string
}

func (d dirTB) TempDir() string { return d.dir }

// startKeycloak starts Keycloak and configures the realm; kc.server is set
// as soon as the process runs, so that stopKeycloak stops it whatever
// happens next.
func startKeycloak(t *testing.T, bin string) error {
	t.Helper()
	dir, err := os.MkdirTemp("", "phantom-authz-e2e-keycloak-")
	if err != nil {
		return err
	}
	k := &keycloakServer{dir: dir, process: &process{name: "keycloak", done: make(chan struct{})}}
	pkiDir := filepath.Join(dir, "pki")
	if err := os.Mkdir(pkiDir, 0o700); err != nil {
		return err
	}
	tb := dirTB{TB: t, dir: pkiDir}
	k.ca = newTestCA(tb, "phantom-authz e2e Keycloak CA")
	server := k.ca.server(tb, "keycloak", "127.0.0.1", "localhost")
	k.mtlsCert = k.ca.client(tb, kcMTLSSubject)
	k.otherCert = k.ca.client(tb, "kc-other-client")

	// The PKCS12 trust store Keycloak checks client certificates against.
	trust := filepath.Join(pkiDir, "truststore.p12")
	keytool, err := findKeytool()
	if err != nil {
		return err
	}
	if out, err := exec.Command(keytool, "-importcert", "-noprompt", "-alias", "e2e-ca", "-file", k.ca.file,
		"-keystore", trust, "-storetype", "PKCS12", "-storepass", kcTrustPassword).CombinedOutput(); err != nil {
		return fmt.Errorf("keytool: %v: %s", err, out)
	}

	// Never in any process's output (phantom-authz has the first).
	for _, v := range []string{kcIntrospectorSecret, kcTPPSecret, kcAdminPassword, kcTrustPassword} {
		secrets.add(v)
	}

	port, mgmt := freePort(t), freePort(t)
	k.url = fmt.Sprintf("https://127.0.0.1:%d", port)
	k.issuer = k.url + "/realms/" + kcRealm
	args := []string{
		"start", "--optimized",
		"--hostname=" + k.url,
		"--http-enabled=false", "--http-host=127.0.0.1",
		fmt.Sprintf("--https-port=%d", port),
		"--https-certificate-file=" + server.certFile, "--https-certificate-key-file=" + server.keyFile,
		"--https-client-auth=request",
		"--https-trust-store-file=" + trust, "--https-trust-store-password=" + kcTrustPassword, "--https-trust-store-type=PKCS12",
		"--http-management-host=127.0.0.1", fmt.Sprintf("--http-management-port=%d", mgmt), "--http-management-scheme=http",
		"--cache=local",
	}
	// The watchdog: Keycloak (kc.sh, then Java) runs in the background of
	// a shell whose stdin is a pipe from this test binary. When the pipe
	// closes (stopKeycloak, or this binary dies however it dies), the shell
	// stops Keycloak: no Java process outlives the run.
	// (A background job's stdin is /dev/null unless redirected: hence fd 3.)
	const watchdog = `exec 3<&0
"$@" </dev/null 3<&- &
kc=$!
(read -r _ <&3; kill -TERM "$kc" 2>/dev/null) &
exec 3<&-
wait "$kc"`
	k.logPath = filepath.Join(dir, "keycloak.log")
	logFile, err := os.Create(k.logPath)
	if err != nil {
		return err
	}
	k.cmd = exec.Command("/bin/sh", append([]string{"-c", watchdog, "keycloak-watchdog", bin}, args...)...)
	k.cmd.Env = append(os.Environ(),
		"KEYCLOAK_INSTANCE_DIR="+filepath.Join(dir, "home"),
		"KC_BOOTSTRAP_ADMIN_USERNAME="+kcAdminUser, "KC_BOOTSTRAP_ADMIN_PASSWORD="+kcAdminPassword)
	k.cmd.Stdout, k.cmd.Stderr = logFile, logFile
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if k.stdin, err = k.cmd.StdinPipe(); err != nil {
		return err
	}
	start := time.Now()
	if err := k.cmd.Start(); err != nil {
		logFile.Close()
		os.RemoveAll(dir)
		return fmt.Errorf("start keycloak: %v", err)
	}
	go func() {
		k.waitErr = k.cmd.Wait()
		logFile.Close()
		close(k.done)
	}()
	kc.server = k // stopped by TestMain even if what follows fails

	// The first start of a fresh install takes a minute or more on two busy
	// cores; give it plenty.
	k.waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/health/ready", mgmt), 5*time.Minute)
	k.startup = time.Since(start)
	start = time.Now()
	if err := k.configureRealm(); err != nil {
		return fmt.Errorf("keycloak: configuring the realm: %w\n%s", err, k.tail(20))
	}
	k.configure = time.Since(start)
	return nil
}

// findKeytool finds the JDK's keytool: on PATH, else in any JDK under
// /usr/lib/jvm.
func findKeytool() (string, error) {
	if p, err := exec.LookPath("keytool"); err == nil {
		return p, nil
	}
	if found, _ := filepath.Glob("/usr/lib/jvm/*/bin/keytool"); len(found) > 0 {
		return found[len(found)-1], nil
	}
	return "", errors.New("keycloak: keytool (from a JDK) not found on PATH or under /usr/lib/jvm")
}

// stop closes the watchdog's pipe, which stops Keycloak; after 60 s the
// process group is killed.
func (k *keycloakServer) stopAll() {
	_ = k.stdin.Close()
	select {
	case <-k.done:
	case <-time.After(60 * time.Second):
		fmt.Fprintln(os.Stderr, "e2e: keycloak did not stop within 60s; killing it")
	}
	_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL) // the watchdog's reader, anything left
	select {
	case <-k.done:
	case <-time.After(10 * time.Second):
	}
	os.RemoveAll(k.dir)
}

// httpClient trusts the test CA and presents cert (none when nil).
func (k *keycloakServer) httpClient(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: k.ca.pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// ---------------------------------------------------------------- the realm

// configureRealm creates the realm through the admin REST API: client
// scopes read and write (in the token's scope), phantom-api (an audience
// mapper putting phantom-authz in aud, for introspection), the TPP clients
// and phantom-authz's introspecting client.
func (k *keycloakServer) configureRealm() error {
	admin, err := k.adminToken()
	if err != nil {
		return err
	}
	do := func(method, path string, body any) error {
		return k.admin(admin, method, path, body)
	}
	if err := do("POST", "/admin/realms", map[string]any{
		"realm": kcRealm, "enabled": true, "accessTokenLifespan": 300,
	}); err != nil {
		return err
	}
	scopes := []map[string]any{
		{"name": "read", "protocol": "openid-connect", "attributes": map[string]any{"include.in.token.scope": "true"}},
		{"name": "write", "protocol": "openid-connect", "attributes": map[string]any{"include.in.token.scope": "true"}},
		{"name": "phantom-api", "protocol": "openid-connect", "attributes": map[string]any{"include.in.token.scope": "false"},
			"protocolMappers": []any{map[string]any{
				"name": "audience phantom-authz", "protocol": "openid-connect", "protocolMapper": "oidc-audience-mapper",
				"config": map[string]any{
					"included.client.audience": kcIntrospector, "access.token.claim": "true", "introspection.token.claim": "true",
				},
			}}},
	}
	for _, s := range scopes {
		if err := do("POST", "/admin/realms/"+kcRealm+"/client-scopes", s); err != nil {
			return err
		}
	}
	tpp := func(id string, attrs map[string]any) map[string]any {
		attrs["access.token.header.type.rfc9068"] = "true"
		return map[string]any{
			"clientId": id, "secret": kcTPPSecret, "publicClient": false, "protocol": "openid-connect",
			"clientAuthenticatorType": "client-secret",
			"standardFlowEnabled":     false, "directAccessGrantsEnabled": false, "serviceAccountsEnabled": true,
			"defaultClientScopes": []string{"basic", "phantom-api", "read", "write"},
			"attributes":          attrs,
		}
	}
	mtls := tpp(kcMTLS, map[string]any{
		"x509.subjectdn": "CN=" + kcMTLSSubject, "x509.allow.regex.pattern.comparison": "false",
		"tls.client.certificate.bound.access.tokens": "true",
	})
	mtls["clientAuthenticatorType"] = "client-x509"
	delete(mtls, "secret")
	clients := []map[string]any{
		tpp(kcTPP, map[string]any{"client_credentials.use_refresh_token": "true"}),
		tpp(kcLight, map[string]any{"client.use.lightweight.access.token.enabled": "true"}),
		tpp(kcDPoP, map[string]any{"dpop.bound.access.tokens": "true"}),
		mtls,
		{
			"clientId": kcIntrospector, "secret": kcIntrospectorSecret, "publicClient": false, "protocol": "openid-connect",
			"clientAuthenticatorType": "client-secret",
			"standardFlowEnabled":     false, "directAccessGrantsEnabled": false, "serviceAccountsEnabled": false,
			"attributes": map[string]any{"client.introspection.response.allow.jwt.claim.enabled": "true"},
		},
		{
			"clientId": kcIntrospectorAnyAud, "secret": kcIntrospectorSecret, "publicClient": false, "protocol": "openid-connect",
			"clientAuthenticatorType": "client-secret",
			"standardFlowEnabled":     false, "directAccessGrantsEnabled": false, "serviceAccountsEnabled": false,
			"attributes": map[string]any{
				"client.introspection.response.allow.jwt.claim.enabled": "true",
				"allow.token.introspection.without.audience.check":      "true",
			},
		},
	}
	for _, c := range clients {
		if err := do("POST", "/admin/realms/"+kcRealm+"/clients", c); err != nil {
			return err
		}
	}
	return nil
}

// adminToken signs in to the master realm as the bootstrap admin.
func (k *keycloakServer) adminToken() (string, error) {
	resp, err := k.httpClient(nil).PostForm(k.url+"/realms/master/protocol/openid-connect/token", url.Values{
		"grant_type": {"password"}, "client_id": {"admin-cli"},
		"username": {kcAdminUser}, "password": {kcAdminPassword},
	})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &out) != nil || out.AccessToken == "" {
		return "", fmt.Errorf("admin sign-in: %d %s", resp.StatusCode, b)
	}
	return out.AccessToken, nil
}

// admin sends one admin REST call; any answer but 2xx is an error.
func (k *keycloakServer) admin(token, method, path string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(method, k.url+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := k.httpClient(nil).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, msg)
	}
	return nil
}

// ---------------------------------------------------------------- tokens

// kcTokens is a token endpoint answer.
type kcTokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
}

// tokenEndpoint is the realm's token endpoint, also the htu of a DPoP proof
// sent to it.
func (k *keycloakServer) tokenEndpoint() string {
	return k.issuer + "/protocol/openid-connect/token"
}

// clientCredentials gets tokens for client by the client-credentials grant:
// with the shared secret, or with cert (tls_client_auth) when cert is set;
// dpop, when set, is the DPoP proof sent along.
func (k *keycloakServer) clientCredentials(t *testing.T, client string, cert *tls.Certificate, dpop string) kcTokens {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}}
	if cert != nil {
		form.Set("client_id", client)
	}
	req, _ := http.NewRequest(http.MethodPost, k.tokenEndpoint(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if cert == nil {
		req.SetBasicAuth(client, kcTPPSecret)
	}
	if dpop != "" {
		req.Header.Set("DPoP", dpop)
	}
	var out kcTokens
	k.do(t, k.httpClient(cert), req, &out)
	if out.AccessToken == "" {
		t.Fatalf("keycloak: no access token for %s", client)
	}
	secrets.add(out.AccessToken)
	if out.RefreshToken != "" {
		secrets.add(out.RefreshToken)
	}
	return out
}

// introspect asks Keycloak about tok as phantom-authz's client does, with
// the Accept header (none when "").
func (k *keycloakServer) introspect(t *testing.T, tok, accept string) map[string]any {
	t.Helper()
	return k.introspectAs(t, kcIntrospector, tok, accept)
}

// introspectAs asks Keycloak about tok as the introspecting client.
func (k *keycloakServer) introspectAs(t *testing.T, client, tok, accept string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, k.issuer+"/protocol/openid-connect/token/introspect",
		strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	req.SetBasicAuth(client, kcIntrospectorSecret)
	var out map[string]any
	k.do(t, k.httpClient(nil), req, &out)
	return out
}

// revoke revokes tok (RFC 7009) as client.
func (k *keycloakServer) revoke(t *testing.T, client, tok string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, k.issuer+"/protocol/openid-connect/revoke",
		strings.NewReader(url.Values{"token": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client, kcTPPSecret)
	k.do(t, k.httpClient(nil), req, nil)
}

func (k *keycloakServer) do(t *testing.T, client *http.Client, req *http.Request, out any) {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("keycloak: %s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("keycloak: %s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("keycloak: %s: %v: %s", req.URL.Path, err, b)
		}
	}
}
