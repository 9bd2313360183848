package bpf

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/eddy-autotune/eddy/internal/cgroupv2"
)

// BenchmarkPread is the worst case for the recorder: 4 KiB preads of a cached
// file, so the read itself is as cheap as a read gets and the hooks' cost is
// most visible. The configurations run side by side in one run, interleaved
// in blocks of preadBlock reads per thread so drifts of a shared VM hit all
// of them alike; each reports the median block:
//
//	off   no hook attached
//	idle  hooks attached, the reading cgroup not allowed (every other pod)
//	on    hooks attached, the reading cgroup allowed
//	on+stats  as on, with the kernel's run-time accounting that Load turns
//	      on unless Options.NoRunTimeStats (it times every BPF program run
//	      on the node, eddy's or not)
//
// Metrics: ns/read per configuration (CPU time of the reading threads / reads;
// CPU time because CI machines are shared and wall time mostly measures the
// other tenants), ratio-on = throughput(on)/throughput(off) for a CPU-bound
// reader (goal >= 0.97),
// added-ns/read, counted/issued (reads the kernel counted / reads issued
// while allowed; 1 means none lost), drops, and, from a final phase with the
// kernel's run-time accounting on, ns per program run.
func BenchmarkPread(b *testing.B) {
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) { benchPread(b, threads) })
	}
}

const preadBlock = 20000

func benchPread(b *testing.B, threads int) {
	requireKernel(b)
	path := filepath.Join(dataDir(b), "cached.bin")
	const size = 64 << 20
	writeFile(b, path, size)
	f, err := os.Open(path)
	require.NoError(b, err)
	defer f.Close()
	fd := int(f.Fd())
	buf := make([]byte, pageSize)
	for off := int64(0); off < size; off += pageSize {
		_, err := unix.Pread(fd, buf, off)
		require.NoError(b, err)
	}
	_, ino := keyOf(b, path)

	cg := newPodCgroup(b, fmt.Sprintf("bench%d", threads))
	moveSelf(b, cg.group)

	r, err := Load(Options{NoRunTimeStats: true})
	require.NoError(b, err)
	defer r.Close()
	detach(b, r)

	// run returns the CPU time the reading threads spent (the machine is
	// shared, so wall time would mostly measure other tenants), summed over
	// threads.
	run := func(reads int) time.Duration {
		var wg sync.WaitGroup
		start := make(chan struct{})
		cpu := make([]time.Duration, threads)
		for t := 0; t < threads; t++ {
			wg.Add(1)
			go func(t int) {
				defer wg.Done()
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				p := make([]byte, pageSize)
				// A page-stepping walk with a large odd stride: every read is
				// a random step, none touches the disk.
				page := int64(t) * 7919
				<-start
				t0 := threadCPU()
				for i := 0; i < reads; i++ {
					page = (page + 4099) % (size / pageSize)
					if _, err := unix.Pread(fd, p, page*pageSize); err != nil {
						panic(err)
					}
				}
				cpu[t] = threadCPU() - t0
			}(t)
		}
		close(start)
		wg.Wait()
		var total time.Duration
		for _, d := range cpu {
			total += d
		}
		return total
	}

	blocks := (b.N + preadBlock - 1) / preadBlock
	samples := map[string][]float64{}
	var counted, issued uint64
	perRead := float64(preadBlock * threads)
	b.ResetTimer()
	for i := 0; i < blocks; i++ {
		samples["off"] = append(samples["off"], float64(run(preadBlock).Nanoseconds())/perRead)
		reattach(b, r)
		samples["idle"] = append(samples["idle"], float64(run(preadBlock).Nanoseconds())/perRead)
		require.NoError(b, r.Allow(cg.id))
		samples["on"] = append(samples["on"], float64(run(preadBlock).Nanoseconds())/perRead)
		stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
		require.NoError(b, err)
		samples["on+stats"] = append(samples["on+stats"], float64(run(preadBlock).Nanoseconds())/perRead)
		require.NoError(b, stats.Close())
		require.NoError(b, r.Disallow(cg.id))
		detach(b, r)
		// Both the on and on+stats blocks read with the cgroup allowed.
		issued += uint64(2 * preadBlock * threads)
		recs, err := r.Drain(nil)
		require.NoError(b, err)
		for _, rec := range recs {
			if rec.Key.CgroupID == cg.id && rec.Key.Ino == ino {
				counted += rec.ReadOps
			}
		}
	}
	b.StopTimer()

	// Per-program cost, measured by the kernel in a separate phase because
	// the accounting itself slows every program run.
	reattach(b, r)
	require.NoError(b, r.Allow(cg.id))
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	require.NoError(b, err)
	before, err := r.Stats()
	require.NoError(b, err)
	run(preadBlock)
	after, err := r.Stats()
	require.NoError(b, err)
	require.NoError(b, stats.Close())

	med := map[string]float64{}
	for name, v := range samples {
		sort.Float64s(v)
		med[name] = v[len(v)/2]
		b.ReportMetric(med[name], "ns/read-"+name)
	}
	b.ReportMetric(med["off"]/med["on"], "ratio-on")
	b.ReportMetric(med["off"]/med["idle"], "ratio-idle")
	b.ReportMetric(med["on"]-med["off"], "added-ns/read")
	b.ReportMetric(med["off"]/med["on+stats"], "ratio-on+stats")
	b.ReportMetric(float64(counted)/float64(issued), "counted/issued")
	d := after.Drops
	b.ReportMetric(float64(d.RingBuffer+d.StatsMapFull+d.TaskState+d.OpenFileState+d.SeenMap+d.UnresolvedFD), "drops")
	for i, p := range after.Programs {
		if n := p.RunCount - before.Programs[i].RunCount; n > 0 {
			ns := float64(p.RunTime-before.Programs[i].RunTime) / float64(n)
			b.ReportMetric(ns, "ns/run-"+p.Hook[strings.LastIndex(p.Hook, ":")+1:])
		}
	}
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		panic(err)
	}
	return time.Duration(ts.Nano())
}

// detach and reattach switch the hooks off and on without reloading, so the
// benchmark can interleave configurations cheaply.
func detach(b *testing.B, r *Recorder) {
	b.Helper()
	for _, l := range r.links {
		require.NoError(b, l.Close())
	}
	r.links = nil
}

func reattach(b *testing.B, r *Recorder) {
	b.Helper()
	for _, p := range r.programs {
		l, err := link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
		require.NoError(b, err)
		r.links = append(r.links, l)
	}
}

// moveSelf moves the benchmark process into g and back to its original
// cgroup when the benchmark ends, so g can be removed.
func moveSelf(b *testing.B, g *cgroupv2.Group) {
	b.Helper()
	orig, err := os.ReadFile("/proc/self/cgroup")
	require.NoError(b, err)
	var rel string
	for _, line := range strings.Split(string(orig), "\n") {
		if strings.HasPrefix(line, "0::") {
			rel = strings.TrimPrefix(line, "0::")
		}
	}
	home, err := cgroupv2.Open(strings.TrimPrefix(rel, "/"))
	if rel == "/" || rel == "" {
		mp, merr := cgroupv2.Mountpoint()
		require.NoError(b, merr)
		home, err = cgroupv2.Open(mp)
	}
	require.NoError(b, err)
	require.NoError(b, g.AddProcess(os.Getpid()))
	b.Cleanup(func() { require.NoError(b, home.AddProcess(os.Getpid())) })
}

// BenchmarkDrainFullMap measures Drain of a map holding MaxFiles entries
// (DefaultMaxFiles), filled from user space with distinct keys.
func BenchmarkDrainFullMap(b *testing.B) {
	requireKernel(b)
	r, err := Load(Options{NoRunTimeStats: true})
	require.NoError(b, err)
	defer r.Close()
	n := int(r.opts.MaxFiles)
	keys := make([]accessFileKey, n)
	vals := make([]accessFileStats, n)
	for i := range keys {
		keys[i] = accessFileKey{CgroupId: 1, Dev: 2, Ino: uint64(i + 1)}
		vals[i].ReadOps = uint64(i)
	}
	dst := make([]Record, 0, n)
	var wall, cpu time.Duration
	// Drain runs its syscalls on this thread, so thread CPU time is its cost
	// without the time a shared machine spends on other tenants.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		_, err := r.maps.StatsByFile.BatchUpdate(keys, vals, nil)
		require.NoError(b, err)
		b.StartTimer()
		t0, c0 := time.Now(), threadCPU()
		dst, err = r.Drain(dst[:0])
		wall += time.Since(t0)
		cpu += threadCPU() - c0
		require.NoError(b, err)
		if len(dst) != n {
			b.Fatalf("drained %d entries, want %d", len(dst), n)
		}
	}
	b.ReportMetric(float64(n), "entries")
	b.ReportMetric(float64(wall.Microseconds())/1000/float64(b.N), "ms/drain-wall")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "ms/drain-cpu")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*n), "cpu-ns/entry")
}
