package analyzer

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"

	"github.com/eddy-autotune/eddy/analyzer/history"
	"github.com/eddy-autotune/eddy/analyzer/internal/simulate"
)

// mixedWindows returns synthetic windows in which each of `workloads`
// workloads contributes records of one of four patterns, so that every
// window carries about recordsPerWindow records.
func mixedWindows(workloads, windows int) []*accessv1.AccessWindow {
	rng := rand.New(rand.NewPCG(1, 1))
	var streams [][]*accessv1.AccessWindow
	for w := range workloads {
		var files []simulate.File
		var ops []simulate.Op
		switch w % 4 {
		case 0:
			files = simulate.Files(400, 256<<10)
			ops = simulate.Shuffled(files, 128<<10, 3, rng)
		case 1:
			files = simulate.Files(300, 4<<20)
			ops = simulate.Scan(files, 1<<20, 1)
		case 2:
			files = simulate.Files(8, 1<<30)
			ops = simulate.Random(files, 40000, 4<<10, rng)
		case 3:
			files = simulate.Files(600, 64<<10)
			ops = simulate.Hot(files, 20000, 30, 0.9, 64<<10, rng)
		}
		sim := simulate.New(files)
		sim.Window = time.Second
		sim.Compute = 0
		sim.Workload = &accessv1.WorkloadRef{Namespace: "bench", Kind: "Job", Name: fmt.Sprintf("job-%d", w)}
		ws, _ := sim.Run(ops)
		streams = append(streams, ws)
	}
	out := make([]*accessv1.AccessWindow, windows)
	for i := range out {
		win := &accessv1.AccessWindow{Sequence: uint64(i + 1)}
		for _, s := range streams {
			src := s[i%len(s)]
			win.StartUnixNano = int64(i) * 1e9
			win.EndUnixNano = int64(i+1) * 1e9
			win.Files = append(win.Files, src.Files...)
		}
		out[i] = win
	}
	return out
}

// threadCPU returns the CPU time the calling OS thread has used. Benchmarks
// lock their goroutine to a thread and report throughput per CPU-second of
// that thread as well as per wall second, so that other load on the machine
// does not understate the per-core rate.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func report(b *testing.B, cpu0 time.Duration, windows, records int) {
	s := b.Elapsed().Seconds()
	b.ReportMetric(float64(windows)/s, "windows/s")
	b.ReportMetric(float64(records)/s, "records/s")
	if cpu := (threadCPU() - cpu0).Seconds(); cpu > 0 {
		b.ReportMetric(float64(records)/cpu, "records/cpu-s")
		b.ReportMetric(float64(windows)/cpu, "windows/cpu-s")
	}
}

// BenchmarkPipeline measures history update + feature extraction +
// classification + advice per window, on one core: every window updates the
// histories of the workloads in it, then assesses each of them.
func BenchmarkPipeline(b *testing.B) {
	for _, workloads := range []int{4, 40} {
		wins := mixedWindows(workloads, 50)
		var records int
		for _, w := range wins {
			records += len(w.Files)
		}
		b.Run(fmt.Sprintf("workloads=%d/records_per_window=%d", workloads, records/len(wins)), func(b *testing.B) {
			tr := NewTracker(Options{})
			keys := map[Key]struct{}{}
			var n int
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := threadCPU()
			for i := 0; i < b.N; i++ {
				w := wins[i%len(wins)]
				// Shift time so that windows keep moving forward.
				shift := int64(i/len(wins)) * int64(len(wins)) * 1e9
				w.StartUnixNano += shift
				w.EndUnixNano += shift
				tr.Observe(w)
				clear(keys)
				for _, r := range w.Files {
					keys[KeyOf(r)] = struct{}{}
				}
				for k := range keys {
					tr.Assess(k, w.EndUnixNano)
				}
				w.StartUnixNano -= shift
				w.EndUnixNano -= shift
				n += len(w.Files)
			}
			report(b, cpu0, b.N, n)
		})
	}
}

// BenchmarkObserve measures history update alone (assessing only on demand).
func BenchmarkObserve(b *testing.B) {
	wins := mixedWindows(40, 50)
	tr := NewTracker(Options{})
	var n int
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := threadCPU()
	for i := 0; i < b.N; i++ {
		w := wins[i%len(wins)]
		tr.Observe(w)
		n += len(w.Files)
	}
	report(b, cpu0, b.N, n)
}

// BenchmarkMemoryPerWorkload builds 10,000 workloads' histories, each past
// its per-file cap (600 files seen for 256 kept) or typical (60 files), and
// reports the live heap per workload and the checkpoint size.
func BenchmarkMemoryPerWorkload(b *testing.B) {
	for _, tc := range []struct {
		name  string
		files int
	}{{"full_600_files", 600}, {"typical_60_files", 60}} {
		b.Run(tc.name, func(b *testing.B) {
			files := simulate.Files(tc.files, 1<<20)
			sim := simulate.New(files)
			sim.Window = time.Second
			sim.Compute = 0
			rng := rand.New(rand.NewPCG(2, 2))
			ops := append(simulate.Shuffled(files, 256<<10, 2, rng), simulate.Random(files, 2000, 4<<10, rng)...)
			wins, _ := sim.Run(ops)
			const workloads = 10000
			for i := 0; i < b.N; i++ {
				hs := make([]*history.History, workloads)
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				for j := range hs {
					h := history.New(history.Config{})
					for _, w := range wins {
						h.Observe(w.StartUnixNano, w.EndUnixNano, w.Files)
					}
					h.Files = h.Files[:len(h.Files):len(h.Files)]
					hs[j] = h
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				per := float64(after.HeapAlloc-before.HeapAlloc) / workloads
				data, _ := json.Marshal(hs[0])
				b.ReportMetric(per, "bytes/workload")
				b.ReportMetric(per*workloads/1e6, "MB/10k_workloads")
				b.ReportMetric(float64(len(data)), "checkpoint_bytes")
				runtime.KeepAlive(hs)
			}
		})
	}
}
