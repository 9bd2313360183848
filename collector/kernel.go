package collector

import (
	"sync"

	"github.com/go-logr/logr"

	"github.com/eddy-autotune/eddy/bpf"
)

// KernelSource is the Source of a node: the kernel recorder from package bpf.
// It moves the recorder's file events into a bounded queue as they arrive, so
// the ring buffer never waits on the drain interval.
type KernelSource struct {
	rec *bpf.Recorder
	log logr.Logger
	max int

	mu      sync.Mutex
	pending []bpf.FileEvent
	// lost counts events dropped in userspace because the queue was full.
	lost uint64
	done chan struct{}
}

// NewKernelSource wraps a loaded recorder. maxPending bounds the events
// queued between two drains (default 65536); more are counted as lost.
func NewKernelSource(rec *bpf.Recorder, maxPending int, log logr.Logger) *KernelSource {
	if maxPending <= 0 {
		maxPending = 1 << 16
	}
	k := &KernelSource{rec: rec, log: log, max: maxPending, done: make(chan struct{})}
	go k.readEvents()
	return k
}

func (k *KernelSource) readEvents() {
	defer close(k.done)
	for ev := range k.rec.Events() {
		k.mu.Lock()
		if len(k.pending) >= k.max {
			k.lost++
		} else {
			k.pending = append(k.pending, ev)
		}
		k.mu.Unlock()
	}
}

// Allow implements Source.
func (k *KernelSource) Allow(cgroupID uint64) error { return k.rec.Allow(cgroupID) }

// AllowTree implements Source.
func (k *KernelSource) AllowTree(cgroupID uint64) error { return k.rec.AllowTree(cgroupID) }

// Disallow implements Source.
func (k *KernelSource) Disallow(cgroupID uint64) error { return k.rec.Disallow(cgroupID) }

// Drain implements Source.
func (k *KernelSource) Drain(dst []bpf.Record) ([]bpf.Record, error) { return k.rec.Drain(dst) }

// DrainEvents implements Source.
func (k *KernelSource) DrainEvents(dst []bpf.FileEvent) []bpf.FileEvent {
	k.mu.Lock()
	defer k.mu.Unlock()
	dst = append(dst, k.pending...)
	k.pending = k.pending[:0]
	return dst
}

// Stats implements Source. A failure to read the kernel's counters is logged
// and reported as the userspace counters alone.
func (k *KernelSource) Stats() SourceStats {
	k.mu.Lock()
	lost := k.lost
	k.mu.Unlock()
	s := SourceStats{EventsLost: lost, MissingHooks: k.rec.MissingHooks(), RawSyscalls: k.rec.RawSyscalls()}
	st, err := k.rec.Stats()
	if err != nil {
		k.log.Error(err, "read recorder statistics")
	}
	s.EventsLost += st.Drops.RingBuffer
	s.MapFull = st.Drops.StatsMapFull
	s.MapEntries = int(st.FileEntries)
	s.MapCapacity = int(st.FileCapacity)
	s.DeferredBatches = st.DeferredBatches
	s.InheritedAllows = st.InheritedAllows
	s.ProgramsAttached = st.Attached
	s.Programs = make(map[string]ProgramStats, len(st.Programs))
	for _, p := range st.Programs {
		s.Programs[p.Hook] = ProgramStats{RunTime: p.RunTime, RunCount: p.RunCount}
	}
	return s
}

// Close closes the recorder and waits for the event reader to finish.
func (k *KernelSource) Close() error {
	err := k.rec.Close()
	<-k.done
	return err
}
