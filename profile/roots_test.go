package profile

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/eddy-autotune/eddy/analyzer/history"
	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	"github.com/eddy-autotune/eddy/bpf"
)

func TestFindRoots(t *testing.T) {
	file := func(ino, dev uint64, path string, weight uint64, random bool) dataFile {
		return dataFile{key: bpf.FileKey{Dev: dev, Ino: ino}, path: path, weight: weight, random: random}
	}
	// images holds many whole small files, features one file read at
	// random: two groups under one common directory.
	var mixed []dataFile
	for i := range 100 {
		mixed = append(mixed, file(uint64(i), 1, "/tmp/run/X/images/"+string(rune('a'+i%26))+string(rune('a'+i/26)), 32<<10, false))
	}
	mixed = append(mixed, file(1000, 1, "/tmp/run/Y/features/big.npy", 40<<20, true))
	config := file(1001, 1, "/tmp/run/settings.json", 2<<10, false)

	classes := []dataFile{
		file(1, 1, "/data/pets/train/cat/1.jpg", 100, false),
		file(2, 1, "/data/pets/train/dog/1.jpg", 100, false),
		file(3, 1, "/data/pets/val/cat/1.jpg", 30, false),
	}
	for _, c := range []struct {
		name  string
		files []dataFile
		named []string
		want  []root
	}{
		{"two groups read differently", mixed, nil, []root{{dir: "/tmp/run/X/images", dev: 1}, {dir: "/tmp/run/Y/features", dev: 1}}},
		{"a small file read apart is no root", append(mixed[:len(mixed):len(mixed)], config), nil, []root{{dir: "/tmp/run/X/images", dev: 1}, {dir: "/tmp/run/Y/features", dev: 1}}},
		{"class folders read alike are one root", classes, nil, []root{{dir: "/data/pets", dev: 1}}},
		{"a part holding 90% is a root of its own", []dataFile{classes[0], classes[1], file(3, 1, "/data/pets/val/cat/1.jpg", 20, false)}, nil,
			[]root{{dir: "/data/pets/train", dev: 1}, {dir: "/data/pets/val/cat", dev: 1}}},
		{"two mounts are two roots", []dataFile{file(1, 1, "/mnt/a/x", 10, false), file(2, 2, "/mnt/b/y", 10, false)}, nil,
			[]root{{dir: "/mnt/a", dev: 1}, {dir: "/mnt/b", dev: 2}}},
		{"nothing read: files count", []dataFile{file(1, 1, "/d/a", 0, false), file(2, 1, "/d/b", 0, false)}, nil, []root{{dir: "/d", dev: 1}}},
		{"relative paths", []dataFile{file(1, 1, "shard-1", 10, false), file(2, 1, "shard-2", 10, false)}, nil, []root{{dir: ".", dev: 1}}},
		{"named roots", mixed, []string{"/tmp/run/X/images/", "/tmp/run/X/images"}, []root{{dir: "/tmp/run/X/images", named: true}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			assert.ElementsMatch(t, c.want, findRoots(c.files, c.named))
		})
	}
}

func TestRootOf(t *testing.T) {
	roots := []root{{dir: "/data", dev: 1}, {dir: "/data/sub", dev: 1}, {dir: "/data/other", dev: 2}, {dir: "/named", named: true}}
	assert.Equal(t, 1, rootOf(roots, 1, "/data/sub/x"), "the deepest root holds the file")
	assert.Equal(t, 0, rootOf(roots, 1, "/data/subway/x"), "a root is a directory, not a string prefix")
	assert.Equal(t, 0, rootOf(roots, 1, "/data/other/x"), "a root on another device does not hold it")
	assert.Equal(t, 3, rootOf(roots, 7, "/named/x"), "a named root holds files of any device")
	assert.Equal(t, -1, rootOf(roots, 1, "/etc/x"))
	assert.True(t, under(".", "rel/x"))
	assert.False(t, under(".", "/abs"))
	assert.True(t, under("/", "/abs"))
}

// TestRootsDecidedWhenTheLogIsFull: windows wait until the roots are
// decided, here early because the log is full; then a file under no root is
// left out, even a large one first read after the decision.
func TestRootsDecidedWhenTheLogIsFull(t *testing.T) {
	p := &profiler{
		workload:  &accessv1.WorkloadRef{Kind: "Command", Name: "t"},
		hist:      history.New(history.Config{HalfLife: profileHalfLife}),
		paths:     map[bpf.FileKey]string{},
		files:     map[bpf.FileKey]*FileSummary{},
		excluded:  map[bpf.FileKey]string{},
		rootIdx:   map[bpf.FileKey]int{},
		maxLogged: 3,
		opt:       Options{History: history.Config{HalfLife: profileHalfLife}},
	}
	const sec = int64(time.Second)
	window := func(i int64, files map[string]uint64) {
		var recs []keyedAccess
		for path, n := range files {
			key := bpf.FileKey{Dev: 1, Ino: uint64(len(p.paths) + 1)}
			for k, q := range p.paths {
				if q == path {
					key = k
				}
			}
			p.paths[key] = path
			r := &bpf.Record{Key: key, ReadOps: 1, ReadBytes: n, FileSize: n, Passes: 1,
				FirstNs: uint64(i*sec + 1), LastNs: uint64(i*sec + 2), LastPassNs: uint64(i*sec + 2), MaxOffset: n}
			r.ReadSizeLog2[20] = 1
			if p.notData(path, r) == "" {
				recs = p.take(recs, r)
			}
		}
		p.observe(i*sec, (i+1)*sec, recs)
	}
	window(0, map[string]uint64{"/d/x/a": 1 << 20, "/d/x/b": 1 << 20})
	assert.False(t, p.decided, "two records wait in the log")
	window(1, map[string]uint64{"/d/x/c": 1 << 20, "/d/settings": 100})
	assert.True(t, p.decided, "four records fill a log of three")
	assert.Empty(t, p.log)
	window(2, map[string]uint64{"/elsewhere/e": 10 << 20, "/d/x/a": 1 << 20})

	rep := &Report{WallSeconds: 3}
	p.assess(rep, time.Unix(0, 3*sec))
	require.Len(t, rep.Roots, 1)
	r := rep.Roots[0]
	assert.Equal(t, "/d/x", r.Path)
	assert.Equal(t, 3, r.Files)
	assert.Equal(t, uint64(4<<20), r.BytesRead)
	assert.Equal(t, float64(4<<20), r.Features.BytesRead, "the logged windows were replayed into the root's history")
	assert.Equal(t, float64(4<<20), rep.Features.BytesRead, "and into the whole command's")
	assert.Equal(t, 2, rep.ExcludedBy[ExcludeOutsideRoots], "the settings file and the file first read after the decision")
}
