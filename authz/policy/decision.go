package policy

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
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
	kQuerySet        = ast.StringTerm("query_parameters_to_set")
	kQueryRm         = ast.StringTerm("query_parameters_to_remove")
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
// object with our extensions (reason, error, scope, acr_values, max_age).
// Anything else is malformed and never allows.
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

// objectDecision reads a decision object as OPA-Envoy does: the fields
// that apply to the outcome (headers and dynamic_metadata always; on allow
// the request and response mutations; on deny the status and body) must be
// well formed, or the decision is an error. Fields that do not apply, and
// fields it does not know, are ignored: a policy written for OPA-Envoy is
// never refused for a field OPA-Envoy would not read. Our own fields are
// read on a denial only, and a value of the wrong type is ignored, as
// OPA-Envoy ignores it.
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

	ours(o, &d)

	if d.Allowed {
		d.Reason = ReasonAllowed
		if d.RemoveHeaders, err = stringList(o.Get(kReqHeadersRm), "request_headers_to_remove"); err != nil {
			return d, err
		}
		if d.ResponseHeaders, err = headerList(o, kRespHeadersAdd); err != nil {
			return d, err
		}
		if d.QueryParamsToRemove, err = stringList(o.Get(kQueryRm), "query_parameters_to_remove"); err != nil {
			return d, err
		}
		if d.QueryParamsToSet, err = queryParams(o.Get(kQuerySet)); err != nil {
			return d, err
		}
		return d, nil
	}

	d.Reason = ReasonDenied
	d.Status = http.StatusForbidden
	if t := o.Get(kBody); t != nil {
		s, ok := t.Value.(ast.String)
		if !ok {
			return d, fmt.Errorf(`"body" must be a string, got %s`, ast.ValueName(t.Value))
		}
		d.Body, d.PolicyBody = string(s), true
	}
	if t := o.Get(kHTTPStatus); t != nil {
		if d.Status, err = httpStatus(t); err != nil {
			return d, err
		}
	}
	return d, nil
}

// ours reads phantom-authz's own fields (reason, error, scope, acr_values,
// max_age); a value of another type is ignored, as OPA-Envoy ignores it.
func ours(o ast.Object, d *authz.Decision) {
	d.Detail, _ = stringField(o, kReason, "reason")
	d.Error, _ = stringField(o, kError, "error")
	d.Scope, _ = spaceList(o, kScope, "scope")
	d.ACRValues, _ = spaceList(o, kACRValues, "acr_values")
	if t := o.Get(kMaxAge); t != nil {
		if n, ok := t.Value.(ast.Number); ok {
			if age, ok := n.Int(); ok && age >= 0 {
				d.MaxAge = &age
			}
		}
	}
}

// httpStatus reads a denial's http_status: a whole number (written without
// a fraction, as OPA-Envoy demands) that is a status Envoy can send, 200 to
// 599 (Envoy sends any such status as it is, even one it has no name for;
// see README.md, "OPA-Envoy compatibility").
func httpStatus(t *ast.Term) (int, error) {
	n, ok := t.Value.(ast.Number)
	if !ok {
		return 0, fmt.Errorf(`"http_status" must be a number, got %s`, ast.ValueName(t.Value))
	}
	s, err := strconv.Atoi(string(n))
	if err != nil || s < 200 || s > 599 {
		return 0, fmt.Errorf(`"http_status" %s is not an HTTP status`, n)
	}
	return s, nil
}

// queryParams reads query_parameters_to_set: an object of name → string or
// array of strings, sorted by name; values keep their order.
func queryParams(t *ast.Term) ([]authz.Header, error) {
	if t == nil {
		return nil, nil
	}
	obj, ok := t.Value.(ast.Object)
	if !ok {
		return nil, fmt.Errorf(`"query_parameters_to_set" must be an object, got %s`, ast.ValueName(t.Value))
	}
	var out []authz.Header
	for _, key := range obj.Keys() {
		ks, ok := key.Value.(ast.String)
		if !ok {
			return nil, fmt.Errorf(`"query_parameters_to_set": names must be strings, has %s`, ast.ValueName(key.Value))
		}
		val := obj.Get(key)
		if s, ok := val.Value.(ast.String); ok {
			out = append(out, authz.Header{Key: string(ks), Value: string(s)})
			continue
		}
		vs, err := stringList(val, "query_parameters_to_set."+string(ks))
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			out = append(out, authz.Header{Key: string(ks), Value: v})
		}
	}
	return out, nil
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
			hk := string(ks) // as the policy wrote it, as OPA-Envoy sends it
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
