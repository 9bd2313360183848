// Package collector is eddy's node agent in userspace: it keeps the kernel
// recorder's allow-list in step with the opted-in pods on its node, drains
// what the kernel counted every interval, attributes each record to a pod, its
// top-level workload and the dataset the file lies in, ships the result to
// the analyzer as AccessWindows and serves it as Prometheus metrics.
package collector

import (
	"fmt"
	"sync"
	"time"

	"github.com/eddy-autotune/eddy/bpf"
)

// Source is where records come from: the kernel recorder on a node, or a
// replayed trace in tests and offline runs. Implementations must be safe for
// concurrent use by one drainer and one allow-list updater.
type Source interface {
	// Allow starts recording reads by tasks in the cgroup; Disallow stops it.
	// Both are idempotent.
	Allow(cgroupID uint64) error
	Disallow(cgroupID uint64) error
	// AllowTree is Allow for a pod's cgroup, and makes every cgroup created
	// under it from then on (its containers') recorded from its creation;
	// a source that cannot do that allows the cgroup alone.
	AllowTree(cgroupID uint64) error
	// Drain appends to dst everything counted since the previous Drain and
	// resets those counters.
	Drain(dst []bpf.Record) ([]bpf.Record, error)
	// DrainEvents appends to dst the file events received since the previous
	// call, without blocking.
	DrainEvents(dst []bpf.FileEvent) []bpf.FileEvent
	// Stats reports the source's health counters (cumulative since start).
	Stats() SourceStats
}

// SourceStats is a source's health, cumulative since it started.
type SourceStats struct {
	// EventsLost counts file events the kernel could not queue (ring buffer
	// full) or that userspace dropped.
	EventsLost uint64
	// MapFull counts updates the kernel could not make because a map was full.
	MapFull uint64
	// MapEntries and MapCapacity describe the per-file map's fill.
	MapEntries  int
	MapCapacity int
	// Programs reports, per attached program, the time spent running it and
	// how often it ran (kernel.bpf_stats_enabled must be on for non-zero
	// values).
	Programs map[string]ProgramStats
	// MissingHooks names the hooks that could not be attached on this kernel;
	// what they would have counted stays zero.
	MissingHooks []string
	// RawSyscalls is true when the syscall hooks fell back to raw_syscalls
	// (no tracefs): every syscall of the node then runs a program.
	RawSyscalls bool
	// DeferredBatches counts per-thread read batches a drain found busy and
	// left to a later drain.
	DeferredBatches uint64
	// InheritedAllows counts container cgroups the kernel allowed as they
	// were created in an allowed pod's cgroup.
	InheritedAllows uint64
	// ProgramsAttached counts the eBPF programs attached now: the
	// per-syscall and page-cache ones only while a container is observed
	// (bpf.Options.AttachAlways), the cgroup hooks always.
	ProgramsAttached int
}

// ProgramStats is the kernel's accounting for one BPF program.
type ProgramStats struct {
	RunTime  time.Duration
	RunCount uint64
}

// ReplaySource is a Source fed by the caller: records and events pushed into
// it come out of the next Drain and DrainEvents, filtered by the allow-list
// exactly as the kernel filters by cgroup. Tests and offline replays of
// recorded traces use it.
type ReplaySource struct {
	mu      sync.Mutex
	allowed map[uint64]bool
	trees   map[uint64]bool
	records []bpf.Record
	events  []bpf.FileEvent
	stats   SourceStats
}

// NewReplaySource returns an empty ReplaySource that allows no cgroup.
func NewReplaySource() *ReplaySource {
	return &ReplaySource{allowed: map[uint64]bool{}, trees: map[uint64]bool{}}
}

// Allow implements Source.
func (r *ReplaySource) Allow(cgroupID uint64) error {
	if cgroupID == 0 {
		return fmt.Errorf("allow cgroup: id 0 is not a cgroup")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.allowed[cgroupID] = true
	return nil
}

// AllowTree implements Source. A replayed trace has no cgroups being
// created; the tree is only remembered (TreeIDs).
func (r *ReplaySource) AllowTree(cgroupID uint64) error {
	if cgroupID == 0 {
		return fmt.Errorf("allow cgroup tree: id 0 is not a cgroup")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trees[cgroupID] = true
	return nil
}

// TreeIDs returns the cgroups allowed with AllowTree.
func (r *ReplaySource) TreeIDs() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]uint64, 0, len(r.trees))
	for id := range r.trees {
		ids = append(ids, id)
	}
	return ids
}

// Disallow implements Source.
func (r *ReplaySource) Disallow(cgroupID uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.allowed, cgroupID)
	delete(r.trees, cgroupID)
	return nil
}

// AllowedIDs returns the allow-list.
func (r *ReplaySource) AllowedIDs() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]uint64, 0, len(r.allowed))
	for id := range r.allowed {
		ids = append(ids, id)
	}
	return ids
}

// Push queues records and events as if the kernel had counted them now.
// Records and events of cgroups that are not allowed are discarded, as the
// kernel never counts them.
func (r *ReplaySource) Push(records []bpf.Record, events []bpf.FileEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range records {
		if !r.allowed[rec.Key.CgroupID] {
			continue
		}
		r.records = append(r.records, rec)
	}
	for _, ev := range events {
		if r.allowed[ev.Key.CgroupID] {
			r.events = append(r.events, ev)
		}
	}
}

// SetStats sets what Stats reports.
func (r *ReplaySource) SetStats(s SourceStats) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats = s
}

// Drain implements Source.
func (r *ReplaySource) Drain(dst []bpf.Record) ([]bpf.Record, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	dst = append(dst, r.records...)
	r.records = r.records[:0]
	return dst, nil
}

// DrainEvents implements Source.
func (r *ReplaySource) DrainEvents(dst []bpf.FileEvent) []bpf.FileEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	dst = append(dst, r.events...)
	r.events = r.events[:0]
	return dst
}

// Stats implements Source.
func (r *ReplaySource) Stats() SourceStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}
