package config

import (
	"bytes"
	"errors"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Secrets in the configuration.
//
// A field that holds a secret (a client secret, a key, a password, a
// token: the value itself, not the name of a file holding it) is tagged
// `secret:"true"`. Masked hides those values and the credentials of every
// URL (user information, and query parameters named like a secret), and
// the errors of Parse and Load never repeat them. TestSecretFieldsAreTagged
// fails for a field whose name says secret, password, token or key material
// and that is neither tagged nor a file path.

// Mask is what Masked prints in place of a secret.
const Mask = "***"

// Masked returns c as YAML, defaults applied, every secret replaced by
// Mask: what `phantom-authz config` prints. An empty secret stays empty, so
// the output still tells set from unset.
func (c Config) Masked() ([]byte, error) {
	var n yaml.Node
	if err := n.Encode(c); err != nil {
		return nil, err
	}
	visitSecrets(&n, reflect.TypeOf(c), func(s *yaml.Node, field bool) {
		switch {
		case field && s.Value != "":
			s.Value, s.Style, s.Tag = Mask, 0, "!!str"
		case !field:
			s.Value = maskURL(s.Value)
		}
	})
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// MarshalYAML writes a duration as Go writes it ("2s", "1m30s").
func (d Duration) MarshalYAML() (any, error) { return d.D().String(), nil }

// visitSecrets calls fn for every scalar under n that may hold a secret:
// the value (or each item) of a field tagged secret (field true), and every
// other string scalar (field false), which may be a URL with credentials.
func visitSecrets(n *yaml.Node, t reflect.Type, fn func(s *yaml.Node, field bool)) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			visitSecrets(c, t, fn)
		}
		return
	case yaml.AliasNode:
		if n.Alias != nil {
			visitSecrets(n.Alias, t, fn)
		}
		return
	case yaml.ScalarNode:
		fn(n, false)
		return
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			f, ok := fieldByKey(t, n.Content[i].Value)
			if !ok {
				continue
			}
			if f.Tag.Get("secret") == "true" {
				markAll(n.Content[i+1], fn)
				continue
			}
			visitSecrets(n.Content[i+1], f.Type, fn)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			visitSecrets(n.Content[i+1], t.Elem(), fn)
		}
	case (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && n.Kind == yaml.SequenceNode:
		for _, c := range n.Content {
			visitSecrets(c, t.Elem(), fn)
		}
	default:
		markAll(n, func(s *yaml.Node, _ bool) { fn(s, false) })
	}
}

// markAll calls fn(s, true) for every scalar under n.
func markAll(n *yaml.Node, fn func(s *yaml.Node, field bool)) {
	if n.Kind == yaml.ScalarNode {
		fn(n, true)
		return
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		markAll(n.Alias, fn)
		return
	}
	for _, c := range n.Content {
		markAll(c, fn)
	}
}

// secretParam matches the query parameters of a URL that carry a secret.
var secretParam = regexp.MustCompile(`(?i)secret|passw|token|key|auth|sig`)

// urlSecrets returns the credentials s carries when it is a URL: the
// password (or, without one, the user name, which some schemes use as the
// secret) and the values of secret-named query parameters.
func urlSecrets(s string) []string {
	if !strings.Contains(s, "://") {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil
	}
	var out []string
	if u.User != nil {
		if p, ok := u.User.Password(); ok {
			out = append(out, p, url.QueryEscape(p), url.PathEscape(p))
		} else if name := u.User.Username(); name != "" {
			out = append(out, name, url.QueryEscape(name))
		}
	}
	for k, vs := range u.Query() {
		if secretParam.MatchString(k) {
			for _, v := range vs {
				out = append(out, v, url.QueryEscape(v))
			}
		}
	}
	return out
}

// maskURL returns s with the credentials of a URL masked; anything else
// unchanged.
func maskURL(s string) string {
	if len(urlSecrets(s)) == 0 {
		return s
	}
	u, _ := url.Parse(s)
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), Mask)
		} else {
			u.User = url.User(Mask)
		}
	}
	if q := u.Query(); len(q) > 0 {
		changed := false
		for k := range q {
			if secretParam.MatchString(k) {
				q.Set(k, Mask)
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	out := u.String()
	// url escapes nothing in "***"; keep it readable if it ever does.
	return strings.ReplaceAll(out, url.QueryEscape(Mask), Mask)
}

// minScrub is the length from which a secret is masked in error messages.
const minScrub = 6

// secretsOf collects, for scrubbing error messages, every secret of the
// document n and of the decoded configuration c: tagged values (those read
// from files too, which are not in the document), URL credentials, and
// more (the values taken from the environment).
func secretsOf(n *yaml.Node, c *Config, more []string) []string {
	var out []string
	add := func(vs ...string) {
		for _, v := range vs {
			// Shorter values guard nothing and would garble the
			// message wherever their letters occur.
			if v = strings.TrimSpace(v); len(v) >= minScrub {
				out = append(out, v)
			}
			if len(v) > 10 {
				// How the YAML decoder quotes a long value it
				// cannot decode.
				out = append(out, "`"+v[:7]+"...`")
			}
		}
	}
	add(more...)
	if n != nil {
		visitSecrets(n, reflect.TypeFor[Config](), func(s *yaml.Node, field bool) {
			if field {
				add(s.Value)
			} else {
				add(urlSecrets(s.Value)...)
			}
		})
	}
	if c != nil {
		valueSecrets(reflect.ValueOf(c).Elem(), false, add)
	}
	return out
}

// valueSecrets calls add with every secret held in v; inSecret says v is
// (part of) a tagged field.
func valueSecrets(v reflect.Value, inSecret bool, add func(...string)) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			valueSecrets(v.Elem(), inSecret, add)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if f.IsExported() {
				valueSecrets(v.Field(i), inSecret || f.Tag.Get("secret") == "true", add)
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			if inSecret {
				add(string(v.Bytes()))
			}
			return
		}
		for i := range v.Len() {
			valueSecrets(v.Index(i), inSecret, add)
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			valueSecrets(it.Value(), inSecret, add)
		}
	case reflect.String:
		if inSecret {
			add(v.String())
		} else {
			add(urlSecrets(v.String())...)
		}
	}
}

// scrub returns err with every secret in its message replaced by Mask.
func scrub(err error, secrets []string) error {
	if err == nil || len(secrets) == 0 {
		return err
	}
	// Longest first, so a secret that holds another is masked whole.
	secrets = slices.Clone(secrets)
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	replace := func(s string) string {
		for _, v := range secrets {
			s = strings.ReplaceAll(s, v, Mask)
		}
		return s
	}
	var ce *Error
	if errors.As(err, &ce) && err == error(ce) {
		if k, r := replace(ce.Key), replace(ce.Reason); k != ce.Key || r != ce.Reason {
			return &Error{Key: k, Reason: r}
		}
		return err
	}
	if s := err.Error(); replace(s) != s {
		return errors.New(replace(s))
	}
	return err
}
