package collector

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/eddy-autotune/eddy/bpf"
	"github.com/eddy-autotune/eddy/internal/cgroupv2"
)

// readerEnv makes the test binary a paced reader (see runReader) instead of
// running tests; BenchmarkNodeAt1MReads starts it in a pod cgroup.
const readerEnv = "EDDY_COLLECTOR_BENCH_READER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(readerEnv); spec != "" {
		if err := runReader(spec); err != nil {
			fmt.Fprintln(os.Stderr, "reader:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Parameters of BenchmarkNodeAt1MReads.
const (
	benchReadRate   = 1_000_000 // reads per second, all reader threads together
	benchReaders    = 2
	benchDuration   = 6 * time.Second
	benchInterval   = time.Second // drain interval of the collector
	benchFiles      = 64
	benchFileBytes  = 1 << 20
	benchReadBytes  = 4096
	benchPacingTick = 200 * time.Microsecond
)

// BenchmarkNodeAt1MReads measures what the node collector costs while a pod
// reads at about benchReadRate 4 KiB preads per second from cached files:
// the kernel recorder attached with its default options (run-time statistics
// on, as the collector runs it), a KernelSource, and a Collector draining on
// its interval, attributing and storing every window. The readers run in a
// child process inside an allowed pod cgroup, so this process's CPU time and
// memory are the collector's alone. Run it once: -benchtime 1x.
//
// Metrics: reads/s achieved by the readers; collector-cpu-s/s (user+system
// CPU seconds of this process per second of wall time); bpf-cpu-s/s (time in
// the recorder's programs per second, from the kernel's run-time
// statistics: this is charged to the readers, not to the collector);
// rss-start-MiB (VmRSS before the recorder is loaded), rss-MiB and hwm-MiB
// (VmRSS at the end and VmHWM), all of the test binary, which links more
// than the collector does;
// counted/issued (reads in the drained records / reads issued; 1 means none
// lost); events-lost (first-seen events lost in the kernel or in userspace);
// drops (everything the kernel could not count); windows.
func BenchmarkNodeAt1MReads(b *testing.B) {
	requireNode(b)
	dir := diskDir(b)
	buf := make([]byte, benchFileBytes)
	for i := range benchFiles {
		rand.New(rand.NewSource(int64(i))).Read(buf)
		require.NoError(b, os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), buf, 0o644))
	}

	root := fmt.Sprintf("eddy-collector-bench-%d", os.Getpid())
	g, err := cgroupv2.Create(filepath.Join(root, "kubepods/besteffort/podbench"), "ctr")
	require.NoError(b, err)
	b.Cleanup(func() {
		if top, err := cgroupv2.Open(root); err == nil {
			require.NoError(b, top.Remove())
		}
	})
	cgid, err := g.ID()
	require.NoError(b, err)

	rssStart, _ := procMemory(b)
	rec, err := bpf.Load(bpf.Options{})
	require.NoError(b, err)
	src := &countingSource{KernelSource: NewKernelSource(rec, 0, logr.Discard()), cgroup: cgid}
	defer src.Close()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "reader", UID: types.UID("uid-reader")},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main"}}}}
	c, err := New(Options{
		Node: "n", Source: src, Pods: staticPods{cgid: {Pod: pod, Container: "main", CgroupID: cgid}},
		Sink: openShipper(b), Metrics: NewMetrics(0),
		Workloads: owners{}.resolver(new(int)),
		Datasets:  NewDatasetResolver(nil, nil, 0),
		Interval:  benchInterval,
	})
	require.NoError(b, err)
	require.NoError(b, src.Allow(cgid))

	statsBefore, err := rec.Stats()
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	var ru0 unix.Rusage
	require.NoError(b, unix.Getrusage(unix.RUSAGE_SELF, &ru0))
	t0 := time.Now()
	b.ResetTimer()
	go func() { runDone <- c.Run(ctx) }()

	cmd := exec.Command(os.Args[0])
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%d|%d|%d", readerEnv, dir, benchReaders, benchReadRate, benchDuration.Nanoseconds()))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(b, g.Start(cmd))
	require.NoError(b, cmd.Wait(), "reader: %s", out.String())
	cancel()
	require.NoError(b, <-runDone)
	wall := time.Since(t0)
	b.StopTimer()
	var ru1 unix.Rusage
	require.NoError(b, unix.Getrusage(unix.RUSAGE_SELF, &ru1))
	statsAfter, err := rec.Stats()
	require.NoError(b, err)

	var issued uint64
	var readSeconds float64
	_, err = fmt.Sscanf(strings.TrimSpace(out.String()), "reads=%d seconds=%g", &issued, &readSeconds)
	require.NoError(b, err, "reader output %q", out.String())
	cpu := time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()) + time.Duration(ru1.Stime.Nano()-ru0.Stime.Nano())
	var bpfTime time.Duration
	for i, p := range statsAfter.Programs {
		bpfTime += p.RunTime - statsBefore.Programs[i].RunTime
	}
	d := statsAfter.Drops
	rss, hwm := procMemory(b)

	b.ReportMetric(float64(issued)/readSeconds, "reads/s")
	b.ReportMetric(cpu.Seconds()/wall.Seconds(), "collector-cpu-s/s")
	b.ReportMetric(bpfTime.Seconds()/wall.Seconds(), "bpf-cpu-s/s")
	b.ReportMetric(float64(rssStart)/(1<<20), "rss-start-MiB")
	b.ReportMetric(float64(rss)/(1<<20), "rss-MiB")
	b.ReportMetric(float64(hwm)/(1<<20), "hwm-MiB")
	b.ReportMetric(float64(src.reads.Load())/float64(issued), "counted/issued")
	b.ReportMetric(float64(src.Stats().EventsLost), "events-lost")
	b.ReportMetric(float64(d.RingBuffer+d.StatsMapFull+d.TaskState+d.OpenFileState+d.SeenMap+d.UnresolvedFD), "drops")
	b.ReportMetric(float64(c.windows), "windows")
}

// countingSource counts the reads of one cgroup in what the collector
// drains.
type countingSource struct {
	*KernelSource
	cgroup uint64
	reads  atomic.Uint64
}

func (s *countingSource) Drain(dst []bpf.Record) ([]bpf.Record, error) {
	start := len(dst)
	dst, err := s.KernelSource.Drain(dst)
	for _, r := range dst[start:] {
		if r.Key.CgroupID == s.cgroup {
			s.reads.Add(r.ReadOps)
		}
	}
	return dst, err
}

// runReader is the child process of BenchmarkNodeAt1MReads. spec is
// "DIR|THREADS|RATE|DURATION_NS": THREADS threads together issue RATE 4 KiB
// preads per second at random pages of the files in DIR for DURATION, paced
// every benchPacingTick; it prints how many reads it issued in how long.
func runReader(spec string) error {
	f := strings.Split(spec, "|")
	if len(f) != 4 {
		return fmt.Errorf("bad spec %q", spec)
	}
	threads, _ := strconv.Atoi(f[1])
	rate, _ := strconv.ParseFloat(f[2], 64)
	ns, _ := strconv.ParseInt(f[3], 10, 64)
	names, err := os.ReadDir(f[0])
	if err != nil {
		return err
	}
	var fds []int
	for _, n := range names {
		fd, err := unix.Open(filepath.Join(f[0], n.Name()), unix.O_RDONLY, 0)
		if err != nil {
			return err
		}
		fds = append(fds, fd)
	}
	pages := uint64(benchFileBytes / benchReadBytes)
	perThread := rate / float64(threads)
	duration := time.Duration(ns)
	var total atomic.Uint64
	var failed atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for t := range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			p := make([]byte, benchReadBytes)
			x := uint64(t)*0x9e3779b97f4a7c15 + 1
			var done uint64
			for {
				elapsed := time.Since(start)
				if elapsed >= duration {
					break
				}
				for want := uint64(elapsed.Seconds() * perThread); done < want; done++ {
					x ^= x << 13
					x ^= x >> 7
					x ^= x << 17
					fd := fds[x%uint64(len(fds))]
					if _, err := unix.Pread(fd, p, int64((x>>32)%pages)*benchReadBytes); err != nil {
						failed.Store(err)
						return
					}
				}
				time.Sleep(benchPacingTick)
			}
			total.Add(done)
		}()
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		return err
	}
	fmt.Printf("reads=%d seconds=%g\n", total.Load(), time.Since(start).Seconds())
	return nil
}

// requireNode skips where the kernel recorder cannot run: it needs root,
// kernel BTF and a cgroup2 mount; CI runs it as root.
func requireNode(b *testing.B) {
	b.Helper()
	if testing.Short() {
		b.Skip("skipping kernel benchmark in -short mode")
	}
	if os.Geteuid() != 0 {
		b.Skip("skipping kernel benchmark: needs root (CAP_BPF, CAP_PERFMON, cgroup creation)")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		b.Skip("skipping kernel benchmark: no kernel BTF")
	}
	if _, err := cgroupv2.Mountpoint(); err != nil {
		b.Skipf("skipping kernel benchmark: %v", err)
	}
	if _, err := bpf.EnsureTraceFS(); err != nil {
		b.Fatalf("the benchmark measures the syscalls trace events, which need tracefs: %v", err)
	}
}

// diskDir returns a fresh directory on a disk-backed file system, so reads
// go through the page cache as a dataset's do (tmpfs reads skip it).
func diskDir(b *testing.B) string {
	b.Helper()
	for _, base := range []string{os.TempDir(), "/var/tmp"} {
		var fs unix.Statfs_t
		if err := unix.Statfs(base, &fs); err != nil || fs.Type == unix.TMPFS_MAGIC {
			continue
		}
		d, err := os.MkdirTemp(base, "eddy-collector-bench-")
		require.NoError(b, err)
		b.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	b.Skip("skipping: no disk-backed temporary directory (TMPDIR and /var/tmp are tmpfs)")
	return ""
}

// procMemory returns this process's VmRSS and VmHWM in bytes.
func procMemory(b *testing.B) (rss, hwm uint64) {
	b.Helper()
	status, err := os.ReadFile("/proc/self/status")
	require.NoError(b, err)
	for _, line := range strings.Split(string(status), "\n") {
		var kb uint64
		if _, err := fmt.Sscanf(line, "VmRSS: %d kB", &kb); err == nil {
			rss = kb << 10
		}
		if _, err := fmt.Sscanf(line, "VmHWM: %d kB", &kb); err == nil {
			hwm = kb << 10
		}
	}
	return rss, hwm
}
