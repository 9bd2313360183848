package prefetch

import (
	"cmp"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	manifestv1 "github.com/eddy-autotune/eddy/api/manifest/v1"
	"github.com/eddy-autotune/eddy/sdk"
)

// TestColdVsPrefetchedOverSlowRemote reads a dataset through two fresh
// mounts of the same slow remote, side by side: one cold, one after the
// prefetcher warmed it. The reader is an application's single pass over the
// files.
func TestColdVsPrefetchedOverSlowRemote(t *testing.T) {
	needRemote(t)
	src := t.TempDir()
	names := makeDataset(t, src, 48, 1<<20)
	const delay, bandwidth = 20 * time.Millisecond, 32 << 20
	r := startRemote(t, src, delay, bandwidth)
	cold, warm := r.mount(t, "cold"), r.mount(t, "warm")

	coldTime, coldBytes := readAll(t, cold, names)

	p := runPrefetcher(t, Options{Strategy: "WholeDataset", Roots: []string{warm}, WarmThresholdPercent: 100},
		testr.New(t))
	status := httptest.NewServer(p.Handler())
	defer status.Close()
	warmCode := func() int {
		resp, err := http.Get(status.URL + "/warm")
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusServiceUnavailable, warmCode(), "nothing is warm before the prefetcher runs")
	ctx, cancel := withTimeout(2 * time.Minute)
	defer cancel()
	start := time.Now()
	require.NoError(t, p.Run(ctx))
	prefetchTime := time.Since(start)
	s := p.Status()
	require.Equal(t, http.StatusOK, warmCode())
	require.Equal(t, coldBytes, s.Bytes)
	require.Zero(t, s.Errors)

	warmTime, warmBytes := readAll(t, warm, names)
	require.Equal(t, coldBytes, warmBytes)
	ratio := coldTime.Seconds() / warmTime.Seconds()
	t.Logf("link: %s one way, %d MiB/s; dataset %d files, %d MiB", delay, bandwidth>>20, len(names), coldBytes>>20)
	t.Logf("reader cold: %s (%.1f MiB/s); prefetch: %s (%.1f MiB/s, concurrency %d); reader after prefetch: %s (%.1f MiB/s); cold/warm = %.1fx",
		coldTime.Round(time.Millisecond), mibps(coldBytes, coldTime), prefetchTime.Round(time.Millisecond),
		mibps(s.Bytes, prefetchTime), s.Concurrency, warmTime.Round(time.Millisecond), mibps(warmBytes, warmTime), ratio)
	assert.Greater(t, ratio, 3.0, "reads after the prefetch must be much faster than cold reads (13-17x on an idle machine)")
	assert.Less(t, prefetchTime, coldTime, "the prefetcher's parallel reads beat one cold pass")
}

func mibps(b int64, d time.Duration) float64 { return float64(b) / (1 << 20) / d.Seconds() }

// TestSDKOrderOverSlowRemote runs a real PyTorch DataLoader with the
// injected SDK over the slow remote: the prefetcher, told the order over its
// hint socket, must read the files in exactly the order the DataLoader does,
// and the epoch must be faster than the same epoch on a cold mount.
func TestSDKOrderOverSlowRemote(t *testing.T) {
	needRemote(t)
	if err := exec.Command("/usr/bin/python3", "-c", "import torch").Run(); err != nil {
		t.Skip("PyTorch is not importable by /usr/bin/python3 (apt-get install python3-torch): the DataLoader test is skipped")
	}
	src := t.TempDir()
	names := makeDataset(t, src, 64, 256<<10)
	const delay, bandwidth = 20 * time.Millisecond, 32 << 20
	r := startRemote(t, src, delay, bandwidth)
	cold, warm := r.mount(t, "cold"), r.mount(t, "warm")
	sdkDir := t.TempDir()
	require.NoError(t, sdk.Install(sdkDir))
	script := filepath.Join(sdkDir, "loader.py")
	require.NoError(t, os.WriteFile(script, []byte(orderedLoaderScript), 0o644))
	sock := filepath.Join(sdkDir, HintSocketName)

	runLoader := func(root, socket string) loaderResult {
		cmd := exec.Command("/usr/bin/python3", script, root, "7")
		cmd.Env = append(os.Environ(), "PYTHONPATH="+sdk.PythonPath(sdkDir), "EDDY_PREFETCH_SOCKET="+socket,
			"PYTHONDONTWRITEBYTECODE=1")
		out, err := cmd.Output()
		require.NoError(t, err, "loader: %s", out)
		var res loaderResult
		require.NoError(t, json.Unmarshal(out, &res), "loader output %s", out)
		return res
	}

	coldRun := runLoader(cold, filepath.Join(sdkDir, "absent.sock"))

	// The application sees the dataset elsewhere than the prefetcher does
	// (in a pod: its own volume mount path), hence the alias.
	app := filepath.Join(sdkDir, "app-data")
	require.NoError(t, os.Symlink(warm, app))
	p := runPrefetcher(t, Options{Strategy: "Ordered", Roots: []string{warm}, HintSocket: sock, Concurrency: 8,
		PathAliases: []string{app + "=" + warm}}, testr.New(t))
	rec := &orderRecorder{root: warm}
	p.onFileStart = rec.record
	ctx, cancel := withTimeout(2 * time.Minute)
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	require.Eventually(t, func() bool { _, err := os.Stat(sock); return err == nil }, 10*time.Second, 10*time.Millisecond)
	sdkRun := runLoader(app, sock)
	require.Eventually(t, func() bool { return p.Status().Files == int64(len(names)) }, time.Minute, 20*time.Millisecond)
	cancel()
	<-done

	var want []string
	for _, f := range sdkRun.Order {
		rel, err := filepath.Rel(app, f)
		require.NoError(t, err)
		want = append(want, rel)
	}
	require.Len(t, want, len(names))
	assert.Equal(t, want, rec.get(), "the prefetcher reads in the DataLoader's order")
	assert.Equal(t, int64(1), p.Status().Hints)
	var coldOrder []string
	for _, f := range coldRun.Order {
		rel, _ := filepath.Rel(cold, f)
		coldOrder = append(coldOrder, rel)
	}
	assert.Equal(t, want, coldOrder, "same seed, same order with and without the SDK")
	t.Logf("DataLoader epoch (%d files of 256 KiB, %s one way, %d MiB/s): cold %.2fs, with SDK-guided prefetch %.2fs: %.1fx",
		len(names), delay, bandwidth>>20, coldRun.Seconds, sdkRun.Seconds, coldRun.Seconds/sdkRun.Seconds)
	assert.Less(t, sdkRun.Seconds, coldRun.Seconds, "prefetching in the DataLoader's order speeds the epoch up")
}

type loaderResult struct {
	Seconds float64  `json:"seconds"`
	Order   []string `json:"order"`
}

// orderedLoaderScript reads one shuffled epoch and prints the files in the
// order the DataLoader handed them out (the dataset returns its path).
const orderedLoaderScript = `
import json, os, sys, time
import torch
from torch.utils.data import DataLoader, Dataset

class Files(Dataset):
    def __init__(self, files):
        self.files = files
    def __len__(self):
        return len(self.files)
    def __getitem__(self, i):
        with open(self.files[i], "rb") as f:
            f.read()
        return self.files[i]

root = sys.argv[1]
files = sorted(os.path.join(d, n) for d, _, ns in os.walk(root) for n in ns)
torch.manual_seed(int(sys.argv[2]))
loader = DataLoader(Files(files), batch_size=None, shuffle=True)
start = time.monotonic()
order = [path for path in loader]
print(json.dumps({"seconds": time.monotonic() - start, "order": order}))
`

// BenchmarkPrefetchShareOfLink measures the prefetcher's throughput over
// the slow remote as a share of what the link allows. The proxy caps the
// link at B bytes/s with a one-way delay d: whatever the concurrency, no
// reader can beat B, and reaching it needs at least B×2d bytes in flight
// (the bandwidth-delay product). Each iteration starts from a fresh, cold
// mount.
func BenchmarkPrefetchShareOfLink(b *testing.B) {
	needRemote(b)
	const (
		delay     = 25 * time.Millisecond
		bandwidth = 32 << 20
		files     = 128
		fileSize  = 1 << 20
	)
	src := b.TempDir()
	makeDataset(b, src, files, fileSize)
	r := startRemote(b, src, delay, bandwidth)
	// Baselines without adaptation: one read at a time (far below the
	// bandwidth-delay product), and 16 at a time (well above it: what the
	// rclone and FUSE stack itself allows on this link).
	for _, c := range []struct {
		name       string
		start, max int
	}{{"fixed-1", 1, 1}, {"fixed-16", 16, 16}, {"adaptive-from-1", 1, 0}, {"adaptive-from-4", 4, 0}} {
		b.Run(c.name, func(b *testing.B) {
			var share, rate float64
			var conc int
			for range b.N {
				b.StopTimer()
				mnt := r.mount(b, "bench-"+c.name)
				p := runPrefetcher(b, Options{Strategy: "WholeDataset", Roots: []string{mnt}, Concurrency: c.start,
					MaxConcurrency: c.max}, benchLog(b))
				ctx, cancel := withTimeout(5 * time.Minute)
				b.StartTimer()
				t0 := time.Now()
				if err := p.Run(ctx); err != nil {
					b.Fatal(err)
				}
				elapsed := time.Since(t0)
				b.StopTimer()
				cancel()
				s := p.Status()
				if s.Bytes != files*fileSize || s.Errors != 0 {
					b.Fatalf("read %d bytes with %d errors, want %d bytes", s.Bytes, s.Errors, files*fileSize)
				}
				rate = float64(s.Bytes) / elapsed.Seconds()
				share = rate / bandwidth
				conc = s.Concurrency
				p.Close() // release the root before unmounting
				unmount(b, mnt)
			}
			bdp := float64(bandwidth) * (2 * delay).Seconds()
			b.ReportMetric(rate/(1<<20), "MiB/s")
			b.ReportMetric(100*share, "%link")
			b.ReportMetric(float64(conc), "concurrency")
			b.Logf("link %d MiB/s, RTT %s, BDP %.1f MiB (%.1f files of %d MiB in flight); prefetch %.1f MiB/s = %.0f%% of the link (final concurrency %d, started at %d)",
				bandwidth>>20, 2*delay, bdp/(1<<20), bdp/fileSize, fileSize>>20, rate/(1<<20), 100*share, conc, c.start)
		})
	}
}

// benchLog logs the prefetcher's decisions when EDDY_BENCH_LOG is set.
func benchLog(b *testing.B) logr.Logger {
	if os.Getenv("EDDY_BENCH_LOG") == "" {
		return logr.Discard()
	}
	return testr.NewWithInterface(b, testr.Options{Verbosity: 1})
}

// TestRangesOverSlowRemote: a job reads 4 KiB at 200 seeded random offsets
// of a 256 MiB file through a mount with small first chunks (as the
// benchmark mounts a random-access dataset). On a second fresh mount, with
// the job's file already open (the application starts beside the
// prefetcher), the Ranges prefetcher reads exactly those ranges from a
// manifest. It fetches no more than the cold job did — far less than the
// file — and leaves every range in the page cache of the job's open file,
// so the job then reads without asking the mount for anything.
func TestRangesOverSlowRemote(t *testing.T) {
	needRemote(t)
	src := t.TempDir()
	const size, reads = 256 << 20, 200
	f, err := os.Create(filepath.Join(src, "big.bin"))
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))
	require.NoError(t, f.Close())
	r := startRemote(t, src, 20*time.Millisecond, 64<<20)
	args := []string{"--vfs-read-chunk-size", "64k", "--buffer-size", "0"}
	cold, warm := r.mount(t, "cold", args...), r.mount(t, "warm", args...)
	rng := rand.New(rand.NewPCG(7, 7))
	offsets := make([]int64, reads)
	var ranges []manifestv1.Range
	for i := range offsets {
		offsets[i] = rng.Int64N(size/4096) * 4096
		ranges = append(ranges, manifestv1.Range{offsets[i], offsets[i] + 4096})
	}
	slices.SortFunc(ranges, func(a, b manifestv1.Range) int { return cmp.Compare(a.Offset(), b.Offset()) }) // as the analyzer serves them
	job := func(f *os.File) time.Duration {
		buf := make([]byte, 4096)
		start := time.Now()
		for _, off := range offsets {
			_, err := f.ReadAt(buf, off)
			require.NoError(t, err)
		}
		return time.Since(start)
	}
	open := func(root string) *os.File {
		f, err := os.Open(filepath.Join(root, "big.bin"))
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		return f
	}
	before := r.Meter.Counts()
	coldTime := job(open(cold))
	coldFetched := r.Meter.Counts().Sub(before)

	jobFile := open(warm)
	doc := manifestv1.Document{Files: []string{"big.bin"}, Ranges: []manifestv1.FileRanges{{Path: "big.bin", Ranges: ranges}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(doc) }))
	defer srv.Close()
	p := runPrefetcher(t, Options{Strategy: "Ranges", Roots: []string{warm}, BlockSize: 64 << 10, Concurrency: 16, ManifestURL: srv.URL}, testr.New(t))
	ctx, cancel := withTimeout(2 * time.Minute)
	defer cancel()
	before = r.Meter.Counts()
	start := time.Now()
	require.NoError(t, p.Run(ctx))
	prefetchTime := time.Since(start)
	prefetched := r.Meter.Counts().Sub(before)
	s := p.Status()
	require.Zero(t, s.Errors)
	assert.LessOrEqual(t, s.Bytes, int64(reads*64<<10), "the ranges, and gaps between ranges less than a block apart")
	resident := residentPages(t, jobFile, size)
	missing := 0
	for _, off := range offsets {
		if !resident[off/4096] {
			missing++
		}
	}
	assert.Zero(t, missing, "every range is in the page cache of the job's open file (reopening a FUSE file per read drops its pages)")
	before = r.Meter.Counts()
	warmTime := job(jobFile)
	after := r.Meter.Counts().Sub(before)

	t.Logf("job cold: %s, %d KiB in %d GETs; prefetch of %d ranges: %s, %d KiB in %d GETs (%d of them not in the page cache after); job after it: %s, %d KiB in %d GETs",
		coldTime.Round(time.Millisecond), coldFetched.Bytes>>10, coldFetched.Gets, reads, prefetchTime.Round(time.Millisecond),
		prefetched.Bytes>>10, prefetched.Gets, missing, warmTime.Round(time.Millisecond), after.Bytes>>10, after.Gets)
	assert.Less(t, prefetchTime, coldTime/2, "16 ranges at a time beat one reader's round trips")
	assert.Less(t, warmTime, coldTime/5, "the job after the prefetch reads from cache")
	assert.Zero(t, after.Gets, "and fetches nothing")
	assert.LessOrEqual(t, float64(prefetched.Bytes), 1.1*float64(coldFetched.Bytes),
		"the ranged prefetch fetches no more than the cold job (read in ascending order, the mount streams through the gaps: 1.4-1.8x)")
}

// residentPages reports, for each 4 KiB page of the first size bytes of f,
// whether it is in the page cache.
func residentPages(t *testing.T, f *os.File, size int) []bool {
	t.Helper()
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	require.NoError(t, err)
	defer func() { _ = unix.Munmap(m) }()
	page := os.Getpagesize()
	vec := make([]byte, (size+page-1)/page)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(size), uintptr(unsafe.Pointer(&vec[0])))
	require.Zero(t, errno, "mincore")
	out := make([]bool, size/4096)
	for i := range out {
		out[i] = vec[i*4096/page]&1 != 0
	}
	return out
}
