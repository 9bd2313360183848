package features

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/eddy-autotune/eddy/analyzer/history"
)

func TestLog2Quantile(t *testing.T) {
	var h [32]float64
	h[12] = 90 // 4 KiB reads
	h[17] = 10 // 128 KiB reads
	assert.Equal(t, 4096.0, log2Quantile(h[:], 1, 0.5, false))
	assert.Equal(t, 4096.0, log2Quantile(h[:], 1, 0.9, false))
	assert.Equal(t, 131072.0, log2Quantile(h[:], 1, 0.95, false))
	assert.InDelta(t, math.Exp2(12.5), log2Quantile(h[:], 0, 0.45, true), 1e-6, "geometric interpolation")
	assert.Equal(t, 0.0, log2Quantile(make([]float64, 4), 0, 0.5, true))
	h[0] = 1000 // end-of-file probes
	assert.Equal(t, 4096.0, log2Quantile(h[:], 1, 0.5, false), "bucket 0 left out")
	h[1] = 1e6
	assert.Equal(t, 2.0, log2Quantile(h[:], 1, 0.5, false))
}

func TestRankGivesSpearman(t *testing.T) {
	var e Extractor
	xs := []float64{10, 30, 20, 20}
	e.rank(xs)
	assert.Equal(t, []float64{1, 4, 2.5, 2.5}, xs, "ties share their mean rank")
}

func TestCoveredBytes(t *testing.T) {
	seq := history.FileState{Size: 100 << 20, MaxOffset: 50 << 20, SeqSteps: 10, Passes: 1}
	assert.InDelta(t, 50<<20, coveredBytes(&seq, 50<<20), 1, "a sequential reader covers up to its highest offset")
	rnd := history.FileState{Size: 100 << 20, MaxOffset: 100 << 20, RandSteps: 1000}
	// Reading the file's size in uniform random reads covers 1 − 1/e of it.
	assert.InDelta(t, (1-1/math.E)*(100<<20), coveredBytes(&rnd, 100<<20), 1e3)
}

func TestMissRatioAtInterpolates(t *testing.T) {
	f := Features{MissRatioCurve: []MRCPoint{{1024, 1}, {4096, 0.5}, {16384, 0.1}}}
	assert.Equal(t, 1.0, f.MissRatioAt(10))
	assert.InDelta(t, 0.75, f.MissRatioAt(2048), 1e-9)
	assert.Equal(t, 0.1, f.MissRatioAt(1<<30))
	assert.Equal(t, 1.0, (&Features{}).MissRatioAt(5))
}
