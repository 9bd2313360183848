package history

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
)

func runRecord(pod string, first, last int64, bytes, waitNs uint64, recs ...string) *accessv1.FileAccess {
	return &accessv1.FileAccess{
		Workload: &accessv1.WorkloadRef{Namespace: "ml", Kind: "Job", Name: "train", Object: pod + "-job"},
		Pod:      pod, PodUid: "uid-" + pod, Recommendations: recs, Path: fmt.Sprintf("f%d", first),
		ReadOps: 10, ReadBytes: bytes, ReadWaitNano: waitNs, FirstAccessUnixNano: first, LastAccessUnixNano: last,
	}
}

// Each pod's reads are summed into its own run, whatever the windows.
func TestRunsAreKeptPerPod(t *testing.T) {
	h := New(Config{})
	h.Observe(1e9, 2e9, []*accessv1.FileAccess{runRecord("a", 1e9, 2e9, 100, 5e8)})
	h.Observe(2e9, 3e9, []*accessv1.FileAccess{runRecord("a", 2e9, 3e9, 50, 5e8), runRecord("b", 25e8, 3e9, 10, 0, "rec-1")})
	require.Len(t, h.Runs, 2)
	a, b := h.Runs[0], h.Runs[1]
	assert.Equal(t, Run{PodUID: "uid-a", Pod: "a", Object: "a-job", First: 1e9, Last: 3e9, ReadBytes: 150, ReadOps: 20, ReadWaitNano: 1e9}, a)
	assert.Equal(t, 2.0, a.WallSeconds())
	assert.Equal(t, 0.5, a.ReadWaitShare())
	assert.Equal(t, 75.0, a.Throughput())
	assert.Equal(t, []string{"rec-1"}, b.Recommendations)

	// Checkpointed with the history.
	data, err := json.Marshal(h)
	require.NoError(t, err)
	back, err := Restore(data)
	require.NoError(t, err)
	assert.Equal(t, h.Runs, back.Runs)
}

// Past MaxRuns the run whose reads are oldest goes; a run older than all
// kept is not added.
func TestRunsAreBounded(t *testing.T) {
	h := New(Config{MaxRuns: 3})
	for i := range 5 {
		t0 := int64(i+1) * 10e9
		h.Observe(t0, t0+1e9, []*accessv1.FileAccess{runRecord(fmt.Sprint(i), t0, t0+1e9, 1, 1)})
	}
	require.Len(t, h.Runs, 3)
	assert.Equal(t, []string{"2", "3", "4"}, []string{h.Runs[0].Pod, h.Runs[1].Pod, h.Runs[2].Pod})
	h.Observe(1e9, 2e9, []*accessv1.FileAccess{runRecord("late", 1e9, 2e9, 1, 1)})
	assert.Equal(t, "2", h.Runs[0].Pod, "a stale run does not evict a newer one")

	r, err := Restore([]byte(`{"runs":[{"uid":"a"},{"uid":"b"},{"uid":"c"},{"uid":"d"},{"uid":"e"},{"uid":"f"},{"uid":"g"},{"uid":"h"},{"uid":"i"},{"uid":"j"}]}`))
	require.NoError(t, err)
	assert.Len(t, r.Runs, DefaultMaxRuns, "a checkpoint holding more runs is cut to the cap")
	assert.Equal(t, "j", r.Runs[DefaultMaxRuns-1].PodUID, "keeping the latest")
}

func TestRunWithoutWallTime(t *testing.T) {
	r := Run{First: 5, Last: 5, ReadBytes: 10, ReadWaitNano: 3}
	assert.Zero(t, r.ReadWaitShare())
	assert.Zero(t, r.Throughput())
}
