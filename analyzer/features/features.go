// Package features turns a History into the numbers that describe an access
// pattern: how sequential, how much of each file and of the dataset is read,
// in how many epochs and in what order, how much is reused and by how large a
// working set, and how much time the workload spends waiting on reads.
//
// Estimates from per-file state use the hash-sampled files of the History
// (unbiased for the dataset when sampling is in effect). The dataset is the
// files seen: the kernel reports files that are read, never those that are
// not, so "coverage" is relative to what any epoch touched.
package features

import (
	"math"
	"slices"

	"gonum.org/v1/gonum/stat"

	"github.com/eddy-autotune/eddy/analyzer/history"
)

// Tuning constants of the feature definitions.
const (
	// WholeFileMinCover is the share of a file's size a pass must reach for
	// the file to count as read whole.
	WholeFileMinCover = 0.95
	// HotSetFraction is the share of the dataset's bytes that HotSetShare
	// measures the read share of.
	HotSetFraction = 0.10
	// MinHotSetFiles is the fewest sampled files for which HotSetShare is
	// computed (with fewer, file-level concentration means nothing).
	MinHotSetFiles = 10
	// MinOrderFiles is the fewest files with two comparable passes for
	// OrderCorrelation to be known.
	MinOrderFiles = 8
	// WorkingSetSlack is how far above the infinite cache's miss ratio the
	// working-set cache may stay when the miss-ratio curve has no knee.
	WorkingSetSlack = 0.05
	// MinKneeGain is how far below its chord the miss-ratio curve must dip
	// for its knee to be the working set.
	MinKneeGain = 0.1
)

// MRCPoint is one point of the miss-ratio curve.
type MRCPoint struct {
	CacheBytes float64 `json:"cacheBytes"`
	MissRatio  float64 `json:"missRatio"`
}

// Features describe one (workload, dataset) at a point in time. Byte, op and
// time amounts are decayed sums; ratios are of decayed sums.
type Features struct {
	// Evidence.
	Windows         uint64  `json:"windows"`
	ObservedSeconds float64 `json:"observedSeconds"`
	BytesRead       float64 `json:"bytesRead"`
	ReadOps         float64 `json:"readOps"`
	BytesWritten    float64 `json:"bytesWritten"`
	WriteOps        float64 `json:"writeOps"`
	// Files and DatasetBytes estimate the distinct files read and their
	// total size.
	Files        float64 `json:"files"`
	DatasetBytes float64 `json:"datasetBytes"`

	// Shape of reads. Read sizes leave out reads that returned at most one
	// byte (end-of-file probes).
	SequentialRatio float64 `json:"sequentialRatio"`
	// WholeFileRatio is the share of bytes read that belong to files read
	// whole (a pass reaching WholeFileMinCover of the size).
	WholeFileRatio  float64 `json:"wholeFileRatio"`
	MedianReadBytes float64 `json:"medianReadBytes"`
	P90ReadBytes    float64 `json:"p90ReadBytes"`
	MedianFileBytes float64 `json:"medianFileBytes"`
	P90FileBytes    float64 `json:"p90FileBytes"`

	// Epochs and order. Epochs is the median number of passes (reads that
	// began at offset 0) over the files read from the start; Coverage is the
	// mean share of the dataset's bytes read per epoch (each file counting in
	// min(passes, Epochs) epochs with its covered bytes).
	Coverage float64 `json:"coverage"`
	Epochs   float64 `json:"epochs"`
	// OrderCorrelation is Spearman's rank correlation between the orders in
	// which files began a pass in two epochs (1 fixed order, ~0 shuffled),
	// over OrderFiles files; meaningful only when OrderKnown.
	OrderCorrelation float64 `json:"orderCorrelation"`
	OrderKnown       bool    `json:"orderKnown"`
	OrderFiles       int     `json:"orderFiles"`

	// Reuse and caching. Reuse is the share of bytes read that were read
	// before (1 − distinct/read); HotSetShare the share of bytes read from
	// the densest files making up HotSetFraction of the dataset's bytes
	// (0 with fewer than MinHotSetFiles files). WorkingSetBytes is the knee of the sampled LRU
	// miss-ratio curve when it has a clear one (MinKneeGain), else the
	// smallest cache within WorkingSetSlack of the lowest miss ratio.
	Reuse           float64    `json:"reuse"`
	HotSetShare     float64    `json:"hotSetShare"`
	WorkingSetBytes float64    `json:"workingSetBytes"`
	MissRatioCurve  []MRCPoint `json:"missRatioCurve,omitempty"`

	// Speed and waiting. Throughput is over the union of the windows' time;
	// ReadWaitShare is time inside read syscalls over the wall time of the
	// readers (window time × distinct pod containers reading), clamped to 1
	// since parallel readers in one container can wait longer than the wall
	// time; PageCacheMissRatio is pages added over pages looked up (read-ahead
	// counts as added).
	ThroughputBytesPerSec float64 `json:"throughputBytesPerSec"`
	ReadLatencyP50Sec     float64 `json:"readLatencyP50Seconds"`
	ReadLatencyP90Sec     float64 `json:"readLatencyP90Seconds"`
	ReadLatencyP99Sec     float64 `json:"readLatencyP99Seconds"`
	PageCacheMissRatio    float64 `json:"pageCacheMissRatio"`
	ReadWaitShare         float64 `json:"readWaitShare"`
	WriteShare            float64 `json:"writeShare"`
	// MmapShare is the share of bytes read that were read through memory
	// mappings (page faults) rather than read syscalls.
	MmapShare   float64 `json:"mmapShare"`
	DirectShare float64 `json:"directShare"`
	// IdleSeconds is the time from the last read or write (the first
	// window when there was none) to the end of the last window in which
	// the workload was watched (History.ObservedUntil), or now if sooner:
	// time nobody watched is not idle.
	IdleSeconds float64 `json:"idleSeconds"`
}

// MissRatioAt interpolates the miss-ratio curve at cacheBytes (log-linear
// between points; 1 below the first point with data).
func (f *Features) MissRatioAt(cacheBytes float64) float64 {
	c := f.MissRatioCurve
	if len(c) == 0 {
		return 1
	}
	if cacheBytes <= c[0].CacheBytes {
		return c[0].MissRatio
	}
	for i := 1; i < len(c); i++ {
		if cacheBytes <= c[i].CacheBytes {
			a, b := c[i-1], c[i]
			t := math.Log(cacheBytes/a.CacheBytes) / math.Log(b.CacheBytes/a.CacheBytes)
			return a.MissRatio + t*(b.MissRatio-a.MissRatio)
		}
	}
	return c[len(c)-1].MissRatio
}

// Extractor computes Features, reusing its scratch space between calls. An
// Extractor is not safe for concurrent use; the zero value is ready.
type Extractor struct {
	xs, ws []float64
	ranksA []float64
	ranksB []float64
	pairs  []pair
	keys   []uint64
	pc     []passPair
}

// pair is a value and the index it came from, sorted by value.
type pair struct {
	v float64
	i int32
}

func sortPairs(ps []pair) {
	slices.SortFunc(ps, func(a, b pair) int {
		switch {
		case a.v < b.v:
			return -1
		case a.v > b.v:
			return 1
		}
		return int(a.i - b.i)
	})
}

// Extract returns the features of h at now (unix ns).
func Extract(h *history.History, now int64) Features {
	var e Extractor
	var f Features
	e.Extract(h, now, &f)
	return f
}

// Extract fills f with the features of h at now (unix ns), reusing f's
// miss-ratio curve storage.
func (e *Extractor) Extract(h *history.History, now int64, f *Features) {
	curve := f.MissRatioCurve[:0]
	*f = Features{MissRatioCurve: curve}
	d := h.DecayFactor(now)
	t := &h.Totals

	f.Windows = h.WindowCount
	if h.FirstSeen > 0 {
		f.ObservedSeconds = float64(max(now, h.LastSeen)-h.FirstSeen) / 1e9
	}
	f.BytesRead = t.ReadBytes * d
	f.ReadOps = t.ReadOps * d
	f.BytesWritten = t.WriteBytes * d
	f.WriteOps = t.WriteOps * d

	seq := t.SeqSteps + t.Passes
	f.SequentialRatio = ratio(seq, seq+t.RandSteps)
	// Bucket 0 holds reads that returned 0 or 1 byte: end-of-file probes
	// after a whole-file read, not the reader's read size.
	f.MedianReadBytes = log2Quantile(h.ReadSize[:], 1, 0.5, false)
	f.P90ReadBytes = log2Quantile(h.ReadSize[:], 1, 0.9, false)
	f.ReadLatencyP50Sec = log2Quantile(h.ReadLatency[:], 0, 0.5, true) / 1e9
	f.ReadLatencyP90Sec = log2Quantile(h.ReadLatency[:], 0, 0.9, true) / 1e9
	f.ReadLatencyP99Sec = log2Quantile(h.ReadLatency[:], 0, 0.99, true) / 1e9
	f.ThroughputBytesPerSec = ratio(t.ReadBytes, t.ActiveSeconds)
	f.PageCacheMissRatio = min(ratio(t.PagesAdded, t.PagesRequested), 1)
	f.ReadWaitShare = min(ratio(t.ReadWaitSec, t.ReaderSeconds), 1)
	f.WriteShare = ratio(t.WriteBytes, t.WriteBytes+t.ReadBytes)
	f.MmapShare = ratio(t.MappedReadBytes, t.ReadBytes)
	f.DirectShare = ratio(t.DirectReads, t.ReadOps)
	// Idle time is counted only while the workload was watched: a rest,
	// or a time with no pod on an observing node, is unknown, never idle.
	watched := min(now, h.ObservedUntil())
	switch last := max(h.LastRead, h.LastWrite); {
	case last > 0:
		f.IdleSeconds = max(float64(watched-last)/1e9, 0)
	case h.FirstSeen > 0:
		f.IdleSeconds = max(float64(watched-h.FirstSeen)/1e9, 0)
	}

	e.files(h, d, f)
	e.order(h, f)
	e.reuse(h, f)
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

// log2Quantile is the q-quantile of a log2 histogram (bucket i holds values in
// [2^i, 2^(i+1)), bucket 0 values 0..1). With interpolate it is interpolated
// geometrically within the bucket (latencies spread out); without, it is the
// bucket's lower bound (read sizes cluster on powers of two, which this
// reports exactly). Buckets below first are left out. It is 0 for an empty
// histogram.
func log2Quantile(hist []float64, first int, q float64, interpolate bool) float64 {
	var total float64
	for _, c := range hist[first:] {
		total += c
	}
	if total <= 0 {
		return 0
	}
	target := q * total
	var acc float64
	for i := first; i < len(hist); i++ {
		c := hist[i]
		if c <= 0 {
			continue
		}
		if acc+c >= target {
			frac := (target - acc) / c
			if !interpolate {
				frac = 0
			}
			if i == 0 {
				return frac
			}
			return math.Exp2(float64(i) + frac)
		}
		acc += c
	}
	return math.Exp2(float64(len(hist)))
}

// coveredBytes estimates the distinct bytes read of a file: a sequential
// reader covered up to its highest offset; a random reader that read N bytes
// of a file of S bytes uniformly covered S(1-e^(-N/S)) in expectation. The
// two are mixed by the file's sequential share.
func coveredBytes(fs *history.FileState, readBytes float64) float64 {
	size := float64(fs.Size)
	if size <= 0 {
		size = float64(max(fs.MaxOffset, 0))
	}
	if size <= 0 {
		return readBytes
	}
	seq := fs.SeqSteps + float64(fs.Passes)
	sf := ratio(seq, seq+fs.RandSteps)
	if seq+fs.RandSteps == 0 {
		sf = 1
	}
	seqCover := min(float64(fs.MaxOffset), size)
	randCover := size * -math.Expm1(-readBytes/size)
	return min(sf*seqCover+(1-sf)*randCover, readBytes, size)
}

func (e *Extractor) files(h *history.History, d float64, f *Features) {
	files := h.Files
	r := h.FileRate()
	if len(files) == 0 {
		return
	}
	e.xs = e.xs[:0]
	e.ws = e.ws[:0]
	var sizeSum, readSum, coverSum float64
	var wholeRead, touchedRead float64
	for i := range files {
		fs := &files[i]
		size := float64(max(fs.Size, fs.MaxOffset))
		sizeSum += size
		if fs.ReadBytes <= 0 && fs.Passes == 0 {
			continue
		}
		// Weighted by bytes read, so a small file read whole beside a large
		// file read at random (a config file, an index) does not make the
		// workload look like a whole-file reader.
		touchedRead += fs.ReadBytes
		seq := fs.SeqSteps + float64(fs.Passes)
		if fs.Passes > 0 && fs.Size > 0 && float64(fs.MaxOffset) >= WholeFileMinCover*float64(fs.Size) && seq >= fs.RandSteps {
			wholeRead += fs.ReadBytes
		}
		e.xs = append(e.xs, size)
		if fs.Passes > 0 {
			e.ws = append(e.ws, float64(fs.Passes))
		}
		readSum += fs.ReadBytes * d
	}
	f.Files = float64(len(files)) / r
	f.DatasetBytes = sizeSum / r
	f.WholeFileRatio = ratio(wholeRead, touchedRead)
	if len(e.xs) > 0 {
		slices.Sort(e.xs)
		f.MedianFileBytes = stat.Quantile(0.5, stat.Empirical, e.xs, nil)
		f.P90FileBytes = stat.Quantile(0.9, stat.Empirical, e.xs, nil)
	}
	epochs := 0.0
	if len(e.ws) > 0 {
		slices.Sort(e.ws)
		epochs = stat.Quantile(0.5, stat.Empirical, e.ws, nil)
	}
	f.Epochs = epochs

	// Coverage per epoch: each file counts in min(passes, epochs) epochs (at
	// least one once touched) with its covered bytes, over epochs times the
	// dataset's bytes.
	E := max(epochs, 1)
	var epochCover float64
	for i := range files {
		fs := &files[i]
		rb := fs.ReadBytes * d
		c := coveredBytes(fs, rb)
		coverSum += c
		if fs.ReadBytes <= 0 && fs.Passes == 0 {
			continue
		}
		epochCover += c * min(max(float64(fs.Passes), 1), E)
	}
	f.Coverage = min(ratio(epochCover, E*sizeSum), 1)
	f.Reuse = min(max(1-ratio(coverSum, readSum), 0), 1)
	e.hotSet(h, d, sizeSum, readSum, f)
}

// hotSet computes the read share of the densest files (read bytes per byte of
// file) that together make up HotSetFraction of the dataset's bytes.
func (e *Extractor) hotSet(h *history.History, d, sizeSum, readSum float64, f *Features) {
	files := h.Files
	if len(files) < MinHotSetFiles || readSum <= 0 || sizeSum <= 0 {
		return
	}
	// Densities are non-negative, so their IEEE bits sort like them; the
	// low 16 bits carry the file's index (ranking needs no more precision).
	e.keys = e.keys[:0]
	packable := len(files) <= 1<<16
	for i := range files {
		fs := &files[i]
		d := fs.ReadBytes / float64(max(fs.Size, fs.MaxOffset, 1))
		if packable {
			e.keys = append(e.keys, math.Float64bits(max(d, 0))&^0xffff|uint64(i))
		}
	}
	if !packable {
		e.pairs = e.pairs[:0]
		for i := range files {
			fs := &files[i]
			e.pairs = append(e.pairs, pair{v: fs.ReadBytes / float64(max(fs.Size, fs.MaxOffset, 1)), i: int32(i)})
		}
		sortPairs(e.pairs)
		e.keys = e.keys[:0]
		for _, p := range e.pairs {
			e.keys = append(e.keys, uint64(p.i))
		}
	} else {
		slices.Sort(e.keys)
		for j := range e.keys {
			e.keys[j] &= 0xffff
		}
	}
	budget := HotSetFraction * sizeSum
	var hot float64
	for j := len(e.keys) - 1; j >= 0; j-- {
		fs := &files[e.keys[j]]
		size := float64(max(fs.Size, fs.MaxOffset, 1))
		rb := fs.ReadBytes * d
		if size >= budget {
			hot += rb * budget / size
			break
		}
		hot += rb
		budget -= size
	}
	f.HotSetShare = min(hot/readSum, 1)
}

// order compares the order in which files began a pass in two epochs: the
// pair of pass numbers that most files have both start times of (usually two
// consecutive epochs; the first and the latest when several epochs fit in one
// window).
func (e *Extractor) order(h *history.History, f *Features) {
	files := h.Files
	e.pc = e.pc[:0]
	for i := range files {
		fs := &files[i]
		if fs.PassN[0] == 0 || fs.PassT[0] == 0 || fs.PassT[1] == 0 {
			continue
		}
		found := false
		for j := range e.pc {
			if e.pc[j].a == fs.PassN[0] && e.pc[j].b == fs.PassN[1] {
				e.pc[j].n++
				found = true
				break
			}
		}
		if !found && len(e.pc) < maxPassPairs {
			e.pc = append(e.pc, passPair{a: fs.PassN[0], b: fs.PassN[1], n: 1})
		}
	}
	best := passPair{}
	for _, c := range e.pc {
		if c.n > best.n || (c.n == best.n && c.b > best.b) {
			best = c
		}
	}
	if best.n < MinOrderFiles {
		return
	}
	e.ranksA = e.ranksA[:0]
	e.ranksB = e.ranksB[:0]
	for i := range files {
		fs := &files[i]
		if fs.PassN[0] != best.a || fs.PassN[1] != best.b || fs.PassT[0] == 0 || fs.PassT[1] == 0 {
			continue
		}
		e.ranksA = append(e.ranksA, float64(fs.PassT[0]))
		e.ranksB = append(e.ranksB, float64(fs.PassT[1]))
	}
	n := len(e.ranksA)
	e.rank(e.ranksA)
	e.rank(e.ranksB)
	f.OrderCorrelation = stat.Correlation(e.ranksA, e.ranksB, nil)
	if math.IsNaN(f.OrderCorrelation) {
		f.OrderCorrelation = 0
	}
	f.OrderKnown = true
	f.OrderFiles = n
}

// maxPassPairs bounds the distinct pass-number pairs order counts; files
// with rarer pairs are left out.
const maxPassPairs = 32

type passPair struct {
	a, b uint32
	n    int
}

// rank replaces xs by their ranks (ties get their mean rank), so that the
// Pearson correlation of ranks is Spearman's.
func (e *Extractor) rank(xs []float64) {
	e.pairs = e.pairs[:0]
	for i, x := range xs {
		e.pairs = append(e.pairs, pair{v: x, i: int32(i)})
	}
	e.sortByValue()
	ps := e.pairs
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1].v == ps[i].v {
			j++
		}
		r := float64(i+j)/2 + 1
		for k := i; k <= j; k++ {
			xs[ps[k].i] = r
		}
		i = j + 1
	}
}

// sortByValue sorts e.pairs by value. Pass times are whole nanoseconds: when
// their spread fits 47 bits (39 hours) and there are at most 2^16 of them,
// they are packed with their index into integers, which sort much faster
// than through a comparison function.
func (e *Extractor) sortByValue() {
	ps := e.pairs
	if len(ps) == 0 {
		return
	}
	lo, hi := ps[0].v, ps[0].v
	for _, p := range ps {
		lo, hi = min(lo, p.v), max(hi, p.v)
	}
	if len(ps) > 1<<16 || hi-lo >= 1<<47 {
		sortPairs(ps)
		return
	}
	e.keys = e.keys[:0]
	for _, p := range ps {
		d := p.v - lo
		if d != math.Trunc(d) {
			sortPairs(ps)
			return
		}
		e.keys = append(e.keys, uint64(d)<<16|uint64(p.i))
	}
	slices.Sort(e.keys)
	for j, k := range e.keys {
		ps[j] = pair{v: lo + float64(k>>16), i: int32(k & 0xffff)}
	}
}

// reuse derives the miss-ratio curve and working set from the sampler.
func (e *Extractor) reuse(h *history.History, f *Features) {
	s := &h.Reuse
	if s.Refs <= 0 {
		return
	}
	if knee, gain := s.Knee(); gain >= MinKneeGain {
		f.WorkingSetBytes = knee
	} else {
		f.WorkingSetBytes = s.Reach(WorkingSetSlack)
	}
	top := max(f.DatasetBytes, f.WorkingSetBytes, 1<<20) * 2
	for c := float64(4 << 10); ; c *= 2 {
		f.MissRatioCurve = append(f.MissRatioCurve, MRCPoint{CacheBytes: c, MissRatio: s.MissRatio(c)})
		if c >= top {
			break
		}
	}
}
