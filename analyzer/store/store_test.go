package store

import (
	"fmt"
	"runtime"
	"testing"
	"time"
	"weak"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"

	"github.com/eddy-autotune/eddy/analyzer"
)

func rec(ns, name string) *accessv1.FileAccess {
	return &accessv1.FileAccess{
		Workload: &accessv1.WorkloadRef{Namespace: ns, Kind: "Job", ApiVersion: "batch/v1", Name: name},
		Dataset:  &accessv1.DatasetRef{Namespace: ns, Name: "data"}, Pod: name + "-0", PodUid: "u-" + name,
		ReadOps: 1, ReadBytes: 100, FirstAccessUnixNano: 1e9, LastAccessUnixNano: 2e9,
	}
}

func win(seq uint64, recs ...*accessv1.FileAccess) *accessv1.AccessWindow {
	return &accessv1.AccessWindow{Sequence: seq, StartUnixNano: 1e9, EndUnixNano: 2e9, Files: recs}
}

// A key not yet written holds back only the collectors whose windows
// touched it, and only from the first window not written.
func TestFrontier(t *testing.T) {
	s := New(analyzer.Options{})
	a, b := rec("ml", "a"), rec("ml", "b")
	s.Apply("c1", win(1, a))
	s.Apply("c1", win(2, b))
	s.Apply("c2", win(1, a))
	entries, err := s.TakeDirty(3e9)
	require.NoError(t, err)
	received := map[string]uint64{"c1": 2, "c2": 1}
	assert.Equal(t, map[string]uint64{"c1": 0, "c2": 0}, s.Frontier(received), "nothing written yet")
	for _, e := range entries {
		if e.Key.WorkloadName == "a" {
			s.MarkWritten(e.Key, e.Meta.Applied)
		}
	}
	assert.Equal(t, map[string]uint64{"c1": 1, "c2": 1}, s.Frontier(received), "b (c1's window 2) is not written")
	s.Apply("c1", win(3, a))
	received["c1"] = 3
	assert.Equal(t, map[string]uint64{"c1": 1, "c2": 1}, s.Frontier(received))
	s.Quarantine(analyzer.KeyOf(b), time.Now().Add(time.Minute))
	assert.Equal(t, map[string]uint64{"c1": 2, "c2": 1}, s.Frontier(received),
		"a quarantined key holds nobody back; c1's window 3 touched a, not written yet")
	for _, e := range mustTake(t, s) {
		s.MarkWritten(e.Key, e.Meta.Applied)
	}
	assert.Equal(t, map[string]uint64{"c1": 3, "c2": 1}, s.Frontier(received), "everything written")
	assert.Equal(t, 1, s.Apply("c1", win(4, b, a)), "records of a quarantined key are refused")
	assert.Equal(t, 1, s.Quarantined())
}

// Per-collector metadata stays bounded however many collectors came and went.
func TestCollectorsArePruned(t *testing.T) {
	s := New(analyzer.Options{})
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	a := rec("ml", "a")
	for i := range MaxCollectorsPerKey + 100 {
		s.Apply(fmt.Sprintf("c%d", i), win(1, a))
		now = now.Add(time.Second)
	}
	m := s.meta[analyzer.KeyOf(a)]
	assert.Len(t, m.Applied, MaxCollectorsPerKey)
	assert.NotContains(t, m.Applied, "c0", "the least recently heard goes first")
	now = now.Add(CollectorRetention + time.Hour)
	s.Apply("fresh", win(1, a))
	assert.Equal(t, map[string]uint64{"fresh": 1}, m.Applied, "collectors unheard for the retention are forgotten")
}

func mustTake(t *testing.T, s *Store) []Entry {
	t.Helper()
	e, err := s.TakeDirty(3e9)
	require.NoError(t, err)
	return e
}

// TestNotWatchedIsNotIdle: a workload's key assessed two hours after its
// last read is idle for those hours only as far as collectors said they
// watched its pods (windows naming them as observed, with no record of
// theirs); hours nobody watched — it rested — count for nothing, also
// after a restart from the checkpoint.
func TestNotWatchedIsNotIdle(t *testing.T) {
	const hour = int64(time.Hour)
	s := New(analyzer.Options{})
	a := rec("ml", "a")
	s.Apply("c1", win(1, a))
	later := 2e9 + 2*hour
	idle := func(s *Store) float64 {
		t.Helper()
		s.MarkDirty(analyzer.KeyOf(a))
		entries, err := s.TakeDirty(later)
		require.NoError(t, err)
		require.Len(t, entries, 1)
		return entries[0].Assessment.Features.IdleSeconds
	}
	assert.Zero(t, idle(s), "two hours nobody watched made the workload idle")

	// Its pod is watched for the first hour (another workload's observed
	// pod changes nothing for it).
	other := &accessv1.WorkloadRef{Namespace: "ml", Kind: "Job", ApiVersion: "batch/v1", Name: "b"}
	s.Apply("c1", &accessv1.AccessWindow{Sequence: 2, StartUnixNano: 2e9, EndUnixNano: 2e9 + 2*hour,
		Observed: []*accessv1.ObservedPod{{Workload: other, Pod: "b-0", PodUid: "u-b"}}})
	assert.Zero(t, idle(s))
	s.Apply("c1", &accessv1.AccessWindow{Sequence: 3, StartUnixNano: 2e9, EndUnixNano: 2e9 + hour,
		Observed: []*accessv1.ObservedPod{{Workload: a.Workload, Pod: a.Pod, PodUid: a.PodUid}}})
	assert.InDelta(t, 3600, idle(s), 1)

	entries, err := s.TakeDirty(later)
	require.NoError(t, err)
	require.Empty(t, entries)
	s.MarkDirty(analyzer.KeyOf(a))
	entries, err = s.TakeDirty(later)
	require.NoError(t, err)
	require.NoError(t, EncodeCheckpoints(entries))
	restored := New(analyzer.Options{})
	require.NoError(t, restored.Restore(analyzer.KeyOf(a), entries[0].Checkpoint))
	assert.InDelta(t, 3600, idle(restored), 1, "the watched hour survives a restart; the hour after it is still unknown")
}

// A window's records are garbage once it is applied: what the store keeps
// of them is folded into its own state, so the last window of every
// collector does not stay live until the next.
func TestAppliedRecordsAreNotKept(t *testing.T) {
	s := New(analyzer.Options{})
	var kept []weak.Pointer[accessv1.FileAccess]
	func() {
		var recs []*accessv1.FileAccess
		for i := range 100 {
			r := rec("ml", fmt.Sprintf("w-%d", i%10))
			r.Path = fmt.Sprintf("/data/part-%d", i)
			recs = append(recs, r)
			kept = append(kept, weak.Make(r))
		}
		s.Apply("c1", win(1, recs...))
	}()
	runtime.GC()
	live := 0
	for _, p := range kept {
		if p.Value() != nil {
			live++
		}
	}
	assert.Zero(t, live, "records of an applied window still live")
	entries, err := s.TakeDirty(3e9)
	require.NoError(t, err)
	assert.Len(t, entries, 10, "and every key was applied")
}
