package prefetch

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConcurrencyAdapts drives the prefetcher against a simulated remote (a
// fake reader: the latency model below is the point of the test, and no real
// remote lets a test switch its saturation point on and off). First the
// remote answers every read in 10 ms however many are in flight, so the limit
// must grow; then latency is injected that grows with the reads in flight
// beyond 8 (a link saturated at 8 reads: more only queue), so the limit must
// come back down near 8.
func TestConcurrencyAdapts(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "huge"))
	require.NoError(t, err)
	require.NoError(t, f.Truncate(1<<40)) // sparse: the fake reader never touches it
	require.NoError(t, f.Close())

	p, _ := newTestPrefetcher(t, Options{Strategy: "WholeDataset", Roots: []string{dir}, BlockSize: 64 << 10,
		Concurrency: 4, MaxConcurrency: 64})
	const base = 10 * time.Millisecond
	var inflight atomic.Int64
	var saturated atomic.Bool
	p.read = func(ctx context.Context, _ *file, _, n int64) (int64, int64, time.Duration, error) {
		k := inflight.Add(1)
		defer inflight.Add(-1)
		lat := base
		if saturated.Load() && k > 8 {
			lat = base * time.Duration(k) / 8
		}
		select {
		case <-time.After(lat):
		case <-ctx.Done():
			return 0, 1 << 40, lat, ctx.Err()
		}
		return n, 1 << 40, lat, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = p.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	sample := func(d time.Duration) (mean float64, peak int) {
		var sum, n int
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			c := p.Status().Concurrency
			sum, n, peak = sum+c, n+1, max(peak, c)
		}
		return float64(sum) / float64(n), peak
	}
	_, peakFree := sample(1500 * time.Millisecond)
	t.Logf("unsaturated remote: limit grew from 4 to %d", peakFree)
	assert.GreaterOrEqual(t, peakFree, 16, "the limit grows while throughput rises")

	saturated.Store(true)
	sample(1500 * time.Millisecond)
	meanSat, _ := sample(1000 * time.Millisecond)
	t.Logf("remote saturated at 8 reads: limit settled around %.1f", meanSat)
	assert.Less(t, meanSat, 24.0, "the limit backs off when latency rises (to within three times the saturation point, far from the 64 allowed)")
	assert.Greater(t, meanSat, 4.0, "the limit does not collapse below the saturation point")
}

func TestAdaptiveRules(t *testing.T) {
	now := time.Unix(0, 0)
	var a *adaptive
	round := func(reads int, lat time.Duration, bytes int64) int {
		for range reads {
			a.observe(bytes/int64(reads), lat)
		}
		now = now.Add(100 * time.Millisecond)
		return a.tick(now)
	}
	a = newAdaptive(2, 1, 10, now)
	assert.Equal(t, 4, round(2, 10*time.Millisecond, 1000), "slow start: double")
	assert.Equal(t, 8, round(4, 10*time.Millisecond, 2000), "slow start: double")
	assert.Equal(t, 8, round(8, 30*time.Millisecond, 4000), "latency up but throughput rising: hold")
	assert.Equal(t, 8, round(8, 30*time.Millisecond, 2000), "latency up, no gain, once: hold (could be noise)")
	assert.Equal(t, 6, round(8, 30*time.Millisecond, 2000), "latency up, no gain, twice: multiplicative decrease")
	assert.Equal(t, 6, round(6, 30*time.Millisecond, 1000), "the round after a decrease only settles")
	assert.Equal(t, 7, round(6, 11*time.Millisecond, 3000), "after a back-off, latency at base: grow by one")
	assert.Equal(t, 8, round(7, 11*time.Millisecond, 3000), "flat throughput, latency at base: probe up")
	assert.Equal(t, 8, round(2, 30*time.Millisecond, 3000), "too few reads: the round goes on")
	for i := range 8 {
		lat := 10 * time.Millisecond
		if i < 2 {
			lat = 500 * time.Millisecond
		}
		a.observe(400, lat)
	}
	now = now.Add(100 * time.Millisecond)
	assert.Equal(t, 9, a.tick(now), "the median ignores a few slow reads")
	for range 20 {
		round(a.limit, 10*time.Millisecond, 100000)
	}
	assert.Equal(t, 10, a.limit, "bounded by max")
}
