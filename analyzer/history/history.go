package history

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"
	"time"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
)

// Histogram sizes; they match the kernel's (bpf.ReadSizeBuckets,
// bpf.LatencyBuckets). Longer histograms in a record are folded into the last
// bucket.
const (
	ReadSizeBuckets = 32
	LatencyBuckets  = 40
	// DistanceBuckets is the number of log2 buckets of the reuse-distance
	// histogram: bucket i counts distances in [2^(i-1), 2^i) bytes.
	DistanceBuckets = 48
)

// rebaseAfterHalfLives bounds stored weights to 2^64 before rescaling.
const rebaseAfterHalfLives = 64

// Config bounds a History. The zero value of each field means its default.
type Config struct {
	// HalfLife is how long until a window's contribution counts half.
	// Default 6h.
	HalfLife time.Duration `json:"halfLife,omitempty"`
	// MaxFiles caps the per-file state kept (hash-sampled beyond it).
	// Default 256.
	MaxFiles int `json:"maxFiles,omitempty"`
	// MaxSampledChunks caps the reuse-distance sampler's set. Default 256.
	MaxSampledChunks int `json:"maxSampledChunks,omitempty"`
	// ChunkBytes is the reuse-tracking granularity inside large files.
	// Default 4 MiB; a file is cut into at most MaxChunksPerFile chunks, so
	// very large files get larger chunks.
	ChunkBytes int64 `json:"chunkBytes,omitempty"`
	// MaxRefsPerRecord caps the chunk references synthesized for a record of
	// random reads. Default 16.
	MaxRefsPerRecord int `json:"maxRefsPerRecord,omitempty"`
	// MaxRuns caps the recent runs kept. Default DefaultMaxRuns.
	MaxRuns int `json:"maxRuns,omitempty"`
}

// MaxChunksPerFile bounds the chunk references one sequential record can make.
const MaxChunksPerFile = 1024

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.HalfLife <= 0 {
		c.HalfLife = 6 * time.Hour
	}
	if c.MaxFiles <= 0 {
		c.MaxFiles = 256
	}
	if c.MaxSampledChunks <= 0 {
		c.MaxSampledChunks = 256
	}
	if c.ChunkBytes <= 0 {
		c.ChunkBytes = 4 << 20
	}
	if c.MaxRefsPerRecord <= 0 {
		c.MaxRefsPerRecord = 16
	}
	if c.MaxRuns <= 0 {
		c.MaxRuns = DefaultMaxRuns
	}
	return c
}

// Totals are decayed sums over every record (stored weighted; see the package
// doc). Times are in seconds.
type Totals struct {
	Windows        float64 `json:"windows"`
	ActiveSeconds  float64 `json:"activeSeconds"`
	ReaderSeconds  float64 `json:"readerSeconds"`
	ReadOps        float64 `json:"readOps"`
	ReadBytes      float64 `json:"readBytes"`
	WriteOps       float64 `json:"writeOps"`
	WriteBytes     float64 `json:"writeBytes"`
	SeqSteps       float64 `json:"seqSteps"`
	RandSteps      float64 `json:"randSteps"`
	Passes         float64 `json:"passes"`
	ReadWaitSec    float64 `json:"readWaitSec"`
	PagesRequested float64 `json:"pagesRequested"`
	PagesAdded     float64 `json:"pagesAdded"`
	MmapFaults     float64 `json:"mmapFaults"`
	// MappedReadBytes is the part of ReadBytes read through mappings.
	MappedReadBytes float64 `json:"mappedReadBytes,omitempty"`
	DirectReads     float64 `json:"directReads"`
	Opens           float64 `json:"opens"`
}

func (t *Totals) scale(f float64) {
	t.Windows *= f
	t.ActiveSeconds *= f
	t.ReaderSeconds *= f
	t.ReadOps *= f
	t.ReadBytes *= f
	t.WriteOps *= f
	t.WriteBytes *= f
	t.SeqSteps *= f
	t.RandSteps *= f
	t.Passes *= f
	t.ReadWaitSec *= f
	t.PagesRequested *= f
	t.PagesAdded *= f
	t.MmapFaults *= f
	t.MappedReadBytes *= f
	t.DirectReads *= f
	t.Opens *= f
}

// FileState is what is kept about one sampled file. Float fields are stored
// weighted (multiply by History.DecayFactor for their worth now).
type FileState struct {
	// Key is the hash of the file's identity (dataset-relative path when
	// known, else device and inode); files are kept sorted by it.
	Key       uint64  `json:"k"`
	Size      int64   `json:"s,omitempty"`
	MaxOffset int64   `json:"o,omitempty"`
	ReadBytes float64 `json:"b,omitempty"`
	SeqSteps  float64 `json:"q,omitempty"`
	RandSteps float64 `json:"x,omitempty"`
	// Passes counts every pass over the file (not decayed).
	Passes uint32 `json:"p,omitempty"`
	// PassN and PassT are the numbers (1-based) and start times (unix ns) of
	// the two latest passes whose start is known, the latest in [1]; a zero
	// number means none.
	PassN     [2]uint32 `json:"pn"`
	PassT     [2]int64  `json:"pt"`
	FirstRead int64     `json:"f,omitempty"`
	LastRead  int64     `json:"l,omitempty"`
}

// History is the decaying state of one (workload, dataset). Its exported
// fields are its whole state: encoding/json round-trips it exactly.
type History struct {
	Config Config `json:"config"`
	// Base is the unix-ns origin of the decay weights.
	Base      int64 `json:"base"`
	FirstSeen int64 `json:"firstSeen"`
	LastSeen  int64 `json:"lastSeen"`
	LastRead  int64 `json:"lastRead,omitempty"`
	LastWrite int64 `json:"lastWrite,omitempty"`
	// ActiveEnd is the latest window end seen, for the union of window
	// intervals (windows from several nodes overlap in time).
	ActiveEnd int64 `json:"activeEnd"`
	// WindowCount counts windows that carried records (not decayed).
	WindowCount uint64 `json:"windowCount"`
	// WatchedUntil is the end of the latest window in which a pod of the
	// workload was observed, whether it read or not (see Watched). Past
	// max(LastSeen, WatchedUntil) nobody watched: what the workload read
	// there is unknown, never none.
	WatchedUntil int64 `json:"watchedUntil,omitempty"`

	Totals      Totals                   `json:"totals"`
	ReadSize    [ReadSizeBuckets]float64 `json:"readSize"`
	ReadLatency [LatencyBuckets]float64  `json:"readLatency"`

	// FileThreshold: a file is tracked when its key is at or below it.
	FileThreshold uint64      `json:"fileThreshold"`
	Files         []FileState `json:"files"`
	Reuse         Sampler     `json:"reuse"`

	// Runs are the latest runs (pods) in order of their first read, at most
	// Config.MaxRuns.
	Runs []Run `json:"runs,omitempty"`
}

// New returns an empty History.
func New(cfg Config) *History {
	cfg = cfg.WithDefaults()
	return &History{
		Config:        cfg,
		FileThreshold: math.MaxUint64,
		Reuse:         Sampler{Threshold: math.MaxUint64},
	}
}

// Restore parses a History checkpointed with json.Marshal.
func Restore(data []byte) (*History, error) {
	h := &History{}
	if err := json.Unmarshal(data, h); err != nil {
		return nil, fmt.Errorf("restore history: %w", err)
	}
	h.Config = h.Config.WithDefaults()
	if !slices.IsSortedFunc(h.Files, func(a, b FileState) int { return cmpU64(a.Key, b.Key) }) {
		return nil, fmt.Errorf("restore history: files are not sorted by key")
	}
	// A checkpoint written under larger caps is sampled down to these, the
	// way Observe would have: the largest keys go and the thresholds drop.
	if n := h.Config.MaxFiles; len(h.Files) > n {
		h.FileThreshold = below(h.Files[n].Key)
		h.Files = h.Files[:n]
	}
	for len(h.Reuse.Items) > h.Config.MaxSampledChunks {
		h.Reuse.dropLargest()
	}
	if n := len(h.Runs) - h.Config.MaxRuns; n > 0 {
		h.Runs = h.Runs[n:]
	}
	// Sized to what they hold: decoding leaves up to half again as much
	// room, which a restarted analyzer would carry for every key.
	h.Files, h.Reuse.Items, h.Runs = slices.Clone(h.Files), slices.Clone(h.Reuse.Items), slices.Clone(h.Runs)
	return h, nil
}

// Clone returns a copy of h that shares nothing Observe changes: a
// snapshot to checkpoint later. It is about half the size of the
// checkpoint's JSON, and quicker to take.
func (h *History) Clone() *History {
	c := *h
	c.Files = slices.Clone(h.Files)
	c.Reuse.Items = slices.Clone(h.Reuse.Items)
	c.Runs = slices.Clone(h.Runs)
	return &c
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// FileRate is the share of files tracked per file (1 when all are).
func (h *History) FileRate() float64 { return rate(h.FileThreshold) }

// rate is the share of 64-bit keys at or below threshold: (threshold+1)/2^64.
func rate(threshold uint64) float64 {
	return (float64(threshold) + 1) / (1 << 64)
}

// below is the threshold that excludes key and keeps every smaller key.
func below(key uint64) uint64 {
	if key == 0 {
		return 0
	}
	return key - 1
}

// DecayFactor converts stored weighted values to their decayed worth at now.
func (h *History) DecayFactor(now int64) float64 {
	if h.Base == 0 {
		return 1
	}
	return math.Exp2(-float64(now-h.Base) / float64(h.Config.HalfLife))
}

func (h *History) weight(t int64) float64 {
	return math.Exp2(float64(t-h.Base) / float64(h.Config.HalfLife))
}

// rebase moves Base to t when weights at t would pass 2^64, rescaling every
// stored weighted value so that decayed worths do not change.
func (h *History) rebase(t int64) {
	if h.Base == 0 {
		h.Base = t
		return
	}
	if float64(t-h.Base) < rebaseAfterHalfLives*float64(h.Config.HalfLife) {
		return
	}
	f := math.Exp2(-float64(t-h.Base) / float64(h.Config.HalfLife))
	h.Base = t
	h.Totals.scale(f)
	for i := range h.ReadSize {
		h.ReadSize[i] *= f
	}
	for i := range h.ReadLatency {
		h.ReadLatency[i] *= f
	}
	for i := range h.Files {
		fs := &h.Files[i]
		fs.ReadBytes *= f
		fs.SeqSteps *= f
		fs.RandSteps *= f
	}
	h.Reuse.scale(f)
}

// Watched records that a pod of the workload was observed through a window
// ending at end, whether or not it read anything.
func (h *History) Watched(end int64) { h.WatchedUntil = max(h.WatchedUntil, end) }

// ObservedUntil is the end of the latest window in which the workload was
// watched: one that carried its records, or one a collector said it
// observed its pod through.
func (h *History) ObservedUntil() int64 { return max(h.LastSeen, h.WatchedUntil) }

// Observe folds one window's records for this (workload, dataset) into the
// history. start and end bound the window (unix ns). Records may be in any
// order; they are referenced in first-access order.
func (h *History) Observe(start, end int64, recs []*accessv1.FileAccess) {
	if len(recs) == 0 || end <= 0 {
		return
	}
	if start > end || start <= 0 {
		start = end
	}
	h.rebase(end)
	w := h.weight(end)
	if h.FirstSeen == 0 || start < h.FirstSeen {
		h.FirstSeen = start
	}
	if end > h.LastSeen {
		h.LastSeen = end
	}
	h.WindowCount++
	h.Totals.Windows += w
	from := max(start, h.ActiveEnd)
	if end > from {
		h.Totals.ActiveSeconds += w * float64(end-from) / 1e9
	}
	h.ActiveEnd = max(h.ActiveEnd, end)
	h.Totals.ReaderSeconds += w * float64(end-start) / 1e9 * float64(countReaders(recs))

	var rr rereads
	sorted := true
	op := orderPool.Get().(*[]orderEntry)
	defer orderPool.Put(op)
	order := (*op)[:0]
	for i, r := range recs {
		if r == nil {
			continue
		}
		rr.add(r, h.Config.ChunkBytes)
		if n := len(order); n > 0 && order[n-1].at > r.FirstAccessUnixNano {
			sorted = false
		}
		order = append(order, orderEntry{at: r.FirstAccessUnixNano, i: int32(i)})
	}
	*op = order
	if !sorted {
		slices.SortFunc(order, func(a, b orderEntry) int {
			switch {
			case a.at < b.at:
				return -1
			case a.at > b.at:
				return 1
			}
			return int(a.i - b.i)
		})
	}
	for _, o := range order {
		r := recs[o.i]
		h.observeRun(r)
		key := h.observeRecord(r, w, end)
		if r.Passes >= 2 && fileSize(r) <= h.Config.ChunkBytes {
			h.Reuse.Repeat(key, float64(r.Passes-1), rr.distance(r.Passes), w)
		}
	}
}

type orderEntry struct {
	at int64
	i  int32
}

// orderPool holds the scratch for ordering a window's records, shared by all
// histories so that none carries it between windows.
var orderPool = sync.Pool{New: func() any { return new([]orderEntry) }}

// rereads estimates the reuse distance of re-reads inside one window, which
// the window's aggregates hide: a small file read whole p times in a window
// of span T is re-read every T/p, and in that time a file read q times is
// touched with probability 1 − e^(−q/p) (reads spread evenly, independent).
// Files are grouped by log2 of their pass count.
type rereads struct {
	size   [33]float64
	passes [33]float64
}

func fileSize(r *accessv1.FileAccess) int64 {
	return max(r.FileSize, int64(r.MaxOffset))
}

func (rr *rereads) add(r *accessv1.FileAccess, chunk int64) {
	if r.Passes == 0 || fileSize(r) > chunk {
		return
	}
	b := min(bits.Len64(r.Passes)-1, len(rr.size)-1)
	s := float64(fileSize(r))
	rr.size[b] += s
	rr.passes[b] += s * float64(r.Passes)
}

// distance is the expected distinct bytes between two reads of a file read p
// times in the window.
func (rr *rereads) distance(p uint64) float64 {
	var d float64
	for b, s := range rr.size {
		if s > 0 {
			d += s * -math.Expm1(-rr.passes[b]/s/float64(p))
		}
	}
	return d
}

// countReaders counts distinct (pod, container) pairs that read in recs, so
// that read wait can be compared with wall time per reader. Records of one
// reader are usually adjacent, so a short list of recent readers suffices;
// exactness is not needed beyond a handful.
func countReaders(recs []*accessv1.FileAccess) int {
	var seen [8]*accessv1.FileAccess
	n := 0
	for _, r := range recs {
		if r == nil || r.ReadOps == 0 {
			continue
		}
		dup := false
		for _, s := range seen[:min(n, len(seen))] {
			if s.PodUid == r.PodUid && s.Container == r.Container {
				dup = true
				break
			}
		}
		if !dup {
			if n < len(seen) {
				seen[n] = r
			}
			n++
		}
	}
	return max(n, 1)
}

// observeRecord folds one record in and returns its file key.
func (h *History) observeRecord(r *accessv1.FileAccess, w float64, end int64) uint64 {
	t := &h.Totals
	t.ReadOps += w * float64(r.ReadOps)
	t.ReadBytes += w * float64(r.ReadBytes)
	t.WriteOps += w * float64(r.WriteOps)
	t.WriteBytes += w * float64(r.WriteBytes)
	t.SeqSteps += w * float64(r.SeqSteps)
	t.RandSteps += w * float64(r.RandSteps)
	t.Passes += w * float64(r.Passes)
	t.ReadWaitSec += w * float64(r.ReadWaitNano) / 1e9
	t.PagesRequested += w * float64(r.PagesRequested)
	t.PagesAdded += w * float64(r.PagesAdded)
	t.MmapFaults += w * float64(r.MmapFaults)
	t.MappedReadBytes += w * float64(r.MappedReadBytes)
	t.DirectReads += w * float64(r.DirectReads)
	t.Opens += w * float64(r.Opens)
	addHist(h.ReadSize[:], r.ReadSizeLog2, w)
	addHist(h.ReadLatency[:], r.ReadLatencyLog2, w)
	if r.WriteOps > 0 {
		h.LastWrite = max(h.LastWrite, r.LastAccessUnixNano, end)
	}
	key := FileKey(r)
	if r.ReadOps == 0 && r.MmapFaults == 0 {
		return key
	}
	h.LastRead = max(h.LastRead, r.LastAccessUnixNano)
	if key <= h.FileThreshold {
		h.observeFile(key, r, w)
	}
	h.reference(key, r, w, end)
	return key
}

func addHist(dst []float64, src []uint64, w float64) {
	for i, c := range src {
		if c == 0 {
			continue
		}
		dst[min(i, len(dst)-1)] += w * float64(c)
	}
}

func (h *History) observeFile(key uint64, r *accessv1.FileAccess, w float64) {
	i, found := slices.BinarySearchFunc(h.Files, key, func(f FileState, k uint64) int { return cmpU64(f.Key, k) })
	if !found {
		if len(h.Files) < h.Config.MaxFiles {
			h.Files = insertBounded(h.Files, i, FileState{Key: key}, h.Config.MaxFiles)
		} else {
			// Full: the largest key goes — this one or the last held — and
			// files are sampled below it from now on. The table is never
			// grown past MaxFiles for it.
			last := len(h.Files) - 1
			if i > last {
				h.FileThreshold = below(key)
				return
			}
			h.FileThreshold = below(h.Files[last].Key)
			copy(h.Files[i+1:], h.Files[i:last])
			h.Files[i] = FileState{Key: key}
		}
	}
	f := &h.Files[i]
	if r.FileSize > f.Size {
		f.Size = r.FileSize
	}
	f.MaxOffset = max(f.MaxOffset, int64(r.MaxOffset))
	f.ReadBytes += w * float64(r.ReadBytes)
	f.SeqSteps += w * float64(r.SeqSteps)
	f.RandSteps += w * float64(r.RandSteps)
	if f.FirstRead == 0 || (r.FirstAccessUnixNano > 0 && r.FirstAccessUnixNano < f.FirstRead) {
		f.FirstRead = r.FirstAccessUnixNano
	}
	f.LastRead = max(f.LastRead, r.LastAccessUnixNano)
	if p := r.Passes; p > 0 {
		// A window dates only its first access to the file and its latest
		// pass: with one new pass, that pass follows the previous latest;
		// with several, the first and the latest are known.
		latest := uint32(min(uint64(f.Passes)+p, math.MaxUint32))
		if p == 1 {
			f.PassN[0], f.PassT[0] = f.PassN[1], f.PassT[1]
		} else {
			f.PassN[0], f.PassT[0] = f.Passes+1, r.FirstAccessUnixNano
		}
		f.PassN[1], f.PassT[1] = latest, r.LastPassUnixNano
		f.Passes += uint32(min(p, math.MaxUint32-uint64(f.Passes)))
	}
}

// insertBounded inserts v at i, growing s's capacity at most to limit so that
// a full table does not carry a doubled backing array (callers never insert
// into a table holding limit already).
func insertBounded[T any](s []T, i int, v T, limit int) []T {
	if len(s) == cap(s) {
		n := make([]T, len(s), min(max(2*cap(s), 8), max(limit, len(s)+1)))
		copy(n, s)
		s = n
	}
	return slices.Insert(s, i, v)
}

// FileKey is the identity hash of a record's file: its dataset-relative path
// when known (stable across nodes), else its device and inode.
func FileKey(r *accessv1.FileAccess) uint64 {
	if r.Path != "" {
		return hashString(r.Path)
	}
	return mix64(r.Dev*0x9e3779b97f4a7c15 ^ mix64(r.Ino))
}

// hashString is FNV-1a followed by a finalizer, so keys are uniform enough to
// sample by threshold.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h)
}

// mix64 is the splitmix64 finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// reference feeds the chunk references a record implies to the reuse sampler.
func (h *History) reference(key uint64, r *accessv1.FileAccess, w float64, end int64) {
	size := r.FileSize
	if size <= 0 {
		size = int64(max(r.MaxOffset, r.ReadBytes))
	}
	if size <= 0 {
		return
	}
	chunk := max(h.Config.ChunkBytes, (size+MaxChunksPerFile-1)/MaxChunksPerFile)
	n := (size + chunk - 1) / chunk
	if n == 1 {
		h.Reuse.Access(key, size, w, h.Config.MaxSampledChunks)
		return
	}
	ref := func(c int64) {
		ck := mix64(key ^ uint64(c+1)*0x9e3779b97f4a7c15)
		if ck > h.Reuse.Threshold {
			return
		}
		h.Reuse.Access(ck, min(chunk, size-c*chunk), w, h.Config.MaxSampledChunks)
	}
	if r.SeqSteps+r.Passes >= r.RandSteps {
		hi := min(int64(r.MaxOffset), size)
		if hi <= 0 {
			hi = min(int64(r.ReadBytes), size)
		}
		lo := max(hi-int64(r.ReadBytes), 0)
		rounds := 1
		if int64(r.ReadBytes) > hi && hi > 0 {
			rounds = 2
		}
		for ; rounds > 0; rounds-- {
			for c := lo / chunk; c*chunk < hi; c++ {
				ref(c)
			}
		}
		return
	}
	refs := min(r.ReadOps, uint64(h.Config.MaxRefsPerRecord))
	seed := mix64(key ^ uint64(end))
	for i := uint64(0); i < refs; i++ {
		ref(int64(mix64(seed+i) % uint64(n)))
	}
}
