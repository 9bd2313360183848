package history

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
)

func rec(path string, size int64, passes uint64, at int64) *accessv1.FileAccess {
	return &accessv1.FileAccess{Path: path, FileSize: size, ReadOps: passes, ReadBytes: uint64(size) * passes, Passes: passes,
		FirstAccessUnixNano: at, LastAccessUnixNano: at, LastPassUnixNano: at, MaxOffset: uint64(size)}
}

func TestRebaseKeepsDecayedValues(t *testing.T) {
	h := New(Config{HalfLife: time.Second})
	h.Observe(1e9, 2e9, []*accessv1.FileAccess{rec("a", 100, 1, 2e9)})
	before := h.Totals.ReadBytes * h.DecayFactor(10e9)
	assert.InDelta(t, 100*math.Exp2(-8), before, 1e-9)
	// 100 half-lives later: weights would pass 2^64, so Base moves.
	t2 := int64(2e9 + 100e9)
	h.Observe(t2-1e9, t2, []*accessv1.FileAccess{rec("a", 100, 1, t2)})
	assert.Equal(t, t2, h.Base)
	assert.InDelta(t, 100+100*math.Exp2(-100), h.Totals.ReadBytes*h.DecayFactor(t2), 1e-9)
	assert.False(t, math.IsInf(h.Files[0].ReadBytes, 0))
}

func TestPassTimesKeepTheLatestTwo(t *testing.T) {
	h := New(Config{})
	for i := int64(1); i <= 5; i++ {
		h.Observe(i*1e9, i*1e9+1, []*accessv1.FileAccess{rec("a", 10, 1, i*1e9)})
	}
	f := h.Files[0]
	assert.Equal(t, uint32(5), f.Passes)
	assert.Equal(t, [2]uint32{4, 5}, f.PassN)
	assert.Equal(t, [2]int64{4e9, 5e9}, f.PassT)

	// Three passes in one window: the first and the latest are dated.
	r := rec("a", 10, 3, 7e9)
	r.FirstAccessUnixNano = 6e9
	h.Observe(6e9, 7e9, []*accessv1.FileAccess{r})
	f = h.Files[0]
	assert.Equal(t, uint32(8), f.Passes)
	assert.Equal(t, [2]uint32{6, 8}, f.PassN)
	assert.Equal(t, [2]int64{6e9, 7e9}, f.PassT)
}

func TestSamplerDistances(t *testing.T) {
	s := Sampler{Threshold: math.MaxUint64}
	for range 3 {
		for k := uint64(1); k <= 4; k++ {
			s.Access(k, 1000, 1, 16)
		}
	}
	// 12 references, 4 cold, 8 at distance 3000 bytes.
	assert.Equal(t, 12.0, s.Refs)
	assert.Equal(t, 4.0, s.Cold)
	assert.Equal(t, 8.0, s.Distance[distanceBucket(3000)])
	assert.InDelta(t, 4.0/12, s.MissRatio(1<<20), 1e-9)
	assert.Equal(t, 1.0, s.MissRatio(1000))
	// A cliff at the end is no knee (the curve never dips below its chord);
	// Reach is then the working set.
	knee, gain := s.Knee()
	assert.Equal(t, 4096.0, knee, "top of the bucket holding 3000")
	assert.Equal(t, 0.0, gain)
	assert.InDelta(t, 4096-0.05*12/8*2048, s.Reach(0.05), 1e-9)

	// Many short re-reads and a few long ones make a knee.
	for range 20 {
		s.Repeat(1, 10, 100, 1)
	}
	s.Repeat(2, 1, 1<<20, 1)
	knee, gain = s.Knee()
	assert.Equal(t, 4096.0, knee, "past the short re-reads, before the lone 1 MiB one")
	assert.Greater(t, gain, 0.5)

	// Past the cap the largest key leaves and the threshold drops below it.
	for k := uint64(5); k <= 20; k++ {
		s.Access(k<<40, 1000, 1, 16)
	}
	assert.Len(t, s.Items, 16)
	assert.Less(t, s.Threshold, uint64(20)<<40)
	assert.Less(t, s.Rate(), 1.0)
}

func TestFileSamplingCap(t *testing.T) {
	h := New(Config{MaxFiles: 10})
	var recs []*accessv1.FileAccess
	for i := range 1000 {
		recs = append(recs, rec(string(rune('a'+i%26))+string(rune(i)), 10, 1, 1e9))
	}
	h.Observe(0, 1e9, recs)
	assert.Len(t, h.Files, 10)
	assert.InEpsilon(t, 1000, float64(len(h.Files))/h.FileRate(), 0.6)
}

func TestJSONRoundTrip(t *testing.T) {
	h := New(Config{})
	h.Observe(1e9, 2e9, []*accessv1.FileAccess{rec("a", 1<<20, 2, 2e9), rec("b", 1<<30, 1, 15e8)})
	data, err := json.Marshal(h)
	require.NoError(t, err)
	back, err := Restore(data)
	require.NoError(t, err)
	assert.Equal(t, h, back)
	_, err = Restore([]byte("{"))
	assert.ErrorContains(t, err, "restore history")
}

func TestBadInputDoesNotPanic(t *testing.T) {
	h := New(Config{})
	huge := &accessv1.FileAccess{Path: "x", FileSize: -5, ReadOps: 1, ReadBytes: math.MaxUint64, MaxOffset: math.MaxUint64,
		Passes: math.MaxUint64, RandSteps: 7, ReadSizeLog2: make([]uint64, 100), ReadLatencyLog2: []uint64{1, 2}}
	huge.ReadSizeLog2[99] = 1
	h.Observe(5e9, 1e9, []*accessv1.FileAccess{nil, huge, {}, {Ino: 3, ReadOps: 1, FileSize: 1 << 62, MaxOffset: 1 << 62, SeqSteps: 1}})
	h.Observe(0, 0, nil)
	assert.Equal(t, 1.0, h.ReadSize[ReadSizeBuckets-1], "long histograms fold into the last bucket")
	var passes []uint32
	for _, f := range h.Files {
		passes = append(passes, f.Passes)
	}
	assert.Contains(t, passes, uint32(math.MaxUint32), "pass counts saturate")

	s := Sampler{Threshold: math.MaxUint64}
	s.Access(0, 1, 1, 1)
	s.Access(5, 1, 1, 1)
	s.Access(0, 1, 1, 1)
	assert.False(t, math.IsInf(s.Refs, 0) || math.IsNaN(s.Refs))
}

func TestRestoreAppliesSmallerCaps(t *testing.T) {
	h := New(Config{MaxFiles: 100})
	var recs []*accessv1.FileAccess
	for i := range 50 {
		recs = append(recs, rec(fmt.Sprint("f", i), 10, 1, 1e9))
	}
	h.Observe(0, 1e9, recs)
	require.Len(t, h.Files, 50)
	h.Config.MaxFiles, h.Config.MaxSampledChunks = 10, 5
	data, err := json.Marshal(h)
	require.NoError(t, err)
	back, err := Restore(data)
	require.NoError(t, err)
	assert.Len(t, back.Files, 10)
	assert.Len(t, back.Reuse.Items, 5)
	for _, f := range back.Files {
		assert.LessOrEqual(t, f.Key, back.FileThreshold)
	}
	assert.Less(t, back.FileRate(), 1.0)
}

// Past their caps, the file table and the reuse sampler keep exactly the
// smallest keys seen (a bottom-k sample) with the threshold just below the
// next, in tables never grown past the cap — also when restored, where
// the tables are one allocation of what they hold (rounded up by Go's
// allocator to its size class, as slices.Clone shows).
func TestFullTablesKeepTheSmallestKeysWithinTheirCap(t *testing.T) {
	const maxFiles, maxChunks = 40, 24
	h := New(Config{MaxFiles: maxFiles, MaxSampledChunks: maxChunks})
	var fileKeys []uint64
	for w := range 20 {
		var recs []*accessv1.FileAccess
		for i := range 30 {
			r := rec(fmt.Sprintf("/data/%d/%d", w, i), 1<<20, 1, int64(w+1)*1e9+int64(i))
			fileKeys = append(fileKeys, FileKey(r))
			recs = append(recs, r)
		}
		h.Observe(int64(w)*1e9+1, int64(w+1)*1e9, recs)
	}
	// Each file is one chunk: the sampler saw the same keys.
	slices.Sort(fileKeys)
	check := func(h *History, when string, fileCap, chunkCap int) {
		held := make([]uint64, len(h.Files))
		for i, f := range h.Files {
			held[i] = f.Key
		}
		assert.Equal(t, fileKeys[:maxFiles], held, "%s: the smallest file keys, sorted", when)
		assert.Equal(t, fileKeys[maxFiles]-1, h.FileThreshold, "%s: the file threshold is below the next", when)
		assert.Equal(t, fileCap, cap(h.Files), "%s: the file table is not grown past its cap", when)
		chunks := make([]uint64, len(h.Reuse.Items))
		for i, it := range h.Reuse.Items {
			chunks[i] = it.Key
		}
		slices.Sort(chunks)
		assert.Equal(t, fileKeys[:maxChunks], chunks, "%s: the smallest chunk keys", when)
		assert.Equal(t, fileKeys[maxChunks]-1, h.Reuse.Threshold, "%s: the sampler's threshold is below the next", when)
		assert.Equal(t, chunkCap, cap(h.Reuse.Items), "%s: the sampler is not grown past its cap", when)
	}
	check(h, "observed", maxFiles, maxChunks)
	data, err := json.Marshal(h)
	require.NoError(t, err)
	back, err := Restore(data)
	require.NoError(t, err)
	check(back, "restored", cap(slices.Clone(make([]FileState, maxFiles))), cap(slices.Clone(make([]Item, maxChunks))))
	assert.Equal(t, h, back)
}
