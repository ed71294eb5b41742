package credential_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz/credential"
)

func TestFromHeaders(t *testing.T) {
	long := strings.Repeat("a", credential.MaxTokenBytes)
	type want struct {
		cred credential.Credential
		err  error // ErrMissing or ErrInvalidRequest; nil for success
	}
	bearer := func(tok string) want {
		return want{cred: credential.Credential{Scheme: credential.SchemeBearer, Token: tok}}
	}
	dpop := func(tok, proof string) want {
		return want{cred: credential.Credential{Scheme: credential.SchemeDPoP, Token: tok, Proof: proof}}
	}
	missing := want{err: credential.ErrMissing}
	invalid := want{err: credential.ErrInvalidRequest}
	auth := func(v string) map[string]string { return map[string]string{"authorization": v} }

	tests := []struct {
		name    string
		headers map[string]string
		raw     [][2]string
		path    string
		want    want
	}{
		// Accepted.
		{"bearer", auth("Bearer abc"), nil, "/", bearer("abc")},
		{"scheme lower case", auth("bearer abc"), nil, "/", bearer("abc")},
		{"scheme upper case", auth("BEARER abc"), nil, "/", bearer("abc")},
		{"scheme mixed case", auth("bEaReR abc"), nil, "/", bearer("abc")},
		{"every b64token character", auth("Bearer AZaz09-._~+/=="), nil, "/", bearer("AZaz09-._~+/==")},
		{"jwt", auth("Bearer eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"), nil, "/", bearer("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")},
		{"token at the size limit", auth("Bearer " + long), nil, "/", bearer(long)},
		{"dpop", map[string]string{"authorization": "DPoP tok", "dpop": "h.p.s"}, nil, "/", dpop("tok", "h.p.s")},
		{"dpop lower case", map[string]string{"authorization": "dpop tok", "dpop": "h.p.s"}, nil, "/", dpop("tok", "h.p.s")},
		{"bearer ignores a dpop header", map[string]string{"authorization": "Bearer tok", "dpop": "h.p.s"}, nil, "/", bearer("tok")},
		{"raw only", nil, [][2]string{{":path", "/"}, {"authorization", "Bearer abc"}}, "/", bearer("abc")},
		{"raw and map agree", auth("Bearer abc"), [][2]string{{"authorization", "Bearer abc"}}, "/", bearer("abc")},
		{"raw key case", nil, [][2]string{{"Authorization", "Bearer abc"}}, "/", bearer("abc")},
		{"raw dpop", nil, [][2]string{{"authorization", "DPoP tok"}, {"DPoP", "h.p.s"}}, "/", dpop("tok", "h.p.s")},
		{"raw empty but map set", auth("Bearer abc"), [][2]string{}, "/", bearer("abc")},
		{"access_token as a value", auth("Bearer abc"), nil, "/p?q=access_token&x=access_token=1", bearer("abc")},
		{"longer parameter name", auth("Bearer abc"), nil, "/p?access_token_hint=1&my_access_token=2", bearer("abc")},
		{"other spelling", auth("Bearer abc"), nil, "/p?access-token=1&accesstoken=2&Access_Token=3", bearer("abc")},
		{"access_token in the path", auth("Bearer abc"), nil, "/access_token/x", bearer("abc")},
		{"access_token in the fragment", auth("Bearer abc"), nil, "/p?a=1#access_token=x", bearer("abc")},
		{"empty query", auth("Bearer abc"), nil, "/p?", bearer("abc")},
		{"bad escape elsewhere", auth("Bearer abc"), nil, "/p?a%zz=1&%=2", bearer("abc")},

		// No credential: a bare challenge.
		{"nil headers", nil, nil, "/", missing},
		{"no authorization", map[string]string{"x-api-key": "k"}, nil, "/", missing},
		{"raw without authorization", nil, [][2]string{{"host", "x"}}, "/", missing},
		{"basic", auth("Basic dXNlcjpwYXNz"), nil, "/", missing},
		{"negotiate", auth("Negotiate YIIB"), nil, "/", missing},
		{"scheme alone", auth("Basic"), nil, "/", missing},
		{"token without scheme", auth("abcdef"), nil, "/", missing},
		{"scheme prefix", auth("Bear abc"), nil, "/", missing},
		{"scheme with suffix", auth("Bearerx abc"), nil, "/", missing},
		{"scheme with colon", auth("Bearer: abc"), nil, "/", missing},
		{"non-ascii scheme", auth("Bearér abc"), nil, "/", missing},

		// The query string.
		{"query token alone", nil, nil, "/p?access_token=abc", invalid},
		{"query token with header", auth("Bearer abc"), nil, "/p?access_token=abc", invalid},
		{"query token later", nil, nil, "/p?a=1&access_token=abc", invalid},
		{"query token without value", nil, nil, "/p?access_token", invalid},
		{"query token empty value", nil, nil, "/p?access_token=", invalid},
		{"query token semicolon", nil, nil, "/p?a=1;access_token=abc", invalid},
		{"query token encoded underscore", nil, nil, "/p?access%5Ftoken=abc", invalid},
		{"query token encoded lower hex", nil, nil, "/p?access%5ftoken=abc", invalid},
		{"query token all encoded", nil, nil, "/p?%61%63%63%65%73%73%5F%74%6F%6B%65%6E=abc", invalid},
		{"query token after empty pairs", nil, nil, "/p?&&;access_token=abc", invalid},
		{"query token with absolute url", nil, nil, "https://api.example/p?access_token=abc", invalid},

		// Malformed header.
		{"empty header", auth(""), nil, "/", invalid},
		{"empty raw header", nil, [][2]string{{"authorization", ""}}, "/", invalid},
		{"scheme without token", auth("Bearer"), nil, "/", invalid},
		{"dpop without token", map[string]string{"authorization": "DPoP", "dpop": "p"}, nil, "/", invalid},
		{"scheme and space", auth("Bearer "), nil, "/", invalid},
		{"two spaces", auth("Bearer  abc"), nil, "/", invalid},
		{"only spaces after scheme", auth("Bearer   "), nil, "/", invalid},
		{"leading space", auth(" Bearer abc"), nil, "/", invalid},
		{"only a space", auth(" "), nil, "/", invalid},
		{"tab", auth("Bearer\tabc"), nil, "/", invalid},
		{"tab after space", auth("Bearer \tabc"), nil, "/", invalid},
		{"cr lf", auth("Bearer abc\r\nX-Injected: 1"), nil, "/", invalid},
		{"lf", auth("Bearer a\nb"), nil, "/", invalid},
		{"nul", auth("Bearer abc\x00"), nil, "/", invalid},
		{"del", auth("Bearer abc\x7f"), nil, "/", invalid},
		{"control in other scheme", auth("Basic a\r\nb"), nil, "/", invalid},
		{"trailing space", auth("Bearer abc "), nil, "/", invalid},
		{"inner space", auth("Bearer abc def"), nil, "/", invalid},
		{"padding only", auth("Bearer ==="), nil, "/", invalid},
		{"leading padding", auth("Bearer =abc"), nil, "/", invalid},
		{"padding inside", auth("Bearer ab=c"), nil, "/", invalid},
		{"quote", auth(`Bearer ab"c`), nil, "/", invalid},
		{"percent", auth("Bearer ab%41c"), nil, "/", invalid},
		{"backslash", auth(`Bearer ab\c`), nil, "/", invalid},
		{"colon", auth("Bearer ab:c"), nil, "/", invalid},
		{"semicolon", auth("Bearer ab;c"), nil, "/", invalid},
		{"non-ascii", auth("Bearer tök"), nil, "/", invalid},
		{"invalid utf-8", auth("Bearer \xff\xfe"), nil, "/", invalid},
		{"comma in raw", nil, [][2]string{{"authorization", "Bearer a,b"}}, "/", invalid},
		{"token over the limit", auth("Bearer " + long + "a"), nil, "/", invalid},
		{"huge token with bad characters", auth("Bearer " + strings.Repeat("\"", 1<<16)), nil, "/", invalid},

		// Several credentials.
		{"joined headers", auth("Bearer a,Bearer b"), nil, "/", invalid},
		{"joined with space", auth("Bearer a, Bearer b"), nil, "/", invalid},
		{"joined with basic", auth("Basic x,Bearer b"), nil, "/", invalid},
		{"two raw headers", nil, [][2]string{{"authorization", "Bearer a"}, {"authorization", "Bearer a"}}, "/", invalid},
		{"two raw headers, one empty", nil, [][2]string{{"authorization", "Bearer a"}, {"authorization", ""}}, "/", invalid},
		{"two raw headers of two cases", nil, [][2]string{{"Authorization", "Bearer a"}, {"authorization", "Basic b"}}, "/", invalid},
		{"raw and map disagree", auth("Bearer a"), [][2]string{{"authorization", "Bearer b"}}, "/", invalid},

		// DPoP proof header.
		{"dpop without proof", auth("DPoP tok"), nil, "/", invalid},
		{"dpop with empty proof", map[string]string{"authorization": "DPoP tok", "dpop": ""}, nil, "/", invalid},
		{"dpop with joined proofs", map[string]string{"authorization": "DPoP tok", "dpop": "a.b.c,d.e.f"}, nil, "/", invalid},
		{"dpop with two raw proofs", nil, [][2]string{{"authorization", "DPoP tok"}, {"dpop", "a.b.c"}, {"dpop", "a.b.c"}}, "/", invalid},
		{"dpop raw and map disagree", map[string]string{"authorization": "DPoP tok", "dpop": "a.b.c"}, [][2]string{{"authorization", "DPoP tok"}, {"dpop", "d.e.f"}}, "/", invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := credential.FromHeaders(tt.headers, tt.raw, tt.path)
			if tt.want.err == nil {
				if err != nil {
					t.Fatalf("FromHeaders: %v", err)
				}
				if got != tt.want.cred {
					t.Fatalf("FromHeaders = %+v, want %+v", got, tt.want.cred)
				}
				return
			}
			if !errors.Is(err, tt.want.err) {
				t.Fatalf("FromHeaders error = %v, want %v", err, tt.want.err)
			}
			if got != (credential.Credential{}) {
				t.Errorf("FromHeaders returned %+v with its error", got)
			}
			// The engine shows the text after the last ": " to the client.
			var ce *credential.Error
			if !errors.As(err, &ce) || ce.Reason == "" || strings.Contains(ce.Reason, ": ") {
				t.Errorf("error %q does not end in a client-facing reason", err)
			}
			if !strings.HasSuffix(err.Error(), ": "+ce.Reason) {
				t.Errorf("error %q does not end with its reason %q", err, ce.Reason)
			}
		})
	}
}

// BenchmarkFromHeaders reads a typical Envoy header map: a handful of headers
// and a query string, the shape of every request on the hot path.
func BenchmarkFromHeaders(b *testing.B) {
	headers := map[string]string{
		":authority":      "api.example.com",
		":method":         "GET",
		":path":           "/v1/orders?page=2&sort=desc",
		"accept":          "application/json",
		"authorization":   "Bearer _0XBPWQQ_2a7d9f8e-6c1b-4a3e-9f5d-8b7c6a5d4e3f",
		"user-agent":      "bench/1.0",
		"x-forwarded-for": "203.0.113.7",
		"x-request-id":    "5f1c8e0a-2b3d-4c5e-8f9a-0b1c2d3e4f5a",
	}
	path := headers[":path"]
	b.Run("bearer", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := credential.FromHeaders(headers, nil, path); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		raw := make([][2]string, 0, len(headers))
		for k, v := range headers {
			raw = append(raw, [2]string{k, v})
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := credential.FromHeaders(nil, raw, path); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("invalid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := credential.FromHeaders(headers, nil, "/v1/orders?access_token=x"); err == nil {
				b.Fatal("no error")
			}
		}
	})
}
