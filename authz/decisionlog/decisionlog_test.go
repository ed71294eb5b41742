package decisionlog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/phantom-authz/phantom-authz/authz/decisionlog"
)

func TestMaskRefusesUnknownAndRequiredFields(t *testing.T) {
	for _, m := range []string{"token", "decision", "time", "dry_run"} {
		if _, err := decisionlog.NewJSON(&bytes.Buffer{}, []string{m}); err == nil {
			t.Errorf("mask %q accepted", m)
		}
	}
}

// What NewJSON writes, Read reads back, skipping the other lines of a mixed
// stream.
func TestWriteThenRead(t *testing.T) {
	var buf bytes.Buffer
	l, err := decisionlog.NewJSON(&buf, []string{decisionlog.FieldClientID})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	in := decisionlog.Record{
		Time: at, TraceID: "0af7651916cd43dd8448eb211c80319c", Allowed: false, DryRun: true, Status: 403,
		Reason: "policy_denied", Route: "accounts", Method: "POST", Path: "/api/accounts", Auth: "dpop",
		TokenKind: "opaque", ClientID: "web-app", SubHash: decisionlog.HashSubject("alice"), PolicyRevision: "abc123",
		DefaultRule: true, Duration: 1500 * time.Microsecond,
	}
	buf.WriteString(`{"time":"2026-05-01T12:00:00Z","level":"INFO","msg":"serving"}` + "\nnot json\n")
	l.Log(context.Background(), &in)

	var got []decisionlog.Record
	n, skipped, err := decisionlog.Read(&buf, func(r decisionlog.Record) { got = append(got, r) })
	if err != nil || n != 1 || skipped != 2 {
		t.Fatalf("Read = %d records, %d skipped, %v; want 1, 2, nil", n, skipped, err)
	}
	want := in
	want.ClientID = "" // masked
	if !reflect.DeepEqual(got[0], want) {
		t.Errorf("read back\n got %+v\nwant %+v", got[0], want)
	}
}

func TestHashSubject(t *testing.T) {
	h := decisionlog.HashSubject("alice")
	if len(h) != 32 || strings.Contains(h, "alice") || h == decisionlog.HashSubject("bob") || decisionlog.HashSubject("") != "" {
		t.Errorf("HashSubject(alice) = %q", h)
	}
}

// The audit report names every route and method, how callers
// authenticated, allows and denials, routes only the default rule decided
// and routes reached without a credential.
func TestReport(t *testing.T) {
	recs := []decisionlog.Record{
		{Allowed: true, Status: 200, Route: "accounts", Method: "GET", Auth: "opaque"},
		{Allowed: true, Status: 200, Route: "accounts", Method: "GET", Auth: "dpop"},
		{Allowed: false, Status: 401, Reason: "missing_token", Route: "accounts", Method: "GET", Auth: "none"},
		{Allowed: false, Status: 403, Reason: "insufficient_scope", Route: "accounts", Method: "POST", Auth: "jwt"},
		{Allowed: false, Status: 403, Reason: "policy_denied", Path: "/nothing", Method: "GET", Auth: "mtls", DefaultRule: true},
		{Allowed: true, Status: 200, Route: "health", Method: "GET", Auth: "none"},
		{Allowed: false, DryRun: true, Status: 401, Reason: "missing_token", Route: "beta", Method: "GET", Auth: "none"},
	}
	rep := decisionlog.NewReport()
	for _, r := range recs {
		rep.Add(r)
	}
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var out struct {
		Records int `json:"records"`
		Routes  []struct {
			Route, Method             string
			Requests, Allowed, Denied int
			DryRunDenied              int `json:"dry_run_denied"`
			Auth                      map[string]int
			DefaultRule               int `json:"default_rule"`
			ReachedWithoutCredential  int `json:"reached_without_credential"`
		} `json:"routes"`
		DefaultRuleOnly []string `json:"default_rule_only"`
		NoCredential    []string `json:"reached_without_credential"`
	}
	if err := json.Unmarshal(js.Bytes(), &out); err != nil {
		t.Fatalf("%v: %s", err, js.String())
	}
	if out.Records != len(recs) || len(out.Routes) != 5 {
		t.Fatalf("report %s", js.String())
	}
	get := out.Routes[1] // sorted: /nothing GET, accounts GET, accounts POST, beta GET, health GET
	if get.Route != "accounts" || get.Method != "GET" || get.Requests != 3 || get.Allowed != 2 || get.Denied != 1 ||
		!reflect.DeepEqual(get.Auth, map[string]int{"opaque": 1, "dpop": 1, "none": 1}) || get.ReachedWithoutCredential != 0 {
		t.Errorf("accounts GET = %+v", get)
	}
	if !reflect.DeepEqual(out.DefaultRuleOnly, []string{"/nothing GET"}) {
		t.Errorf("default_rule_only = %v", out.DefaultRuleOnly)
	}
	if !reflect.DeepEqual(out.NoCredential, []string{"beta GET", "health GET"}) {
		t.Errorf("reached_without_credential = %v", out.NoCredential)
	}
	if out.Routes[3].DryRunDenied != 1 {
		t.Errorf("beta GET = %+v", out.Routes[3])
	}

	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ROUTE", "accounts  GET", "none=1 opaque=1 dpop=1", "Routes only ever decided by a default rule:\n  /nothing GET",
		"Routes reached without any credential:\n  beta GET\n  health GET"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
}
