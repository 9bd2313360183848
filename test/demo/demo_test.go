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
	"github.com/eddy-autotune/eddy/test/slowremote"
)

// TestWholeLoop is eddy's end-to-end test: real API server, the analyzer,
// collector (real kernel programs), webhook and operator as separate eddy
// processes, and a workload reading a dataset in shuffled epochs from its
// pod's cgroup, over a slow remote (rclone behind a proxy adding latency and
// capping bandwidth). The loop must close: the reads are classified, a
// Prefetch recommendation is proposed and auto-applied, the workload's next
// pod comes out of admission with the prefetch sidecar, and with that
// sidecar run first the same training run is much faster than the cold one.
func TestWholeLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane and loads kernel programs; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for the kernel programs and cgroups")
	}
	if why := slowremote.Unavailable(); why != "" {
		t.Skip("the demo's slow remote cannot run: " + why)
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

	assert.Equal(t, v1.ClassShuffledEpochs, res.Profile.Status.Class, "128 small files read whole in a new order each of 3 epochs")
	require.NotNil(t, res.Profile.Status.Features)
	assert.EqualValues(t, 128, res.Profile.Status.Features.Files)
	assert.GreaterOrEqual(t, res.Profile.Status.Features.Epochs, 2.5, "the cold run's 3 epochs, and the next pod's if already recorded")
	assert.Greater(t, res.ColdReadWaitShare, 0.5, "cold over the slow remote, the run mostly waits on reads (about 90%)")

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

	t.Logf("job time cold %.2fs, after the injected prefetcher (%.2fs) %.2fs: %.1fx", res.ColdSeconds, res.PrefetchSeconds, res.WarmSeconds, res.Speedup)
	assert.Greater(t, res.PrefetchSeconds, 0.0)
	assert.Greater(t, res.Speedup, 2.0, "with the mount's cache warmed by the prefetcher the job is much faster (4.2-7.0x in four runs on this 2-core VM)")
}
