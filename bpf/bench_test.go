package bpf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/eddy-autotune/eddy/internal/cgroupv2"
)

// BenchmarkPread is the worst case for the recorder: 4 KiB preads of a cached
// file (locked in the page cache), so the read itself is as cheap as a read
// gets and the hooks' cost is most visible. The configurations run side by
// side in one run: each round runs every configuration once, in an order
// shuffled per round, as a phase of preadPhase blocks of preadBlock reads per
// thread that begins preadSettle after the hooks changed (attaching and
// detaching leave work behind, RCU callbacks freeing links and perf events,
// that would otherwise run in the readers' time). Each configuration reports
// its median block:
//
//	off        no hook attached
//	on         the recorder attached (syscalls trace events), the reading
//	           cgroup allowed
//	idle       the same, the reading cgroup not allowed (every other pod)
//	on-raw, idle-raw  the same with the raw_syscalls hooks
//	           (Options.RawSyscalls, and the fallback without tracefs)
//	on+stats   as on, with the kernel's run-time accounting on (it times
//	           every BPF program on the node, eddy's or not)
//	floor      programs that do nothing, on the three hooks a cached pread
//	           runs with the recorder (the pread64 enter and exit trace
//	           events and filemap:mm_filemap_get_pages): what any program
//	           that times reads and sees the page cache costs at least
//	floor-raw  the same on the raw_syscalls hooks
//	floor-enter, floor-exit, floor-get-pages  one empty program on one of
//	           those hooks alone: what a single hook costs at least
//
// Metrics: ns/read per configuration (CPU time of the reading threads /
// reads: CI machines are shared and wall time mostly measures the other
// tenants), ratio-X = throughput(X)/throughput(off) for a CPU-bound reader
// (goal for on: >= 0.97), added-ns/read (on - off), counted/issued (reads the
// kernel counted / reads issued while allowed; 1 means none lost), drops,
// and, from a final phase with run-time accounting on, ns per program run.
func BenchmarkPread(b *testing.B) {
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) { benchPread(b, threads) })
	}
}

const (
	preadBlock  = 10000
	preadPhase  = 20
	preadSettle = 300 * time.Millisecond
	// settle is the pause after hooks change in the shorter benchmarks.
	settle = 30 * time.Millisecond
)

func benchPread(b *testing.B, threads int) {
	requireKernel(b)
	path := filepath.Join(dataDir(b), "cached.bin")
	const size = 64 << 20
	writeFile(b, path, size)
	f, err := os.Open(path)
	require.NoError(b, err)
	defer f.Close()
	fd := int(f.Fd())
	pinCached(b, fd, size)
	_, ino := keyOf(b, path)

	cg := newPodCgroup(b, fmt.Sprintf("bench%d", threads))
	moveSelf(b, cg.group)

	r, err := Load(Options{NoRunTimeStats: true, AttachAlways: true})
	require.NoError(b, err)
	defer r.Close()
	require.False(b, r.RawSyscalls(), "the syscalls trace events attach on the CI kernel")
	detach(b, r)
	raw, err := Load(Options{NoRunTimeStats: true, RawSyscalls: true, AttachAlways: true})
	require.NoError(b, err)
	require.True(b, raw.RawSyscalls())
	defer raw.Close()
	detach(b, raw)
	empty := emptyPrograms(b)

	// run returns the CPU time the reading threads spent per read.
	run := func(reads int) float64 {
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
		return float64(total.Nanoseconds()) / float64(reads*threads)
	}

	samples := map[string][]float64{}
	var counted, issued uint64
	phase := func(name string) {
		time.Sleep(preadSettle)
		run(preadBlock / 10)
		for i := 0; i < preadPhase; i++ {
			samples[name] = append(samples[name], run(preadBlock))
		}
	}
	readsPerPhase := uint64((preadPhase*preadBlock + preadBlock/10) * threads)
	countDrained := func(rec *Recorder) {
		recs, err := rec.Drain(nil)
		require.NoError(b, err)
		for _, rec := range recs {
			if rec.Key.CgroupID == cg.id && rec.Key.Ino == ino {
				counted += rec.ReadOps
			}
		}
	}
	// Each configuration starts from and returns to nothing attached and
	// nothing allowed, so the order can change from round to round.
	recorded := func(rec *Recorder, allow, stats bool) func(string) {
		return func(name string) {
			reattach(b, rec)
			if allow {
				require.NoError(b, rec.Allow(cg.id))
				issued += readsPerPhase
			}
			if stats {
				s, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
				require.NoError(b, err)
				defer s.Close()
			}
			if allow {
				defer func() { require.NoError(b, rec.Disallow(cg.id)) }()
			}
			defer detach(b, rec)
			phase(name)
		}
	}
	withEmpty := func(hooks ...string) func(string) {
		return func(name string) {
			links := empty(hooks...)
			phase(name)
			for _, l := range links {
				require.NoError(b, l.Close())
			}
		}
	}
	configs := map[string]func(string){
		"off":             phase,
		"idle":            recorded(r, false, false),
		"on":              recorded(r, true, false),
		"on+stats":        recorded(r, true, true),
		"idle-raw":        recorded(raw, false, false),
		"on-raw":          recorded(raw, true, false),
		"floor":           withEmpty("sys_enter_pread64", "sys_exit_pread64", "mm_filemap_get_pages"),
		"floor-raw":       withEmpty("sys_enter", "sys_exit", "mm_filemap_get_pages"),
		"floor-enter":     withEmpty("sys_enter_pread64"),
		"floor-exit":      withEmpty("sys_exit_pread64"),
		"floor-get-pages": withEmpty("mm_filemap_get_pages"),
	}
	order := make([]string, 0, len(configs))
	for name := range configs {
		order = append(order, name)
	}
	sort.Strings(order)
	rounds := max(1, (b.N+preadPhase*preadBlock-1)/(preadPhase*preadBlock))
	rng := rand.New(rand.NewSource(int64(threads)))
	b.ResetTimer()
	for i := 0; i < rounds; i++ {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, name := range order {
			configs[name](name)
		}
		countDrained(r)
		countDrained(raw)
	}
	b.StopTimer()

	med := map[string]float64{}
	for name, v := range samples {
		sort.Float64s(v)
		med[name] = v[len(v)/2]
		b.ReportMetric(med[name], "ns/read-"+name)
	}
	for name, m := range med {
		if name != "off" {
			b.ReportMetric(med["off"]/m, "ratio-"+name)
		}
	}
	b.ReportMetric(med["on"]-med["off"], "added-ns/read")
	b.ReportMetric(float64(counted)/float64(issued), "counted/issued")

	// Per-program cost, measured by the kernel in a separate phase because
	// the accounting itself slows every program run.
	var drops uint64
	for _, rec := range []*Recorder{r, raw} {
		reattach(b, rec)
		require.NoError(b, rec.Allow(cg.id))
		stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
		require.NoError(b, err)
		before, err := rec.Stats()
		require.NoError(b, err)
		run(preadBlock)
		after, err := rec.Stats()
		require.NoError(b, err)
		require.NoError(b, stats.Close())
		require.NoError(b, rec.Disallow(cg.id))
		detach(b, rec)
		d := after.Drops
		drops += d.RingBuffer + d.StatsMapFull + d.TaskState + d.OpenFileState + d.SeenMap + d.UnresolvedFD
		for i, p := range after.Programs {
			if n := p.RunCount - before.Programs[i].RunCount; n > 0 {
				ns := float64(p.RunTime-before.Programs[i].RunTime) / float64(n)
				b.ReportMetric(ns, "ns/run-"+shortHook(p.Hook))
			}
		}
	}
	b.ReportMetric(float64(drops), "drops")
}

// BenchmarkOtherSyscalls measures what the recorder costs a syscall it does
// not trace (getppid), as every other syscall on the node pays it, with the
// preferred syscall hooks (events: the syscalls trace events) and with the
// fallback (raw: raw_syscalls, which runs a program on every syscall).
// Metrics: ns/syscall per configuration, CPU time of the calling thread,
// median of interleaved blocks.
func BenchmarkOtherSyscalls(b *testing.B) {
	requireKernel(b)
	r, err := Load(Options{NoRunTimeStats: true, AttachAlways: true})
	require.NoError(b, err)
	defer r.Close()
	detach(b, r)
	raw, err := Load(Options{NoRunTimeStats: true, RawSyscalls: true, AttachAlways: true})
	require.NoError(b, err)
	defer raw.Close()
	detach(b, raw)

	const block = 100000
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	samples := map[string][]float64{}
	sample := func(name string) {
		time.Sleep(settle)
		for i := 0; i < block/10; i++ {
			unix.Getppid()
		}
		t0 := threadCPU()
		for i := 0; i < block; i++ {
			unix.Getppid()
		}
		samples[name] = append(samples[name], float64((threadCPU()-t0).Nanoseconds())/block)
	}
	b.ResetTimer()
	for i := 0; i < (b.N+block-1)/block; i++ {
		sample("off")
		reattach(b, r)
		sample("events")
		detach(b, r)
		reattach(b, raw)
		sample("raw")
		detach(b, raw)
	}
	b.StopTimer()
	for name, v := range samples {
		sort.Float64s(v)
		b.ReportMetric(v[len(v)/2], "ns/syscall-"+name)
	}
}

// emptyPrograms loads programs that return at once and returns a function
// that attaches them to the named hooks: syscalls trace events (sys_enter_*,
// sys_exit_*) or BTF tracepoints.
func emptyPrograms(b *testing.B) func(hooks ...string) []link.Link {
	b.Helper()
	insns := asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}
	load := func(spec *ebpf.ProgramSpec) *ebpf.Program {
		spec.Instructions, spec.License = insns, "GPL"
		p, err := ebpf.NewProgram(spec)
		require.NoError(b, err)
		b.Cleanup(func() { p.Close() })
		return p
	}
	tp := load(&ebpf.ProgramSpec{Type: ebpf.TracePoint})
	btf := map[string]*ebpf.Program{}
	return func(hooks ...string) []link.Link {
		var links []link.Link
		for _, h := range hooks {
			var l link.Link
			var err error
			if strings.HasPrefix(h, "sys_enter_") || strings.HasPrefix(h, "sys_exit_") {
				l, err = link.Tracepoint("syscalls", h, tp, nil)
			} else {
				p := btf[h]
				if p == nil {
					p = load(&ebpf.ProgramSpec{Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: h})
					btf[h] = p
				}
				l, err = link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachTraceRawTp})
			}
			require.NoError(b, err, h)
			links = append(links, l)
		}
		return links
	}
}

// pinCached brings the file's pages into the page cache and locks them there
// until the benchmark ends: on VMs that reclaim cold memory from inside
// (DAMON pageout runs on the CI machines) the reads would otherwise miss now
// and then, and the time of those misses would drown what the hooks cost.
func pinCached(b testing.TB, fd, size int) {
	b.Helper()
	m, err := unix.Mmap(fd, 0, size, unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	require.NoError(b, err)
	require.NoError(b, unix.Mlock(m), "lock the benchmark file in the page cache")
	b.Cleanup(func() { unix.Munmap(m) })
}

// shortHook names a hook in a metric unit: the tracepoint without its group,
// and a group of syscalls by its first member.
func shortHook(name string) string {
	name = name[strings.LastIndex(name, ":")+1:]
	if i := strings.IndexByte(name, '{'); i >= 0 {
		rest := strings.TrimPrefix(name[i:], "{")
		name = name[:i] + rest[:strings.IndexAny(rest, ",}")]
	}
	return name
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
	for i := range r.attached {
		require.NoError(b, closeLinks(&r.attached[i]))
	}
	r.linked = false
}

func reattach(b *testing.B, r *Recorder) {
	b.Helper()
	for i := range r.attached {
		a := &r.attached[i]
		links, err := a.link(a.prog)
		require.NoError(b, err)
		a.links = links
	}
	r.linked = true
}

// moveSelf moves the benchmark process into g and back to its original
// cgroup when the benchmark ends, so g can be removed.
func moveSelf(b testing.TB, g *cgroupv2.Group) {
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
	r, err := Load(Options{NoRunTimeStats: true, AttachAlways: true})
	require.NoError(b, err)
	defer r.Close()
	n := int(r.opts.MaxFiles)
	keys := make([]accessFileKey, n)
	vals := make([]accessFileStats, n)
	for i := range keys {
		keys[i] = accessFileKey{CgroupId: 1, Dev: 2, Ino: uint64(i + 1)}
		vals[i].ReadBytes = uint64(i)
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

// BenchmarkWorkloads runs real programs on page-cached files, side by side in
// one run, in the four situations a pod on a node with eddy can be in:
//
//	off    no eddy: no program attached
//	off2   the same again: how far apart two measurements of one
//	       situation fall on this machine (the noise floor)
//	rest   eddy running with nothing to learn on the node: the recorder
//	       loaded (--attach=observed), no cgroup allowed, so only the
//	       cgroup and thread exit hooks are attached
//	other  eddy observing another pod: another cgroup allowed, so every
//	       program is attached, and this pod's reads stop at the filter
//	on     eddy observing this pod: its cgroup allowed
//
// The programs are fio, 4 KiB random preads of a 64 MiB file locked in the
// page cache (fioLoops passes over it, --thread so the reads are one
// process's), and a Python script that opens and reads 1,500 cached 32 KiB
// files pyRounds times (the cases of issue 17). Each round runs every
// situation once, in an order shuffled per round, each program once per
// situation; b.N is the number of rounds (-benchtime 9x). Each program
// times itself from its first operation to its last (fio's job CPU time and
// IOPS, Python's process and wall clocks), so start-up is left out.
// Metrics: ns/op-S-P, the median CPU time per read (fio) or per file
// (Python) in situation S (CPU time: the machine is shared, and wall time
// mostly measures the other tenants); ratio-S-P = throughput(S) /
// throughput(off) for that CPU time, taken within each round (the other
// tenants' load drifts) and the median over rounds reported; wall-ratio-S-P
// the same from wall time (what fio's IOPS would show); counted/issued for
// fio's reads while observed; and, from one more run of each program in
// other and on with the kernel's run-time statistics on, per hook H
// ns/run-S-P-H (time per program run), runs/op-S-P-H (runs per read or
// file) and prog-ns/op-S-P (all programs' time per read or file): the part
// of the cost spent in eddy's programs, the rest of ns/op(S) - ns/op(off)
// being the kernel's own cost of running a program on each hook.
func BenchmarkWorkloads(b *testing.B) {
	requireKernel(b)
	fio, err := exec.LookPath("fio")
	if err != nil {
		b.Skip("fio is not installed (hack/install-deps.sh installs it)")
	}
	python := "/usr/bin/python3" // not a pyenv shim: its start-up is a shell script
	if _, err := os.Stat(python); err != nil {
		if python, err = exec.LookPath("python3"); err != nil {
			b.Skip("python3 is not installed")
		}
	}
	dir := dataDir(b)
	fioFile := filepath.Join(dir, "fio.bin")
	const fioSize = 64 << 20
	writeFile(b, fioFile, fioSize)
	f, err := os.Open(fioFile)
	require.NoError(b, err)
	defer f.Close()
	pinCached(b, int(f.Fd()), fioSize)
	_, fioIno := keyOf(b, fioFile)
	smallDir := filepath.Join(dir, "small")
	require.NoError(b, os.Mkdir(smallDir, 0o755))
	buf := make([]byte, 32<<10)
	for i := 0; i < pyFiles; i++ {
		p := filepath.Join(smallDir, fmt.Sprintf("f%04d", i))
		rand.New(rand.NewSource(int64(i))).Read(buf)
		require.NoError(b, os.WriteFile(p, buf, 0o644))
		sf, err := os.Open(p)
		require.NoError(b, err)
		pinCached(b, int(sf.Fd()), len(buf))
		sf.Close()
	}

	wl := newPodCgroup(b, "workloads")
	other := newPodCgroup(b, "workloadsother")
	r, err := Load(Options{NoRunTimeStats: true})
	require.NoError(b, err)
	defer r.Close()
	require.False(b, r.RawSyscalls(), "the syscalls trace events attach on the CI kernel")
	require.False(b, r.Attached(), "nothing allowed, nothing attached")
	detach(b, r)

	// Each program reports its own CPU and wall time per operation, from
	// its first operation to its last: start-up (0.2 s of CPU for fio) is
	// not the hooks' cost.
	runIn := func(args ...string) []byte {
		cmd := exec.Command(args[0], args[1:]...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		require.NoError(b, wl.group.Start(cmd))
		require.NoError(b, cmd.Wait(), "%s: %s", args[0], errOut.String())
		return out.Bytes()
	}
	fioReads := fioLoops * fioSize / pageSize
	programs := []struct {
		name string
		args []string
		// parse returns the CPU and wall ns per operation.
		parse func([]byte) (cpu, wall float64)
	}{
		{"fio", []string{fio, "--name=rr", "--filename=" + fioFile, "--rw=randread", "--bs=4k",
			fmt.Sprintf("--size=%d", fioSize), fmt.Sprintf("--loops=%d", fioLoops), "--ioengine=psync",
			"--thread", "--invalidate=0", "--norandommap", "--output-format=json"}, parseFio},
		{"python", []string{python, "-c", pySmallFiles, smallDir, fmt.Sprint(pyFiles), fmt.Sprint(pyRounds)}, parsePython},
	}
	cpu := map[string][]float64{}
	wall := map[string][]float64{}
	phase := func(situation string) {
		time.Sleep(preadSettle)
		for _, p := range programs {
			c, w := p.parse(runIn(p.args...))
			key := situation + "-" + p.name
			cpu[key] = append(cpu[key], c)
			wall[key] = append(wall[key], w)
		}
	}
	var counted, issued uint64
	// Each situation starts from and returns to nothing attached.
	situations := map[string]func(){
		"off":  func() { phase("off") },
		"off2": func() { phase("off2") },
		"rest": func() {
			restOnly(b, r)
			require.False(b, r.Attached())
			phase("rest")
			detach(b, r)
		},
		"other": func() {
			restOnly(b, r)
			require.NoError(b, r.Allow(other.id))
			phase("other")
			require.NoError(b, r.Disallow(other.id))
			require.False(b, r.Attached())
			detach(b, r)
		},
		"on": func() {
			restOnly(b, r)
			require.NoError(b, r.Allow(wl.id))
			phase("on")
			require.NoError(b, r.Disallow(wl.id))
			recs, err := r.Drain(nil)
			require.NoError(b, err)
			for _, rec := range recs {
				if rec.Key.CgroupID == wl.id && rec.Key.Ino == fioIno {
					counted += rec.ReadOps
				}
			}
			issued += uint64(fioReads)
			detach(b, r)
		},
	}
	order := []string{"off", "off2", "rest", "other", "on"}
	rng := rand.New(rand.NewSource(1))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, s := range order {
			situations[s]()
		}
	}
	b.StopTimer()
	median := func(v []float64) float64 {
		v = append([]float64(nil), v...)
		sort.Float64s(v)
		return v[len(v)/2]
	}
	// Ratios are taken within a round, then the median over rounds: the
	// other tenants' load drifts from round to round.
	ratio := func(m map[string][]float64, key, off string) float64 {
		var v []float64
		for i := range m[key] {
			v = append(v, m[off][i]/m[key][i])
		}
		return median(v)
	}
	for _, p := range programs {
		for _, s := range []string{"off", "off2", "rest", "other", "on"} {
			key := s + "-" + p.name
			b.ReportMetric(median(cpu[key]), "ns/op-"+key)
			if s != "off" {
				b.ReportMetric(ratio(cpu, key, "off-"+p.name), "ratio-"+key)
				b.ReportMetric(ratio(wall, key, "off-"+p.name), "wall-ratio-"+key)
			}
		}
	}
	b.ReportMetric(float64(counted)/float64(issued), "counted/issued")

	// Where the time goes while observing: the kernel's run-time statistics
	// per program, from one more run of each program in (c) and (d) with
	// the accounting on (it slows every program run, so it stays out of the
	// rounds above). Other processes of the node that run the hooks
	// meanwhile are counted too; runs/op near the expected count (fio: one
	// per read and hook) shows they were few.
	ops := map[string]float64{"fio": float64(fioReads), "python": float64(pyFiles * pyRounds)}
	for _, s := range []struct {
		name string
		id   uint64
	}{{"other", other.id}, {"on", wl.id}} {
		for _, p := range programs {
			restOnly(b, r)
			require.NoError(b, r.Allow(s.id))
			stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
			require.NoError(b, err)
			before, err := r.Stats()
			require.NoError(b, err)
			runIn(p.args...)
			after, err := r.Stats()
			require.NoError(b, err)
			require.NoError(b, stats.Close())
			require.NoError(b, r.Disallow(s.id))
			_, err = r.Drain(nil)
			require.NoError(b, err)
			detach(b, r)
			var total time.Duration
			for i, ps := range after.Programs {
				n := ps.RunCount - before.Programs[i].RunCount
				if n == 0 {
					continue
				}
				t := ps.RunTime - before.Programs[i].RunTime
				total += t
				unit := s.name + "-" + p.name + "-" + shortHook(ps.Hook)
				b.ReportMetric(float64(t.Nanoseconds())/float64(n), "ns/run-"+unit)
				b.ReportMetric(float64(n)/ops[p.name], "runs/op-"+unit)
			}
			b.ReportMetric(float64(total.Nanoseconds())/ops[p.name], "prog-ns/op-"+s.name+"-"+p.name)
		}
	}
}

const (
	fioLoops = 8
	pyFiles  = 1500
	pyRounds = 25
)

// parseFio reads fio's JSON report: the job's own CPU time (fio measures it
// per job thread) and IOPS.
func parseFio(out []byte) (cpu, wall float64) {
	var rep struct {
		Jobs []struct {
			UsrCPU     float64 `json:"usr_cpu"`
			SysCPU     float64 `json:"sys_cpu"`
			JobRuntime float64 `json:"job_runtime"`
			Read       struct {
				TotalIOs float64 `json:"total_ios"`
				IOPS     float64 `json:"iops"`
			} `json:"read"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(out, &rep); err != nil || len(rep.Jobs) != 1 || rep.Jobs[0].Read.TotalIOs == 0 {
		panic(fmt.Sprintf("fio report: %v: %s", err, out))
	}
	j := rep.Jobs[0]
	return (j.UsrCPU + j.SysCPU) / 100 * j.JobRuntime * 1e6 / j.Read.TotalIOs, 1e9 / j.Read.IOPS
}

// pySmallFiles opens and reads every file of a folder of small files, rounds
// times, as a Python data loader reading one sample per file would, and
// prints the CPU and wall nanoseconds per file.
const pySmallFiles = `import os, sys, time
d, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = [os.path.join(d, "f%04d" % i) for i in range(n)]
c0, w0 = time.process_time_ns(), time.perf_counter_ns()
for _ in range(rounds):
    for p in names:
        with open(p, "rb") as f:
            f.read()
print((time.process_time_ns() - c0) / (n * rounds), (time.perf_counter_ns() - w0) / (n * rounds))
`

func parsePython(out []byte) (cpu, wall float64) {
	if _, err := fmt.Sscan(string(out), &cpu, &wall); err != nil {
		panic(fmt.Sprintf("python output %q: %v", out, err))
	}
	return cpu, wall
}

// restOnly attaches what stays attached while nothing is allowed, as after
// Load with nothing to observe.
func restOnly(b *testing.B, r *Recorder) {
	b.Helper()
	for i := range r.attached {
		a := &r.attached[i]
		if a.always {
			links, err := a.link(a.prog)
			require.NoError(b, err)
			a.links = links
		}
	}
	r.linked = false
}
