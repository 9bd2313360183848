// Package simulate generates synthetic AccessWindows from simple models of
// access patterns, for tests and benchmarks of the analyzer. It is a
// simulator, not a recording: each read is modelled as taking Latency inside
// the read syscall followed by Compute of think time, and reads are
// aggregated per file and window the way a collector aggregates the kernel's
// counters.
package simulate

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"time"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
)

// File is a file of the simulated dataset.
type File struct {
	Path string
	Size int64
}

// Files returns n files of size bytes each, named by index.
func Files(n int, size int64) []File {
	fs := make([]File, n)
	for i := range fs {
		fs[i] = File{Path: fmt.Sprintf("data/%06d.bin", i), Size: size}
	}
	return fs
}

// Op is one simulated read (or write) of Len bytes at Off of file File.
type Op struct {
	File  int
	Off   int64
	Len   int64
	Write bool
}

// Sim turns ops into windows.
type Sim struct {
	Start    time.Time
	Window   time.Duration
	Latency  time.Duration
	Compute  time.Duration
	Files    []File
	Workload *accessv1.WorkloadRef
	Dataset  *accessv1.DatasetRef
	Pod      string
}

// New returns a Sim with 10 s windows, 1 ms read latency and 1 ms of compute
// per read, starting at a fixed time.
func New(files []File) *Sim {
	return &Sim{
		Start:    time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Window:   10 * time.Second,
		Latency:  time.Millisecond,
		Compute:  time.Millisecond,
		Files:    files,
		Workload: &accessv1.WorkloadRef{Namespace: "ml", Kind: "Job", ApiVersion: "batch/v1", Name: "train"},
		Dataset:  &accessv1.DatasetRef{Namespace: "ml", Name: "images", Source: "PVC", Pvc: "images"},
		Pod:      "train-0",
	}
}

// Run simulates ops in order and returns one window per elapsed interval
// that saw an op, and the time the last op ended.
func (s *Sim) Run(ops []Op) ([]*accessv1.AccessWindow, time.Time) {
	type state struct {
		rec     *accessv1.FileAccess
		lastEnd int64
		opened  bool
	}
	st := make([]state, len(s.Files))
	var out []*accessv1.AccessWindow
	var cur *accessv1.AccessWindow
	t := s.Start.UnixNano()
	win := int64(-1)
	flush := func() {
		if cur == nil {
			return
		}
		for i := range st {
			if st[i].rec != nil {
				cur.Files = append(cur.Files, st[i].rec)
				st[i].rec = nil
			}
		}
		out = append(out, cur)
		cur = nil
	}
	for _, op := range ops {
		w := (t - s.Start.UnixNano()) / int64(s.Window)
		if w != win {
			flush()
			win = w
			start := s.Start.UnixNano() + w*int64(s.Window)
			cur = &accessv1.AccessWindow{Sequence: uint64(w + 1), Node: "node-a", StartUnixNano: start, EndUnixNano: start + int64(s.Window)}
		}
		f := &st[op.File]
		if f.rec == nil {
			f.rec = &accessv1.FileAccess{
				Workload: s.Workload, Pod: s.Pod, PodUid: "uid-" + s.Pod, Container: "main", Dataset: s.Dataset,
				Path: s.Files[op.File].Path, Dev: 42, Ino: uint64(op.File + 1000), FileSize: s.Files[op.File].Size,
				ReadSizeLog2: make([]uint64, 32), ReadLatencyLog2: make([]uint64, 40),
				FirstAccessUnixNano: t,
			}
		}
		r := f.rec
		r.LastAccessUnixNano = t
		if !f.opened {
			r.Opens++
			f.opened = true
		}
		if op.Write {
			r.WriteOps++
			r.WriteBytes += uint64(op.Len)
			t += int64(s.Latency + s.Compute)
			continue
		}
		r.ReadOps++
		r.ReadBytes += uint64(op.Len)
		switch op.Off {
		case 0:
			r.Passes++
			r.LastPassUnixNano = t
		case f.lastEnd:
			r.SeqSteps++
		default:
			r.RandSteps++
		}
		f.lastEnd = op.Off + op.Len
		r.MaxOffset = max(r.MaxOffset, uint64(op.Off+op.Len))
		r.ReadSizeLog2[max(bits.Len64(uint64(op.Len))-1, 0)]++
		r.ReadLatencyLog2[max(bits.Len64(uint64(s.Latency))-1, 0)]++
		r.ReadWaitNano += uint64(s.Latency)
		pages := uint64((op.Len + 4095) / 4096)
		r.PagesRequested += pages
		r.PagesAdded += pages
		t += int64(s.Latency + s.Compute)
	}
	flush()
	return out, time.Unix(0, t)
}

// Whole appends ops reading file i whole in reads of readSize bytes.
func Whole(ops []Op, i int, size, readSize int64) []Op {
	for off := int64(0); off < size; off += readSize {
		ops = append(ops, Op{File: i, Off: off, Len: min(readSize, size-off)})
	}
	return ops
}

// Scan reads every file whole, in order, epochs times.
func Scan(files []File, readSize int64, epochs int) []Op {
	var ops []Op
	for range epochs {
		for i, f := range files {
			ops = Whole(ops, i, f.Size, readSize)
		}
	}
	return ops
}

// Shuffled reads every file whole in a new random order each epoch.
func Shuffled(files []File, readSize int64, epochs int, rng *rand.Rand) []Op {
	var ops []Op
	order := make([]int, len(files))
	for i := range order {
		order[i] = i
	}
	for range epochs {
		rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		for _, i := range order {
			ops = Whole(ops, i, files[i].Size, readSize)
		}
	}
	return ops
}

// Random makes n reads of readSize at uniformly random aligned offsets of
// uniformly chosen files.
func Random(files []File, n int, readSize int64, rng *rand.Rand) []Op {
	ops := make([]Op, 0, n)
	for range n {
		i := rng.IntN(len(files))
		blocks := max(files[i].Size/readSize, 1)
		off := (1 + rng.Int64N(max(blocks-1, 1))) * readSize
		ops = append(ops, Op{File: i, Off: min(off, files[i].Size-readSize), Len: readSize})
	}
	return ops
}

// Hot reads n whole files: with probability hotShare one of the first
// hotFiles files, else any other.
func Hot(files []File, n, hotFiles int, hotShare float64, readSize int64, rng *rand.Rand) []Op {
	var ops []Op
	for range n {
		var i int
		if rng.Float64() < hotShare {
			i = rng.IntN(hotFiles)
		} else {
			i = hotFiles + rng.IntN(len(files)-hotFiles)
		}
		ops = Whole(ops, i, files[i].Size, readSize)
	}
	return ops
}

// Writes writes every file whole in writeSize pieces.
func Writes(files []File, writeSize int64) []Op {
	var ops []Op
	for i, f := range files {
		for off := int64(0); off < f.Size; off += writeSize {
			ops = append(ops, Op{File: i, Off: off, Len: min(writeSize, f.Size-off), Write: true})
		}
	}
	return ops
}
