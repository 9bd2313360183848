package webhook

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// DetectNativeSidecars asks the API server once whether it supports native
// sidecars (init containers with restartPolicy Always, on by default from
// Kubernetes 1.29). The version from discovery decides; a version that
// cannot be read (a development build reports v0.0.0) is settled by a
// dry-run create of a pod with such an init container in namespace: an API
// server without the feature drops the field. It returns the answer and why.
func DetectNativeSidecars(ctx context.Context, cs kubernetes.Interface, namespace string) (bool, string) {
	v, err := cs.Discovery().ServerVersion()
	if err == nil {
		if native, ok := NativeSidecarsFromVersion(v.Major, v.Minor); ok {
			return native, fmt.Sprintf("API server version %s.%s", v.Major, v.Minor)
		}
	}
	var why string
	if err != nil {
		why = fmt.Sprintf("version unavailable: %v", err)
	} else {
		why = fmt.Sprintf("version %q unreadable", v.GitVersion)
	}
	native, probe := probeNativeSidecars(ctx, cs, namespace)
	return native, why + "; " + probe
}

func probeNativeSidecars(ctx context.Context, cs kubernetes.Interface, namespace string) (bool, string) {
	always := corev1.ContainerRestartPolicyAlways
	no, yes := false, true
	sc := &corev1.SecurityContext{
		RunAsNonRoot: &yes, AllowPrivilegeEscalation: &no,
		Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "eddy-native-sidecar-probe-", Namespace: namespace},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "sidecar", Image: "probe", RestartPolicy: &always, SecurityContext: sc}},
			Containers:     []corev1.Container{{Name: "main", Image: "probe", SecurityContext: sc}},
		},
	}
	got, err := cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return false, fmt.Sprintf("dry-run probe in %s failed (%v): regular containers", namespace, err)
	}
	if len(got.Spec.InitContainers) == 1 && got.Spec.InitContainers[0].RestartPolicy != nil {
		return true, "dry-run probe kept restartPolicy Always"
	}
	return false, "dry-run probe dropped restartPolicy Always"
}

// NativeSidecarsFromVersion reports whether a Kubernetes version (discovery's
// major and minor) has native sidecars on by default (≥ 1.29); ok is false
// when the version cannot be read.
func NativeSidecarsFromVersion(major, minor string) (native, ok bool) {
	var ma, mi int
	if _, err := fmt.Sscanf(strings.TrimSuffix(major, "+"), "%d", &ma); err != nil {
		return false, false
	}
	if _, err := fmt.Sscanf(strings.TrimSuffix(minor, "+"), "%d", &mi); err != nil {
		return false, false
	}
	if ma == 0 {
		return false, false
	}
	return ma > 1 || mi >= 29, true
}
