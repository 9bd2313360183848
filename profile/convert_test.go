package profile

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	"github.com/eddy-autotune/eddy/bpf"
)

func TestSelected(t *testing.T) {
	assert.True(t, selected("/data/a.bin", nil, DefaultExcludes))
	assert.False(t, selected("/usr/lib/python3/dist-packages/torch/__init__.py", nil, DefaultExcludes))
	assert.True(t, selected("", nil, DefaultExcludes), "unknown paths are kept")
	assert.True(t, selected("rel/a.bin", nil, DefaultExcludes))
	assert.True(t, selected("/data/x/a.bin", []string{"/data/x/"}, DefaultExcludes))
	assert.False(t, selected("/data/xy/a.bin", []string{"/data/x"}, DefaultExcludes), "prefix is a directory, not a string")
	assert.False(t, selected("", []string{"/data"}, DefaultExcludes), "with --data only known paths under it count")
}

func TestSameDev(t *testing.T) {
	kernel := uint64(259)<<20 | 3
	assert.True(t, sameDev(unix.Mkdev(259, 3), kernel))
	assert.False(t, sameDev(unix.Mkdev(259, 4), kernel))
}

func TestFileAccessConvertsTimes(t *testing.T) {
	r := bpf.Record{Key: bpf.FileKey{Dev: 1, Ino: 2}, ReadOps: 3, ReadBytes: 300, Passes: 1, FirstNs: 10, LastNs: 20, LastPassNs: 15, MaxOffset: 300, FileSize: 300}
	r.ReadSizeLog2[6] = 3
	w := &accessv1.WorkloadRef{Kind: "Command", Name: "x"}
	fa := FileAccess(&r, w, 1000)
	assert.Equal(t, int64(1010), fa.FirstAccessUnixNano)
	assert.Equal(t, int64(1015), fa.LastPassUnixNano)
	assert.Equal(t, int64(1020), fa.LastAccessUnixNano)
	assert.Len(t, fa.ReadSizeLog2, bpf.ReadSizeBuckets)
	r.ReadSizeLog2[6] = 0
	assert.Equal(t, uint64(3), fa.ReadSizeLog2[6], "histograms are copied")
	assert.Equal(t, int64(0), FileAccess(&bpf.Record{}, w, 1000).LastPassUnixNano, "no pass, no time")
}

// TestNotDataReasons: which files a profile leaves out without --data, and
// why; a file read without its open seen is not taken for data.
func TestNotDataReasons(t *testing.T) {
	p := &profiler{excluded: map[bpf.FileKey]string{}, script: "/home/u/train.py"}
	read := func(ino uint64) *bpf.Record {
		return &bpf.Record{Key: bpf.FileKey{Ino: ino}, ReadOps: 2, ReadBytes: 8192}
	}
	mapped := &bpf.Record{Key: bpf.FileKey{Ino: 9}, ReadBytes: 4096, MappedReadBytes: 4096}
	for _, c := range []struct {
		path string
		r    *bpf.Record
		want string
	}{
		{"/data/a.bin", read(1), ""},
		{"shard-0001", read(2), ""}, // relative, its process gone: still the command's
		{"", read(3), ExcludeNoPath},
		{"", mapped, ExcludeImage},
		{"/usr/lib/python3/dist-packages/torch/__init__.py", read(4), ExcludeSystem},
		{"/home/u/train.py", read(5), ExcludeScript},
	} {
		if got := p.notData(c.path, c.r); got != c.want {
			t.Errorf("notData(%q) = %q, want %q", c.path, got, c.want)
		}
	}
}
