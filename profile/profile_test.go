package profile

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/eddy-autotune/eddy/analyzer/advice"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/bpf"
)

// These tests profile real programs (fio, cat, tar, sha256sum, a Go read
// generator, PyTorch) on the real kernel; they need root and BPF support and
// skip otherwise.

var readgen string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "eddy-profile-test")
	if err != nil {
		panic(err)
	}
	readgen = filepath.Join(dir, "readgen")
	if out, err := exec.Command("go", "build", "-o", readgen, "./testdata/readgen").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build readgen: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func requireKernel(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("profiles real programs on the kernel; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to load BPF programs and create cgroups")
	}
	if _, err := bpf.EnsureTraceFS(); err != nil {
		t.Fatalf("profiling needs tracefs for the syscalls trace events: %v", err)
	}
	rec, err := bpf.Load(bpf.Options{})
	if err != nil {
		t.Skipf("BPF recorder unavailable here: %v", err)
	}
	_ = rec.Close()
}

// dataset writes n files of size bytes of random data under a new directory
// and drops them from the page cache, so the profiled run reads from disk.
func dataset(t *testing.T, n int, size int) string {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(n), uint64(size)))
	buf := make([]byte, size)
	for i := range n {
		for j := 0; j+8 <= len(buf); j += 8 {
			v := rng.Uint64()
			for k := range 8 {
				buf[j+k] = byte(v >> (8 * k))
			}
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("%05d.bin", i)), buf, 0o644))
	}
	dropCache(t, dir)
	return dir
}

func dropCache(t *testing.T, dir string) {
	t.Helper()
	require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_ = unix.Fdatasync(int(f.Fd()))
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	}))
}

func bigFile(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "big.dat")
	f, err := os.Create(p)
	require.NoError(t, err)
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for off := int64(0); off < size; off += int64(len(buf)) {
		_, err := f.Write(buf)
		require.NoError(t, err)
	}
	require.NoError(t, f.Close())
	dropCache(t, dir)
	return p
}

func profileOf(t *testing.T, opt Options, argv ...string) *Report {
	t.Helper()
	var out bytes.Buffer
	if opt.Stdout == nil {
		opt.Stdout = &out
		opt.Stderr = &out
	}
	if opt.Interval == 0 {
		opt.Interval = 50 * time.Millisecond
	}
	rep, err := Run(context.Background(), argv, opt)
	require.NoError(t, err, "output: %s", out.String())
	var text bytes.Buffer
	require.NoError(t, rep.WriteText(&text))
	t.Log(text.String())
	return rep
}

func recommendation(t *testing.T, rep *Report, a v1.Action) advice.Recommendation {
	t.Helper()
	for _, r := range rep.Recommendations {
		if r.Action == a {
			return r
		}
	}
	require.Failf(t, "missing recommendation", "want %s, have %+v (withheld: %s)", a, rep.Recommendations, rep.Withheld)
	return advice.Recommendation{}
}

// checkScanAdvice checks a sequential prefetch against the documented
// formulas, from the report's own features.
func checkScanAdvice(t *testing.T, rep *Report) {
	t.Helper()
	p := recommendation(t, rep, v1.ActionPrefetch).Prefetch
	f := &rep.Features
	assert.Equal(t, v1.StrategySequential, p.Strategy)
	bw := min(advice.DemandedThroughput(f)*advice.BandwidthHeadroom, advice.DefaultBounds.MaxBandwidth)
	assert.InEpsilon(t, bw, float64(p.BandwidthBytesPerSec), 1e-6)
	assert.Equal(t, advice.ScanBlock(bw), p.BlockBytes)
	assert.GreaterOrEqual(t, p.BlockBytes, int64(8<<20))
	assert.LessOrEqual(t, p.BlockBytes, int64(16<<20))
	assert.Equal(t, advice.Concurrency(bw, f.ReadLatencyP90Sec, p.BlockBytes, advice.DefaultBounds.MaxConcurrency), p.Concurrency)
	assert.Equal(t, int64(min(f.DatasetBytes, advice.DefaultBounds.CacheBudgetBytes)), p.BudgetBytes, "the whole scan within the cache")
}

func assertClass(t *testing.T, rep *Report, c v1.AccessClass, minConfidence float64) {
	t.Helper()
	require.Equal(t, c, rep.Class, rep.Decision.Reason)
	assert.GreaterOrEqual(t, rep.Confidence, minConfidence, rep.Decision.Reason)
}

func TestFioSequentialRead(t *testing.T) {
	requireKernel(t)
	f := bigFile(t, 256<<20)
	rep := profileOf(t, Options{}, "fio", "--name=seq", "--filename="+f, "--rw=read", "--bs=1M", "--size=256M", "--ioengine=psync")
	assertClass(t, rep, v1.ClassSequentialScan, 0.6)
	ft := rep.Features
	assert.InDelta(t, 1, ft.Files, 0.01)
	assert.Equal(t, float64(1<<20), ft.MedianReadBytes)
	assert.InDelta(t, 256<<20, ft.BytesRead, 1<<20)
	assert.Greater(t, ft.SequentialRatio, 0.95)
	assert.Equal(t, 1.0, ft.WholeFileRatio)
	assert.Greater(t, ft.PageCacheMissRatio, 0.5, "the file was dropped from the cache")
	checkScanAdvice(t, rep)
}

func TestFioRandomRead(t *testing.T) {
	requireKernel(t)
	f := bigFile(t, 512<<20)
	rep := profileOf(t, Options{}, "fio", "--name=rr", "--filename="+f, "--rw=randread", "--bs=4k", "--size=512M", "--io_size=16M", "--ioengine=psync")
	assertClass(t, rep, v1.ClassRandomReads, 0.6)
	ft := rep.Features
	assert.Equal(t, 4096.0, ft.MedianReadBytes)
	assert.Less(t, ft.SequentialRatio, 0.1)
	// Only the ranges it read, never the 512 MiB file whole.
	assert.Equal(t, v1.StrategyRanges, recommendation(t, rep, v1.ActionPrefetch).Prefetch.Strategy)
	c := recommendation(t, rep, v1.ActionScaleCache).Cache
	w, _, _ := advice.Workers(ft.WorkingSetBytes, advice.DemandedThroughput(&ft), advice.DefaultBounds)
	assert.Equal(t, w, c.Workers)
}

func TestFioManySmallFiles(t *testing.T) {
	requireKernel(t)
	dir := t.TempDir()
	args := []string{"--name=small", "--directory=" + dir, "--nrfiles=400", "--filesize=64k", "--rw=read", "--bs=64k", "--ioengine=psync"}
	out, err := exec.Command("fio", append(args, "--create_only=1")...).CombinedOutput()
	require.NoError(t, err, string(out))
	dropCache(t, dir)
	rep := profileOf(t, Options{}, append([]string{"fio"}, args...)...)
	assertClass(t, rep, v1.ClassSequentialScan, 0.6)
	assert.InDelta(t, 400, rep.Features.Files, 1)
	assert.Equal(t, float64(64<<10), rep.Features.MedianFileBytes)
	assert.Equal(t, 1.0, rep.Features.WholeFileRatio)
	checkScanAdvice(t, rep)
}

func TestShellToolsScanAFolder(t *testing.T) {
	requireKernel(t)
	dir := dataset(t, 300, 256<<10)
	for _, tc := range []struct{ name, script string }{
		{"cat", "cat " + dir + "/* > /dev/null"},
		{"tar", "tar cf - " + dir + " | cat > /dev/null"},
		{"sha256sum", "sha256sum " + dir + "/* > /dev/null"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dropCache(t, dir)
			rep := profileOf(t, Options{}, "sh", "-c", tc.script)
			assertClass(t, rep, v1.ClassSequentialScan, 0.6)
			assert.InDelta(t, 300, rep.Features.Files, 1)
			assert.InDelta(t, 1, rep.Features.WholeFileRatio, 0.01)
			assert.InDelta(t, 1, rep.Features.Coverage, 0.02)
			assert.Equal(t, 1.0, rep.Features.Epochs)
			assert.InDelta(t, 0, rep.Features.Reuse, 0.02)
			checkScanAdvice(t, rep)
			assert.False(t, recommendation(t, rep, v1.ActionPrefetch).Prefetch.KeepInCache, "read once")
		})
	}
}

func TestGoReaderShuffledEpochs(t *testing.T) {
	requireKernel(t)
	dir := dataset(t, 400, 64<<10)
	rep := profileOf(t, Options{}, readgen, "epochs", dir, "3", "300us", "shuffle")
	assertClass(t, rep, v1.ClassShuffledEpochs, 0.6)
	f := rep.Features
	assert.Equal(t, 3.0, f.Epochs)
	require.True(t, f.OrderKnown)
	assert.Less(t, f.OrderCorrelation, 0.3)
	assert.Greater(t, f.Coverage, 0.9)
	assert.InDelta(t, 2.0/3, f.Reuse, 0.05)
	p := recommendation(t, rep, v1.ActionPrefetch).Prefetch
	assert.Equal(t, v1.StrategyWholeDataset, p.Strategy)
	assert.Equal(t, int64(f.DatasetBytes), p.BudgetBytes)
	assert.False(t, p.WarmBeforeStart, "the prefetch runs alongside the job")
	assert.Equal(t, advice.FileBlock(f.MedianFileBytes), p.BlockBytes)
	recommendation(t, rep, v1.ActionScaleCache)
}

func TestGoReaderFixedOrderEpochs(t *testing.T) {
	requireKernel(t)
	dir := dataset(t, 400, 64<<10)
	rep := profileOf(t, Options{}, readgen, "epochs", dir, "3", "300us", "fixed")
	assertClass(t, rep, v1.ClassSequentialScan, 0.6)
	require.True(t, rep.Features.OrderKnown)
	assert.Greater(t, rep.Features.OrderCorrelation, 0.9)
	assert.True(t, recommendation(t, rep, v1.ActionPrefetch).Prefetch.KeepInCache, "the scan repeats and fits")
}

func TestGoReaderScanAndRandom(t *testing.T) {
	requireKernel(t)
	dir := dataset(t, 50, 4<<20)
	rep := profileOf(t, Options{}, readgen, "scan", dir)
	assertClass(t, rep, v1.ClassSequentialScan, 0.6)
	checkScanAdvice(t, rep)

	f := bigFile(t, 256<<20)
	rep = profileOf(t, Options{}, readgen, "random", f, "5000", "8192")
	assertClass(t, rep, v1.ClassRandomReads, 0.6)
	assert.Equal(t, 8192.0, rep.Features.MedianReadBytes)
}

func TestGoReaderHotSet(t *testing.T) {
	requireKernel(t)
	dir := dataset(t, 500, 64<<10)
	rep := profileOf(t, Options{}, readgen, "hot", dir, "20000", "25")
	assertClass(t, rep, v1.ClassHotSet, 0.6)
	f := rep.Features
	assert.Greater(t, f.HotSetShare, 0.8)
	assert.Less(t, f.WorkingSetBytes, f.DatasetBytes/2, "the hot files are a small part")
	p := recommendation(t, rep, v1.ActionPrefetch).Prefetch
	assert.Equal(t, v1.StrategyHotSet, p.Strategy)
	assert.Equal(t, int64(f.DatasetBytes), p.BudgetBytes, "all it read fits the cache budget: the hot files first, then the rest")
}

func TestGoWriterIsWriteMostly(t *testing.T) {
	requireKernel(t)
	rep := profileOf(t, Options{}, readgen, "write", t.TempDir(), "50", fmt.Sprint(4<<20))
	assertClass(t, rep, v1.ClassWriteMostly, 0.6)
	assert.Empty(t, rep.Recommendations)
}

func TestIdleCommand(t *testing.T) {
	requireKernel(t)
	rep := profileOf(t, Options{}, "sleep", "0.3")
	assertClass(t, rep, v1.ClassIdle, 0.5)
	assert.Equal(t, v1.ActionEvictDataset, rep.Recommendations[0].Action)
}

func TestExitStatusAndOutputPassThrough(t *testing.T) {
	requireKernel(t)
	var out bytes.Buffer
	rep, err := Run(context.Background(), []string{"sh", "-c", "echo hello; exit 3"}, Options{Stdout: &out})
	var exitErr *ExitError
	require.ErrorAs(t, err, &exitErr)
	assert.Equal(t, 3, exitErr.ExitCode())
	assert.Equal(t, 3, rep.ExitCode)
	assert.Equal(t, "hello\n", out.String())

	_, err = Run(context.Background(), []string{"/no/such/command"}, Options{})
	assert.ErrorContains(t, err, `cannot start "/no/such/command"`)
	_, err = Run(context.Background(), nil, Options{})
	assert.ErrorIs(t, err, ErrNoCommand)
}

const dataLoaderScript = `
import os, sys, time, torch
from torch.utils.data import Dataset, DataLoader

class Files(Dataset):
    def __init__(self, root):
        self.paths = sorted(os.path.join(root, n) for n in os.listdir(root))
    def __len__(self):
        return len(self.paths)
    def __getitem__(self, i):
        with open(self.paths[i], 'rb') as f:
            return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)[:16].float()

if __name__ == '__main__':
    loader = DataLoader(Files(sys.argv[1]), batch_size=16, shuffle=True, num_workers=2)
    for epoch in range(3):
        for batch in loader:
            time.sleep(0.005)
`

func TestPyTorchDataLoader(t *testing.T) {
	requireKernel(t)
	if out, err := exec.Command("/usr/bin/python3", "-c", "import torch").CombinedOutput(); err != nil {
		t.Skipf("PyTorch is not importable by /usr/bin/python3 (apt-get install python3-torch): %v: %s", err, strings.TrimSpace(string(out)))
	}
	dir := dataset(t, 400, 64<<10)
	script := filepath.Join(t.TempDir(), "train.py")
	require.NoError(t, os.WriteFile(script, []byte(dataLoaderScript), 0o644))
	rep := profileOf(t, Options{Data: []string{dir}}, "/usr/bin/python3", script, dir)
	assertClass(t, rep, v1.ClassShuffledEpochs, 0.6)
	assert.Equal(t, 3.0, rep.Features.Epochs)
	assert.InDelta(t, 400, rep.Features.Files, 1)
	p := recommendation(t, rep, v1.ActionPrefetch).Prefetch
	assert.Equal(t, v1.StrategyWholeDataset, p.Strategy)
}
