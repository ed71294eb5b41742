package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// secretName is a field name that says it holds a secret or key material.
var secretName = regexp.MustCompile(`(?i)secret|passw|token|credential|private|signing_?key|api_?key|hmac`)

// notSecret are fields whose names match secretName but that hold no
// secret, with why. File paths (…File, …Files) are exempt by rule: the
// file is the secret, its name is not.
var notSecret = map[string]string{
	"Introspection.PrivateKeyID":        "the kid of the client's key, public",
	"Introspection.PrivateKeyAlg":       "an algorithm name",
	"Introspection.TokenTypeHint":       "the literal access_token",
	"Redis.TokenCache":                  "a switch",
	"AuthorizationServer.TokenPrefixes": "the public prefixes of a server's opaque tokens (ory_at_)",
}

// Every field whose name says secret, password, token or key material is
// tagged secret (so Masked and the error scrubbing know it), a file path,
// or listed in notSecret with a reason. A new secret field fails here until
// it is classified.
func TestSecretFieldsAreTagged(t *testing.T) {
	var walk func(typ reflect.Type, path string, seen map[reflect.Type]bool)
	walk = func(typ reflect.Type, path string, seen map[reflect.Type]bool) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] {
			return
		}
		seen[typ] = true
		for i := range typ.NumField() {
			f := typ.Field(i)
			p := strings.TrimPrefix(path+"."+f.Name, ".")
			tagged := f.Tag.Get("secret") == "true"
			isFile := strings.HasSuffix(f.Name, "File") || strings.HasSuffix(f.Name, "Files")
			_, listed := notSecret[typ.Name()+"."+f.Name]
			named := secretName.MatchString(f.Name) || secretName.MatchString(yamlName(f))
			switch {
			case named && !tagged && !isFile && !listed:
				t.Errorf("%s (%s) is named like a secret: tag it secret:\"true\" or list it in notSecret", p, typ.Name()+"."+f.Name)
			case tagged && f.Type.Kind() != reflect.String && f.Type != reflect.TypeFor[[]byte]() && f.Type != reflect.TypeFor[[]string]():
				t.Errorf("%s is tagged secret but is a %s", p, f.Type)
			}
			walk(f.Type, p, seen)
		}
	}
	walk(reflect.TypeFor[Config](), "", map[reflect.Type]bool{})
}

// fillSecrets sets every secret-tagged field reachable from v (allocating
// pointers and one element of each slice on the way) to a value naming the
// field, and returns the values set.
func fillSecrets(v reflect.Value, path string, out map[string]string) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		fillSecrets(v.Elem(), path, out)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Struct && v.Len() == 0 {
			v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		}
		if v.Type().Elem().Kind() == reflect.Struct {
			for i := range v.Len() {
				fillSecrets(v.Index(i), path, out)
			}
		}
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			p := path + "." + f.Name
			if f.Tag.Get("secret") != "true" {
				fillSecrets(v.Field(i), p, out)
				continue
			}
			val := "s3cr3t-of" + strings.ReplaceAll(p, ".", "-")
			out[p] = val
			switch fv := v.Field(i); {
			case fv.Kind() == reflect.String:
				fv.SetString(val)
			case fv.Type() == reflect.TypeFor[[]byte]():
				fv.SetBytes([]byte(val))
			case fv.Type() == reflect.TypeFor[[]string]():
				fv.Set(reflect.ValueOf([]string{val}))
			}
		}
	}
}

// Masked prints no secret of any tagged field, nor the password of any
// URL, nor a secret query parameter, and keeps everything else.
func TestMaskedHidesEverySecret(t *testing.T) {
	cfg := Default()
	values := map[string]string{}
	fillSecrets(reflect.ValueOf(&cfg).Elem(), "", values)
	if len(values) < 5 {
		t.Fatalf("only %d secret fields filled: %v", len(values), values)
	}
	cfg.Redis.URL = "redis://phantom:redis-pw-s3cr3t@redis.internal:6379/0"
	cfg.Introspection.Endpoint = "https://as.example/introspect?client_secret=query-s3cr3t&x=1"
	cfg.Policy.Bundle.URL = "https://bundle-user-token@bundles.example/b.tar.gz"
	values["redis url password"] = "redis-pw-s3cr3t"
	values["query parameter"] = "query-s3cr3t"
	values["user-only URL"] = "bundle-user-token"

	out, err := cfg.Masked()
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	for field, v := range values {
		if strings.Contains(text, v) {
			t.Errorf("%s: its value is printed", field)
		}
	}
	for _, want := range []string{
		"client_secret: '***'", "redis://phantom:***@redis.internal:6379/0", "client_secret=***", "https://***@bundles.example/b.tar.gz",
		"addr: 127.0.0.1:9191", "poll_interval: 1s", "max_ttl: 5m0s",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	// What is printed is a configuration that loads (with the secrets
	// and files it names put back).
	var back map[string]any
	if err := yaml.Unmarshal(out, &back); err != nil {
		t.Fatalf("output is not YAML: %v", err)
	}
}

// The defaults print as a configuration that parses to the same values.
func TestMaskedDefaultsRoundTrip(t *testing.T) {
	out, err := Default().Masked()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(out)
	if err != nil {
		t.Fatalf("the printed defaults do not load: %v\n%s", err, out)
	}
	again, err := cfg.Masked()
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(out) {
		t.Errorf("round trip changed the defaults:\n%s\nthen\n%s", out, again)
	}
}

// A configuration error never repeats a secret: not the client secret
// (whatever the mistake around it), not a URL password, not a secret read
// from a file or the environment.
func TestErrorsNeverEchoSecrets(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "cs")
	if err := os.WriteFile(secretFile, []byte("file-s3cr3t-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const secret = "s3cr3t-value-42"
	env := map[string]string{"CS": secret}
	lookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	t.Cleanup(func() { lookupEnv = os.LookupEnv })
	intro := "introspection:\n  endpoint: https://as.example/introspect\n  client_id: gw\n"
	tests := []struct {
		name, yaml, key, secret string
	}{
		{"tagged as another type", intro + "  client_secret: !!int " + secret + "\n", "introspection.client_secret", secret},
		{"a map where the secret goes", intro + "  client_secret: {" + secret + ": 1}\n", "introspection.client_secret", secret},
		{"secret and file both set", intro + "  client_secret: " + secret + "\n  client_secret_file: " + secretFile + "\n", "introspection.client_secret", secret},
		{"from the environment, then a bad key", intro + "  client_secret: ${CS}\n  timeout: " + secret + "\n", "introspection.timeout", secret},
		{"password in an endpoint that does not parse", "introspection:\n  endpoint: \"https://gw:" + secret + "@/x\"\n  client_id: gw\n  client_secret: x\n", "introspection.endpoint", secret},
		{"secret from a file, then an error", intro + "  client_secret_file: " + secretFile + "\n  response: file-s3cr3t-value\n", "introspection.response", "file-s3cr3t-value"},
		{"credentials in an endpoint", "introspection:\n  endpoint: \"https://gw:" + secret + "@as.example/x\"\n  client_id: gw\n  client_secret: x\n", "introspection.endpoint", secret},
		{"redis password", "redis:\n  url: \"redis://u:" + secret + "@host:99999999/x\"\n", "redis.url", secret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			if strings.Contains(err.Error(), tt.secret) {
				t.Errorf("the error repeats the secret: %v", err)
			}
			if !strings.Contains(err.Error(), tt.key) {
				t.Errorf("the error %q does not name %s", err, tt.key)
			}
		})
	}
}
