package classify

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/eddy-autotune/eddy/analyzer/features"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

func scanFeatures() features.Features {
	return features.Features{Windows: 10, BytesRead: 1 << 30, SequentialRatio: 0.99, WholeFileRatio: 1, Coverage: 1, Epochs: 1}
}

func TestConfidenceGrowsWithEvidence(t *testing.T) {
	var prev float64
	for _, n := range []float64{1 << 20, 16 << 20, 256 << 20} {
		f := scanFeatures()
		f.BytesRead = n
		d := Classify(&f, Options{})
		assert.Equal(t, v1.ClassSequentialScan, d.Class)
		assert.Greater(t, d.Confidence, prev)
		assert.LessOrEqual(t, d.Confidence, 1.0)
		prev = d.Confidence
	}
	f := scanFeatures()
	f.Windows = 1
	assert.InDelta(t, 0.975*0.632, Classify(&f, Options{}).Confidence, 0.005, "strength 0.5+0.5·(0.99−0.8)/0.2, one window")
}

func TestBorderlineRuleHalvesStrength(t *testing.T) {
	f := scanFeatures()
	f.SequentialRatio = MinSequentialRatio
	d := Classify(&f, Options{})
	assert.Equal(t, v1.ClassSequentialScan, d.Class)
	assert.InDelta(t, 0.5, d.Strength, 1e-9)
	f.SequentialRatio = MinSequentialRatio - 0.01
	assert.NotEqual(t, v1.ClassSequentialScan, Classify(&f, Options{}).Class)
}

func TestShuffledNeedsEpochsAndOrder(t *testing.T) {
	f := features.Features{Windows: 10, BytesRead: 1 << 30, SequentialRatio: 1, WholeFileRatio: 1, Coverage: 1, Epochs: 3, OrderKnown: true, OrderCorrelation: 0.02}
	d := Classify(&f, Options{})
	assert.Equal(t, v1.ClassShuffledEpochs, d.Class)
	assert.InDelta(t, 0.86, d.Confidence, 0.01, "1 − e^(−(3−1))")
	assert.Len(t, d.Rules(), 5)
	assert.Contains(t, d.Reason, "orderCorrelation 0.02 <= 0.50")

	f.OrderCorrelation = 0.95
	assert.Equal(t, v1.ClassSequentialScan, Classify(&f, Options{}).Class, "same order every epoch is a repeated scan")
	f.OrderKnown = false
	d = Classify(&f, Options{})
	assert.Equal(t, v1.ClassSequentialScan, d.Class)
	assert.Contains(t, d.Candidates[2].Rules[4].String(), "unknown")

	f.OrderKnown, f.OrderCorrelation, f.HotSetShare = true, 0.02, 0.9
	assert.NotEqual(t, v1.ClassShuffledEpochs, Classify(&f, Options{}).Class, "repeated reads of a few hot files are no epochs")
}

func TestUnknownExplainsEveryMiss(t *testing.T) {
	f := features.Features{Windows: 10, BytesRead: 1 << 30, SequentialRatio: 0.6, MedianReadBytes: 1 << 20, WholeFileRatio: 0.2}
	d := Classify(&f, Options{})
	assert.Equal(t, v1.ClassUnknown, d.Class)
	assert.Len(t, d.Candidates, 6)
	assert.Contains(t, d.Reason, "not RandomReads (sequentialRatio 0.60 > 0.50, medianReadBytes 1.0MiB > 256KiB)")
}

func TestIdleAfter(t *testing.T) {
	f := scanFeatures()
	f.IdleSeconds = 90
	assert.Equal(t, v1.ClassSequentialScan, Classify(&f, Options{}).Class)
	assert.Equal(t, v1.ClassIdle, Classify(&f, Options{IdleAfter: 60}).Class)
}

// 400 reads of 4 KiB at random offsets (the benchmark's RandomReads job)
// are 1.6 MiB: by bytes alone the evidence is 0.1 and nothing is advised.
func TestRandomReadsCountReadsAsEvidence(t *testing.T) {
	f := features.Features{Windows: 10, BytesRead: 400 * 4096, ReadOps: 400, SequentialRatio: 0, MedianReadBytes: 4096, WholeFileRatio: 0}
	d := Classify(&f, Options{})
	assert.Equal(t, v1.ClassRandomReads, d.Class)
	assert.InDelta(t, 1-0.209, d.Evidence, 0.01, "1 − e^(−400/256)")
	assert.Greater(t, d.Confidence, 0.5)
	f.ReadOps = 20
	assert.Less(t, Classify(&f, Options{}).Confidence, 0.5, "20 reads are not enough")
}
