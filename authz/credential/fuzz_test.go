package credential

import (
	"regexp"
	"strings"
	"testing"
)

// b64token is RFC 6750 §2.1, written independently of isB64Token.
var b64token = regexp.MustCompile(`^[A-Za-z0-9\-._~+/]+=*$`)

// FuzzFromHeaders feeds hostile header values in both of Envoy's header forms.
// mode picks the form: bit 0 puts the headers in the map, bit 1 in raw, bit 2
// repeats the Authorization header in raw, bit 3 adds the DPoP header.
func FuzzFromHeaders(f *testing.F) {
	f.Fuzz(func(t *testing.T, authorization, proof, path string, mode uint8) {
		var headers map[string]string
		var raw [][2]string
		if mode&1 != 0 {
			headers = map[string]string{"authorization": authorization}
			if mode&8 != 0 {
				headers["dpop"] = proof
			}
		}
		if mode&2 != 0 {
			raw = [][2]string{{"authorization", authorization}}
			if mode&4 != 0 {
				raw = append(raw, [2]string{"Authorization", authorization})
			}
			if mode&8 != 0 {
				raw = append(raw, [2]string{"dpop", proof})
			}
		}

		cred, err := FromHeaders(headers, raw, path)
		if err != nil {
			if !knownError(err) {
				t.Fatalf("error %q is not one of the fixed credential errors", err)
			}
			if cred != (Credential{}) {
				t.Fatalf("credential %+v returned with error %v", cred, err)
			}
			return
		}
		switch {
		case cred.Token == "":
			t.Fatal("empty token accepted")
		case len(cred.Token) > MaxTokenBytes:
			t.Fatalf("token of %d bytes accepted", len(cred.Token))
		case !b64token.MatchString(cred.Token):
			t.Fatalf("token %q is not a b64token", cred.Token)
		case !strings.HasSuffix(authorization, " "+cred.Token):
			t.Fatalf("token %q is not what %q presents", cred.Token, authorization)
		case mode&3 == 0:
			t.Fatal("credential read from no header")
		case mode&6 == 6:
			t.Fatal("credential read from two Authorization headers")
		case plainQueryToken(path):
			t.Fatalf("credential accepted with a query token in %q", path)
		}
		switch cred.Scheme {
		case SchemeBearer:
			if cred.Proof != "" {
				t.Fatalf("bearer credential with a proof %q", cred.Proof)
			}
		case SchemeDPoP:
			if cred.Proof == "" || cred.Proof != proof || mode&8 == 0 {
				t.Fatalf("DPoP credential with proof %q, sent %q (mode %d)", cred.Proof, proof, mode)
			}
		default:
			t.Fatalf("scheme %q", cred.Scheme)
		}
	})
}

// plainQueryToken finds an unencoded access_token parameter, by a different
// route than FromHeaders takes.
func plainQueryToken(path string) bool {
	_, q, _ := strings.Cut(path, "?")
	q, _, _ = strings.Cut(q, "#")
	for _, pair := range strings.FieldsFunc(q, func(r rune) bool { return r == '&' || r == ';' }) {
		if k, _, _ := strings.Cut(pair, "="); k == "access_token" {
			return true
		}
	}
	return false
}

func knownError(err error) bool {
	for _, e := range []*Error{
		errNoAuthorization, errUnsupportedScheme, errQueryToken, errDuplicateAuth,
		errEmptyAuth, errControlChar, errNoScheme, errNoToken, errSpacing,
		errTokenSyntax, errTokenTooLarge, errNoProof, errDuplicateProof, errEmptyProof,
	} {
		if err == e {
			return true
		}
	}
	return false
}
