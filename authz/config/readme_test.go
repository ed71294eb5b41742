package config_test

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz/config"
)

// Every configuration field is documented in README.md's reference, by its
// dotted key ("jwt.issuers[].skew"), or by its last segment on the line of
// a sibling ("`policy.bundle.poll_min` / `poll_max`").
func TestReadmeDocumentsEveryField(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	var keys []string
	fieldKeys(reflect.TypeOf(config.Config{}), "", &keys)
	if len(keys) < 90 {
		t.Fatalf("found %d keys; the walk is broken", len(keys))
	}
	for _, k := range keys {
		if documented(lines, k) {
			continue
		}
		t.Errorf("README.md does not document `%s`", k)
	}
}

func documented(lines []string, key string) bool {
	parent, last := "", key
	if i := strings.LastIndex(key, "."); i >= 0 {
		parent, last = key[:i+1], key[i+1:]
	}
	for _, l := range lines {
		if strings.Contains(l, "`"+key+"`") {
			return true
		}
		if parent != "" && strings.Contains(l, "`"+parent) && strings.Contains(l, " / `"+last+"`") {
			return true
		}
	}
	return false
}

// fieldKeys appends the dotted YAML keys of t's leaf fields.
func fieldKeys(t reflect.Type, prefix string, out *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if name == "" || name == "-" {
			continue
		}
		key, ft := prefix+name, f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			if ft.Kind() == reflect.Slice {
				key += "[]"
			}
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeOf(config.Duration(0)) {
			fieldKeys(ft, key+".", out)
			continue
		}
		*out = append(*out, strings.TrimSuffix(key, "[]"))
	}
}
