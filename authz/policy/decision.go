package policy

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/phantom-authz/phantom-authz/authz"
)

// Reasons this stage puts in authz.Decision.Reason.
const (
	ReasonAllowed = "allowed"
	ReasonDenied  = "policy_denied"
	ReasonError   = "policy_error"
)

var (
	kAllowed         = ast.StringTerm("allowed")
	kRespHeadersAdd  = ast.StringTerm("response_headers_to_add")
	kReqHeadersRm    = ast.StringTerm("request_headers_to_remove")
	kHTTPStatus      = ast.StringTerm("http_status")
	kDynamicMetadata = ast.StringTerm("dynamic_metadata")
	kReason          = ast.StringTerm("reason")
	kError           = ast.StringTerm("error")
	kScope           = ast.StringTerm("scope")
	kACRValues       = ast.StringTerm("acr_values")
	kMaxAge          = ast.StringTerm("max_age")
)

// errMalformed marks a policy result that is not a decision.
var errMalformed = errors.New("policy: malformed decision")

// undefinedDecision is the answer when the query has no value: the policy
// said nothing, so nothing is allowed.
var undefinedDecision = authz.Decision{
	Status:      http.StatusForbidden,
	Reason:      ReasonDenied,
	Detail:      "no policy decision",
	DefaultRule: true,
}

// errorDecision is what Decide returns with an error: a denial the engine
// turns into 503.
func errorDecision() authz.Decision {
	return authz.Decision{Status: http.StatusServiceUnavailable, Reason: ReasonError}
}

// toDecision reads the query's value: a boolean, or the OPA-Envoy decision
// object with our extensions (reason, error, scope). Anything else is
// malformed and never allows.
func toDecision(v ast.Value) (authz.Decision, error) {
	switch v := v.(type) {
	case ast.Boolean:
		if v {
			return authz.Decision{Allowed: true, Reason: ReasonAllowed}, nil
		}
		return authz.Decision{Status: http.StatusForbidden, Reason: ReasonDenied}, nil
	case ast.Object:
		d, err := objectDecision(v)
		if err != nil {
			return errorDecision(), fmt.Errorf("%w: %w", errMalformed, err)
		}
		return d, nil
	default:
		return errorDecision(), fmt.Errorf("%w: want a boolean or an object, got %s", errMalformed, ast.ValueName(v))
	}
}

func objectDecision(o ast.Object) (authz.Decision, error) {
	var d authz.Decision
	t := o.Get(kAllowed)
	if t == nil {
		return d, errors.New(`"allowed" is missing`)
	}
	allowed, ok := t.Value.(ast.Boolean)
	if !ok {
		return d, fmt.Errorf(`"allowed" must be a boolean, got %s`, ast.ValueName(t.Value))
	}
	d.Allowed = bool(allowed)

	var err error
	if d.Headers, err = headerList(o, kHeaders); err != nil {
		return d, err
	}
	if d.ResponseHeaders, err = headerList(o, kRespHeadersAdd); err != nil {
		return d, err
	}
	if d.RemoveHeaders, err = stringList(o.Get(kReqHeadersRm), "request_headers_to_remove"); err != nil {
		return d, err
	}
	for i, h := range d.RemoveHeaders {
		d.RemoveHeaders[i] = lower(h)
	}
	status := http.StatusForbidden
	if t := o.Get(kHTTPStatus); t != nil {
		n, ok := t.Value.(ast.Number)
		if !ok {
			return d, fmt.Errorf(`"http_status" must be a number, got %s`, ast.ValueName(t.Value))
		}
		s, ok := n.Int()
		if !ok || s < 100 || s > 599 {
			return d, fmt.Errorf(`"http_status" %s is not an HTTP status`, n)
		}
		status = s
	}
	if d.Body, err = stringField(o, kBody, "body"); err != nil {
		return d, err
	}
	if d.Detail, err = stringField(o, kReason, "reason"); err != nil {
		return d, err
	}
	if d.Error, err = stringField(o, kError, "error"); err != nil {
		return d, err
	}
	if d.Scope, err = spaceList(o, kScope, "scope"); err != nil {
		return d, err
	}
	if d.ACRValues, err = spaceList(o, kACRValues, "acr_values"); err != nil {
		return d, err
	}
	if t := o.Get(kMaxAge); t != nil {
		var age int
		n, ok := t.Value.(ast.Number)
		if ok {
			age, ok = n.Int()
		}
		if !ok || age < 0 {
			return d, fmt.Errorf(`"max_age" must be a whole number of seconds, got %v`, t)
		}
		d.MaxAge = &age
	}
	if t := o.Get(kDynamicMetadata); t != nil {
		if _, ok := t.Value.(ast.Object); !ok {
			return d, fmt.Errorf(`"dynamic_metadata" must be an object, got %s`, ast.ValueName(t.Value))
		}
		m, err := ast.JSON(t.Value)
		if err != nil {
			return d, fmt.Errorf(`"dynamic_metadata": %w`, err)
		}
		d.DynamicMetadata = m.(map[string]any)
	}

	if d.Allowed {
		d.Reason = ReasonAllowed
	} else {
		d.Reason = ReasonDenied
		d.Status = status
	}
	return d, nil
}

func stringField(o ast.Object, k *ast.Term, name string) (string, error) {
	t := o.Get(k)
	if t == nil {
		return "", nil
	}
	s, ok := t.Value.(ast.String)
	if !ok {
		return "", fmt.Errorf("%q must be a string, got %s", name, ast.ValueName(t.Value))
	}
	return string(s), nil
}

// spaceList reads a string, or an array of strings joined with spaces (the
// shape of OAuth's scope and acr_values).
func spaceList(o ast.Object, k *ast.Term, name string) (string, error) {
	t := o.Get(k)
	if t == nil {
		return "", nil
	}
	if s, ok := t.Value.(ast.String); ok {
		return string(s), nil
	}
	list, err := stringList(t, name)
	if err != nil {
		return "", err
	}
	return strings.Join(list, " "), nil
}

// stringList reads an array (or set) of strings.
func stringList(t *ast.Term, name string) ([]string, error) {
	if t == nil {
		return nil, nil
	}
	var terms []*ast.Term
	switch v := t.Value.(type) {
	case *ast.Array:
		terms = make([]*ast.Term, 0, v.Len())
		v.Foreach(func(e *ast.Term) { terms = append(terms, e) })
	case ast.Set:
		terms = v.Slice()
	default:
		return nil, fmt.Errorf("%q must be an array of strings, got %s", name, ast.ValueName(t.Value))
	}
	out := make([]string, len(terms))
	for i, e := range terms {
		s, ok := e.Value.(ast.String)
		if !ok {
			return nil, fmt.Errorf("%q must be an array of strings, has %s", name, ast.ValueName(e.Value))
		}
		out[i] = string(s)
	}
	return out, nil
}

// headerList reads OPA-Envoy's header shape: an object of name → string or
// array of strings, or an array of such objects. Names are lower-cased and
// sorted so the output is stable; values keep their order.
func headerList(o ast.Object, k *ast.Term) ([]authz.Header, error) {
	t := o.Get(k)
	if t == nil {
		return nil, nil
	}
	name := string(k.Value.(ast.String))
	var objs []ast.Object
	switch v := t.Value.(type) {
	case ast.Object:
		objs = []ast.Object{v}
	case *ast.Array:
		for i := range v.Len() {
			obj, ok := v.Elem(i).Value.(ast.Object)
			if !ok {
				return nil, fmt.Errorf("%q must be an object or an array of objects, has %s", name, ast.ValueName(v.Elem(i).Value))
			}
			objs = append(objs, obj)
		}
	default:
		return nil, fmt.Errorf("%q must be an object, got %s", name, ast.ValueName(t.Value))
	}

	var out []authz.Header
	for _, obj := range objs {
		start := len(out)
		for _, key := range obj.Keys() {
			ks, ok := key.Value.(ast.String)
			if !ok {
				return nil, fmt.Errorf("%q: header names must be strings, has %s", name, ast.ValueName(key.Value))
			}
			hk := lower(string(ks))
			val := obj.Get(key)
			if s, ok := val.Value.(ast.String); ok {
				out = append(out, authz.Header{Key: hk, Value: string(s)})
				continue
			}
			vs, err := stringList(val, name+"."+string(ks))
			if err != nil {
				return nil, err
			}
			for _, s := range vs {
				out = append(out, authz.Header{Key: hk, Value: s})
			}
		}
		// Keys() is sorted already, but lower-casing can reorder them.
		slices.SortStableFunc(out[start:], func(a, b authz.Header) int { return strings.Compare(a.Key, b.Key) })
	}
	return out, nil
}

// lower lower-cases ASCII header names without allocating when they already are.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}
