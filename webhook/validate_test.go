package webhook

import (
	"encoding/json"
	"fmt"
	"testing"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
)

// podProblems lists what Kubernetes validation would reject in pod, as far
// as this module can check without k8s.io/kubernetes: names unique, mounts
// referencing volumes, env names unique, sidecar restart policies. It is a
// set so that a mutated pod can be checked to add no problem of its own.
func podProblems(pod *corev1.Pod) map[string]bool {
	p := map[string]bool{}
	add := func(format string, args ...any) { p[fmt.Sprintf(format, args...)] = true }

	volumes := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		if volumes[v.Name] {
			add("duplicate volume %q", v.Name)
		}
		volumes[v.Name] = true
	}
	names := map[string]bool{}
	ports := map[string]bool{}
	check := func(kind string, c corev1.Container) {
		if names[c.Name] {
			add("duplicate container name %q", c.Name)
		}
		names[c.Name] = true
		env := map[string]bool{}
		for _, e := range c.Env {
			if env[e.Name] {
				add("%s %q: duplicate env %q", kind, c.Name, e.Name)
			}
			env[e.Name] = true
		}
		paths := map[string]bool{}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				add("%s %q: mount of missing volume %q", kind, c.Name, m.Name)
			}
			if paths[m.MountPath] {
				add("%s %q: duplicate mount path %q", kind, c.Name, m.MountPath)
			}
			paths[m.MountPath] = true
		}
		for _, port := range c.Ports {
			if port.Name == "" {
				continue
			}
			if ports[port.Name] {
				add("duplicate port name %q", port.Name)
			}
			if len(port.Name) > 15 {
				add("port name %q longer than 15", port.Name)
			}
			ports[port.Name] = true
		}
		if c.RestartPolicy != nil && (kind != "initContainer" || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways) {
			add("%s %q: restartPolicy %q", kind, c.Name, *c.RestartPolicy)
		}
	}
	for _, c := range pod.Spec.InitContainers {
		check("initContainer", c)
	}
	for _, c := range pod.Spec.Containers {
		check("container", c)
	}
	return p
}

// assertValidPod fails when pod does not survive a JSON round trip or has
// a problem podProblems finds.
func assertValidPod(t testing.TB, pod *corev1.Pod) {
	t.Helper()
	if err := roundTrips(pod); err != nil {
		t.Fatal(err)
	}
	for problem := range podProblems(pod) {
		t.Errorf("invalid pod: %s", problem)
	}
}

func roundTrips(pod *corev1.Pod) error {
	data, err := json.Marshal(pod)
	if err != nil {
		return fmt.Errorf("marshal pod: %w", err)
	}
	var back corev1.Pod
	if err := json.Unmarshal(data, &back); err != nil {
		return fmt.Errorf("unmarshal pod: %w", err)
	}
	again, err := json.Marshal(&back)
	if err != nil {
		return fmt.Errorf("marshal pod again: %w", err)
	}
	if string(again) != string(data) && !apiequality.Semantic.DeepEqual(pod, &back) {
		return fmt.Errorf("pod changed in a JSON round trip:\n%s\n%s", data, again)
	}
	return nil
}

// patchProduces reports whether PodPatch(before, after), applied by a JSON
// patch implementation to before as the API server would, yields after.
func patchProduces(before, after *corev1.Pod) error {
	ops, err := json.Marshal(PodPatch(before, after))
	if err != nil {
		return fmt.Errorf("encode patch: %w", err)
	}
	patch, err := jsonpatchapply.DecodePatch(ops)
	if err != nil {
		return fmt.Errorf("decode patch %s: %w", ops, err)
	}
	doc, err := json.Marshal(before)
	if err != nil {
		return err
	}
	patched, err := patch.Apply(doc)
	if err != nil {
		return fmt.Errorf("apply patch %s: %w", ops, err)
	}
	// Compared as the API server sees them: serialized, after a decode.
	var got corev1.Pod
	if err := json.Unmarshal(patched, &got); err != nil {
		return fmt.Errorf("decode patched pod: %w", err)
	}
	gotJSON, err := json.Marshal(&got)
	if err != nil {
		return err
	}
	// after goes through the same decode, so that canonical forms (a
	// quantity's format) compare equal.
	afterJSON, err := json.Marshal(after)
	if err != nil {
		return err
	}
	var decoded corev1.Pod
	if err := json.Unmarshal(afterJSON, &decoded); err != nil {
		return err
	}
	want, err := json.Marshal(&decoded)
	if err != nil {
		return err
	}
	if string(gotJSON) != string(want) {
		return fmt.Errorf("patch %s gives\n%s\nwant\n%s", ops, gotJSON, want)
	}
	return nil
}
