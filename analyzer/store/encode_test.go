package store

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/eddy-autotune/eddy/analyzer"
)

// A checkpoint encoded after TakeDirty released the lock restores exactly
// the state TakeDirty took — its files and runs too — not what came after.
func TestCheckpointIsTheStateTaken(t *testing.T) {
	s := New(analyzer.Options{})
	a := rec("ml", "a")
	a.Path, a.FileSize, a.Passes = "/data/part-0", 100, 1
	s.Apply("c1", win(1, a))
	k := analyzer.KeyOf(a)
	want, err := json.Marshal(s.tracker.History(k))
	require.NoError(t, err)
	entries, err := s.TakeDirty(3e9)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Nil(t, entries[0].Checkpoint, "not compressed under the lock")
	// More windows before the checkpoint is encoded.
	s.Apply("c1", win(2, a))
	s.Apply("c2", win(1, a))
	require.NoError(t, EncodeCheckpoints(entries))
	require.NotEmpty(t, entries[0].Checkpoint)

	r := New(analyzer.Options{})
	require.NoError(t, r.Restore(entries[0].Key, entries[0].Checkpoint))
	require.Equal(t, map[string]uint64{"c1": 1}, r.meta[entries[0].Key].Applied)
	require.Equal(t, 1.0, r.tracker.History(entries[0].Key).Totals.Windows, "the window applied after TakeDirty is not in it")
	got, err := json.Marshal(r.tracker.History(k))
	require.NoError(t, err)
	require.JSONEq(t, string(want), string(got), "the history restored is the history taken")
	require.Equal(t, 3*100.0, s.tracker.History(k).Files[0].ReadBytes, "while the store's own went on: three windows")
}

// BenchmarkTakeDirty measures a flush of 2,000 keys of 256 files each
// (the history's default bound): the time the intake's lock is held
// (TakeDirty), the time compressing after it (EncodeCheckpoints) and the
// checkpoints' mean size, for gzip's default level and its fastest side by
// side.
func BenchmarkTakeDirty(b *testing.B) {
	const keys, files = 2000, 256
	s := New(analyzer.Options{})
	for k := range keys {
		w := win(1)
		for f := range files {
			r := rec(fmt.Sprintf("ns-%d", k%20), fmt.Sprintf("w-%d", k))
			r.Path = fmt.Sprintf("/data/w-%d/part-%05d", k, f)
			r.ReadBytes, r.FileSize, r.Passes, r.SeqSteps = 4<<20, 4<<20, 1, 15
			w.Files = append(w.Files, r)
		}
		s.Apply("c1", w)
	}
	defer func(l int) { checkpointLevel = l }(checkpointLevel)
	for _, level := range []struct {
		name  string
		level int
	}{{"default", gzip.DefaultCompression}, {"fastest", gzip.BestSpeed}} {
		b.Run(level.name, func(b *testing.B) {
			checkpointLevel = level.level
			var locked, encoding time.Duration
			var size, n int
			for b.Loop() {
				for k := range s.meta {
					s.MarkDirty(k)
				}
				start := time.Now()
				entries, err := s.TakeDirty(3e9)
				if err != nil {
					b.Fatal(err)
				}
				taken := time.Now()
				if err := EncodeCheckpoints(entries); err != nil {
					b.Fatal(err)
				}
				locked += taken.Sub(start)
				encoding += time.Since(taken)
				for _, e := range entries {
					size += len(e.Checkpoint)
					n++
				}
			}
			b.ReportMetric(locked.Seconds()*1e3/float64(b.N), "locked-ms/flush")
			b.ReportMetric(encoding.Seconds()*1e3/float64(b.N), "encode-ms/flush")
			b.ReportMetric(float64(size)/float64(n)/1024, "KiB/checkpoint")
		})
	}
}
