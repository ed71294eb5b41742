package authz_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/phantom-authz/phantom-authz/authz"
	"github.com/phantom-authz/phantom-authz/authz/credential"
	"github.com/phantom-authz/phantom-authz/authz/mint"
	"github.com/phantom-authz/phantom-authz/authz/token"
)

// decisionDecider answers d whatever the request.
type decisionDecider struct{ d authz.Decision }

func (f decisionDecider) Ready() bool { return true }
func (f decisionDecider) Decide(context.Context, *authz.Request, *token.Token) (authz.Decision, error) {
	return f.d, nil
}

// oneToken resolves every credential to the same cached token.
type oneToken struct{ tok *token.Token }

func (o oneToken) Resolve(context.Context, credential.Credential) (*token.Token, error) {
	return o.tok, nil
}

var fapiLog = slog.New(slog.DiscardHandler)

func TestStepUpChallenge(t *testing.T) {
	age := 300
	e, err := authz.New(authz.Config{Realm: "bank", Logger: fapiLog, Decider: decisionDecider{authz.Decision{
		Status: 401, Error: "insufficient_user_authentication", Detail: "A stronger authentication is required.",
		ACRValues: "urn:openbanking:psd2:sca urn:x", MaxAge: &age,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	d := e.Check(context.Background(), request(nil))
	want := `Bearer realm="bank", error="insufficient_user_authentication", error_description="A stronger authentication is required.", acr_values="urn:openbanking:psd2:sca urn:x", max_age="300"`
	if d.Allowed || d.Status != 401 || header(d, "www-authenticate") != want {
		t.Fatalf("status %d, www-authenticate %q\nwant %q", d.Status, header(d, "www-authenticate"), want)
	}
	var p map[string]any
	if err := json.Unmarshal([]byte(d.Body), &p); err != nil {
		t.Fatal(err)
	}
	if p["error"] != "insufficient_user_authentication" || p["acr_values"] != "urn:openbanking:psd2:sca urn:x" || p["max_age"] != float64(300) {
		t.Errorf("problem = %v", p)
	}

	// max_age 0 ("authenticate again now") is said, not dropped; no
	// acr_values is no acr_values parameter.
	zero := 0
	e, _ = authz.New(authz.Config{Realm: "bank", Logger: fapiLog, Decider: decisionDecider{authz.Decision{
		Status: 401, Error: "insufficient_user_authentication", MaxAge: &zero,
	}}})
	d = e.Check(context.Background(), request(nil))
	if got := header(d, "www-authenticate"); got != `Bearer realm="bank", error="insufficient_user_authentication", max_age="0"` {
		t.Errorf("www-authenticate %q", got)
	}
}

func TestInteractionID(t *testing.T) {
	allow := decisionDecider{authz.Decision{Allowed: true}}
	deny := decisionDecider{authz.Decision{Status: 403}}
	const sent = "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab"
	cases := []struct {
		name    string
		decider authz.Decider
		header  string // the client's, "" for none
		want    string // "" for a fresh UUID
	}{
		{"echoed on allow", allow, sent, sent},
		{"upper-case UUID echoed", allow, "6F1C2D3E-4A5B-4C6D-8E7F-0123456789AB", "6F1C2D3E-4A5B-4C6D-8E7F-0123456789AB"},
		{"generated when absent", allow, "", ""},
		{"replaced when not a UUID", allow, "hello\nworld", ""},
		{"replaced when a UUID without dashes", allow, "6f1c2d3e4a5b4c6d8e7f0123456789ab", ""},
		{"replaced when two were sent", allow, sent + "," + sent, ""},
		{"echoed on deny", deny, sent, sent},
		{"generated on deny", deny, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := authz.New(authz.Config{Decider: c.decider, InteractionID: true, Logger: fapiLog})
			if err != nil {
				t.Fatal(err)
			}
			h := map[string]string{}
			if c.header != "" {
				h["x-fapi-interaction-id"] = c.header
			}
			d := e.Check(context.Background(), request(h))
			got := header(d, "x-fapi-interaction-id")
			switch {
			case c.want != "" && got != c.want:
				t.Errorf("x-fapi-interaction-id %q, want %q", got, c.want)
			case c.want == "":
				if _, err := uuid.Parse(got); err != nil || len(got) != 36 || got == c.header {
					t.Errorf("x-fapi-interaction-id %q, want a fresh UUID", got)
				}
			}
			if d.Allowed {
				var resp string
				for _, h := range d.ResponseHeaders {
					if h.Key == "x-fapi-interaction-id" {
						resp = h.Value
					}
				}
				if resp != got {
					t.Errorf("response carries %q, upstream %q: the client and the API must see the same id", resp, got)
				}
			}
		})
	}

	e, _ := authz.New(authz.Config{Decider: allow, Logger: fapiLog})
	if d := e.Check(context.Background(), request(nil)); header(d, "x-fapi-interaction-id") != "" || len(d.ResponseHeaders) != 0 {
		t.Errorf("interaction id set while off: %+v", d)
	}
}

// sectorMinter mints "jwt-for-<sector>-<n>", counting.
type sectorMinter struct {
	n   atomic.Int32
	err error
	ttl time.Duration
}

func (m *sectorMinter) MintUpstream(tok *token.Token, up mint.Upstream) (string, time.Time, error) {
	sector := up.Sector
	if m.err != nil {
		return "", time.Time{}, m.err
	}
	n := m.n.Add(1)
	ttl := m.ttl
	if ttl == 0 {
		ttl = time.Minute
	}
	return "jwt-for-" + sector + "-" + string(rune('0'+n)), time.Now().Add(ttl), nil
}

func TestPairwiseSectors(t *testing.T) {
	bearerTok := map[string]string{"authorization": "Bearer opaque"}
	newTok := func() *token.Token {
		return &token.Token{Active: true, Kind: token.KindOpaque, Subject: "user-1", JWT: "plain-jwt"}
	}
	engine := func(tok *token.Token, m authz.UpstreamMinter, sectors map[string]string) *authz.Engine {
		cfg := authz.Config{Decider: decisionDecider{authz.Decision{Allowed: true}}, Resolver: oneToken{tok},
			PairwiseSectors: sectors, Logger: fapiLog}
		if m != nil {
			cfg.Upstream = m
		}
		e, err := authz.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	check := func(e *authz.Engine, ext map[string]string) authz.Decision {
		r := request(bearerTok)
		r.ContextExtensions = ext
		return e.Check(context.Background(), r)
	}

	t.Run("route sector, minted once per token and sector", func(t *testing.T) {
		m := &sectorMinter{}
		e := engine(newTok(), m, nil)
		for range 3 {
			if d := check(e, map[string]string{"pairwise_sector": "accounts.example"}); header(d, "authorization") != "Bearer jwt-for-accounts.example-1" {
				t.Fatalf("authorization %q", header(d, "authorization"))
			}
		}
		if d := check(e, map[string]string{"pairwise_sector": "payments.example"}); header(d, "authorization") != "Bearer jwt-for-payments.example-2" {
			t.Errorf("second sector: authorization %q", header(d, "authorization"))
		}
		if d := check(e, nil); header(d, "authorization") != "Bearer plain-jwt" {
			t.Errorf("no sector: authorization %q, want the token's JWT", header(d, "authorization"))
		}
		if m.n.Load() != 2 {
			t.Errorf("%d mints, want one per sector", m.n.Load())
		}
	})

	t.Run("configured sector by api", func(t *testing.T) {
		e := engine(newTok(), &sectorMinter{}, map[string]string{"accounts": "https://accounts.example"})
		if d := check(e, map[string]string{"api": "accounts"}); header(d, "authorization") != "Bearer jwt-for-https://accounts.example-1" {
			t.Errorf("authorization %q", header(d, "authorization"))
		}
		if d := check(e, map[string]string{"api": "other"}); header(d, "authorization") != "Bearer plain-jwt" {
			t.Errorf("other api: authorization %q", header(d, "authorization"))
		}
	})

	t.Run("expired sector JWT is minted again", func(t *testing.T) {
		m := &sectorMinter{ttl: 50 * time.Millisecond}
		e := engine(newTok(), m, nil)
		check(e, map[string]string{"pairwise_sector": "s"})
		check(e, map[string]string{"pairwise_sector": "s"})
		time.Sleep(60 * time.Millisecond)
		check(e, map[string]string{"pairwise_sector": "s"})
		if m.n.Load() != 2 {
			t.Errorf("%d mints, want an expired JWT replaced", m.n.Load())
		}
	})

	// The real subject never goes to an upstream that asks for a pairwise one.
	for name, m := range map[string]authz.UpstreamMinter{
		"pairwise not configured": nil,
		"minting fails":           &sectorMinter{err: errors.New("mint: boom")},
	} {
		t.Run(name, func(t *testing.T) {
			d := check(engine(newTok(), m, nil), map[string]string{"pairwise_sector": "s"})
			if d.Allowed || d.Status != 503 || header(d, "authorization") != "" {
				t.Errorf("got allowed=%v status=%d authorization=%q, want 503", d.Allowed, d.Status, header(d, "authorization"))
			}
		})
	}
}
