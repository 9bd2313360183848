package demo_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/demo"
)

// TestWholeLoop is eddy's end-to-end test: real API server, the analyzer,
// collector (real kernel programs), webhook and operator as separate eddy
// processes, and a workload reading a dataset in shuffled epochs from its
// pod's cgroup. The loop must close: the reads are classified, a Prefetch
// recommendation is proposed and auto-applied, and the workload's next pod
// comes out of admission with the prefetch sidecar.
func TestWholeLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane and loads kernel programs; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for the kernel programs and cgroups")
	}
	bin := t.TempDir()
	for pkg, out := range map[string]string{"../../cmd/eddy": "eddy", "../node/cmd/workload": "eddy-workload"} {
		build := exec.Command("go", "build", "-o", filepath.Join(bin, out), pkg)
		if b, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	res, err := demo.Run(ctx, demo.Options{Dir: filepath.Join(t.TempDir(), "demo"), EddyBin: filepath.Join(bin, "eddy"), Out: &progress})
	t.Log("\n" + progress.String())
	require.NoError(t, err)

	assert.Equal(t, v1.ClassShuffledEpochs, res.Profile.Status.Class, "256 small files read whole in a new order each of 4 epochs")
	require.NotNil(t, res.Profile.Status.Features)
	assert.EqualValues(t, 256, res.Profile.Status.Features.Files)
	assert.InDelta(t, 4, res.Profile.Status.Features.Epochs, 0.5)

	var prefetch *v1.Recommendation
	for i := range res.Recommendations {
		if res.Recommendations[i].Spec.Action == v1.ActionPrefetch {
			prefetch = &res.Recommendations[i]
		}
	}
	require.NotNil(t, prefetch, "a Prefetch recommendation is proposed")
	assert.Equal(t, "Job", prefetch.Spec.TargetRef.Kind)
	assert.Equal(t, demo.JobName, prefetch.Spec.TargetRef.Name)
	assert.Equal(t, demo.Dataset, prefetch.Spec.Dataset.Name)

	require.NotNil(t, res.Applied)
	assert.Equal(t, v1.ActionPrefetch, res.Applied.Spec.Action, "the Auto policy allows Prefetch")
	require.NotNil(t, res.NextPod)
	assert.Contains(t, res.NextPod.Annotations[v1.InjectedAnnotation], "prefetch")
	assert.Contains(t, res.NextPod.Annotations[v1.RecommendationAnnotation], res.Applied.Name)
	var sidecar []string
	for _, c := range res.NextPod.Spec.InitContainers {
		if c.Name == "eddy-prefetch" {
			sidecar = c.Args
			require.NotNil(t, c.RestartPolicy, "a native sidecar on a 1.31 API server")
		}
	}
	require.NotEmpty(t, sidecar, "the prefetch sidecar is injected")
	args := strings.Join(sidecar, " ")
	assert.Contains(t, args, "--strategy="+string(res.Applied.Spec.Prefetch.Strategy))
	assert.Contains(t, args, "--manifest-url=https://127.0.0.1:")
	assert.Contains(t, res.ReviewScreen, "Applied")
}
