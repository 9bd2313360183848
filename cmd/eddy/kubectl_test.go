package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/controlplane"
)

// Invoked through a symlink named kubectl-eddy (as kubectl runs its
// plugins), the test binary is the plugin.
func init() {
	if filepath.Base(os.Args[0]) == "kubectl-eddy" {
		main()
		os.Exit(0)
	}
}

// TestKubectlEddyPlugin runs the review commands as `kubectl eddy ...`
// through kubectl's own plugin mechanism, and as `eddy ...` in process,
// against a real API server.
func TestKubectlEddyPlugin(t *testing.T) {
	env := controlplane.StartForTest(t, controlplane.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ml"}}))
	rec := &eddyv1alpha1.Recommendation{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "imagenet-cache"},
		Spec: eddyv1alpha1.RecommendationSpec{
			TargetRef:  &eddyv1alpha1.WorkloadReference{APIVersion: "batch/v1", Kind: "Job", Name: "train"},
			Dataset:    eddyv1alpha1.DatasetReference{Name: "imagenet", Source: "Fluid"},
			Action:     eddyv1alpha1.ActionScaleCache,
			ScaleCache: &eddyv1alpha1.ScaleCacheParameters{Replicas: 4},
			Evidence: eddyv1alpha1.Evidence{Class: eddyv1alpha1.ClassShuffledEpochs, Confidence: 0.91,
				Features:        &eddyv1alpha1.AccessFeatures{ReadWaitShare: 0.42, ThroughputBytesPerSecond: 300 << 20, WorkingSetBytes: 140 << 30},
				ExpectedBenefit: &eddyv1alpha1.Benefit{Summary: "working set 140Gi fits 4 workers"}},
		},
	}
	require.NoError(t, env.Client.Create(ctx, rec))

	// kubectl finds the plugin on PATH.
	self, err := os.Executable()
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.Symlink(self, filepath.Join(dir, "kubectl-eddy")))
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("KUBECONFIG", env.Kubeconfig)
	kubectl := func(args ...string) (string, error) {
		bin, err := exec.LookPath("kubectl")
		if err != nil {
			bin = "../../bin/kubectl"
		}
		// kubectl takes no flags before a plugin's name: KUBECONFIG says where.
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		return string(out), err
	}
	out, err := kubectl("eddy", "recommendations", "-n", "ml")
	require.NoError(t, err, out)
	for _, want := range []string{"imagenet-cache", "New", "4 cache workers", "wait 42%", "working set 140Gi fits 4 workers"} {
		require.Contains(t, out, want)
	}
	out, err = kubectl("eddy", "approve", "imagenet-cache", "-n", "ml", "-m", "go ahead")
	require.NoError(t, err, out)
	require.Contains(t, out, "recommendation ml/imagenet-cache approved")
	got := &eddyv1alpha1.Recommendation{}
	require.NoError(t, env.Client.Get(ctx, client.ObjectKeyFromObject(rec), got))
	c := meta.FindStatusCondition(got.Status.Conditions, eddyv1alpha1.ConditionApproved)
	require.NotNil(t, c)
	require.Equal(t, "go ahead", c.Message)

	// The same commands on the eddy binary, in process.
	var buf bytes.Buffer
	rootCmd.SetOut(&buf)
	rootCmd.SetArgs([]string{"status", "--kubeconfig", env.Kubeconfig, "-n", "ml"})
	require.NoError(t, rootCmd.ExecuteContext(ctx))
	require.Contains(t, buf.String(), "Namespace ml")
	require.Contains(t, buf.String(), "Policy:      none (mode Recommend")
	buf.Reset()
	rootCmd.SetArgs([]string{"reject", "imagenet-cache", "--kubeconfig", env.Kubeconfig, "-n", "ml"})
	require.NoError(t, rootCmd.ExecuteContext(ctx))
	require.Contains(t, buf.String(), "recommendation ml/imagenet-cache rejected")
	buf.Reset()
	rootCmd.SetArgs([]string{"explain", "Job/train", "--kubeconfig", env.Kubeconfig, "-n", "ml"})
	require.NoError(t, rootCmd.ExecuteContext(ctx))
	require.Contains(t, buf.String(), "imagenet-cache: ScaleCache 4 cache workers")
}
