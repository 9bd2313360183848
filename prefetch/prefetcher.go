package prefetch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	manifestv1 "github.com/eddy-autotune/eddy/api/manifest/v1"
	v1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

// readChunk is the largest single read(2): large enough for FUSE to forward
// big requests, small enough that the rate limiter stays smooth.
const readChunk = 1 << 20

type fileState int

const (
	fileQueued fileState = iota
	fileActive
	fileDone
	fileFailed
)

// file is one file of the plan and how far it has been read.
type file struct {
	ref      fileRef
	size     int64 // -1 until the first read learns it
	next     int64 // next offset to hand out
	pending  int   // blocks in flight
	sizing   bool  // the first block of a file of unknown size is in flight
	state    fileState
	selected bool // counts towards the warm ratio
	// ranges, when set (Ranges), are what is left to read of the file,
	// instead of everything from next to size: the first range's start
	// advances as blocks are handed out.
	ranges []manifestv1.Range

	// fh is the file's one open descriptor, which all its blocks read
	// through; it is closed when the file is finished. Opening a file
	// again is not free: a FUSE mount without keep_cache (rclone's)
	// drops the file's pages from the page cache at every open — what
	// this prefetcher and the application already read — and waits for
	// the reads in flight to do so, which serialises the readers.
	openMu sync.Mutex
	fh     *os.File
}

// handle returns f's open descriptor, opening it with open the first time.
func (f *file) handle(open func() (*os.File, error)) (*os.File, error) {
	f.openMu.Lock()
	defer f.openMu.Unlock()
	if f.fh == nil {
		fh, err := open()
		if err != nil {
			return nil, err
		}
		f.fh = fh
	}
	return f.fh, nil
}

// release takes f's descriptor for the caller to close (nil if f was
// never opened). Call it only once no block of f is in flight.
func (f *file) release() *os.File {
	f.openMu.Lock()
	defer f.openMu.Unlock()
	fh := f.fh
	f.fh = nil
	return fh
}

// more reports whether f has bytes left to hand out.
func (f *file) more() bool {
	if f.ranges != nil {
		return len(f.ranges) > 0
	}
	return f.size >= 0 && f.next < f.size
}

// block is one read handed to a worker.
type block struct {
	f      *file
	off, n int64
	sizing bool
}

// readFunc reads [off, off+n) of f and returns the bytes read, the file's
// size, and the time spent reading (rate-limit waits excluded).
type readFunc func(ctx context.Context, f *file, off, n int64) (read, size int64, busy time.Duration, err error)

// Prefetcher reads a dataset ahead of the application, in the order its
// strategy (and SDK hints) give, within a bandwidth cap and a byte budget.
// Create one with New, run it with Run, and serve Handler for progress.
type Prefetcher struct {
	opts    Options
	log     logr.Logger
	scope   *scope
	metrics *metrics
	limiter *rate.Limiter
	chunk   int64
	bufs    sync.Pool

	// serviceAccountDir holds the token and CA used to fetch the manifest.
	serviceAccountDir  string
	httpClient         *http.Client
	manifestRetryDelay time.Duration
	read               readFunc
	onFileStart        func(path string)

	mu        sync.Mutex
	cond      *sync.Cond
	queue     []*file
	qhead     int
	active    []*file
	files     map[string]*file
	adapt     *adaptive
	window    int // Sequential: blocks allowed in flight; doubles as they complete
	windowUse int
	inflight  int
	reserved  int64
	budgetHit bool
	bytes     int64
	filesDone int64
	errs      int64
	rejected  int64
	hints     int64
	epoch     int
	selBytes  int64
	selFiles  int
	selDone   int64
	planned   bool
	// selectionDone: the files the warm ratio measures are all known (the
	// plan may still list more to read after them).
	selectionDone bool
	hintOnly      bool
	failure       string
	// manifestErr is why the plan goes on without its manifest.
	manifestErr string
	warm        bool
	drained     bool
	rate        float64
	started     time.Time
}

// serviceAccountDir is where Kubernetes mounts the pod's token and CA.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// New checks opts and opens the roots. Close releases them.
func New(opts Options, log logr.Logger) (*Prefetcher, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	sc, err := newScope(opts.Roots, opts.PathAliases)
	if err != nil {
		return nil, err
	}
	p := &Prefetcher{
		opts:               opts,
		log:                log,
		scope:              sc,
		metrics:            newMetrics(),
		chunk:              min(opts.BlockSize, readChunk),
		serviceAccountDir:  opts.ServiceAccountDir,
		manifestRetryDelay: time.Second,
		files:              map[string]*file{},
		adapt:              newAdaptive(opts.Concurrency, 1, opts.MaxConcurrency, time.Now()),
	}
	if opts.MaxBandwidth > 0 {
		p.chunk = max(min(p.chunk, opts.MaxBandwidth/8), 64<<10)
		p.limiter = rate.NewLimiter(rate.Limit(opts.MaxBandwidth), int(p.chunk))
	}
	if opts.Strategy == v1alpha1.StrategySequential {
		p.window = 1
	}
	p.bufs.New = func() any { b := make([]byte, p.chunk); return &b }
	p.read = p.readFile
	p.cond = sync.NewCond(&p.mu)
	p.metrics.concurrency.Set(float64(p.adapt.limit))
	return p, nil
}

// Close releases the dataset roots.
func (p *Prefetcher) Close() { p.scope.close() }

// Run plans the selection, reads it ahead, and returns when everything is
// read, the budget is spent, or ctx ends. Call it once. With a hint socket it keeps
// following hints until ctx ends; Resident keeps what it read in the cache
// until ctx ends (see keepResident). Failures to plan (an unreachable manifest)
// are logged and reported in Status, and the prefetcher counts as warm so it
// never holds the application back.
func (p *Prefetcher) Run(ctx context.Context) error {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.mu.Lock()
	p.started = time.Now()
	p.mu.Unlock()
	go func() {
		<-ctx.Done()
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	go p.report(ctx)
	if p.opts.HintSocket != "" {
		hs, err := listenHints(p.opts.HintSocket, p.log, p.applyHint)
		if err != nil {
			p.log.Error(err, "SDK hints disabled")
		} else {
			defer hs.Close()
			go hs.serve()
		}
	}
	planned := make(chan struct{})
	go func() {
		defer close(planned)
		p.plan(ctx)
	}()
	p.dispatch(ctx)
	cancel() // the budget may end the work before the listing ends
	<-planned
	p.closeFiles()
	p.logProgress("prefetch finished")
	if p.opts.Strategy == v1alpha1.StrategyResident {
		p.keepResident(parent)
	}
	return nil
}

// keepResident opens each file Resident read whole and reads its first
// byte, every ResidentInterval until ctx ends. A cache that evicts the least
// recently used files (rclone's VFS cache, which counts an open as a use)
// then always finds the application's other files older than these, and a
// job that reads more than the cache holds in a new order each epoch hits
// this fixed part in every epoch. A touch of a kept file is a local hit.
func (p *Prefetcher) keepResident(ctx context.Context) {
	p.mu.Lock()
	var kept []*file
	var bytes int64
	for _, f := range p.files {
		if f.state == fileDone && f.size > 0 {
			kept = append(kept, f)
			bytes += f.size
		}
	}
	p.mu.Unlock()
	if len(kept) == 0 {
		return
	}
	p.log.Info("keeping files resident", "files", len(kept), "bytes", bytes, "interval", p.opts.ResidentInterval)
	t := time.NewTicker(p.opts.ResidentInterval)
	defer t.Stop()
	var one [1]byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, f := range kept {
			if ctx.Err() != nil {
				return
			}
			fh, err := p.scope.open(f.ref)
			if err == nil {
				_, err = fh.ReadAt(one[:], 0)
				_ = fh.Close()
			}
			if err != nil && !errors.Is(err, io.EOF) {
				p.mu.Lock()
				p.errs++
				p.mu.Unlock()
				p.metrics.errors.Inc()
				p.log.V(1).Info("could not touch a resident file", "path", p.scope.display(f.ref), "error", err.Error())
				continue
			}
			p.metrics.touches.Inc()
		}
	}
}

// plan fills the queue from the manifest or by listing the roots. Files are
// queued as they are found, so reading starts while a large dataset is still
// being listed; the selection is complete (and the warm ratio meaningful)
// once planned is set.
func (p *Prefetcher) plan(ctx context.Context) {
	defer func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.planned, p.selectionDone = true, true
		p.log.Info("plan ready", "strategy", p.opts.Strategy, "files", p.selFiles, "bytes", p.selBytes,
			"hintOnly", p.hintOnly, "rejected", p.rejected, "failure", p.failure)
		p.updateWarmLocked()
		p.cond.Broadcast()
	}()
	var entries []string
	var ranges map[string][]manifestv1.Range
	if p.opts.ManifestURL != "" {
		doc, err := p.fetchManifest(ctx)
		if err != nil && !p.withoutManifest(err) {
			return
		}
		entries = doc.Files
		if p.opts.Strategy == v1alpha1.StrategyRanges {
			ranges = map[string][]manifestv1.Range{}
			for _, f := range doc.Ranges {
				ranges[f.Path] = append(ranges[f.Path], f.Ranges...)
			}
		}
	}
	// add queues a file; selected files make up the selection the warm
	// ratio measures.
	add := func(ref fileRef, size int64, selected bool, rs []manifestv1.Range) {
		p.mu.Lock()
		defer p.mu.Unlock()
		k := ref.key()
		want := size
		if rs != nil {
			want = rangeBytes(rs)
		}
		if f, dup := p.files[k]; dup {
			// A hint may have queued the file before the listing reached it.
			if selected && !f.selected {
				f.selected = true
				p.selBytes += want
				p.selFiles++
				if f.state == fileDone {
					p.selDone += want
				}
			}
			return
		}
		if p.opts.Strategy == v1alpha1.StrategyResident && p.selBytes+want > p.opts.BudgetBytes {
			// Resident keeps whole files only: a part of one would not
			// spare the application a fetch of it.
			return
		}
		f := &file{ref: ref, size: size, selected: selected, ranges: rs}
		p.files[k] = f
		p.queue = append(p.queue, f)
		if selected {
			p.selBytes += want
			p.selFiles++
			p.metrics.selectionBytes.Set(float64(p.selBytes))
		}
		p.cond.Broadcast()
	}
	selectionDone := func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.selectionDone = true
		p.updateWarmLocked()
	}
	reject := func(ref fileRef, err error) { p.rejectPath(p.scope.display(ref), err) }
	walk := func(selected bool) {
		for i := range p.scope.roots {
			visit := func(ref fileRef, size int64) { add(ref, size, selected, nil) }
			if err := p.scope.walk(ctx, i, visit, reject); err != nil {
				p.log.Error(err, "listing a dataset root failed", "root", p.scope.paths[i])
			}
		}
	}
	switch {
	case entries != nil:
		for _, e := range entries {
			if ctx.Err() != nil {
				return
			}
			ref, err := p.scope.resolve(e)
			if err != nil {
				p.rejectPath(e, err)
				continue
			}
			size, err := p.scope.stat(ref)
			if err != nil {
				reject(ref, err)
				continue
			}
			var rs []manifestv1.Range
			if ranges != nil {
				// Ranges reads only the ranges, and nothing of a file
				// listed without any.
				if rs = clipRanges(ranges[e], size); len(rs) == 0 {
					continue
				}
				rs = coalesce(rs, p.opts.BlockSize)
				descending(rs)
			}
			add(ref, size, true, rs)
		}
		selectionDone()
		// HotSet: with a budget to bound it, the rest of the dataset follows
		// the hot files; without one, only the hot files are read, so cold
		// files never push hot ones out of the cache.
		if p.opts.Strategy == v1alpha1.StrategyHotSet && p.opts.BudgetBytes > 0 {
			walk(false)
		}
	case p.opts.Strategy == v1alpha1.StrategyOrdered:
		p.mu.Lock()
		p.hintOnly = true
		p.mu.Unlock()
	default:
		walk(true)
	}
}

// withoutManifest decides what a plan does when its manifest could not be
// fetched (the analyzer is unreachable, or lost it): a whole-dataset
// prefetch reads the dataset in listing order — the manifest only ordered
// it — so the run still gets what was recommended and is judged on it;
// an ordered one follows the SDK's hints when it has them; any other has
// nothing to read and reports warm so the pod is not held. It reports
// whether the plan goes on.
func (p *Prefetcher) withoutManifest(err error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.opts.Strategy == v1alpha1.StrategyWholeDataset:
		p.log.Error(err, "manifest unavailable; reading the whole dataset in listing order")
		p.manifestErr = err.Error()
		return true
	case p.opts.Strategy == v1alpha1.StrategyOrdered && p.opts.HintSocket != "":
		p.log.Error(err, "manifest unavailable; following SDK hints only")
		p.hintOnly = true
	default:
		p.log.Error(err, "manifest unavailable; nothing to prefetch, reporting warm so the pod is not held")
		p.failure = err.Error()
	}
	return false
}

// rejectPath logs and counts a path that is not read.
func (p *Prefetcher) rejectPath(path string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if errors.Is(err, errOutsideRoots) {
		p.rejected++
		p.metrics.rejected.Inc()
		p.log.Info("rejected path outside the dataset roots", "path", path, "reason", err.Error())
		return
	}
	p.errs++
	p.metrics.errors.Inc()
	p.log.Info("skipping unreadable path", "path", path, "error", err.Error())
}

// dispatch hands blocks to workers while the concurrency limit allows, until
// the work is done or ctx ends, then waits for reads in flight.
func (p *Prefetcher) dispatch(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for ctx.Err() == nil {
		if p.inflight < p.limitLocked() {
			if b, ok := p.nextBlockLocked(); ok {
				p.inflight++
				p.metrics.inflight.Set(float64(p.inflight))
				go p.work(ctx, b)
				continue
			}
		}
		if p.inflight == 0 && p.idleLocked() {
			p.drained = true
			p.updateWarmLocked()
			if p.opts.HintSocket == "" || p.budgetHit {
				break
			}
		}
		p.cond.Wait()
	}
	for p.inflight > 0 {
		p.cond.Wait()
	}
}

func (p *Prefetcher) limitLocked() int {
	if p.window > 0 {
		return min(p.adapt.limit, p.window)
	}
	return p.adapt.limit
}

// idleLocked reports whether nothing is left to hand out, and nothing more
// will come from the plan.
func (p *Prefetcher) idleLocked() bool {
	if p.budgetHit {
		return true
	}
	return p.planned && p.qhead >= len(p.queue) && len(p.active) == 0
}

// nextBlockLocked picks the next read: first the remaining blocks of files
// already started (in start order), then the next file in the queue.
func (p *Prefetcher) nextBlockLocked() (block, bool) {
	if p.budgetHit {
		return block{}, false
	}
	for _, f := range p.active {
		if f.state == fileActive && !f.sizing && f.more() {
			return p.takeNextLocked(f)
		}
	}
	for p.qhead < len(p.queue) {
		f := p.queue[p.qhead]
		p.queue[p.qhead] = nil
		p.qhead++
		if f.state != fileQueued {
			continue
		}
		f.state = fileActive
		if p.onFileStart != nil {
			p.onFileStart(p.scope.display(f.ref))
		}
		if f.size == 0 {
			p.finishLocked(f)
			continue
		}
		p.active = append(p.active, f)
		if f.size < 0 {
			f.sizing = true
			return p.takeLocked(f, p.opts.BlockSize, true)
		}
		return p.takeNextLocked(f)
	}
	if p.qhead > 0 && p.qhead == len(p.queue) {
		p.queue, p.qhead = p.queue[:0], 0
	}
	return block{}, false
}

// takeNextLocked takes f's next block: the next BlockSize bytes of its
// first range, or of the file from next.
func (p *Prefetcher) takeNextLocked(f *file) (block, bool) {
	if f.ranges == nil {
		return p.takeLocked(f, min(p.opts.BlockSize, f.size-f.next), false)
	}
	r := &f.ranges[0]
	f.next = r.Offset()
	b, ok := p.takeLocked(f, min(p.opts.BlockSize, r.End()-r.Offset()), false)
	if ok {
		r[0] = f.next
		if r.Offset() >= r.End() {
			f.ranges = f.ranges[1:]
		}
	}
	return b, ok
}

// takeLocked reserves n bytes of f against the budget and returns the block.
func (p *Prefetcher) takeLocked(f *file, n int64, sizing bool) (block, bool) {
	if p.opts.BudgetBytes > 0 {
		left := p.opts.BudgetBytes - p.reserved
		if left <= 0 {
			p.budgetHit = true
			p.log.Info("byte budget spent; stopping", "budget", p.opts.BudgetBytes)
			f.sizing = false
			return block{}, false
		}
		n = min(n, left)
	}
	p.reserved += n
	b := block{f: f, off: f.next, n: n, sizing: sizing}
	f.next += n
	f.pending++
	return b, true
}

func (p *Prefetcher) work(ctx context.Context, b block) {
	n, size, busy, err := p.read(ctx, b.f, b.off, b.n)
	if p.complete(b, n, size, busy, err) {
		if fh := b.f.release(); fh != nil {
			_ = fh.Close() // read-only: nothing to lose
		}
	}
}

// complete records the outcome of one read and wakes the dispatcher. It
// reports whether the read finished its file, whose descriptor the caller
// then closes (outside the lock: closing a FUSE file waits for the daemon).
func (p *Prefetcher) complete(b block, n, size int64, busy time.Duration, err error) (finished bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.cond.Broadcast()
	f := b.f
	p.inflight--
	p.metrics.inflight.Set(float64(p.inflight))
	f.pending--
	p.reserved -= b.n - n
	if b.sizing {
		f.sizing = false
		if err == nil {
			f.size = size
		}
	}
	switch {
	case err != nil && isCanceled(err):
		f.state = fileFailed
	case err != nil:
		f.state = fileFailed
		if errors.Is(err, errOutsideRoots) {
			p.rejected++
			p.metrics.rejected.Inc()
			p.log.Info("rejected path outside the dataset roots", "path", p.scope.display(f.ref), "reason", err.Error())
		} else {
			p.errs++
			p.metrics.errors.Inc()
			p.log.Info("read failed; skipping the file", "path", p.scope.display(f.ref), "offset", b.off, "error", err.Error())
		}
	default:
		p.bytes += n
		p.metrics.bytes.Add(float64(n))
		p.metrics.readLatency.Observe(busy.Seconds())
		if f.selected {
			p.selDone += n
		}
		if n < b.n && b.off+n < f.size {
			f.size = b.off + n // the file shrank since it was listed
		}
		p.adapt.observe(n, busy)
		before := p.adapt.limit
		if limit := p.adapt.tick(time.Now()); limit != before {
			p.metrics.concurrency.Set(float64(limit))
			p.log.V(1).Info("concurrency limit changed", "from", before, "to", limit,
				"baseLatency", p.adapt.base.String(), "throughput", int64(p.adapt.prevThr))
		}
		if p.window > 0 {
			p.windowUse++
			if p.windowUse >= p.window {
				p.window, p.windowUse = min(2*p.window, p.opts.MaxConcurrency), 0
			}
		}
	}
	if f.state == fileFailed || (f.size >= 0 && !f.more()) {
		if f.pending == 0 && !f.sizing {
			p.finishLocked(f)
			finished = true
		}
	}
	p.updateWarmLocked()
	return finished
}

// closeFiles closes the descriptors of files left unfinished when the run
// ended (the budget was spent, or ctx ended), once no read is in flight.
func (p *Prefetcher) closeFiles() {
	p.mu.Lock()
	files := make([]*file, 0, len(p.files))
	for _, f := range p.files {
		files = append(files, f)
	}
	p.mu.Unlock()
	for _, f := range files {
		if fh := f.release(); fh != nil {
			_ = fh.Close()
		}
	}
}

func isCanceled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// finishLocked retires f from the active list.
func (p *Prefetcher) finishLocked(f *file) {
	if f.state != fileFailed {
		f.state = fileDone
		p.filesDone++
		p.metrics.files.Inc()
	}
	for i, a := range p.active {
		if a == f {
			p.active = append(p.active[:i], p.active[i+1:]...)
			break
		}
	}
}

// warmRatioLocked is the share of the selection read, against the budget
// when the budget is smaller than the selection.
func (p *Prefetcher) warmRatioLocked() float64 {
	target := p.selBytes
	if p.opts.BudgetBytes > 0 && p.opts.BudgetBytes < target {
		target = p.opts.BudgetBytes
	}
	if target <= 0 {
		if p.selectionDone {
			return 1
		}
		return 0
	}
	return min(1, float64(p.selDone)/float64(target))
}

// updateWarmLocked latches warm once the threshold is reached. It is also
// reached when nothing more can be read (all done, or errors), when the plan
// failed, and when the order comes from SDK hints only: hints arrive only
// once the application runs, so holding it back would deadlock.
func (p *Prefetcher) updateWarmLocked() {
	ratio := p.warmRatioLocked()
	p.metrics.warmRatio.Set(ratio)
	if p.warm {
		return
	}
	switch {
	case p.opts.WarmThresholdPercent == 0,
		p.planned && (p.failure != "" || p.hintOnly || p.drained),
		p.selectionDone && ratio*100 >= float64(p.opts.WarmThresholdPercent):
		p.warm = true
		p.log.Info("warm", "warmPercent", int(ratio*100), "threshold", p.opts.WarmThresholdPercent)
	}
}

// readFile reads [off, off+n) of f in large chunks through f's one
// descriptor, after advising the kernel to start reading the whole range,
// so that the page cache (and any cache below the mount) holds it.
func (p *Prefetcher) readFile(ctx context.Context, f *file, off, n int64) (read, size int64, busy time.Duration, err error) {
	start := time.Now()
	var waited time.Duration
	defer func() { busy = time.Since(start) - waited }()
	ref := f.ref
	fh, err := f.handle(func() (*os.File, error) { return p.scope.open(ref) })
	if err != nil {
		return 0, 0, 0, err
	}
	fi, err := fh.Stat()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("stat %s: %w", p.scope.display(ref), err)
	}
	if !fi.Mode().IsRegular() {
		return 0, 0, 0, fmt.Errorf("%s is not a regular file (%s)", p.scope.display(ref), fi.Mode().Type())
	}
	size = fi.Size()
	if off >= size {
		return 0, size, 0, nil
	}
	n = min(n, size-off)
	_ = unix.Fadvise(int(fh.Fd()), off, n, unix.FADV_WILLNEED) // advisory: a refusal changes nothing
	bp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bp)
	buf := *bp
	for read < n {
		c := min(int64(len(buf)), n-read)
		if p.limiter != nil {
			w := time.Now()
			if err := p.limiter.WaitN(ctx, int(c)); err != nil {
				return read, size, 0, err
			}
			waited += time.Since(w)
		}
		r, err := fh.ReadAt(buf[:c], off+read)
		read += int64(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			return read, size, 0, fmt.Errorf("read %s at offset %d: %w", p.scope.display(ref), off+read, err)
		}
	}
	return read, size, 0, nil
}

// clipRanges returns the parts of rs inside a file of size bytes.
func clipRanges(rs []manifestv1.Range, size int64) []manifestv1.Range {
	var out []manifestv1.Range
	for _, r := range rs {
		if r.Offset() < size {
			out = append(out, manifestv1.Range{r.Offset(), min(r.End(), size)})
		}
	}
	return out
}

// coalesce joins ranges that fit in one block of block bytes together with
// the gap between them, so that they cost one read (one request to the
// remote) instead of several: a remote fetches at least a chunk per request
// anyway. rs comes back sorted by offset.
func coalesce(rs []manifestv1.Range, block int64) []manifestv1.Range {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b manifestv1.Range) int { return cmp.Compare(a.Offset(), b.Offset()) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			if r.Offset() <= last.End() || max(r.End(), last.End())-last.Offset() <= block {
				last[1] = max(last.End(), r.End())
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// descending orders rs from the highest offset down. A ranged prefetch
// reads them in that order so that no read lands just ahead of an earlier
// one: a FUSE client that serves a read from a stream it already has open
// a little before it (rclone reuses a download for reads up to 1 MiB past
// its position, and reads the gap through) would turn ascending ranges a
// few hundred KiB apart into one download of most of the file.
func descending(rs []manifestv1.Range) {
	slices.SortFunc(rs, func(a, b manifestv1.Range) int { return cmp.Compare(b.Offset(), a.Offset()) })
}

// rangeBytes is the bytes rs cover.
func rangeBytes(rs []manifestv1.Range) int64 {
	var n int64
	for _, r := range rs {
		n += r.End() - r.Offset()
	}
	return n
}
