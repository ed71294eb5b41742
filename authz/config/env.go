package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Environment variables in the configuration file.
//
// `${VAR}` and `${VAR:-default}` (also written `${env:VAR}`, as the
// OpenTelemetry Collector does) are replaced in scalar values after the
// file is parsed and before it is decoded, so a variable's value is always
// one value: it cannot add keys or change the document's structure, whatever
// it holds. `$$` is a literal `$`. Keys are never expanded. A variable that
// is not set (or, with `:-`, empty) takes the default; without a default it
// is an error naming the key. An expanded plain scalar is typed by its new
// text, so `max_recv_bytes: ${MAX}` reads a number; a quoted one stays a
// string.

// expandEnv replaces the variables in every scalar value of doc, looking
// them up with lookup; path is the dotted key of n. The values it expanded
// are appended to expanded: they are kept out of error messages, as
// variables are how secrets are passed.
func expandEnv(n *yaml.Node, path string, lookup func(string) (string, bool), expanded *[]string) error {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if err := expandEnv(c, path, lookup, expanded); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := expandEnv(n.Content[i+1], joinKey(path, n.Content[i].Value), lookup, expanded); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if err := expandEnv(c, fmt.Sprintf("%s[%d]", path, i), lookup, expanded); err != nil {
				return err
			}
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "$") {
			return nil
		}
		v, err := expand(n.Value, lookup)
		if err != nil {
			return &Error{Key: path, Reason: fmt.Sprintf("%v (line %d)", err, n.Line)}
		}
		if v != n.Value {
			*expanded = append(*expanded, v)
			n.Value = v
			if n.Style == 0 {
				// Typed by its new text: the parser tagged the
				// reference itself (a string).
				n.Tag = ""
			}
		}
	}
	return nil
}

// expand replaces ${VAR}, ${VAR:-default}, ${env:VAR} and $$ in s. The
// error names the variable, never its value.
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 || i == len(s)-1 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			s = s[i+2:]
			continue
		case '{':
		default:
			b.WriteByte('$')
			s = s[i+1:]
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			// The value is not quoted back: it may be a secret.
			return "", errors.New("a ${ has no closing }")
		}
		ref := s[i+2 : i+end]
		s = s[i+end+1:]
		name, def, hasDefault := strings.Cut(ref, ":-")
		name = strings.TrimPrefix(name, "env:")
		if !envName(name) {
			return "", errors.New("a ${...} does not name an environment variable (letters, digits and _, optionally followed by :-default)")
		}
		v, ok := lookup(name)
		switch {
		case hasDefault && v == "":
			v = def
		case !ok:
			return "", fmt.Errorf("environment variable %s is not set (or write ${%s:-default})", name, name)
		}
		b.WriteString(v)
	}
}

func envName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// lookupEnv is os.LookupEnv; tests replace it.
var lookupEnv = os.LookupEnv

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// checkKeys reports the first key of n that no field of t (a struct, map,
// slice or pointer to one) takes, as the decoder's KnownFields would, which
// yaml.Node.Decode cannot be asked for.
func checkKeys(n *yaml.Node, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil // decodes itself
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if err := checkKeys(c, t, path); err != nil {
				return err
			}
		}
		return nil
	case yaml.ScalarNode:
		// A value whose explicit tag does not fit it (!!int abc) fails
		// the decoder without a line; name the key here instead.
		if n.Style&yaml.TaggedStyle != 0 {
			var v any
			if n.Decode(&v) != nil {
				return &Error{Key: path, Reason: fmt.Sprintf("the value is not a %s (line %d)", n.Tag, n.Line)}
			}
		}
		return nil
	case yaml.AliasNode:
		if n.Alias != nil {
			return checkKeys(n.Alias, t, path)
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // the decoder reports the type error
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" && k.Tag == "!!merge" {
				if err := checkKeys(v, t, path); err != nil {
					return err
				}
				continue
			}
			p := joinKey(path, k.Value)
			f, ok := fieldByKey(t, k.Value)
			if !ok {
				return &Error{Key: p, Reason: fmt.Sprintf("unknown key (line %d)", k.Line)}
			}
			if err := checkKeys(v, f.Type, p); err != nil {
				return err
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkKeys(n.Content[i+1], t.Elem(), joinKey(path, n.Content[i].Value)); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return nil
		}
		for i, c := range n.Content {
			if err := checkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// fieldByKey finds the field of struct t that YAML key name decodes into.
func fieldByKey(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		if yamlName(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// yamlName is the key of a field ("-" when it has none), as yaml.v3 names it.
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}
