package collector

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	"github.com/eddy-autotune/eddy/bpf"
	"github.com/eddy-autotune/eddy/collector/ship"
	"github.com/eddy-autotune/eddy/internal/workload"
)

// Attributor answers which observed container a cgroup id belongs to: the
// PodIndex on a node, a recorded table of pods when a trace is replayed.
type Attributor interface {
	Lookup(cgroupID uint64) (*PodContainer, bool)
	// Observed reports the containers on the allow-list and the opted-in
	// containers whose cgroup was not found.
	Observed() (observed, pending int)
	// ObservedPods are the pods whose reads are recorded now (their own
	// cgroup or a container's is on the allow-list).
	ObservedPods() []*corev1.Pod
}

// Options configure a Collector. Source, Pods, Workloads, Datasets and Sink
// are required.
type Options struct {
	// Node is the node's name, written into every window.
	Node      string
	Source    Source
	Pods      Attributor
	Workloads *workload.Resolver
	Datasets  *DatasetResolver
	Sink      *ship.Shipper
	// Metrics, when set, gets every window's counters and the health state.
	Metrics *Metrics
	// Interval between drains (default 10s).
	Interval time.Duration
	// ProcRoot is where /proc is mounted (default /proc); relative paths in
	// file events are resolved against /proc/<pid>/cwd, events without a
	// path through /proc/<pid>/fd.
	ProcRoot string
	// MaxPaths bounds the remembered file paths (default 1<<20).
	MaxPaths int
	// HoldUnattributed is how long a drained record whose cgroup no
	// observed container has yet, or whose file's event (its path) has not
	// been taken yet, is kept for a later drain (default 5s; negative: not
	// at all; past it, or at shutdown, a record of a known container goes
	// without its path). The kernel records a container from the
	// instant its cgroup is made, under its pod's allowed cgroup, while the
	// pod index learns which container it is from the kubelet's status and
	// a rate-limited cgroup walk, up to a second or two later: a short
	// Job's reads can all fall in that gap.
	HoldUnattributed time.Duration
	Log              logr.Logger
}

const (
	// eventPoll is the longest a file event waits before its path is resolved.
	eventPoll = 50 * time.Millisecond
	// minLookupBudget is the least time one drain may spend on API lookups.
	minLookupBudget = 5 * time.Second
	// maxHeld bounds the records held for a later drain (760 bytes each:
	// 6 MiB at most); past it they are dropped and counted as unattributed
	// at once.
	maxHeld = 1 << 13
)

// heldRecord is a drained record waiting for its cgroup to be attributed,
// or for its file's path.
type heldRecord struct {
	rec bpf.Record
	// drains is how many drains it has waited.
	drains int
}

// Collector drains a Source on an interval and turns each drain into one
// attributed AccessWindow.
type Collector struct {
	opts  Options
	files *fileTable

	lastEnd   time.Time
	lastStats SourceStats
	records   []bpf.Record
	events    []bpf.FileEvent
	held      []heldRecord
	holdFor   int // drains a record may be held
	// closing is set for the last drain, at shutdown.
	closing bool
	// watching are the pods observed at the previous drain, by UID.
	watching map[types.UID]bool
	// Stats of the whole run, for logs and tests.
	windows, unattributed uint64
}

// New checks opts and returns a Collector.
func New(opts Options) (*Collector, error) {
	switch {
	case opts.Source == nil:
		return nil, errors.New("collector: no record source")
	case opts.Pods == nil:
		return nil, errors.New("collector: no pod index")
	case opts.Workloads == nil:
		return nil, errors.New("collector: no workload resolver")
	case opts.Datasets == nil:
		return nil, errors.New("collector: no dataset resolver")
	case opts.Sink == nil:
		return nil, errors.New("collector: no window sink")
	}
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.HoldUnattributed == 0 {
		opts.HoldUnattributed = 5 * time.Second
	}
	holdFor := 0
	if opts.HoldUnattributed > 0 {
		holdFor = int((opts.HoldUnattributed + opts.Interval - 1) / opts.Interval)
	}
	return &Collector{opts: opts, files: newFileTable(opts.ProcRoot, opts.MaxPaths), lastEnd: time.Now(), holdFor: holdFor}, nil
}

// Run drains every Interval until ctx ends, then drains once more so that
// nothing counted before the end is lost.
func (c *Collector) Run(ctx context.Context) error {
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	// Paths are resolved against /proc/<pid>, so read events soon after they
	// happen, while their processes (often short-lived) still live.
	events := time.NewTicker(min(c.opts.Interval/10, eventPoll))
	defer events.Stop()
	for {
		select {
		case <-ctx.Done():
			// The last drain: what waits only for its path goes without.
			c.closing = true
			_, err := c.Tick(context.WithoutCancel(ctx))
			// Records still held will not be attributed by anyone.
			c.unattributed += uint64(len(c.held))
			c.held = nil
			return err
		case <-events.C:
			c.takeEvents()
		case <-t.C:
			if _, err := c.Tick(ctx); err != nil {
				c.opts.Log.Error(err, "drain")
			}
		}
	}
}

func (c *Collector) takeEvents() {
	c.events = c.opts.Source.DrainEvents(c.events[:0])
	for _, ev := range c.events {
		c.files.add(ev)
	}
}

// Tick drains the source once and hands the window to the sink. It returns
// the window (also when it has no files: an empty window still says the
// node was watched and carries the loss counters).
func (c *Collector) Tick(ctx context.Context) (*accessv1.AccessWindow, error) {
	began := time.Now()
	// Owner and claim lookups must not hold a window back for long: past
	// the deadline they fail fast and the caches' fallbacks answer.
	ctx, cancel := context.WithTimeout(ctx, max(c.opts.Interval, minLookupBudget))
	defer cancel()
	var err error
	c.records, err = c.opts.Source.Drain(c.records[:0])
	if err != nil {
		// What was drained before the error is still counted below.
		err = fmt.Errorf("drain records: %w", err)
	}
	// After the drain: a file's event is sent before any record of it, so
	// the events of every record drained are queued by now (taking them
	// before the drain left the files opened in between without a path:
	// CI saw 8 of a pod's 48 files so lost to its dataset).
	c.takeEvents()
	off := sampleClockOffset()
	end := time.Now()
	recs := make([]attributed, 0, len(c.records)+len(c.held))
	var unattributed, resolveFailures uint64
	workloads := map[types.UID]*accessv1.WorkloadRef{}
	workloadOf := func(pod *corev1.Pod) *accessv1.WorkloadRef {
		if w, ok := workloads[pod.UID]; ok {
			return w
		}
		id, err := c.opts.Workloads.Resolve(ctx, pod)
		if err != nil {
			resolveFailures++
			c.opts.Log.V(1).Info("workload resolved to the highest owner known", "pod", pod.Namespace+"/"+pod.Name, "workload", id.Key(), "error", err.Error())
		}
		w := &accessv1.WorkloadRef{Namespace: id.Namespace, Kind: id.Ref.Kind, ApiVersion: id.Ref.APIVersion, Name: id.Ref.Name, Rule: string(id.Ref.Rule), Object: id.Object}
		workloads[pod.UID] = w
		return w
	}
	// attribute attributes a record to its container and dataset, or
	// reports that it must wait: for its container to be known, or for its
	// file's event (the path), which user space may take after the record
	// (the ring buffer's reader runs on its own); at its last chance it is
	// attributed without the path.
	attribute := func(r *bpf.Record, lastChance bool) bool {
		pc, ok := c.opts.Pods.Lookup(r.Key.CgroupID)
		if !ok {
			return false
		}
		p, seen := c.files.lookup(r.Key)
		if !seen {
			if !lastChance && !c.files.full() {
				return false
			}
			// Its event was lost: the file's next records need not wait.
			c.files.markUnknown(r.Key)
		}
		a := attributed{rec: *r, pod: pc.Pod, container: pc.Container}
		if p != "" {
			a.dataset, a.path = c.opts.Datasets.Resolve(ctx, pc.Pod, pc.Container, p)
		} else {
			a.dataset = c.opts.Datasets.ResolveDevice(ctx, pc.Pod, r.Key.Dev)
		}
		a.workload = workloadOf(pc.Pod)
		recs = append(recs, a)
		return true
	}
	// Records held from earlier drains first, then this drain's; what
	// still has no container waits for a later drain, up to holdFor.
	held := c.held[:0]
	hold := func(h heldRecord) {
		if h.drains >= c.holdFor || len(held) >= maxHeld {
			unattributed++
			return
		}
		held = append(held, h)
	}
	for _, h := range c.held {
		if !attribute(&h.rec, c.closing || h.drains+1 >= c.holdFor) {
			h.drains++
			hold(h)
		}
	}
	for i := range c.records {
		if !attribute(&c.records[i], c.closing || c.holdFor == 0 || len(held) >= maxHeld) {
			hold(heldRecord{rec: c.records[i]})
		}
	}
	c.held = held
	stats := c.opts.Source.Stats()
	dropped := &accessv1.Dropped{
		RingbufEvents:       delta(stats.EventsLost, c.lastStats.EventsLost),
		MapFull:             delta(stats.MapFull, c.lastStats.MapFull),
		UnattributedRecords: unattributed,
	}
	c.lastStats = stats
	w, outside := buildWindow(c.opts.Node, c.lastEnd, end, off, recs, dropped)
	w.Observed = c.watched(workloadOf)
	c.lastEnd = end
	c.windows++
	c.unattributed += unattributed
	if unattributed > 0 {
		c.opts.Log.V(1).Info("records without an observed container", "records", unattributed)
	}
	heldIDs := make(map[uint64]bool, len(c.held))
	for _, h := range c.held {
		heldIDs[h.rec.Key.CgroupID] = true
	}
	c.files.forget(func(id uint64) bool {
		_, ok := c.opts.Pods.Lookup(id)
		return ok || heldIDs[id]
	})
	if c.opts.Metrics != nil {
		observed, pending := c.opts.Pods.Observed()
		c.opts.Metrics.observeWindow(w, stats, windowState{
			unattributed: unattributed, outside: outside, resolveFailures: resolveFailures, observed: observed, pending: pending,
			paths: c.files.len(), held: len(c.held),
		})
		c.opts.Metrics.ObserveDrain(time.Since(began))
	}
	if _, serr := c.opts.Sink.Enqueue(w); serr != nil {
		return w, errors.Join(err, fmt.Errorf("store window: %w", serr))
	}
	return w, err
}

// watched returns the pods observed at this drain and the previous one —
// watched through the whole window, so that a workload of theirs without a
// record in it read nothing — and remembers this drain's.
func (c *Collector) watched(workloadOf func(*corev1.Pod) *accessv1.WorkloadRef) []*accessv1.ObservedPod {
	pods := c.opts.Pods.ObservedPods()
	now := make(map[types.UID]bool, len(pods))
	var out []*accessv1.ObservedPod
	for _, pod := range pods {
		if now[pod.UID] {
			continue
		}
		now[pod.UID] = true
		if c.watching[pod.UID] {
			out = append(out, &accessv1.ObservedPod{Workload: workloadOf(pod), Pod: pod.Name, PodUid: string(pod.UID)})
		}
	}
	c.watching = now
	sort.Slice(out, func(i, j int) bool { return out[i].PodUid < out[j].PodUid })
	return out
}

// delta is how far a cumulative counter moved; a counter that went back
// (the source restarted) counts from zero.
func delta(now, before uint64) uint64 {
	if now < before {
		return now
	}
	return now - before
}
