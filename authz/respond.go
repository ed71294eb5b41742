package authz

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// finishDenial completes a denial as a client expects it: a WWW-Authenticate
// challenge for 401s and OAuth error codes (RFC 6750 §3, RFC 9470), and a
// problem+json body (RFC 9457). What a policy wrote of its own always wins:
// a policy's plain 401 gets no challenge it did not ask for (by an error
// code), and a policy that wrote a body or a content-type gets no problem
// body, as under OPA-Envoy.
func (e *Engine) finishDenial(d *Decision) {
	if d.Status == 0 {
		d.Status = http.StatusForbidden
	}
	byPolicy := d.Reason == "policy_denied"
	if d.Reason == "" {
		d.Reason = "policy_denied"
	}
	if (d.Error != "" || d.Status == http.StatusUnauthorized && !byPolicy) && !hasHeader(d.Headers, "www-authenticate") {
		d.Headers = append(d.Headers, Header{Key: "www-authenticate", Value: e.challenge(d)})
	}
	if d.Body == "" && !d.PolicyBody && !hasHeader(d.Headers, "content-type") {
		d.Headers = append(d.Headers, Header{Key: "content-type", Value: "application/problem+json"})
		d.Body = problem(d)
	}
}

// challenge builds `Bearer realm="…", error="…", error_description="…",
// scope="…"` (and a step-up's acr_values="…", max_age="…"); a DPoP
// challenge (RFC 9449 §7.1) starts `DPoP realm="…", algs="…"`.
func (e *Engine) challenge(d *Decision) string {
	var b strings.Builder
	if d.Scheme == SchemeDPoP {
		b.WriteString(`DPoP realm="`)
	} else {
		b.WriteString(`Bearer realm="`)
	}
	b.WriteString(e.cfg.Realm)
	b.WriteByte('"')
	if d.Scheme == SchemeDPoP {
		param(&b, "algs", e.dpopAlgs())
	}
	if d.Error != "" {
		param(&b, "error", d.Error)
		if d.Detail != "" {
			param(&b, "error_description", d.Detail)
		}
		if d.Scope != "" {
			param(&b, "scope", d.Scope)
		}
		// RFC 9470 §3 (its examples quote both values).
		if d.ACRValues != "" {
			param(&b, "acr_values", d.ACRValues)
		}
		if d.MaxAge != nil {
			param(&b, "max_age", strconv.Itoa(*d.MaxAge))
		}
	}
	return b.String()
}

// param appends `, name="value"`, keeping value to the characters RFC 6750
// allows in a quoted auth-param (%x20-21 / %x23-5B / %x5D-7E).
func param(b *strings.Builder, name, value string) {
	b.WriteString(", ")
	b.WriteString(name)
	b.WriteString(`="`)
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c >= 0x20 && c <= 0x7e && c != '"' && c != '\\' {
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

type problemBody struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	Error  string `json:"error,omitempty"`
	Scope  string `json:"scope,omitempty"`
	// RFC 9470 step-up: the authentication to come back with.
	ACRValues string `json:"acr_values,omitempty"`
	MaxAge    *int   `json:"max_age,omitempty"`
}

func problem(d *Decision) string {
	b, _ := json.Marshal(problemBody{
		Type:      "about:blank",
		Title:     statusTitle(d.Status),
		Status:    d.Status,
		Detail:    d.Detail,
		Error:     d.Error,
		Scope:     d.Scope,
		ACRValues: d.ACRValues,
		MaxAge:    d.MaxAge,
	})
	return string(b)
}

// statusTitle is the reason phrase of status, or its class for a status
// with none (a policy may deny with 499 or 599).
func statusTitle(status int) string {
	if t := http.StatusText(status); t != "" {
		return t
	}
	switch status / 100 {
	case 4:
		return "Client Error"
	case 5:
		return "Server Error"
	}
	return "Error"
}
