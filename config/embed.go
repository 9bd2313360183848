// Package config carries eddy's Kubernetes manifests inside the binary: the
// generated CRDs and the samples, so that `eddy-dev up` and the tests install
// exactly what is committed, from anywhere.
package config

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"bytes"
	"errors"
	"io"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"
)

//go:embed crd/*.yaml
var crdFS embed.FS

//go:embed samples/*.yaml
var samplesFS embed.FS

//go:embed webhook/webhooks.yaml
var webhooksYAML []byte

//go:embed webhook/origin-policy.yaml
var originPolicyYAML []byte

//go:embed kustomization.yaml namespace.yaml opted-in-writes.yaml analyzer/*.yaml collector/*.yaml webhook/*.yaml operator/*.yaml
var deployFS embed.FS

// Components are the folders of config/ that install eddy's components, in
// the order config/kustomization.yaml lists them.
var Components = []string{"analyzer", "collector", "webhook", "operator"}

// Deployment returns every object `kubectl apply -k config` installs except
// the CRDs (see CRDs): eddy's namespace, then each component's objects in the
// order its kustomization.yaml lists its files, so what tests install is
// what the kustomizations install.
func Deployment() ([]*unstructured.Unstructured, error) {
	var top kustomization
	if err := readKustomization(".", &top); err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	for _, res := range top.Resources {
		switch {
		case strings.HasPrefix(res, "crd/"):
			continue
		case strings.HasSuffix(res, ".yaml"):
			objs, err := decodeFile(res)
			if err != nil {
				return nil, err
			}
			out = append(out, objs...)
		default:
			var k kustomization
			if err := readKustomization(res, &k); err != nil {
				return nil, err
			}
			for _, f := range k.Resources {
				objs, err := decodeFile(res + "/" + f)
				if err != nil {
					return nil, err
				}
				out = append(out, objs...)
			}
		}
	}
	return out, nil
}

type kustomization struct {
	Resources []string `json:"resources"`
}

func readKustomization(dir string, k *kustomization) error {
	name := path.Join(dir, "kustomization.yaml")
	data, err := deployFS.ReadFile(name)
	if err != nil {
		return fmt.Errorf("config/%s: %w", name, err)
	}
	if err := sigsyaml.Unmarshal(data, k); err != nil {
		return fmt.Errorf("decode config/%s: %w", name, err)
	}
	return nil
}

func decodeFile(name string) ([]*unstructured.Unstructured, error) {
	data, err := deployFS.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("config/%s (listed in a kustomization.yaml): %w", name, err)
	}
	objs, err := decodeAll(data)
	if err != nil {
		return nil, fmt.Errorf("decode config/%s: %w", name, err)
	}
	return objs, nil
}

// WebhookConfigurations returns the mutating and validating webhook
// configurations of config/webhook/webhooks.yaml.
func WebhookConfigurations() ([]*unstructured.Unstructured, error) {
	objs, err := decodeAll(webhooksYAML)
	if err != nil {
		return nil, fmt.Errorf("decode webhook/webhooks.yaml: %w", err)
	}
	return objs, nil
}

// AdmissionPolicies returns the ValidatingAdmissionPolicies (and their
// bindings) of config/webhook/origin-policy.yaml.
func AdmissionPolicies() ([]*unstructured.Unstructured, error) {
	objs, err := decodeAll(originPolicyYAML)
	if err != nil {
		return nil, fmt.Errorf("decode webhook/origin-policy.yaml: %w", err)
	}
	return objs, nil
}

// CRDs returns eddy's CustomResourceDefinitions as generated into config/crd.
func CRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	var out []*apiextensionsv1.CustomResourceDefinition
	err := eachFile(crdFS, "crd", func(name string, data []byte) error {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := sigsyaml.UnmarshalStrict(data, crd); err != nil {
			return fmt.Errorf("decode CRD %s: %w", name, err)
		}
		out = append(out, crd)
		return nil
	})
	return out, err
}

// Samples returns every object in config/samples, in file order, each with
// the file it came from.
func Samples() ([]Sample, error) {
	var out []Sample
	err := eachFile(samplesFS, "samples", func(name string, data []byte) error {
		objs, err := decodeAll(data)
		if err != nil {
			return fmt.Errorf("decode sample %s: %w", name, err)
		}
		for _, o := range objs {
			out = append(out, Sample{File: name, Object: o})
		}
		return nil
	})
	return out, err
}

// Sample is one object from a file under config/samples.
type Sample struct {
	File   string
	Object *unstructured.Unstructured
}

func eachFile(fsys embed.FS, dir string, fn func(name string, data []byte) error) error {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	for _, e := range entries {
		data, err := fs.ReadFile(fsys, dir+"/"+e.Name())
		if err != nil {
			return err
		}
		if err := fn(dir+"/"+e.Name(), data); err != nil {
			return err
		}
	}
	return nil
}

func decodeAll(data []byte) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(u.Object) == 0 {
			continue
		}
		out = append(out, u)
	}
}
