package mint_test

import (
	"crypto/elliptic"
	"reflect"
	"testing"

	"github.com/phantom-authz/phantom-authz/authz/mint"
)

// A bound token's cnf reaches the upstream JWT without being configured.
func TestCopiesConfirmationByDefault(t *testing.T) {
	m := newMinter(t, mint.Config{KeyFiles: []string{pemFile(t, ecKey(t, elliptic.P256()), "pkcs8")}})
	tok := activeToken()
	cnf := map[string]any{"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}
	tok.Claims = map[string]any{"sub": "user-1", "cnf": cnf, "acr": "1"}
	if err := m.Mint(tok); err != nil {
		t.Fatal(err)
	}
	_, claims := verified(t, m, tok)
	if !reflect.DeepEqual(claims["cnf"], cnf) {
		t.Errorf("cnf = %#v, want %#v", claims["cnf"], cnf)
	}
	if _, ok := claims["acr"]; ok {
		t.Error("acr copied without being listed")
	}

	unbound := activeToken()
	if err := m.Mint(unbound); err != nil {
		t.Fatal(err)
	}
	if _, claims := verified(t, m, unbound); claims["cnf"] != nil {
		t.Errorf("cnf = %v on an unbound token", claims["cnf"])
	}
}
