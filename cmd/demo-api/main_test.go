package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestEchoesWhatItReceived(t *testing.T) {
	req := httptest.NewRequest(http.MethodPost, "http://api.local/api/items?x=1", nil)
	req.Header.Set("Authorization", "Bearer eyJ.jwt")
	req.Header.Add("X-Trace", "a")
	req.Header.Add("X-Trace", "b")
	rec := httptest.NewRecorder()
	handler().ServeHTTP(rec, req)

	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content-type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var got echo
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Method != "POST" || got.Path != "/api/items" || got.Query != "x=1" || got.Host != "api.local" {
		t.Errorf("echo = %+v", got)
	}
	if a := got.Headers["authorization"]; len(a) != 1 || a[0] != "Bearer eyJ.jwt" {
		t.Errorf("authorization = %q", a)
	}
	if x := got.Headers["x-trace"]; len(x) != 2 || x[0] != "a" || x[1] != "b" {
		t.Errorf("x-trace = %q, want both values in order", x)
	}
}
