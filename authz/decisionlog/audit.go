package decisionlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Auth values, in the order a report lists them.
var authOrder = []string{"none", "opaque", "jwt", "dpop", "mtls"}

// line is a decision record as written by NewJSON.
type line struct {
	Msg            string   `json:"msg"`
	Time           string   `json:"time"`
	TraceID        string   `json:"trace_id"`
	Decision       string   `json:"decision"`
	DryRun         bool     `json:"dry_run"`
	Status         int      `json:"status"`
	Reason         string   `json:"reason"`
	Route          string   `json:"route"`
	Method         string   `json:"method"`
	Path           string   `json:"path"`
	Auth           string   `json:"auth"`
	TokenKind      string   `json:"token_kind"`
	ClientID       string   `json:"client_id"`
	SubHash        string   `json:"sub_hash"`
	PolicyRevision string   `json:"policy_revision"`
	DefaultRule    bool     `json:"default_rule"`
	DurationMS     *float64 `json:"duration_ms"`
}

// maxLine bounds one line of input; longer lines are skipped.
const maxLine = 1 << 20

// Read calls fn with each decision record in r, a stream of JSON lines in
// which other lines (the service's own logs, say) may be mixed: lines that
// are not decision records are counted as skipped.
func Read(r io.Reader, fn func(Record)) (records, skipped int, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		b, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer: read on to its end and skip it.
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			skipped++
			if err == io.EOF {
				return records, skipped, nil
			}
			if err != nil {
				return records, skipped, err
			}
			continue
		}
		if len(bytes.TrimSpace(b)) > 0 {
			if rec, ok := parse(b); ok {
				records++
				fn(rec)
			} else {
				skipped++
			}
		}
		if err == io.EOF {
			return records, skipped, nil
		}
		if err != nil {
			return records, skipped, err
		}
	}
}

func parse(b []byte) (Record, bool) {
	var l line
	if bytes.IndexByte(b, '{') < 0 || json.Unmarshal(b, &l) != nil || l.Msg != Message {
		return Record{}, false
	}
	if l.Decision != "allow" && l.Decision != "deny" {
		return Record{}, false
	}
	rec := Record{
		TraceID: l.TraceID, Allowed: l.Decision == "allow", DryRun: l.DryRun, Status: l.Status,
		Reason: l.Reason, Route: l.Route, Method: l.Method, Path: l.Path, Auth: l.Auth,
		TokenKind: l.TokenKind, ClientID: l.ClientID, SubHash: l.SubHash,
		PolicyRevision: l.PolicyRevision, DefaultRule: l.DefaultRule,
	}
	rec.Time, _ = time.Parse(time.RFC3339Nano, l.Time)
	if l.DurationMS != nil {
		rec.Duration = time.Duration(*l.DurationMS * float64(time.Millisecond))
	}
	return rec, true
}

// Report is what `phantom-authz audit` prints: every route and method seen,
// how their callers authenticated and what was decided.
type Report struct {
	// Records and Skipped count the input lines read as decisions and not.
	Records int `json:"records"`
	Skipped int `json:"skipped_lines"`
	// From and To bound the records' times.
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
	// Routes, sorted by route then method.
	Routes []*RouteReport `json:"routes"`
	// DefaultRuleOnly lists the "route method" pairs every decision of which
	// came from the policy's default rule: no rule of their own decides them.
	DefaultRuleOnly []string `json:"default_rule_only"`
	// NoCredential lists the "route method" pairs some request reached (was
	// allowed, or let through by dry-run) without any credential.
	NoCredential []string `json:"reached_without_credential"`

	byKey map[string]*RouteReport
}

// RouteReport sums the decisions of one route and method.
type RouteReport struct {
	// Route is the route's API name, or its path when Envoy named none.
	Route  string `json:"route"`
	Method string `json:"method"`
	// Requests = Allowed + Denied; DryRunDenied of the Denied were let
	// through by dry-run mode.
	Requests     int `json:"requests"`
	Allowed      int `json:"allowed"`
	Denied       int `json:"denied"`
	DryRunDenied int `json:"dry_run_denied"`
	// Auth counts requests by how the caller authenticated (none, opaque,
	// jwt, dpop, mtls).
	Auth map[string]int `json:"auth"`
	// Reasons counts denials by reason.
	Reasons map[string]int `json:"denial_reasons,omitempty"`
	// DefaultRule counts decisions the policy's default rule made.
	DefaultRule int `json:"default_rule"`
	// ReachedWithoutCredential counts requests that passed with no credential.
	ReachedWithoutCredential int `json:"reached_without_credential"`
}

// NewReport returns an empty report.
func NewReport() *Report {
	return &Report{byKey: map[string]*RouteReport{}, Routes: []*RouteReport{}, DefaultRuleOnly: []string{}, NoCredential: []string{}}
}

// Add counts one record.
func (r *Report) Add(rec Record) {
	r.Records++
	if !rec.Time.IsZero() {
		if r.From.IsZero() || rec.Time.Before(r.From) {
			r.From = rec.Time
		}
		if rec.Time.After(r.To) {
			r.To = rec.Time
		}
	}
	route := rec.Route
	if route == "" {
		route = rec.Path
	}
	if route == "" {
		route = "?"
	}
	method := rec.Method
	if method == "" {
		method = "?"
	}
	key := route + "\x00" + method
	rr := r.byKey[key]
	if rr == nil {
		rr = &RouteReport{Route: route, Method: method, Auth: map[string]int{}, Reasons: map[string]int{}}
		r.byKey[key] = rr
	}
	rr.Requests++
	auth := rec.Auth
	if auth == "" {
		auth = "none"
	}
	rr.Auth[auth]++
	if rec.Allowed {
		rr.Allowed++
	} else {
		rr.Denied++
		rr.Reasons[rec.Reason]++
		if rec.DryRun {
			rr.DryRunDenied++
		}
	}
	if rec.DefaultRule {
		rr.DefaultRule++
	}
	if (rec.Allowed || rec.DryRun) && auth == "none" {
		rr.ReachedWithoutCredential++
	}
}

// finish sorts the routes and fills the lists.
func (r *Report) finish() {
	r.Routes = slices.SortedFunc(maps.Values(r.byKey), func(a, b *RouteReport) int {
		if c := strings.Compare(a.Route, b.Route); c != 0 {
			return c
		}
		return strings.Compare(a.Method, b.Method)
	})
	r.DefaultRuleOnly, r.NoCredential = []string{}, []string{}
	for _, rr := range r.Routes {
		if rr.DefaultRule == rr.Requests {
			r.DefaultRuleOnly = append(r.DefaultRuleOnly, rr.Route+" "+rr.Method)
		}
		if rr.ReachedWithoutCredential > 0 {
			r.NoCredential = append(r.NoCredential, rr.Route+" "+rr.Method)
		}
	}
}

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	r.finish()
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report as a table for a terminal.
func (r *Report) WriteTable(w io.Writer) error {
	r.finish()
	var b strings.Builder
	fmt.Fprintf(&b, "%d decisions", r.Records)
	if !r.From.IsZero() {
		fmt.Fprintf(&b, " from %s to %s", r.From.Format(time.RFC3339), r.To.Format(time.RFC3339))
	}
	if r.Skipped > 0 {
		fmt.Fprintf(&b, " (%d other lines skipped)", r.Skipped)
	}
	b.WriteString("\n\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTE\tMETHOD\tREQUESTS\tALLOWED\tDENIED\tDRY-RUN\tAUTH\tDEFAULT RULE\tNO CREDENTIAL")
	for _, rr := range r.Routes {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%d\t%d\n", rr.Route, rr.Method, rr.Requests, rr.Allowed,
			rr.Denied, rr.DryRunDenied, authSummary(rr.Auth), rr.DefaultRule, rr.ReachedWithoutCredential)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	list := func(title string, items []string) {
		fmt.Fprintf(&b, "\n%s:", title)
		if len(items) == 0 {
			b.WriteString(" none\n")
			return
		}
		b.WriteByte('\n')
		for _, it := range items {
			fmt.Fprintf(&b, "  %s\n", it)
		}
	}
	list("Routes only ever decided by a default rule", r.DefaultRuleOnly)
	list("Routes reached without any credential", r.NoCredential)
	_, err := io.WriteString(w, b.String())
	return err
}

// authSummary is "opaque=10 none=2", in a fixed order.
func authSummary(m map[string]int) string {
	var parts []string
	for _, a := range authOrder {
		if n := m[a]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", a, n))
		}
	}
	for _, a := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(authOrder, a) {
			parts = append(parts, fmt.Sprintf("%s=%d", a, m[a]))
		}
	}
	return strings.Join(parts, " ")
}
