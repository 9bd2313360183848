package config

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	kruntime "k8s.io/apimachinery/pkg/runtime"

	"github.com/eddy-autotune/eddy/internal/workload"
)

func key(o *unstructured.Unstructured) string {
	return o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
}

// TestDeploymentIsWhatKustomizeInstalls: config.Deployment (what tests
// install) and `kubectl kustomize config` (what users apply) hold the same
// objects, CRDs aside.
func TestDeploymentIsWhatKustomizeInstalls(t *testing.T) {
	objs, err := Deployment()
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) == 0 || objs[0].GetKind() != "Namespace" {
		t.Fatalf("Deployment does not start with eddy's namespace: %d objects", len(objs))
	}
	var got []string
	for _, o := range objs {
		got = append(got, key(o))
	}
	sort.Strings(got)

	_, file, _, _ := runtime.Caller(0)
	kubectl := filepath.Join(filepath.Dir(file), "..", "bin", "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		if kubectl, err = exec.LookPath("kubectl"); err != nil {
			t.Skip("no kubectl (make tools) to render the kustomization with")
		}
	}
	out, err := exec.Command(kubectl, "kustomize", filepath.Dir(file)).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config: %v", err)
	}
	rendered, err := decodeAll(out)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, o := range rendered {
		if o.GetKind() != "CustomResourceDefinition" {
			want = append(want, key(o))
		}
	}
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("config.Deployment:\n  %s\nkubectl kustomize config:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestEveryComponentRunsAsItsOwnServiceAccount: each workload names a
// ServiceAccount of its own that the manifests create and bind.
func TestEveryComponentRunsAsItsOwnServiceAccount(t *testing.T) {
	objs, err := Deployment()
	if err != nil {
		t.Fatal(err)
	}
	sas, bound := map[string]bool{}, map[string]bool{}
	for _, o := range objs {
		switch o.GetKind() {
		case "ServiceAccount":
			sas[o.GetName()] = true
		case "RoleBinding", "ClusterRoleBinding":
			subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
			for _, s := range subjects {
				bound[s.(map[string]any)["name"].(string)] = true
			}
		}
	}
	seen := map[string]string{}
	for _, o := range objs {
		if o.GetKind() != "Deployment" && o.GetKind() != "DaemonSet" {
			continue
		}
		sa, _, _ := unstructured.NestedString(o.Object, "spec", "template", "spec", "serviceAccountName")
		switch {
		case sa == "" || sa == "default":
			t.Errorf("%s runs as the default service account", key(o))
		case !sas[sa]:
			t.Errorf("%s runs as %s, which the manifests do not create", key(o), sa)
		case !bound[sa]:
			t.Errorf("%s runs as %s, which no binding grants anything", key(o), sa)
		case seen[sa] != "":
			t.Errorf("%s and %s share the service account %s", seen[sa], key(o), sa)
		}
		seen[sa] = key(o)
	}
	if len(seen) != len(Components) {
		t.Errorf("%d workloads for %d components", len(seen), len(Components))
	}
}

// The collector and the webhook resolve pods' workloads with one resolver;
// each must be allowed to read every owner kind it follows, or the two would
// stop at different owners.
func TestResolversMayReadEveryOwnerKind(t *testing.T) {
	objs, err := Deployment()
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{"eddy-collector", "eddy-webhook"} {
		var rules []rbacv1.PolicyRule
		for _, o := range objs {
			if o.GetKind() == "ClusterRole" && o.GetName() == role {
				var cr rbacv1.ClusterRole
				if err := kruntime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &cr); err != nil {
					t.Fatal(err)
				}
				rules = cr.Rules
			}
		}
		if len(rules) == 0 {
			t.Fatalf("no ClusterRole %s", role)
		}
		for group, resources := range workload.OwnerResources {
			for _, res := range resources {
				if !allows(rules, group, res, "get") {
					t.Errorf("%s may not get %s in API group %q", role, res, group)
				}
			}
		}
	}
}

func allows(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	for _, r := range rules {
		if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) && len(r.ResourceNames) == 0 {
			return true
		}
	}
	return false
}

// TestAnalyzerFlushesWithinItsGracePeriod: the analyzer's shutdown flush
// (--shutdown-flush-timeout) ends at least 10 s before the kubelet kills
// it (terminationGracePeriodSeconds), so what it was writing is not lost.
func TestAnalyzerFlushesWithinItsGracePeriod(t *testing.T) {
	o := analyzerDeployment(t)
	v, _, _ := unstructured.NestedFieldNoCopy(o.Object, "spec", "template", "spec", "terminationGracePeriodSeconds")
	var grace int64
	switch n := v.(type) { // YAML decodes to float64, Go objects hold int64
	case int64:
		grace = n
	case float64:
		grace = int64(n)
	default:
		t.Fatalf("the analyzer's Deployment sets no terminationGracePeriodSeconds (%v)", v)
	}
	containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	for _, c := range containers {
		args, _, _ := unstructured.NestedStringSlice(c.(map[string]any), "args")
		for _, a := range args {
			v, ok := strings.CutPrefix(a, "--shutdown-flush-timeout=")
			if !ok {
				continue
			}
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatalf("%s: %v", a, err)
			}
			if limit := time.Duration(grace)*time.Second - 10*time.Second; d > limit {
				t.Fatalf("--shutdown-flush-timeout %s leaves less than 10s of terminationGracePeriodSeconds %d", d, grace)
			}
			return
		}
	}
	t.Fatal("the analyzer's Deployment does not set --shutdown-flush-timeout")
}

// analyzerDeployment is the analyzer's Deployment in config/.
func analyzerDeployment(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	objs, err := Deployment()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() == "Deployment" && o.GetName() == "eddy-analyzer" {
			return o
		}
	}
	t.Fatal("no eddy-analyzer Deployment")
	return nil
}

// TestAnalyzerCheckpointsOnItsClaim: the analyzer's --checkpoint-dir (the
// durable state collectors' acknowledgements wait for) is on a mounted
// volume — its root filesystem is read-only — and that volume is the
// claim, so that deleting the pod loses nothing acknowledged.
func TestAnalyzerCheckpointsOnItsClaim(t *testing.T) {
	o := analyzerDeployment(t)
	claims := map[string]bool{}
	volumes, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "volumes")
	for _, v := range volumes {
		name, _, _ := unstructured.NestedString(v.(map[string]any), "name")
		_, claims[name], _ = unstructured.NestedMap(v.(map[string]any), "persistentVolumeClaim")
	}
	containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	for _, c := range containers {
		var dir string
		args, _, _ := unstructured.NestedStringSlice(c.(map[string]any), "args")
		for _, a := range args {
			if v, ok := strings.CutPrefix(a, "--checkpoint-dir="); ok {
				dir = v
			}
		}
		if dir == "" {
			t.Fatal("the analyzer's Deployment does not set --checkpoint-dir")
		}
		mounts, _, _ := unstructured.NestedSlice(c.(map[string]any), "volumeMounts")
		for _, m := range mounts {
			path, _, _ := unstructured.NestedString(m.(map[string]any), "mountPath")
			name, _, _ := unstructured.NestedString(m.(map[string]any), "name")
			if dir == path || strings.HasPrefix(dir, strings.TrimSuffix(path, "/")+"/") {
				if !claims[name] {
					t.Fatalf("--checkpoint-dir %s is on volume %s, not a PersistentVolumeClaim", dir, name)
				}
				return
			}
		}
		t.Fatalf("--checkpoint-dir %s is on no mounted volume (the root filesystem is read-only)", dir)
	}
}
