package manifest

import (
	"compress/gzip"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/eddy-autotune/eddy/analyzer"
	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	manifestv1 "github.com/eddy-autotune/eddy/api/manifest/v1"
	"github.com/eddy-autotune/eddy/internal/gz"
)

func rec(path string) *accessv1.FileAccess {
	return &accessv1.FileAccess{
		Workload:  &accessv1.WorkloadRef{Namespace: "ml", Kind: "Job", Name: "train"},
		Dataset:   &accessv1.DatasetRef{Namespace: "ml", Name: "imagenet"},
		Path:      path,
		ReadOps:   1,
		ReadBytes: 4096,
	}
}

// A workload that opens ever more long paths cannot make the analyzer hold
// more than MaxPathBytesPerKey of them; the manifest says it was cut, and
// the bound holds again after a restart.
func TestPathBytesAreBoundedPerKey(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir, DefaultMaxFiles)
	require.NoError(t, err)
	long := strings.Repeat("x", 4000)
	n := MaxPathBytesPerKey/4000 + 50
	recs := make([]*accessv1.FileAccess, 0, n)
	for i := range n {
		recs = append(recs, rec(fmt.Sprintf("%s/%08d", long, i)))
	}
	s.Observe(recs)
	k := analyzer.KeyOf(recs[0])
	doc, ok := s.Get(k, 0, 0.9)
	require.True(t, ok)
	assert.True(t, doc.Truncated)
	held := 0
	for _, f := range doc.Files {
		held += len(f)
	}
	assert.LessOrEqual(t, held, MaxPathBytesPerKey)
	assert.Greater(t, held, MaxPathBytesPerKey-8000, "the bound is the path bytes, not fewer")
	require.NoError(t, s.Flush())

	s2, err := NewStore(dir, DefaultMaxFiles)
	require.NoError(t, err)
	s2.Observe([]*accessv1.FileAccess{rec(long + "/after-restart")})
	doc2, ok := s2.Get(k, 0, 0.9)
	require.True(t, ok)
	assert.Len(t, doc2.Files, len(doc.Files), "a restarted store still counts the paths it holds")

	// Records without a dataset make no key a manifest can be asked for.
	r := rec("/a")
	r.Dataset = nil
	s2.Observe([]*accessv1.FileAccess{r})
	_, ok = s2.Get(analyzer.KeyOf(r), 0, 0.9)
	assert.False(t, ok)
}

// One manifest that cannot be written holds back no other: every other
// manifest's update is on disk after the failing Flush, and the failed one
// is written by the next Flush once it can be.
func TestFlushFailureOfOneKeyKeepsTheOthers(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir, DefaultMaxFiles)
	require.NoError(t, err)
	const keys = 20
	recFor := func(i int, path string) *accessv1.FileAccess {
		r := rec(path)
		r.Workload = &accessv1.WorkloadRef{Namespace: "ml", Kind: "Job", Name: fmt.Sprintf("train-%d", i)}
		return r
	}
	bad := analyzer.KeyOf(recFor(0, "/x"))
	// A directory where the manifest's file belongs: its rename fails.
	obstacle := filepath.Join(dir, fileName(bad))
	require.NoError(t, os.MkdirAll(filepath.Join(obstacle, "busy"), 0o750))

	// Several rounds: Flush visits keys in map order, so one round could
	// meet the bad key last.
	for round := range 3 {
		var recs []*accessv1.FileAccess
		for i := range keys {
			recs = append(recs, recFor(i, fmt.Sprintf("/round-%d", round)))
		}
		s.Observe(recs)
		err := s.Flush()
		require.Error(t, err)
		assert.Contains(t, err.Error(), "train-0")

		reloaded, err := NewStore(dir, DefaultMaxFiles)
		require.NoError(t, err)
		for i := 1; i < keys; i++ {
			doc, ok := reloaded.Get(analyzer.KeyOf(recFor(i, "/x")), 0, 1)
			require.True(t, ok, "round %d: manifest %d is missing after a restart", round, i)
			assert.Contains(t, doc.Files, fmt.Sprintf("/round-%d", round), "round %d: manifest %d lost its update", round, i)
		}
	}

	require.NoError(t, os.RemoveAll(obstacle))
	require.NoError(t, s.Flush(), "the failed manifest is still marked and written once it can be")
	reloaded, err := NewStore(dir, DefaultMaxFiles)
	require.NoError(t, err)
	doc, ok := reloaded.Get(bad, 0, 1)
	require.True(t, ok)
	assert.ElementsMatch(t, []string{"/round-0", "/round-1", "/round-2"}, doc.Files)
}

// Requests over the bound are refused before they cost the API server a
// TokenReview.
func TestManifestRequestsAreRateLimited(t *testing.T) {
	s, err := NewStore("", DefaultMaxFiles)
	require.NoError(t, err)
	h := &Handler{Store: s, Limiter: rate.NewLimiter(rate.Every(time.Hour), 3)}
	codes := map[int]int{}
	for range 10 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/manifests/ml/Job/train/imagenet", nil))
		codes[rec.Code]++
	}
	assert.Equal(t, map[int]int{http.StatusUnauthorized: 3, http.StatusTooManyRequests: 7}, codes,
		"the first 3 reach authentication (no token: 401), the rest are refused")
}

// A flush leaves only the manifests in the state folder, and files a crash
// left in the middle of a flush are cleared at start, never read.
func TestFlushLeavesOnlyManifests(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".tmp-123"), []byte("half a manifest"), 0o600))
	s, err := NewStore(dir, DefaultMaxFiles)
	require.NoError(t, err)
	var recs []*accessv1.FileAccess
	for i := range 50 {
		r := rec("/a")
		r.Workload = &accessv1.WorkloadRef{Namespace: "ml", Kind: "Job", Name: fmt.Sprintf("train-%d", i)}
		recs = append(recs, r)
	}
	s.Observe(recs)
	require.NoError(t, s.Flush())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 50)
	for _, e := range entries {
		assert.True(t, strings.HasSuffix(e.Name(), ".json.gz"), e.Name())
	}
}

// BenchmarkFlush persists the manifests of 2,000 keys, one new file each,
// to a state folder on the machine's disk (not a tmpfs: the syncs are what
// is measured). It reports manifests persisted per second.
func BenchmarkFlush(b *testing.B) {
	dir, err := os.MkdirTemp(".", ".bench-state-")
	require.NoError(b, err)
	b.Cleanup(func() { os.RemoveAll(dir) })
	s, err := NewStore(dir, DefaultMaxFiles)
	require.NoError(b, err)
	const keys = 2000
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		recs := make([]*accessv1.FileAccess, 0, keys)
		for k := range keys {
			r := rec(fmt.Sprintf("/data/part-%d", i))
			r.Workload = &accessv1.WorkloadRef{Namespace: "ml", Kind: "Job", Name: fmt.Sprintf("train-%d", k)}
			recs = append(recs, r)
		}
		s.Observe(recs)
		b.StartTimer()
		require.NoError(b, s.Flush())
	}
	b.ReportMetric(float64(keys*b.N)/b.Elapsed().Seconds(), "manifests/s")
}

func ranged(path, pod string, first, last int64, rs ...[2]uint64) *accessv1.FileAccess {
	r := rec(path)
	r.PodUid, r.FirstAccessUnixNano, r.LastAccessUnixNano = pod, first, last
	r.RandSteps = uint64(len(rs))
	for _, x := range rs {
		r.ReadRanges = append(r.ReadRanges, &accessv1.ReadRange{Offset: x[0], End: x[1]})
	}
	return r
}

// The ranges served are those of the latest run, merged across windows and
// the run's parallel pods, and survive a restart (the state folder).
func TestRangesOfTheLatestRun(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir, 0)
	require.NoError(t, err)
	k := analyzer.KeyOf(rec("x"))
	s.Observe([]*accessv1.FileAccess{
		ranged("big", "run1", 10, 20, [2]uint64{8192, 12288}, [2]uint64{0, 4096}),
		ranged("big", "run1", 21, 30, [2]uint64{4096, 8192}, [2]uint64{65536, 69632}),
		ranged("big", "run1-worker2", 15, 30, [2]uint64{131072, 135168}),
		ranged("first", "run1", 10, 10, [2]uint64{8192, 12288}), // one read so far: kept
		func() *accessv1.FileAccess { // read front to back: its one range is not kept
			r := ranged("scan", "run1", 10, 20, [2]uint64{0, 1 << 20})
			r.RandSteps, r.SeqSteps = 0, 7
			return r
		}(),
	})
	got, ok := s.Ranges(k, 0)
	require.True(t, ok)
	assert.Equal(t, []manifestv1.FileRanges{
		{Path: "first", Ranges: []manifestv1.Range{{8192, 12288}}},
		{Path: "big", Ranges: []manifestv1.Range{{0, 12288}, {65536, 69632}, {131072, 135168}}},
	}, got, "in access order; touching ranges merge; a pod reading during the run joins it")

	// Run 2 reads elsewhere in big: its ranges replace run 1's there (a
	// file run 2 did not read keeps those of the latest run that did).
	s.Observe([]*accessv1.FileAccess{ranged("big", "run2", 100, 110, [2]uint64{1 << 20, 1<<20 + 4096})})
	require.NoError(t, s.Flush())
	s2, err := NewStore(dir, 0)
	require.NoError(t, err)
	got, _ = s2.Ranges(k, 0)
	assert.Equal(t, []manifestv1.FileRanges{
		{Path: "first", Ranges: []manifestv1.Range{{8192, 12288}}},
		{Path: "big", Ranges: []manifestv1.Range{{1 << 20, 1<<20 + 4096}}},
	}, got)
	assert.Equal(t, 2, s2.keys[k].ranges, "the count of ranges held is restored with them")
}

func TestRangesAreBoundedPerKey(t *testing.T) {
	s, err := NewStore("", 0)
	require.NoError(t, err)
	r := ranged("big", "p", 1, 2)
	for i := range MaxRangesPerKey + 10 {
		r.ReadRanges = append(r.ReadRanges, &accessv1.ReadRange{Offset: uint64(i) * 8192, End: uint64(i)*8192 + 4096})
	}
	r.RandSteps = uint64(len(r.ReadRanges))
	r.ReadRangesDropped = 3
	s.Observe([]*accessv1.FileAccess{r})
	got, _ := s.Ranges(analyzer.KeyOf(r), 0)
	assert.Len(t, got[0].Ranges, MaxRangesPerKey)
	assert.EqualValues(t, 13, s.keys[analyzer.KeyOf(r)].rangesDropped, "dropped here and by the collector")
}

// reference is what a manifest must list, computed the plain way: each
// path's latest order and bytes summed, in a map.
type reference map[string]*struct {
	order int64
	bytes float64
}

func (ref reference) observe(r *accessv1.FileAccess) {
	e := ref[r.Path]
	if e == nil {
		e = &struct {
			order int64
			bytes float64
		}{}
		ref[r.Path] = e
	}
	order := r.LastPassUnixNano
	if order == 0 {
		order = r.FirstAccessUnixNano
	}
	e.order = max(e.order, order)
	e.bytes += float64(r.ReadBytes)
}

// document is the manifest ref makes: files by order then path, the hot set
// by bytes then path.
func (ref reference) document(share float64) (files, hot []string) {
	var total float64
	for p, e := range ref {
		files = append(files, p)
		total += e.bytes
	}
	sort.Slice(files, func(i, j int) bool {
		a, b := ref[files[i]], ref[files[j]]
		if a.order != b.order {
			return a.order < b.order
		}
		return files[i] < files[j]
	})
	byBytes := slices.Clone(files)
	sort.Slice(byBytes, func(i, j int) bool {
		a, b := ref[byBytes[i]], ref[byBytes[j]]
		if a.bytes != b.bytes {
			return a.bytes > b.bytes
		}
		return byBytes[i] < byBytes[j]
	})
	var acc float64
	for _, p := range byBytes {
		if acc >= share*total {
			break
		}
		hot = append(hot, p)
		acc += ref[p].bytes
	}
	return files, hot
}

// A manifest lists every path observed, in the order of its latest pass,
// with the hot set by bytes read, however its paths share directories
// (one, many, none, a name that is empty) — the same after a restart, and
// a path observed again after a restart is the same file, not a new one.
func TestManifestListsWhatWasObservedAcrossARestart(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir, 0)
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(3, 4))
	pathOf := func(i int) string {
		switch i % 7 {
		case 0:
			return fmt.Sprintf("file-%d", i) // no directory
		case 1:
			return fmt.Sprintf("/d%d/", i) // an empty name
		case 2:
			return fmt.Sprintf("/deep/%d/a/b/%d.jpg", i%13, i)
		}
		return fmt.Sprintf("/data/train/part-%05d", i)
	}
	ref := reference{}
	observe := func(s *Store, rounds int) {
		for range rounds {
			var recs []*accessv1.FileAccess
			for range 500 {
				r := rec(pathOf(rng.IntN(3000)))
				r.ReadBytes = uint64(rng.IntN(4)) << 20
				r.FirstAccessUnixNano = rng.Int64N(1e6)
				if rng.IntN(2) == 0 {
					r.LastPassUnixNano = r.FirstAccessUnixNano + rng.Int64N(1e3)
				}
				ref.observe(r)
				recs = append(recs, r)
			}
			s.Observe(recs)
		}
	}
	k := analyzer.KeyOf(rec("x"))
	check := func(s *Store, when string) {
		doc, ok := s.Get(k, 0, 0.7)
		require.True(t, ok)
		files, hot := ref.document(0.7)
		require.Equal(t, files, doc.Files, "%s: files in access order", when)
		require.Equal(t, hot, doc.Hot, "%s: the hot set", when)
		assert.False(t, doc.Truncated)
	}
	observe(s, 8)
	check(s, "before the restart")
	require.NoError(t, s.Flush())

	s2, err := NewStore(dir, 0)
	require.NoError(t, err)
	check(s2, "after the restart")
	observe(s2, 4)
	check(s2, "observed again after the restart")
	assert.Equal(t, len(ref), len(s2.keys[k].files), "no path is held twice")
}

// A state folder written by an analyzer before the manifest's layout
// changed (each file's entry in one JSON map, with a size nothing read)
// loads as it was: files, order, hot set, ranges and what was dropped.
func TestManifestOfAnEarlierAnalyzerLoads(t *testing.T) {
	dir := t.TempDir()
	k := analyzer.KeyOf(rec("x"))
	earlier := `{"key":{"workloadNamespace":"ml","workloadKind":"Job","workloadName":"train","datasetNamespace":"ml","datasetName":"imagenet"},` +
		`"state":{"files":{"/data/b":{"o":20,"b":3145728,"s":4194304},"/data/a":{"o":10,"b":1048576,"s":4194304},` +
		`"big":{"o":30,"b":8192,"r":[[0,4096],[65536,69632]],"rp":["run1"],"rl":31}},"dropped":2,"rangesDropped":5}}` + "\n"
	data, err := gz.Compress(gzip.DefaultCompression, func(w io.Writer) error {
		_, err := io.WriteString(w, earlier)
		return err
	})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, fileName(k)), data, 0o600))

	s, err := NewStore(dir, 0)
	require.NoError(t, err)
	doc, ok := s.Get(k, 0, 0.7)
	require.True(t, ok)
	assert.Equal(t, []string{"/data/a", "/data/b", "big"}, doc.Files)
	assert.Equal(t, []string{"/data/b"}, doc.Hot)
	assert.True(t, doc.Truncated, "files were dropped")
	got, _ := s.Ranges(k, 0)
	assert.Equal(t, []manifestv1.FileRanges{{Path: "big", Ranges: []manifestv1.Range{{0, 4096}, {65536, 69632}}}}, got)
	assert.Equal(t, 2, s.keys[k].ranges)
	assert.EqualValues(t, 5, s.keys[k].rangesDropped)

	// A pod of the same run reading on joins it: run1's ranges were restored
	// with its pods and last access.
	s.Observe([]*accessv1.FileAccess{ranged("big", "run1", 25, 40, [2]uint64{4096, 8192})})
	got, _ = s.Ranges(k, 0)
	assert.Equal(t, []manifestv1.Range{{0, 8192}, {65536, 69632}}, got[0].Ranges)
}

// A manifest costs about 40 bytes per file held (paths of a typical
// dataset: one directory, ten-byte names), where a map of paths to entries
// cost ~155: a 24-byte entry, its name, a slot of the index, and the room
// kept for more.
func TestManifestHoldsFewBytesPerFile(t *testing.T) {
	const files = 20_000
	// The live heap, once collections free nothing more (objects of
	// earlier tests with finalizers take more than one).
	live := func() uint64 {
		var ms runtime.MemStats
		last := uint64(math.MaxUint64)
		for {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc >= last {
				return ms.HeapAlloc
			}
			last = ms.HeapAlloc
			time.Sleep(time.Millisecond)
		}
	}
	s, err := NewStore("", 0)
	require.NoError(t, err)
	recs := make([]*accessv1.FileAccess, files)
	for i := range recs {
		recs[i] = rec(fmt.Sprintf("/data/train/part-%05d", i))
	}
	s.Observe(recs)
	// The records are garbage now; the store goes after the first count.
	with := live()
	runtime.KeepAlive(s)
	held := float64(with-live()) / files
	t.Logf("%.1f bytes per file", held)
	assert.Less(t, held, 48.0)
}

// BenchmarkEncode encodes the persisted manifest of one key of 1,000 files
// (paths as a dataset's), at gzip's default level and at its fastest, side
// by side: time per manifest and its size.
func BenchmarkEncode(b *testing.B) {
	s, err := NewStore(b.TempDir(), DefaultMaxFiles)
	require.NoError(b, err)
	recs := make([]*accessv1.FileAccess, 0, 1000)
	for f := range 1000 {
		recs = append(recs, rec(fmt.Sprintf("/data/imagenet/train/n%08d/img_%06d.JPEG", f%100, f)))
	}
	s.Observe(recs)
	k := analyzer.KeyOf(recs[0])
	st := s.keys[k]
	require.NotNil(b, st)
	defer func(l int) { manifestLevel = l }(manifestLevel)
	for _, level := range []struct {
		name  string
		level int
	}{{"default", gzip.DefaultCompression}, {"fastest", gzip.BestSpeed}} {
		b.Run(level.name, func(b *testing.B) {
			manifestLevel = level.level
			var size int
			for b.Loop() {
				data, err := encode(k, st)
				if err != nil {
					b.Fatal(err)
				}
				size = len(data)
			}
			b.ReportMetric(float64(size), "bytes/manifest")
		})
	}
}
