package bpf

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/go-logr/logr/funcr"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/eddy-autotune/eddy/internal/cgroupv2"
)

const pageSize = 4096

// requireKernel skips tests that need to load BPF programs where that is
// impossible; in CI they run as root on a kernel with BTF.
func requireKernel(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping kernel test in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping kernel test: needs root (CAP_BPF, CAP_PERFMON, cgroup creation)")
	}
	if _, err := os.Stat(kernelBTFPath); err != nil {
		t.Skipf("skipping kernel test: no kernel BTF at %s", kernelBTFPath)
	}
	if _, err := cgroupv2.Mountpoint(); err != nil {
		t.Skipf("skipping kernel test: %v", err)
	}
	// The syscalls trace events these tests expect need tracefs; a fresh
	// machine has none mounted.
	if _, err := EnsureTraceFS(); err != nil {
		t.Fatalf("the kernel tests need tracefs: %v", err)
	}
}

// testRecorder is a loaded Recorder plus every event it emitted.
type testRecorder struct {
	*Recorder
	mu     sync.Mutex
	events []FileEvent
}

func loadRecorder(t testing.TB, opts Options) *testRecorder {
	t.Helper()
	requireKernel(t)
	opts.Logger = funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{})
	r, err := Load(opts)
	require.NoError(t, err)
	require.Empty(t, r.MissingHooks(), "every hook attaches on the CI kernel")
	tr := &testRecorder{Recorder: r}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range r.Events() {
			tr.mu.Lock()
			tr.events = append(tr.events, ev)
			tr.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		require.NoError(t, r.Close())
		<-done
	})
	return tr
}

// waitEvent returns the first event matching ok, waiting up to 5 s for the
// ring buffer reader.
func (r *testRecorder) waitEvent(t *testing.T, ok func(FileEvent) bool) (FileEvent, bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		for _, ev := range r.events {
			if ok(ev) {
				r.mu.Unlock()
				return ev, true
			}
		}
		r.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	return FileEvent{}, false
}

func (r *testRecorder) eventsOf(cgroupID uint64) []FileEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []FileEvent
	for _, ev := range r.events {
		if ev.Key.CgroupID == cgroupID {
			out = append(out, ev)
		}
	}
	return out
}

// drainCgroup drains the map and returns the records of one cgroup by inode.
func (r *testRecorder) drainCgroup(t *testing.T, cgroupID uint64) map[uint64]Record {
	t.Helper()
	recs, err := r.Drain(nil)
	require.NoError(t, err)
	out := map[uint64]Record{}
	for _, rec := range recs {
		if rec.Key.CgroupID != cgroupID {
			continue
		}
		_, dup := out[rec.Key.Ino]
		require.False(t, dup, "inode %d drained twice in one drain", rec.Key.Ino)
		out[rec.Key.Ino] = rec
	}
	return out
}

// podCgroup is a cgroup laid out like a kubelet pod's container.
type podCgroup struct {
	group *cgroupv2.Group
	id    uint64
}

func newPodCgroup(t testing.TB, name string) *podCgroup {
	t.Helper()
	root := fmt.Sprintf("eddy-bpf-test-%d", os.Getpid())
	g, err := cgroupv2.Create(filepath.Join(root, "kubepods/besteffort/pod"+name), "ctr")
	require.NoError(t, err)
	t.Cleanup(func() {
		top, err := cgroupv2.Open(root)
		if err == nil {
			assert.NoError(t, top.Remove())
		}
	})
	id, err := g.ID()
	require.NoError(t, err)
	return &podCgroup{group: g, id: id}
}

// start starts the test binary as workload in the cgroup.
// allowedPod is newPodCgroup with the cgroup allowed in r.
func allowedPod(t testing.TB, r interface{ Allow(uint64) error }, name string) *podCgroup {
	t.Helper()
	cg := newPodCgroup(t, name)
	require.NoError(t, r.Allow(cg.id))
	return cg
}

func (c *podCgroup) start(t testing.TB, dir, workload string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), workloadEnv+"="+workload, argsEnv+"="+strings.Join(args, "\x1f"))
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	require.NoError(t, c.group.Start(cmd))
	return cmd, &out
}

// run runs the test binary as workload in the cgroup and waits for it.
func (c *podCgroup) run(t testing.TB, workload string, args ...string) {
	t.Helper()
	cmd, out := c.start(t, "/", workload, args...)
	require.NoError(t, cmd.Wait(), "workload %s: %s", workload, out)
}

// dataDir returns a fresh directory on a disk-backed file system, so page
// cache and O_DIRECT behave as they do for real datasets (tmpfs has no
// read-ahead misses and refuses O_DIRECT).
func dataDir(t testing.TB) string {
	t.Helper()
	for _, base := range []string{os.TempDir(), "/var/tmp"} {
		var fs unix.Statfs_t
		if err := unix.Statfs(base, &fs); err != nil || fs.Type == unix.TMPFS_MAGIC {
			continue
		}
		d, err := os.MkdirTemp(base, "eddy-bpf-test-")
		require.NoError(t, err)
		t.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	t.Skip("skipping: no disk-backed temporary directory (TMPDIR and /var/tmp are tmpfs)")
	return ""
}

// writeFile creates a file of size bytes of pseudo-random data, synced so
// dropping caches really empties them.
func writeFile(t testing.TB, path string, size int) {
	t.Helper()
	b := make([]byte, size)
	rand.New(rand.NewSource(int64(size))).Read(b)
	f, err := os.Create(path)
	require.NoError(t, err)
	_, err = f.Write(b)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())
}

func dropCaches(t testing.TB) {
	t.Helper()
	unix.Sync()
	require.NoError(t, os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0))
}

// keyOf returns the (dev, ino) the kernel reports for path: s_dev is
// MKDEV(major, minor) = major<<20 | minor, not the st_dev encoding.
func keyOf(t testing.TB, path string) (dev, ino uint64) {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(path, &st))
	return uint64(unix.Major(st.Dev))<<20 | uint64(unix.Minor(st.Dev)), st.Ino
}

func histTotal(h []uint64) uint64 {
	var n uint64
	for _, v := range h {
		n += v
	}
	return n
}

func TestSequentialReadOfLargeFile(t *testing.T) {
	r := loadRecorder(t, Options{})
	cg := allowedPod(t, r, "seq")
	path := filepath.Join(dataDir(t), "large.bin")
	const size = 32 << 20
	const buf = 1 << 20
	writeFile(t, path, size)
	dropCaches(t)

	cg.run(t, "seqread", path, fmt.Sprint(buf))

	dev, ino := keyOf(t, path)
	recs := r.drainCgroup(t, cg.id)
	rec, ok := recs[ino]
	require.True(t, ok, "no record for the file read (inode %d); got %d records", ino, len(recs))
	assert.Equal(t, FileKey{CgroupID: cg.id, Dev: dev, Ino: ino}, rec.Key)
	assert.EqualValues(t, size, rec.ReadBytes)
	assert.EqualValues(t, size/buf+1, rec.ReadOps, "one read per MiB plus the read returning EOF")
	assert.EqualValues(t, size/buf, rec.SeqSteps)
	assert.Zero(t, rec.RandSteps)
	assert.EqualValues(t, 1, rec.Passes)
	assert.EqualValues(t, 1, rec.Opens)
	assert.EqualValues(t, size, rec.MaxOffset)
	assert.EqualValues(t, size, rec.FileSize)
	assert.EqualValues(t, size/buf, rec.ReadSizeLog2[20], "1 MiB reads land in bucket 20")
	assert.EqualValues(t, 1, rec.ReadSizeLog2[0], "the EOF read returns 0 bytes")
	assert.Equal(t, rec.ReadOps, histTotal(rec.ReadLatencyLog2[:]))
	assert.Positive(t, rec.ReadWaitNs)
	assert.Zero(t, rec.DirectReads)
	assert.Zero(t, rec.WriteOps)
	// Every page is requested once; the cache was dropped, so every page is
	// added once, and read-ahead stops at EOF.
	assert.EqualValues(t, size/pageSize, rec.PagesRequested)
	assert.InDelta(t, size/pageSize, rec.PagesAdded, 64)
	assert.LessOrEqual(t, rec.FirstNs, rec.LastPassNs)
	assert.LessOrEqual(t, rec.LastPassNs, rec.LastNs)
	assert.Positive(t, rec.FirstNs)

	again := r.drainCgroup(t, cg.id)
	assert.Empty(t, again, "a drain empties the map")
}

func TestRandomPreads(t *testing.T) {
	r := loadRecorder(t, Options{})
	cg := allowedPod(t, r, "rand")
	path := filepath.Join(dataDir(t), "random.bin")
	const size = 64 << 20
	const reads = 2000
	const seed = 42
	writeFile(t, path, size)

	cg.run(t, "randpread", path, fmt.Sprint(reads), fmt.Sprint(seed))

	// Replay the workload's offsets to know the exact answer.
	rng := rand.New(rand.NewSource(seed))
	var passes, seq, maxEnd uint64
	ranges := map[uint64]uint64{}
	prev := int64(-1)
	for i := 0; i < reads; i++ {
		off := rng.Int63n(size/pageSize) * pageSize
		if off == 0 {
			passes++
		}
		if prev >= 0 && off == prev+pageSize {
			seq++
		} else {
			ranges[uint64(off)] = uint64(off + pageSize)
		}
		if uint64(off+pageSize) > maxEnd {
			maxEnd = uint64(off + pageSize)
		}
		prev = off
	}

	_, ino := keyOf(t, path)
	rec, ok := r.drainCgroup(t, cg.id)[ino]
	require.True(t, ok, "no record for the file read")
	assert.EqualValues(t, reads, rec.ReadOps)
	assert.EqualValues(t, reads*pageSize, rec.ReadBytes)
	assert.EqualValues(t, reads, rec.ReadSizeLog2[12], "4 KiB reads land in bucket 12")
	assert.Equal(t, rec.ReadOps, histTotal(rec.ReadSizeLog2[:]))
	assert.Equal(t, seq, rec.SeqSteps)
	assert.EqualValues(t, reads-1-seq, rec.RandSteps, "every read after the first is a step")
	ratio := float64(rec.SeqSteps) / float64(rec.SeqSteps+rec.RandSteps)
	assert.Less(t, ratio, 0.01)
	assert.Equal(t, passes, rec.Passes)
	assert.Equal(t, maxEnd, rec.MaxOffset)
	assert.EqualValues(t, reads, rec.PagesRequested, "each buffered 4 KiB read asks the cache for one page")
	got := map[uint64]uint64{}
	for i, rr := range rec.Ranges {
		got[rr.Offset] = rr.End
		if i > 0 {
			assert.Less(t, rec.Ranges[i-1].Offset, rr.Offset, "ranges are sorted and distinct")
		}
	}
	assert.Equal(t, ranges, got, "every read that jumped is a range, from its page to its end")
}

// TestRangesOfAReaderThatJumps reads a file with jumps of every shape: the
// first jumps of an open file keep their ranges one entry each, later ones
// in the file's range blocks, so a page read before and after that switch,
// reads that are not page-aligned, that cross a block's end, or are large,
// must all come out as one range per page that a read jumped to, reaching
// the furthest end of those reads.
func TestRangesOfAReaderThatJumps(t *testing.T) {
	r := loadRecorder(t, Options{})
	cg := allowedPod(t, r, "jumps")
	path := filepath.Join(dataDir(t), "jumps.bin")
	const size = 16 << 20
	writeFile(t, path, size)

	const mib = 1 << 20
	reads := [][2]uint64{
		{5 * pageSize, pageSize},       // first read of the open: a range
		{9 * pageSize, pageSize},       // jumps 1..3: kept one entry each
		{2 * mib, 3 * pageSize},        //
		{7 * mib, pageSize},            //
		{7*mib + pageSize, pageSize},   // sequential: no range
		{5 * pageSize, 10 << 10},       // page 5 again, further, now in a block
		{9*pageSize + 100, 50},         // inside page 9, shorter: no change
		{4*mib - 100, 300},             // across the end of the first block
		{11 * mib, mib + 7},            // large and ends mid-page
		{2*mib + 3*pageSize, pageSize}, // continues the read two back: a jump
		{2 * mib, pageSize},            // page of an entry, shorter
		{15*mib + 5000, 3000},          // unaligned, within one page
		{15*mib + 5000, 3000},          // the same again
		{5 * pageSize, 2 * pageSize},   // page 5, shorter than before
	}
	want := map[uint64]uint64{}
	var next uint64
	args := []string{path}
	for i, rd := range reads {
		off, end := rd[0], rd[0]+rd[1]
		if i == 0 || off != next {
			page := off / pageSize * pageSize
			want[page] = max(want[page], end)
		}
		next = end
		args = append(args, fmt.Sprintf("%d:%d", off, rd[1]))
	}
	cg.run(t, "preads", args...)

	_, ino := keyOf(t, path)
	rec, ok := r.drainCgroup(t, cg.id)[ino]
	require.True(t, ok, "no record for the file read")
	assert.EqualValues(t, len(reads), rec.ReadOps)
	got := map[uint64]uint64{}
	for i, rr := range rec.Ranges {
		got[rr.Offset] = rr.End
		if i > 0 {
			assert.Less(t, rec.Ranges[i-1].Offset, rr.Offset, "ranges are sorted and distinct")
		}
	}
	assert.Equal(t, want, got, "one range per page jumped to, to the furthest end of its reads")
}

func TestSmallFilesReadWholeInShuffledOrder(t *testing.T) {
	r := loadRecorder(t, Options{})
	cg := allowedPod(t, r, "small")
	dir := filepath.Join(dataDir(t), "dataset")
	require.NoError(t, os.Mkdir(dir, 0o755))
	const files = 200
	sizes := map[uint64]int{}
	paths := map[uint64]string{}
	for i := 0; i < files; i++ {
		p := filepath.Join(dir, fmt.Sprintf("sample-%03d.jpg", i))
		size := 1000 + i*317
		writeFile(t, p, size)
		_, ino := keyOf(t, p)
		sizes[ino] = size
		paths[ino] = p
	}
	dropCaches(t)

	cg.run(t, "smallfiles", dir, "7")

	recs := r.drainCgroup(t, cg.id)
	var totalPages, added uint64
	for ino, size := range sizes {
		rec, ok := recs[ino]
		if !assert.True(t, ok, "no record for %s", paths[ino]) {
			continue
		}
		assert.EqualValues(t, size, rec.ReadBytes, paths[ino])
		assert.EqualValues(t, size, rec.MaxOffset, "%s read whole", paths[ino])
		assert.EqualValues(t, size, rec.FileSize, paths[ino])
		assert.EqualValues(t, 2, rec.ReadOps, "%s: one read of the whole file plus EOF", paths[ino])
		assert.EqualValues(t, 1, rec.SeqSteps, paths[ino])
		assert.Zero(t, rec.RandSteps, paths[ino])
		assert.EqualValues(t, 1, rec.Passes, paths[ino])
		assert.EqualValues(t, 1, rec.Opens, paths[ino])
		pages := uint64(size+pageSize-1) / pageSize
		assert.Equal(t, pages, rec.PagesRequested, "%s: every page requested once", paths[ino])
		assert.LessOrEqual(t, rec.PagesAdded, pages, "%s: no page added twice", paths[ino])
		totalPages += pages
		added += rec.PagesAdded
	}
	// drop_caches is best effort (a page in use at that instant stays), so
	// the cold-cache check allows a few pages to have been cached already.
	assert.GreaterOrEqual(t, float64(added), 0.95*float64(totalPages), "cold cache: pages added")

	// Each file is announced once, with the path given to openat.
	for ino, p := range paths {
		ev, ok := r.waitEvent(t, func(ev FileEvent) bool { return ev.Key.CgroupID == cg.id && ev.Key.Ino == ino })
		if assert.True(t, ok, "no first-seen event for %s", p) {
			assert.Equal(t, p, ev.Path)
			assert.False(t, ev.Truncated)
			assert.NotZero(t, ev.Pid)
		}
	}
	perIno := map[uint64]int{}
	for _, ev := range r.eventsOf(cg.id) {
		perIno[ev.Key.Ino]++
	}
	for ino, p := range paths {
		assert.Equal(t, 1, perIno[ino], "events for %s", p)
	}

	// Reading the dataset again is a new drain window but not news: no new
	// events, and the counts start from zero.
	before := len(r.eventsOf(cg.id))
	cg.run(t, "smallfiles", dir, "8")
	recs = r.drainCgroup(t, cg.id)
	for ino, size := range sizes {
		assert.EqualValues(t, size, recs[ino].ReadBytes, paths[ino])
	}
	time.Sleep(100 * time.Millisecond)
	for _, ev := range r.eventsOf(cg.id)[before:] {
		_, inDataset := paths[ev.Key.Ino]
		assert.False(t, inDataset, "%s already seen is announced again", ev.Path)
	}
}

func TestMmapFaults(t *testing.T) {
	r := loadRecorder(t, Options{})
	cg := allowedPod(t, r, "mmap")
	path := filepath.Join(dataDir(t), "mapped.bin")
	const size = 8 << 20
	writeFile(t, path, size)
	dropCaches(t)

	cg.run(t, "mmap", path)

	_, ino := keyOf(t, path)
	rec, ok := r.drainCgroup(t, cg.id)[ino]
	require.True(t, ok, "no record for the mapped file")
	assert.Positive(t, rec.MmapFaults, "a cold mapping faults through filemap_fault")
	assert.EqualValues(t, size/pageSize, rec.PagesAdded, "every page is read into the cache once")
	assert.GreaterOrEqual(t, rec.MmapPages, uint64(size/pageSize), "every page is mapped")
	t.Logf("mapped %d B of %d in %d reads (%d seq, %d random), wait %v", rec.MappedReadBytes, size, rec.ReadOps, rec.SeqSteps, rec.RandSteps, time.Duration(rec.ReadWaitNs))
	// A cold sequential pass: each fault is a read; fault-around maps the
	// pages read-ahead brought in, counted once each.
	assert.Positive(t, rec.ReadOps, "read faults count as reads")
	// Pages mapped by fault-around (a large folio) are counted with the
	// next fault that resumes a sequential run a little ahead; when faults
	// arrive out of order (a few here) such a gap can be counted again: on
	// some runs 5.4% over (2,159 pages counted of 2,048, 6 random steps).
	assert.InEpsilon(t, size, rec.MappedReadBytes, 0.06, "mapped bytes: the whole file, about once")
	assert.Equal(t, rec.MappedReadBytes, rec.ReadBytes, "no read syscalls: every byte read was mapped")
	assert.Greater(t, rec.SeqSteps, 4*rec.RandSteps, "a front-to-back pass is sequential: %d seq, %d random", rec.SeqSteps, rec.RandSteps)
	assert.EqualValues(t, 1, rec.Passes)
	assert.EqualValues(t, size, rec.MaxOffset)
	assert.Positive(t, rec.ReadWaitNs, "a cold fault blocks on the disk")
	assert.Zero(t, rec.ExecFaults, "a data mapping is not code")
	assert.EqualValues(t, 1, rec.Opens)
}

func TestDirectReads(t *testing.T) {
	r := loadRecorder(t, Options{})
	cg := allowedPod(t, r, "direct")
	path := filepath.Join(dataDir(t), "direct.bin")
	const size = 4 << 20
	const chunk = 64 << 10
	writeFile(t, path, size)
	dropCaches(t)

	cg.run(t, "direct", path, fmt.Sprint(chunk))

	_, ino := keyOf(t, path)
	rec, ok := r.drainCgroup(t, cg.id)[ino]
	require.True(t, ok, "no record for the O_DIRECT file")
	assert.EqualValues(t, size/chunk+1, rec.ReadOps)
	assert.Equal(t, rec.ReadOps, rec.DirectReads)
	assert.EqualValues(t, size, rec.ReadBytes)
	assert.EqualValues(t, size/chunk, rec.ReadSizeLog2[16])
	assert.EqualValues(t, size/chunk, rec.SeqSteps)
	assert.Zero(t, rec.PagesRequested, "O_DIRECT bypasses the page cache")
	assert.Zero(t, rec.PagesAdded)
	assert.EqualValues(t, size, rec.MaxOffset)
}

func TestWrites(t *testing.T) {
	r := loadRecorder(t, Options{})
	cg := allowedPod(t, r, "write")
	path := filepath.Join(dataDir(t), "checkpoint.bin")
	const size = 3 << 20
	const chunk = 64 << 10

	cg.run(t, "write", path, fmt.Sprint(size), fmt.Sprint(chunk))

	_, ino := keyOf(t, path)
	rec, ok := r.drainCgroup(t, cg.id)[ino]
	require.True(t, ok, "no record for the written file")
	assert.EqualValues(t, size/chunk, rec.WriteOps)
	assert.EqualValues(t, size, rec.WriteBytes)
	assert.EqualValues(t, size, rec.FileSize)
	assert.Zero(t, rec.ReadOps)
	assert.EqualValues(t, 1, rec.Opens)
	ev, ok := r.waitEvent(t, func(ev FileEvent) bool { return ev.Key.CgroupID == cg.id && ev.Key.Ino == ino })
	require.True(t, ok, "no first-seen event for the created file")
	assert.Equal(t, path, ev.Path)
}

func TestCgroupNotAllowedRecordsNothing(t *testing.T) {
	r := loadRecorder(t, Options{})
	dir := dataDir(t)
	path := filepath.Join(dir, "data.bin")
	writeFile(t, path, 4<<20)

	never := newPodCgroup(t, "never")
	revoked := newPodCgroup(t, "revoked")
	allowed := newPodCgroup(t, "allowed")
	require.NoError(t, r.Allow(revoked.id))
	require.NoError(t, r.Disallow(revoked.id))
	require.NoError(t, r.Disallow(revoked.id), "disallowing twice is not an error")
	require.NoError(t, r.Allow(allowed.id))
	require.NoError(t, r.Allow(allowed.id), "allowing twice is not an error")

	for _, cg := range []*podCgroup{never, revoked, allowed} {
		cg.run(t, "seqread", path, "65536")
		cg.run(t, "write", filepath.Join(dir, fmt.Sprintf("out-%d", cg.id)), "65536", "4096")
	}

	recs, err := r.Drain(nil)
	require.NoError(t, err)
	var allowedRecs int
	for _, rec := range recs {
		assert.NotEqual(t, never.id, rec.Key.CgroupID, "record from a cgroup never allowed")
		assert.NotEqual(t, revoked.id, rec.Key.CgroupID, "record from a disallowed cgroup")
		if rec.Key.CgroupID == allowed.id {
			allowedRecs++
		}
	}
	assert.Positive(t, allowedRecs, "the allowed cgroup, running the same workloads, is recorded")
	_, ok := r.waitEvent(t, func(ev FileEvent) bool { return ev.Key.CgroupID == allowed.id })
	assert.True(t, ok)
	assert.Empty(t, r.eventsOf(never.id))
	assert.Empty(t, r.eventsOf(revoked.id))
}

// A thread that reads two files in turns keeps each one's position: both
// stay sequential although every read moves it to the other file.
func TestOneThreadInterleavingTwoFilesStaysSequential(t *testing.T) {
	r := loadRecorder(t, Options{})
	cg := allowedPod(t, r, "interleave")
	dir := dataDir(t)
	const size = 1 << 20
	a, b := filepath.Join(dir, "a.bin"), filepath.Join(dir, "b.bin")
	writeFile(t, a, size)
	writeFile(t, b, size+1)
	cg.run(t, "interleave", a, b, "65536")

	recs := r.drainCgroup(t, cg.id)
	for _, p := range []string{a, b} {
		_, ino := keyOf(t, p)
		rec, ok := recs[ino]
		require.True(t, ok, p)
		st, err := os.Stat(p)
		require.NoError(t, err)
		reads := (st.Size() + 65535) / 65536
		assert.EqualValues(t, st.Size(), rec.ReadBytes, p)
		assert.EqualValues(t, reads+1, rec.ReadOps, "%s: every read and the one at EOF", p)
		assert.EqualValues(t, reads, rec.SeqSteps, p)
		assert.Zero(t, rec.RandSteps, p)
	}
}

// One reader whose reads hop between threads, as a thread pool serves it,
// reads sequentially: the position is kept per open file, not per thread.
func TestReaderHoppingThreadsStaysSequential(t *testing.T) {
	r := loadRecorder(t, Options{})
	cg := allowedPod(t, r, "hop")
	path := filepath.Join(dataDir(t), "hop.bin")
	const size = 1 << 20
	writeFile(t, path, size)
	cg.run(t, "hopread", path, "65536")

	_, ino := keyOf(t, path)
	rec, ok := r.drainCgroup(t, cg.id)[ino]
	require.True(t, ok)
	assert.EqualValues(t, size, rec.ReadBytes)
	assert.EqualValues(t, size/65536+1, rec.ReadOps)
	assert.EqualValues(t, size/65536, rec.SeqSteps)
	assert.Zero(t, rec.RandSteps)
}

// The allow-list's filter lets a thread of a cgroup that is certainly not
// allowed stop at one array load. Cgroups whose ids share a filter slot must
// still be told apart by the list, and the slot must count each of them.
func TestAllowFilterSharedSlot(t *testing.T) {
	r := loadRecorder(t, Options{})
	path := filepath.Join(dataDir(t), "data.bin")
	writeFile(t, path, 1<<20)
	_, ino := keyOf(t, path)
	cg := newPodCgroup(t, "slot")
	// An id in the same slot as cg's, of no cgroup here.
	other := cg.id + allowSlots
	slot := func() uint32 {
		var n uint32
		require.NoError(t, r.maps.AllowSlots.Lookup(allowSlot(cg.id), &n))
		return n
	}
	readBytes := func() uint64 {
		cg.run(t, "seqread", path, "65536")
		var n uint64
		recs, err := r.Drain(nil)
		require.NoError(t, err)
		for _, rec := range recs {
			if rec.Key.CgroupID == cg.id && rec.Key.Ino == ino {
				n += rec.ReadBytes
			}
		}
		return n
	}

	require.NoError(t, r.Allow(other))
	require.Equal(t, uint32(1), slot())
	assert.Zero(t, readBytes(), "a cgroup whose slot is taken by another is still not recorded")

	require.NoError(t, r.Allow(cg.id))
	require.NoError(t, r.Allow(cg.id))
	require.Equal(t, uint32(2), slot(), "allowing twice counts once")
	require.NoError(t, r.Disallow(other))
	require.NoError(t, r.Disallow(other))
	require.Equal(t, uint32(1), slot(), "disallowing twice uncounts once")
	assert.Equal(t, uint64(1<<20), readBytes(), "the cgroup left in the slot is recorded")

	require.NoError(t, r.Disallow(cg.id))
	require.Zero(t, slot())
	assert.Zero(t, readBytes())
}

func TestTwoReadersOfOneFileStaySequential(t *testing.T) {
	r := loadRecorder(t, Options{})
	cg := allowedPod(t, r, "tworeaders")
	path := filepath.Join(dataDir(t), "shared.bin")
	const size = 16 << 20
	writeFile(t, path, size)

	a, outA := cg.start(t, "/", "seqread", path, "4096")
	b, outB := cg.start(t, "/", "seqread", path, "4096")
	require.NoError(t, a.Wait(), "%s", outA)
	require.NoError(t, b.Wait(), "%s", outB)

	_, ino := keyOf(t, path)
	rec, ok := r.drainCgroup(t, cg.id)[ino]
	require.True(t, ok)
	assert.EqualValues(t, 2*(size/pageSize+1), rec.ReadOps)
	assert.EqualValues(t, 2*size, rec.ReadBytes)
	assert.EqualValues(t, 2*(size/pageSize), rec.SeqSteps)
	assert.Zero(t, rec.RandSteps, "interleaved readers with their own opens are each sequential")
	assert.EqualValues(t, 2, rec.Passes)
}

func TestEventPaths(t *testing.T) {
	r := loadRecorder(t, Options{})
	cg := allowedPod(t, r, "paths")
	dir := dataDir(t)

	// A path longer than the kernel copies (255 bytes) is cut and flagged.
	long := dir
	for len(long) < 300 {
		long = filepath.Join(long, strings.Repeat("d", 40))
	}
	require.NoError(t, os.MkdirAll(long, 0o755))
	longFile := filepath.Join(long, "f")
	writeFile(t, longFile, 10)
	exact := filepath.Join(dir, strings.Repeat("e", 255-len(dir)-1))
	require.Len(t, exact, 255)
	writeFile(t, exact, 10)
	writeFile(t, filepath.Join(dir, "relative.txt"), 10)

	cmd, out := cg.start(t, dir, "open", longFile, exact, "relative.txt")
	require.NoError(t, cmd.Wait(), "%s", out)

	for _, c := range []struct {
		path, want string
		truncated  bool
	}{
		{longFile, longFile[:255], true},
		{exact, exact, false},
		{filepath.Join(dir, "relative.txt"), "relative.txt", false},
	} {
		_, ino := keyOf(t, c.path)
		ev, ok := r.waitEvent(t, func(ev FileEvent) bool { return ev.Key.CgroupID == cg.id && ev.Key.Ino == ino })
		if assert.True(t, ok, "no event for %s", c.path) {
			assert.Equal(t, c.want, ev.Path)
			assert.Equal(t, c.truncated, ev.Truncated, c.path)
		}
	}
}

func TestDropCountersAndStats(t *testing.T) {
	const capacity = 32
	r := loadRecorder(t, Options{MaxFiles: capacity})
	cg := allowedPod(t, r, "full")
	dir := filepath.Join(dataDir(t), "many")
	require.NoError(t, os.Mkdir(dir, 0o755))
	for i := 0; i < 3*capacity; i++ {
		writeFile(t, filepath.Join(dir, fmt.Sprint(i)), 100)
	}

	cg.run(t, "smallfiles", dir, "1")

	s, err := r.Stats()
	require.NoError(t, err)
	assert.Positive(t, s.Drops.StatsMapFull, "accesses beyond capacity are counted as dropped")
	assert.EqualValues(t, capacity, s.FileCapacity)
	assert.EqualValues(t, capacity, s.FileEntries, "the map is full")
	assert.Zero(t, s.Drops.RingBuffer)
	hooks := map[string]ProgramStats{}
	for _, p := range s.Programs {
		hooks[p.Hook] = p
	}
	assert.Len(t, hooks, len(syscallEventHooks)+len(pageCacheHooks)+len(threadHooks)+len(cgroupHooks)+1, "and the thread exit hook")
	assert.Positive(t, hooks["syscalls:sys_enter_{read,readv}"].RunCount)
	assert.Positive(t, hooks["syscalls:sys_exit_{read,pread64,readv,preadv,preadv2}"].RunTime)

	recs, err := r.Drain(nil)
	require.NoError(t, err)
	assert.Len(t, recs, capacity)
	s, err = r.Stats()
	require.NoError(t, err)
	assert.Zero(t, s.FileEntries, "drained")
}

func TestDrainFallsBackToIteration(t *testing.T) {
	r := loadRecorder(t, Options{})
	cg := allowedPod(t, r, "iter")
	path := filepath.Join(dataDir(t), "iter.bin")
	writeFile(t, path, 1<<20)
	cg.run(t, "seqread", path, "65536")

	// Force the path used on kernels without batch map operations.
	r.drainMu.Lock()
	r.batchOK = false
	r.drainMu.Unlock()
	_, ino := keyOf(t, path)
	dst := make([]Record, 0, 1)
	rec, ok := r.drainCgroup(t, cg.id)[ino]
	require.True(t, ok)
	assert.EqualValues(t, 1<<20, rec.ReadBytes)
	out, err := r.Drain(dst)
	require.NoError(t, err)
	assert.Empty(t, out, "entries were deleted by the first drain")
}

func TestLoadNamesMissingCapabilities(t *testing.T) {
	requireKernel(t)
	// A copy of the test binary that an unprivileged user may run.
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o755))
	require.NoError(t, os.Chmod(filepath.Dir(dir), 0o755))
	bin := filepath.Join(dir, "bpf.test")
	b, err := os.ReadFile(os.Args[0])
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, b, 0o755))

	cmd := exec.Command(bin)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), workloadEnv+"=load")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "missing capabilities [CAP_BPF CAP_PERFMON]")
	assert.Contains(t, string(out), "grant CAP_BPF and CAP_PERFMON")
}

func TestMissingHookLeavesRecorderDegraded(t *testing.T) {
	requireKernel(t)
	saved := pageCacheHooks
	t.Cleanup(func() { pageCacheHooks = saved })
	pageCacheHooks = append(append([]hook(nil), saved...), hook{name: "filemap:not_a_tracepoint", program: "not_a_program"})

	var logged []string
	var mu sync.Mutex
	logger := funcr.New(func(prefix, args string) {
		mu.Lock()
		logged = append(logged, args)
		mu.Unlock()
	}, funcr.Options{})
	r, err := Load(Options{Logger: logger})
	require.NoError(t, err, "a missing optional hook must not fail Load")
	assert.Equal(t, []string{"filemap:not_a_tracepoint"}, r.MissingHooks())
	mu.Lock()
	assert.Contains(t, strings.Join(logged, "\n"), "filemap:not_a_tracepoint")
	mu.Unlock()

	// The rest still records.
	cg := allowedPod(t, r, "degraded")
	path := filepath.Join(dataDir(t), "f.bin")
	writeFile(t, path, 1<<20)
	cg.run(t, "seqread", path, "65536")
	recs, err := r.Drain(nil)
	require.NoError(t, err)
	_, ino := keyOf(t, path)
	var found bool
	for _, rec := range recs {
		if rec.Key.CgroupID == cg.id && rec.Key.Ino == ino {
			found = true
			assert.EqualValues(t, 1<<20, rec.ReadBytes)
		}
	}
	assert.True(t, found)
	require.NoError(t, r.Close())
	require.NoError(t, r.Close(), "Close is idempotent")

	// Without any syscall hook nothing can be counted.
	savedEvents, savedRaw := syscallEventHooks, rawSyscallHooks
	t.Cleanup(func() { syscallEventHooks, rawSyscallHooks = savedEvents, savedRaw })
	syscallEventHooks = append(append([]hook(nil), savedEvents...), hook{name: "syscalls:sys_enter_missing", program: accessProgOnEnterRead, events: []string{"sys_enter_missing"}})
	rawSyscallHooks = append(append([]hook(nil), savedRaw...), hook{name: "raw_syscalls:missing", program: "not_a_program", essential: true})
	_, err = Load(Options{})
	assert.ErrorContains(t, err, "attach raw_syscalls:missing")
}

// loadRawSyscalls loads a Recorder that uses the raw_syscalls fallback, as on
// a kernel without the syscalls trace events.
func loadRawSyscalls(t testing.TB, opts Options) *Recorder {
	t.Helper()
	saved := syscallEventHooks
	syscallEventHooks = []hook{{name: "syscalls:sys_enter_missing", program: accessProgOnEnterRead, events: []string{"sys_enter_missing"}}}
	defer func() { syscallEventHooks = saved }()
	r, err := Load(opts)
	require.NoError(t, err)
	require.True(t, r.RawSyscalls())
	return r
}

// TestRawSyscallsOption checks that Options.RawSyscalls chooses the
// raw_syscalls hooks where the syscalls trace events exist.
func TestRawSyscallsOption(t *testing.T) {
	r := loadRecorder(t, Options{RawSyscalls: true})
	assert.True(t, r.RawSyscalls())
	s, err := r.Stats()
	require.NoError(t, err)
	var hooks []string
	for _, p := range s.Programs {
		hooks = append(hooks, p.Hook)
	}
	assert.Contains(t, hooks, "raw_syscalls:sys_exit")
	assert.NotContains(t, hooks, "syscalls:sys_exit_{read,pread64,readv,preadv,preadv2}")

	cg := allowedPod(t, r, "rawoption")
	path := filepath.Join(dataDir(t), "f.bin")
	writeFile(t, path, 1<<20)
	cg.run(t, "randpread", path, "500", "1")
	_, ino := keyOf(t, path)
	rec, ok := r.drainCgroup(t, cg.id)[ino]
	require.True(t, ok)
	assert.EqualValues(t, 500, rec.ReadOps)
}

// TestRawSyscallsFallback loads the recorder as on a kernel without the
// syscalls trace events: it falls back to raw_syscalls, says so, and counts
// reads, writes and opens as before.
func TestRawSyscallsFallback(t *testing.T) {
	requireKernel(t)
	var logged []string
	var mu sync.Mutex
	logger := funcr.New(func(prefix, args string) {
		mu.Lock()
		logged = append(logged, args)
		mu.Unlock()
	}, funcr.Options{})
	r := loadRawSyscalls(t, Options{Logger: logger})
	t.Cleanup(func() { r.Close() })
	assert.Empty(t, r.MissingHooks(), "the fallback records at full fidelity")
	mu.Lock()
	assert.Contains(t, strings.Join(logged, "\n"), "falling back to raw_syscalls")
	mu.Unlock()
	var hooks []string
	s, err := r.Stats()
	require.NoError(t, err)
	for _, p := range s.Programs {
		hooks = append(hooks, p.Hook)
	}
	assert.Contains(t, hooks, "raw_syscalls:sys_enter")
	assert.NotContains(t, hooks, "syscalls:sys_enter_{read,readv}", "no trace event stays attached")

	cg := allowedPod(t, r, "rawfallback")
	dir := dataDir(t)
	path := filepath.Join(dir, "f.bin")
	writeFile(t, path, 1<<20)
	cg.run(t, "seqread", path, "65536")
	cg.run(t, "write", filepath.Join(dir, "out.bin"), "12288", "4096")
	recs, err := r.Drain(nil)
	require.NoError(t, err)
	_, ino := keyOf(t, path)
	_, outIno := keyOf(t, filepath.Join(dir, "out.bin"))
	var read, written bool
	for _, rec := range recs {
		if rec.Key.CgroupID != cg.id {
			continue
		}
		switch rec.Key.Ino {
		case ino:
			read = true
			assert.EqualValues(t, 1<<20, rec.ReadBytes)
			assert.EqualValues(t, 17, rec.ReadOps, "16 reads of 64 KiB and one at end of file")
			assert.EqualValues(t, 16, rec.SeqSteps)
			assert.EqualValues(t, 1, rec.Opens)
		case outIno:
			written = true
			assert.EqualValues(t, 3*4096, rec.WriteBytes)
		}
	}
	assert.True(t, read, "the read file was recorded")
	assert.True(t, written, "the written file was recorded")
}

func TestRingBufferFullIsCountedAndRetried(t *testing.T) {
	requireKernel(t)
	// One page holds about 14 events; with a one-slot channel nobody reads,
	// the ring buffer fills quickly.
	r, err := Load(Options{RingBufferBytes: 4096, EventBuffer: 1})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	cg := allowedPod(t, r, "ringfull")
	dir := dataDir(t)
	var paths []string
	for i := 0; i < 100; i++ {
		p := filepath.Join(dir, fmt.Sprint(i))
		writeFile(t, p, 10)
		paths = append(paths, p)
	}

	cg.run(t, "open", paths...)
	s, err := r.Stats()
	require.NoError(t, err)
	assert.Positive(t, s.Drops.RingBuffer, "lost events are counted")

	// Consume events from now on and open again until every file was
	// announced: an event lost to a full ring buffer is retried on the next
	// access, and no file is announced twice. The consumer is slower than the
	// burst of opens, so one retry round may lose some again.
	var mu sync.Mutex
	got := map[string]int{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case ev := <-r.Events():
				if ev.Key.CgroupID == cg.id {
					mu.Lock()
					got[ev.Path]++
					mu.Unlock()
				}
			case <-stop:
				return
			}
		}
	}()
	announced := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, p := range paths {
			if got[p] > 0 {
				n++
			}
		}
		return n
	}
	for round := 0; round < 50 && announced() < len(paths); round++ {
		time.Sleep(50 * time.Millisecond)
		cg.run(t, "open", paths...)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	<-done
	for _, p := range paths {
		assert.Equal(t, 1, got[p], "announcements of %s", p)
	}
}

// threadPreads returns the inode of a fresh 1 MiB file and a function that
// preads n pages of it on the calling thread (which the caller locks).
func threadPreads(t *testing.T) (uint64, func(n int)) {
	t.Helper()
	path := filepath.Join(dataDir(t), "f.bin")
	writeFile(t, path, 1<<20)
	_, ino := keyOf(t, path)
	f, err := os.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	p := make([]byte, pageSize)
	return ino, func(n int) {
		for i := 0; i < n; i++ {
			_, err := unix.Pread(int(f.Fd()), p, int64(i%256)*pageSize)
			require.NoError(t, err)
		}
	}
}

// TestAllowListChangesReachRunningThreads checks that a thread which already
// read while its cgroup was allowed stops being counted at Disallow and is
// counted again after Allow: the programs cache the allow decision per
// thread, and every change to the list must invalidate it.
func TestAllowListChangesReachRunningThreads(t *testing.T) {
	r := loadRecorder(t, Options{})
	cg := newPodCgroup(t, "allowflip")
	moveSelf(t, cg.group)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ino, read := threadPreads(t)
	require.NoError(t, r.Allow(cg.id))
	read(10)
	require.NoError(t, r.Disallow(cg.id))
	read(100)
	require.NoError(t, r.Allow(cg.id))
	read(1000)
	require.NoError(t, r.Disallow(cg.id))

	rec, ok := r.drainCgroup(t, cg.id)[ino]
	require.True(t, ok)
	assert.EqualValues(t, 1010, rec.ReadOps, "reads while allowed only")
}

// A process moved into an allowed cgroup is recorded from its first read on
// every thread, and, before it moved, its threads carried no state: the
// programs stop every other pod's syscall at the missing state, so a thread
// that joins an allowed cgroup must get it as it moves (not at the next
// drain, which would lose the reads in between).
func TestProcessMovedIntoAllowedCgroupIsRecordedFromItsFirstRead(t *testing.T) {
	r := loadRecorder(t, Options{})
	cg := allowedPod(t, r, "movein")
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ino, read := threadPreads(t)
	pidfd, err := unix.PidfdOpen(unix.Gettid(), unix.PIDFD_THREAD)
	require.NoError(t, err)
	defer unix.Close(pidfd)
	state := make([]byte, r.maps.Inflight.ValueSize())
	read(100)
	require.ErrorIs(t, r.maps.Inflight.Lookup(int32(pidfd), state), ebpf.ErrKeyNotExist,
		"a thread outside every allowed cgroup carries no state, reads or not")

	moveSelf(t, cg.group)
	read(1000)
	require.NoError(t, r.maps.Inflight.Lookup(int32(pidfd), state), "moved into an allowed cgroup: observed")
	require.NoError(t, r.Disallow(cg.id))
	rec, ok := r.drainCgroup(t, cg.id)[ino]
	require.True(t, ok)
	assert.EqualValues(t, 1000, rec.ReadOps, "every read after the move, none before")
}

// TestUnbatchedWithoutFlushers loads the recorder as on a kernel where the
// thread exit hook cannot attach: reads must then not wait in per-thread
// batches that nothing would flush, so every read is counted at once.
func TestUnbatchedWithoutFlushers(t *testing.T) {
	requireKernel(t)
	saved := taskExitHook
	t.Cleanup(func() { taskExitHook = saved })
	taskExitHook = hook{name: "sched:missing", program: "not_a_program"}
	r, err := Load(Options{})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	require.False(t, r.batched, "no batching without the exit hook")

	cg := allowedPod(t, r, "unbatched")
	path := filepath.Join(dataDir(t), "f.bin")
	writeFile(t, path, 1<<20)
	cg.run(t, "randpread", path, "1000", "1")
	recs, err := r.Drain(nil)
	require.NoError(t, err)
	_, ino := keyOf(t, path)
	var reads uint64
	for _, rec := range recs {
		if rec.Key.CgroupID == cg.id && rec.Key.Ino == ino {
			reads += rec.ReadOps
		}
	}
	assert.EqualValues(t, 1000, reads)
}

// TestSendfileCountsPagesWithoutReads checks the page-cache hook outside read
// syscalls: sendfile(2) reads the cache, so its pages are requested, but it
// is no read call.
func TestSendfileCountsPagesWithoutReads(t *testing.T) {
	r := loadRecorder(t, Options{})
	cg := allowedPod(t, r, "sendfile")
	path := filepath.Join(dataDir(t), "f.bin")
	writeFile(t, path, 1<<20)
	cg.run(t, "sendfile", path)
	_, ino := keyOf(t, path)
	rec, ok := r.drainCgroup(t, cg.id)[ino]
	require.True(t, ok)
	assert.Zero(t, rec.ReadOps)
	assert.GreaterOrEqual(t, rec.PagesRequested, uint64(256), "every page of the file was asked for")
}

// TestAllowTreeRecordsContainersFromTheirFirstRead: a pod's cgroup allowed
// with AllowTree makes the kernel allow each cgroup created under it as it is
// created, so a container is recorded before user space knows its id; the
// allowance goes with the cgroup.
func TestAllowTreeRecordsContainersFromTheirFirstRead(t *testing.T) {
	r := loadRecorder(t, Options{})
	if slices.Contains(r.MissingHooks(), "cgroup:cgroup_mkdir") {
		t.Fatal("cgroup:cgroup_mkdir did not attach on this kernel")
	}
	root := fmt.Sprintf("eddy-bpf-test-%d", os.Getpid())
	pod, err := cgroupv2.Create(filepath.Join(root, "kubepods/besteffort"), "podtree")
	require.NoError(t, err)
	t.Cleanup(func() {
		if top, err := cgroupv2.Open(root); err == nil {
			assert.NoError(t, top.Remove())
		}
	})
	podID, err := pod.ID()
	require.NoError(t, err)
	before, err := cgroupv2.Create(filepath.Join(root, "kubepods/besteffort/podtree"), "before")
	require.NoError(t, err)
	beforeID, err := before.ID()
	require.NoError(t, err)

	stats0, err := r.Stats()
	require.NoError(t, err)
	require.NoError(t, r.AllowTree(podID))
	g, err := cgroupv2.Create(filepath.Join(root, "kubepods/besteffort/podtree"), "ctr")
	require.NoError(t, err)
	id, err := g.ID()
	require.NoError(t, err)
	var how uint8
	require.NoError(t, r.maps.AllowedCgroups.Lookup(id, &how), "the new container cgroup is allowed by the kernel")
	assert.Equal(t, allowInherited, how)
	stats, err := r.Stats()
	require.NoError(t, err)
	assert.Equal(t, uint64(1), stats.InheritedAllows-stats0.InheritedAllows)

	path := filepath.Join(dataDir(t), "data.bin")
	writeFile(t, path, 1<<20)
	_, ino := keyOf(t, path)
	(&podCgroup{group: g, id: id}).run(t, "seqread", path, "65536")
	(&podCgroup{group: before, id: beforeID}).run(t, "seqread", path, "65536")
	recs, err := r.Drain(nil)
	require.NoError(t, err)
	var read uint64
	for _, rec := range recs {
		assert.NotEqual(t, beforeID, rec.Key.CgroupID, "a cgroup that existed before AllowTree is not included")
		if rec.Key.CgroupID == id && rec.Key.Ino == ino {
			read += rec.ReadBytes
		}
	}
	assert.Equal(t, uint64(1<<20), read, "every byte the container read, from its first read")

	kernelSlot := func() uint32 {
		var n uint32
		require.NoError(t, r.maps.AllowSlots.Lookup(allowSlots+allowSlot(id), &n))
		return n
	}
	assert.Equal(t, uint32(1), kernelSlot(), "the kernel counts the cgroup it allowed in the filter")

	// User space allowing the container once it knows it, then silencing
	// it (as the collector does with eddy's own), leaves the entry the
	// kernel's: no longer recorded, still removed with its cgroup.
	entry := func() uint8 {
		require.NoError(t, r.maps.AllowedCgroups.Lookup(id, &how))
		return how
	}
	ctr := &podCgroup{group: g, id: id}
	require.NoError(t, r.Allow(id))
	assert.Equal(t, allowInherited, entry())
	require.NoError(t, r.Disallow(id))
	assert.Equal(t, deniedInherited, entry())
	ctr.run(t, "seqread", path, "65536")
	assert.Empty(t, r.drainCgroup(t, id), "a denied container is not recorded")
	require.NoError(t, r.Allow(id))
	assert.Equal(t, allowInherited, entry())
	ctr.run(t, "seqread", path, "65536")
	assert.Equal(t, uint64(1<<20), r.drainCgroup(t, id)[ino].ReadBytes, "allowed again")
	require.NoError(t, r.Disallow(id))
	assert.Equal(t, uint32(1), kernelSlot())

	require.NoError(t, g.Remove())
	err = r.maps.AllowedCgroups.Lookup(id, &how)
	assert.ErrorIs(t, err, ebpf.ErrKeyNotExist, "the allowance goes with the cgroup")
	assert.Zero(t, kernelSlot(), "and so does its count")
	require.NoError(t, r.maps.AllowedCgroups.Lookup(podID, &how), "the pod's own cgroup stays allowed")
	assert.Equal(t, allowTree, how)
}
