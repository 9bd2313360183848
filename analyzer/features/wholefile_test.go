package features_test

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/eddy-autotune/eddy/analyzer/features"
	"github.com/eddy-autotune/eddy/analyzer/history"
	"github.com/eddy-autotune/eddy/analyzer/internal/simulate"
)

// A random reader of one large file that also reads a small file whole (a
// config file, as fio does) is not a whole-file reader: the ratio weighs
// files by the bytes read from them. Synthetic windows (simulator).
func TestWholeFileRatioWeighsByBytes(t *testing.T) {
	files := []simulate.File{{Path: "big.dat", Size: 512 << 20}, {Path: "job.cfg", Size: 3 << 10}}
	sim := simulate.New(files)
	ops := simulate.Whole(nil, 1, files[1].Size, 4<<10)
	ops = append(ops, simulate.Random(files[:1], 4096, 4<<10, rand.New(rand.NewPCG(1, 1)))...)
	ws, end := sim.Run(ops)
	h := history.New(history.Config{})
	for _, w := range ws {
		h.Observe(w.StartUnixNano, w.EndUnixNano, w.Files)
	}
	f := features.Extract(h, end.UnixNano())
	assert.Less(t, f.WholeFileRatio, 0.01, "3 KiB read whole beside 16 MiB read at random")

	sim = simulate.New(simulate.Files(50, 1<<20))
	ws, end = sim.Run(simulate.Scan(sim.Files, 256<<10, 1))
	h = history.New(history.Config{})
	for _, w := range ws {
		h.Observe(w.StartUnixNano, w.EndUnixNano, w.Files)
	}
	f = features.Extract(h, end.UnixNano())
	assert.InDelta(t, 1, f.WholeFileRatio, 1e-9, "a scan reads every file whole")
}
