package token

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// introspector asks the OAuth server about opaque tokens (RFC 7662).
type introspector struct {
	cfg    IntrospectionConfig
	where  string // the endpoint as it may be logged
	client *http.Client
	now    func() time.Time
	log    *slog.Logger
	stats  *counters
	shared *interner
	// tracer (nil: no spans) and duration (nil: not recorded) report each call.
	tracer   trace.Tracer
	duration metric.Float64Histogram

	// private_key_jwt
	key    jwk.Key
	keyAlg jwa.SignatureAlgorithm

	// rfc9701 and keycloak: the keys that sign the answers
	keys *keySet
	// meta, when the endpoint is not configured, names it (discovery).
	meta *metadata

	// guard bounds the calls in flight and trips on repeated failures.
	guard *guard
}

// Accept headers per response mode.
var acceptHeader = map[string]string{
	ResponseJSON:    "application/json",
	ResponseJWT:     "application/jwt",
	ResponseRFC9701: "application/token-introspection+jwt",
	// Exactly this, or Keycloak leaves the jwt field out.
	ResponseKeycloak: "application/jwt",
}

// rfc9701Algorithms: RFC 9701 signs with the server's asymmetric keys; its
// default is RS256, so all asymmetric algorithms are accepted.
var rfc9701Algorithms, _ = newAlgSet("introspection", asymmetricAlgorithms)

// loadClientKey reads the private_key_jwt signing key and checks that it can
// sign with the configured (or inferred) algorithm.
func (in *introspector) loadClientKey() error {
	data, err := os.ReadFile(in.cfg.PrivateKeyFile)
	if err != nil {
		return fmt.Errorf("token: introspection.private_key_file: %w", err)
	}
	var key jwk.Key
	if bytes.Contains(data, []byte("-----BEGIN")) {
		key, err = jwk.ParseKey(data, jwk.WithPEM(true))
	} else {
		key, err = jwk.ParseKey(data)
	}
	if err != nil {
		return fmt.Errorf("token: introspection.private_key_file: not a PEM or JWK private key")
	}
	if private, err := jwk.IsPrivateKey(key); err != nil || !private {
		return fmt.Errorf("token: introspection.private_key_file holds no private key")
	}
	if pub, err := jwk.PublicRawKeyOf(key); err == nil {
		if rk, ok := pub.(*rsa.PublicKey); ok && rk.N.BitLen() < minRSABits {
			return fmt.Errorf("token: introspection.private_key_file: RSA key of %d bits is too short (at least %d)", rk.N.BitLen(), minRSABits)
		}
	}
	name := in.cfg.PrivateKeyAlg
	if name == "" {
		if alg, ok := key.Algorithm(); ok {
			name = alg.String()
		} else {
			name = defaultKeyAlg(key)
		}
	}
	algs, err := newAlgSet("introspection.private_key_alg", []string{name})
	if err != nil {
		return err
	}
	in.key, in.keyAlg = key, algs[name]
	if in.cfg.PrivateKeyID == "" {
		in.cfg.PrivateKeyID, _ = key.KeyID()
	}
	if _, err := in.clientAssertion(in.cfg.Endpoint); err != nil {
		return fmt.Errorf("token: introspection.private_key_alg %s does not fit the key in private_key_file: %w", name, err)
	}
	return nil
}

func defaultKeyAlg(key jwk.Key) string {
	switch key.KeyType() {
	case jwa.RSA():
		return "RS256"
	case jwa.OKP():
		return "EdDSA"
	case jwa.EC():
		if crv, ok := key.(jwk.ECDSAPrivateKey); ok {
			if c, ok := crv.Crv(); ok {
				switch c {
				case jwa.P384():
					return "ES384"
				case jwa.P521():
					return "ES512"
				}
			}
		}
		return "ES256"
	}
	return ""
}

// clientAssertion is the RFC 7523 §2.2 JWT that authenticates us with
// private_key_jwt: iss = sub = client_id, aud = the endpoint (and the
// issuer when configured), a fresh jti, valid for 60s.
func (in *introspector) clientAssertion(endpoint string) (string, error) {
	now := in.now()
	var jti [16]byte
	_, _ = rand.Read(jti[:])
	aud := []string{endpoint}
	if in.cfg.Issuer != "" {
		aud = append(aud, in.cfg.Issuer)
	}
	payload, err := json.Marshal(map[string]any{
		"iss": in.cfg.ClientID,
		"sub": in.cfg.ClientID,
		"aud": aud,
		"jti": base64.RawURLEncoding.EncodeToString(jti[:]),
		"iat": now.Unix(),
		"exp": now.Add(60 * time.Second).Unix(),
	})
	if err != nil {
		return "", err
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.TypeKey, "JWT")
	if in.cfg.PrivateKeyID != "" {
		_ = hdr.Set(jws.KeyIDKey, in.cfg.PrivateKeyID)
	}
	signed, err := jws.Sign(payload, jws.WithKey(in.keyAlg, in.key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", err
	}
	return string(signed), nil
}

// introspect asks about raw. It returns ErrInactive for a token the server
// does not vouch for and an error wrapping ErrUnavailable when the server
// cannot be asked or answers nonsense; the error never holds the token.
//
// The guard may refuse the call before it is made (breaker open, no free
// place within the timeout): that is counted by the guard, not as an
// introspection, and not logged per call.
func (in *introspector) introspect(ctx context.Context, raw string) (*Token, error) {
	done, err := in.guard.enter(ctx)
	if err != nil {
		return nil, err
	}
	// A panic below (load recovers it) must still give back the place and,
	// when this call is the half-open breaker's probe, report it: a failure.
	// Held, max_concurrent panics would saturate introspection for good, and
	// one panicking probe would keep the breaker half-open, refusing every
	// call, until restart.
	ctx, span := startSpan(in.tracer, ctx, "token.introspect")
	reported := false
	defer func() {
		if !reported {
			done(errPanicked)
			endSpan(span, errPanicked)
		}
	}()
	start := time.Now()
	tok, err := in.do(ctx, raw)
	reported = true
	done(err)
	if in.duration != nil {
		in.duration.Record(ctx, time.Since(start).Seconds(), introspectionOutcomes[outcome(err)])
	}
	if span.IsRecording() {
		span.SetAttributes(attrOutcome.String(outcome(err)), attrResponse.String(in.cfg.Response))
	}
	endSpan(span, err)
	switch {
	case err == nil:
		in.stats.introActive.Add(1)
	case errors.Is(err, ErrInactive), errors.Is(err, ErrInvalid):
		// The server answered about this token: not a failure.
		in.stats.introInactive.Add(1)
	default:
		in.stats.introFailed.Add(1)
		in.log.WarnContext(ctx, "token: introspection failed", "endpoint", in.where, "err", err)
	}
	return tok, err
}

func (in *introspector) do(ctx context.Context, raw string) (*Token, error) {
	ctx, cancel := context.WithTimeout(ctx, in.cfg.Timeout)
	defer cancel()

	endpoint := in.cfg.Endpoint
	if endpoint == "" && in.meta != nil {
		md, err := in.meta.get(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: introspection: %v", ErrUnavailable, err)
		}
		if endpoint = md.introspection; endpoint == "" {
			return nil, fmt.Errorf("%w: introspection: the metadata of %s names no introspection_endpoint", ErrUnavailable, in.meta.issuer)
		}
	}
	form := url.Values{"token": {raw}}
	if in.cfg.TokenTypeHint != "" {
		form.Set("token_type_hint", in.cfg.TokenTypeHint)
	}
	switch in.cfg.AuthMethod {
	case AuthClientSecretPost:
		form.Set("client_id", in.cfg.ClientID)
		form.Set("client_secret", in.cfg.ClientSecret)
	case AuthPrivateKeyJWT:
		assertion, err := in.clientAssertion(endpoint)
		if err != nil {
			return nil, fmt.Errorf("%w: introspection: signing the client assertion: %v", ErrUnavailable, err)
		}
		form.Set("client_id", in.cfg.ClientID)
		form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		form.Set("client_assertion", assertion)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("%w: introspection: %v", ErrUnavailable, scrubURL(err, in.where))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", acceptHeader[in.cfg.Response])
	req.Header.Set("User-Agent", userAgent)
	if in.cfg.AuthMethod == AuthClientSecretBasic {
		// RFC 6749 §2.3.1: form-encode both before joining them.
		cred := url.QueryEscape(in.cfg.ClientID) + ":" + url.QueryEscape(in.cfg.ClientSecret)
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(cred)))
	}

	resp, err := in.client.Do(req)
	if err != nil {
		// *url.Error names the endpoint and the cause; the token is in the body.
		return nil, fmt.Errorf("%w: introspection: %v", ErrUnavailable, scrubURL(err, in.where))
	}
	defer drainClose(resp.Body)
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNoContent:
		if in.cfg.Response == ResponseJWT {
			return nil, ErrInactive
		}
		return nil, fmt.Errorf("%w: introspection: unexpected status 204", ErrUnavailable)
	case http.StatusBadRequest:
		return nil, badRequest(resp)
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("%w: introspection: the OAuth server refused our client credentials (status %d)", ErrUnavailable, resp.StatusCode)
	default:
		return nil, fmt.Errorf("%w: introspection: unexpected status %d", ErrUnavailable, resp.StatusCode)
	}
	body, err := readBody(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: introspection: %v", ErrUnavailable, err)
	}
	ct := mediaType(resp.Header)
	var tok *Token
	switch {
	case ct == "application/json" && in.cfg.Response == ResponseKeycloak:
		tok, err = in.fromKeycloak(ctx, body)
	case ct == "application/json":
		// Also the answer of jwt and rfc9701 servers for an inactive token.
		tok, err = in.fromJSON(body, in.cfg.Response == ResponseJSON)
	case ct == "application/jwt" && in.cfg.Response == ResponseJWT:
		tok, err = in.fromJWT(body)
	case ct == "application/token-introspection+jwt" && in.cfg.Response == ResponseRFC9701:
		tok, err = in.fromRFC9701(ctx, body)
	default:
		return nil, fmt.Errorf("%w: introspection: unexpected content type %q", ErrUnavailable, ct)
	}
	if err != nil && !errors.Is(err, ErrInactive) && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnavailable) {
		err = fmt.Errorf("%w: introspection: %v", ErrUnavailable, err)
	}
	return tok, err
}

// badRequest reads a 400 answer. RFC 7662 servers answer 400 with
// invalid_request or invalid_token about a token they cannot parse (a junk
// string): that token is invalid (401 for its client), and the breaker does
// not count it, so junk cannot open it for everyone. Any other 400 says
// something is wrong with our requests: a failure, as unexpected statuses are.
func badRequest(resp *http.Response) error {
	var answer struct {
		Error string `json:"error"`
	}
	if body, err := readBody(resp.Body); err == nil && mediaType(resp.Header) == "application/json" &&
		json.Unmarshal(body, &answer) == nil {
		switch answer.Error {
		case "invalid_request", "invalid_token":
			return fmt.Errorf("%w: introspection: the OAuth server refused the token (400 %s)", ErrInvalid, answer.Error)
		}
	}
	return fmt.Errorf("%w: introspection: unexpected status 400", ErrUnavailable)
}

// fromJSON reads an RFC 7662 answer. When activeAllowed is false (the server
// was asked for a JWT) only an inactive answer is acceptable in JSON.
func (in *introspector) fromJSON(body []byte, activeAllowed bool) (*Token, error) {
	var claims map[string]any
	if err := decodeObject(body, &claims); err != nil {
		return nil, fmt.Errorf("answer: %w", err)
	}
	tok, err := in.fromIntrospection(claims, body)
	if err == nil && !activeAllowed {
		return nil, errors.New("an active token answered in JSON where a JWT was asked for")
	}
	return tok, err
}

// fromKeycloak reads Keycloak's answer to Accept: application/jwt: RFC 7662
// JSON plus, with the client attribute
// client.introspection.response.allow.jwt.claim.enabled, a "jwt" field
// holding the token's claims signed with the realm's key. Keycloak sends
// that field for inactive tokens too (a refresh token refused for its
// audience comes with a well-signed jwt of typ Refresh), so it is read only
// after active is true and the answer passed every check, and forwarded
// only once it verifies: the realm's key, iss, exp, an access token, and
// the same token as the answer (jti, sub, exp). Without it the JWT
// is minted, as in json mode.
func (in *introspector) fromKeycloak(ctx context.Context, body []byte) (*Token, error) {
	var claims map[string]any
	if err := decodeObject(body, &claims); err != nil {
		return nil, fmt.Errorf("answer: %w", err)
	}
	signed, hasJWT := claims["jwt"]
	delete(claims, "jwt") // the policy sees the claims, not a copy of them as a JWT
	tok, err := in.fromIntrospection(claims, nil)
	if err != nil || !hasJWT {
		return tok, err
	}
	raw, ok := signed.(string)
	if !ok {
		return nil, errors.New("answer's jwt field is not a string")
	}
	c, err := parseCompact(raw)
	if err != nil {
		return nil, fmt.Errorf("answer's jwt field is not a JWT: %w", err)
	}
	if err := checkTyp(c.header.Typ); err != nil {
		return nil, fmt.Errorf("%w: introspection: jwt field: %v", ErrInvalid, err)
	}
	if err := in.keys.verify(ctx, c, rfc9701Algorithms); err != nil {
		if errors.Is(err, errNoKeys) {
			return nil, fmt.Errorf("%w: introspection: jwt field: %v", ErrUnavailable, err)
		}
		return nil, fmt.Errorf("answer's jwt field: %w", err)
	}
	if iss, _ := c.claims["iss"].(string); iss != in.cfg.Issuer {
		return nil, fmt.Errorf("answer's jwt field issued by %.100q, expected %q", iss, in.cfg.Issuer)
	}
	if err := checkAnswer(c.claims); err != nil {
		return nil, fmt.Errorf("%w: introspection: jwt field: %v", ErrInvalid, err)
	}
	exp, ok, err := numericDate(c.claims, "exp")
	switch {
	case err != nil:
		return nil, fmt.Errorf("answer's jwt field: %w", err)
	case !ok:
		return nil, errors.New("answer's jwt field has no exp")
	case !in.now().Before(exp):
		return nil, errors.New("answer's jwt field has expired")
	}
	// jti, sub and exp: Keycloak leaves client_id out of the field for
	// tokens of transient sessions (azp holds the client there).
	for _, name := range [...]string{"jti", "sub", "exp"} {
		if fmt.Sprint(c.claims[name]) != fmt.Sprint(claims[name]) {
			return nil, fmt.Errorf("answer's jwt field is about another token (%s differs)", name)
		}
	}
	tok.JWT, tok.JWTExpiry = raw, exp
	return tok, nil
}

// fromIntrospection builds the Token of an RFC 7662 answer object; body is
// the JSON it was decoded from, unchanged (nil: none), which the Token keeps
// as its claims.
func (in *introspector) fromIntrospection(claims map[string]any, body []byte) (*Token, error) {
	active, ok := claims["active"].(bool)
	if !ok {
		return nil, errors.New("answer has no boolean active")
	}
	if !active {
		return nil, ErrInactive
	}
	if err := in.checkClaims(claims); err != nil {
		return nil, err
	}
	tok, err := in.shared.newToken(KindOpaque, claims, claimsSource{json: body})
	if err == nil {
		tok.Issuer = in.cfg.Issuer
	}
	return tok, err
}

// checkClaims refuses, as invalid, an active answer that is not about an
// access token for us: another use (a refresh token), or, with
// introspection.audiences, another resource server (RFC 9700 §2.3).
func (in *introspector) checkClaims(claims map[string]any) error {
	if err := checkAnswer(claims); err != nil {
		return fmt.Errorf("%w: introspection: %v", ErrInvalid, err)
	}
	if len(in.cfg.Audiences) > 0 && !hasAudience(claims, in.cfg.Audiences...) {
		return fmt.Errorf("%w: introspection: %v", ErrInvalid, errNoAudience)
	}
	return nil
}

// fromJWT reads the phantom-token answer: the JWT to forward. It came from
// the OAuth server over the authenticated channel, so it is decoded, not
// verified (the upstream verifies it), but it must be well formed.
func (in *introspector) fromJWT(body []byte) (*Token, error) {
	jwt := string(bytes.TrimSpace(body))
	c, err := parseCompact(jwt)
	if err != nil {
		return nil, fmt.Errorf("answer is not a JWT: %w", err)
	}
	if c.header.Alg == "none" {
		return nil, errors.New("answer is an unsigned JWT")
	}
	if err := checkTyp(c.header.Typ); err != nil {
		return nil, fmt.Errorf("%w: introspection: %v", ErrInvalid, err)
	}
	if err := in.checkClaims(c.claims); err != nil {
		return nil, err
	}
	tok, err := in.shared.newToken(KindOpaque, c.claims, claimsSource{jwt: jwt})
	if err != nil {
		return nil, fmt.Errorf("answer JWT: %w", err)
	}
	tok.JWTExpiry, tok.Issuer = tok.Expiry, in.cfg.Issuer
	return tok, nil
}

// fromRFC9701 verifies a signed introspection answer (RFC 9701 §5) and reads
// its token_introspection object as a JSON answer.
func (in *introspector) fromRFC9701(ctx context.Context, body []byte) (*Token, error) {
	raw := string(bytes.TrimSpace(body))
	c, err := parseCompact(raw)
	if err != nil {
		return nil, fmt.Errorf("answer is not a JWT: %w", err)
	}
	if !typMatches(c.header.Typ, "token-introspection+jwt") {
		return nil, fmt.Errorf("answer typ %q is not token-introspection+jwt", c.header.Typ)
	}
	if err := in.keys.verify(ctx, c, rfc9701Algorithms); err != nil {
		return nil, fmt.Errorf("answer: %w", err)
	}
	if iss, _ := c.claims["iss"].(string); iss != in.cfg.Issuer {
		return nil, fmt.Errorf("answer issued by %q, expected %q", iss, in.cfg.Issuer)
	}
	if !hasAudience(c.claims, in.cfg.Audience) {
		return nil, fmt.Errorf("answer is not for audience %q", in.cfg.Audience)
	}
	exp, ok, err := numericDate(c.claims, "exp")
	if err != nil {
		return nil, fmt.Errorf("answer: %w", err)
	}
	if ok && !in.now().Before(exp.Add(maxSkew)) {
		return nil, errors.New("answer has expired")
	}
	obj, ok := c.claims["token_introspection"].(map[string]any)
	if !ok {
		return nil, errors.New("answer has no token_introspection object")
	}
	return in.fromIntrospection(obj, nil)
}

// errPanicked is what the guard is told of an introspection that panicked.
var errPanicked = fmt.Errorf("%w: introspection: internal error", ErrUnavailable)
