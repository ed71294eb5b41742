// Package manifests checks the Kubernetes, Istio and Envoy Gateway manifests
// of the repository by decoding them strictly into those projects' own Go
// API types, so a misspelt or unknown field fails as the API server (or
// istioctl) would refuse it. It is a Go module of its own: the service
// binary never links these types.
package manifests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	egv1alpha1 "github.com/envoyproxy/gateway/api/v1alpha1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// IstioOperator is the envelope of istioctl's install file. Its Go type
// lives in istio.io/istio (the whole control plane), not in istio.io/api, so
// the envelope is declared here and the part phantom-authz needs,
// spec.meshConfig, is decoded into Istio's own MeshConfig.
type IstioOperator struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		MeshConfig json.RawMessage `json:"meshConfig"`
	} `json:"spec"`
	// Mesh is spec.meshConfig, decoded by Decode.
	Mesh *meshv1alpha1.MeshConfig `json:"-"`
}

// types are the kinds the manifests may use, by apiVersion and kind.
var types = map[string]func() any{
	"v1/Namespace":                                     func() any { return &corev1.Namespace{} },
	"v1/ServiceAccount":                                func() any { return &corev1.ServiceAccount{} },
	"v1/ConfigMap":                                     func() any { return &corev1.ConfigMap{} },
	"v1/Service":                                       func() any { return &corev1.Service{} },
	"apps/v1/Deployment":                               func() any { return &appsv1.Deployment{} },
	"autoscaling/v2/HorizontalPodAutoscaler":           func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"policy/v1/PodDisruptionBudget":                    func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":               func() any { return &networkingv1.NetworkPolicy{} },
	"security.istio.io/v1/AuthorizationPolicy":         func() any { return &securityv1.AuthorizationPolicy{} },
	"install.istio.io/v1alpha1/IstioOperator":          func() any { return &IstioOperator{} },
	"gateway.envoyproxy.io/v1alpha1/SecurityPolicy":    func() any { return &egv1alpha1.SecurityPolicy{} },
	"gateway.networking.k8s.io/v1/HTTPRoute":           func() any { return &gwapiv1.HTTPRoute{} },
	"gateway.networking.k8s.io/v1beta1/ReferenceGrant": func() any { return &gwapiv1beta1.ReferenceGrant{} },
}

// Decode decodes every document of a YAML file strictly into the Go type of
// its apiVersion and kind: an unknown or misspelt field, a duplicated key, a
// value of the wrong type or a kind without a registered type is an error
// naming the document.
func Decode(b []byte) ([]any, error) {
	var out []any
	for i, doc := range splitDocuments(b) {
		obj, err := decodeOne(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		if obj != nil {
			out = append(out, obj)
		}
	}
	return out, nil
}

// DecodeFile is Decode of a file.
func DecodeFile(path string) ([]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	objs, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.ToSlash(path), err)
	}
	return objs, nil
}

func decodeOne(doc []byte) (any, error) {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	if s := strings.TrimSpace(string(j)); s == "null" || s == "" {
		return nil, nil // an empty document (a comment only)
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		return nil, err
	}
	newObj, ok := types[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("no Go API type registered for %s %s", tm.APIVersion, tm.Kind)
	}
	// Kubernetes' own strict decoding: field names match case-sensitively
	// (encoding/json would take failopen for failOpen), unknown and
	// duplicated fields are errors.
	obj := newObj()
	strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("%s: %w", tm.Kind, errors.Join(strict...))
	}
	// Istio's generated UnmarshalJSON allows unknown fields: decode the
	// protobuf parts again with protojson, which does not.
	switch o := obj.(type) {
	case *securityv1.AuthorizationPolicy:
		if err := strictProto(j, "spec", &o.Spec); err != nil {
			return nil, fmt.Errorf("%s spec: %w", tm.Kind, err)
		}
	case *IstioOperator:
		o.Mesh = &meshv1alpha1.MeshConfig{}
		if err := protojson.Unmarshal(o.Spec.MeshConfig, o.Mesh); err != nil {
			return nil, fmt.Errorf("%s spec.meshConfig: %w", tm.Kind, err)
		}
	}
	return obj, nil
}

// strictProto decodes the field of a JSON object into m with protojson.
func strictProto(j []byte, field string, m proto.Message) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(j, &top); err != nil {
		return err
	}
	raw, ok := top[field]
	if !ok {
		return errors.New("missing")
	}
	proto.Reset(m)
	return protojson.Unmarshal(raw, m)
}

// splitDocuments splits a YAML stream on its "---" lines.
func splitDocuments(b []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	r := bytes.NewReader(b)
	for {
		line, err := readLine(r)
		if strings.TrimRight(line, " \t\r\n") == "---" {
			docs = append(docs, bytes.Clone(cur.Bytes()))
			cur.Reset()
		} else {
			cur.WriteString(line)
		}
		if err != nil {
			break
		}
	}
	return append(docs, cur.Bytes())
}

func readLine(r *bytes.Reader) (string, error) {
	var sb strings.Builder
	for {
		c, err := r.ReadByte()
		if err == io.EOF {
			return sb.String(), err
		}
		sb.WriteByte(c)
		if c == '\n' {
			return sb.String(), nil
		}
	}
}
