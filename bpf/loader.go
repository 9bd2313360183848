// Package bpf is the kernel side of eddy's node collector: BPF programs on
// tracepoints that count, per (cgroup, device, inode), how opted-in cgroups
// read and write files, and the Go API that loads them (Load), chooses the
// cgroups (Allow, Disallow), moves the counts out (Drain) and reports rare
// events (Events) and health (Stats, MissingHooks).
//
// Only cgroups in the allow-list cost more than an early exit, and while the
// list is empty the per-read programs are not attached at all. Counting
// happens in the kernel; user space sees one Record per file and cgroup per
// drain interval, never one event per read.
package bpf

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -type file_key -type file_stats -type file_event -type range_key -type range_block access access.bpf.c

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
)

// Defaults for the zero values of Options.
const (
	DefaultMaxFiles        = 16384
	DefaultMaxOpenFiles    = 16384
	DefaultMaxCgroups      = 4096
	DefaultMaxSeenFiles    = 65536
	DefaultMaxRanges       = 65536
	DefaultMaxRangeBlocks  = 256
	DefaultRingBufferBytes = 256 * 1024
	DefaultEventBuffer     = 1024
)

// kernelBTFPath is where the kernel exposes its own type information; CO-RE
// relocations and tp_btf programs need it.
const kernelBTFPath = "/sys/kernel/btf/vmlinux"

// Options configures Load. The zero value is usable: every size has a safe
// default, and a zero Logger discards messages.
type Options struct {
	// MaxFiles bounds the distinct (cgroup, dev, inode) entries kept between
	// two drains; accesses to further files are dropped and counted in
	// Stats().Drops.StatsMapFull. Each entry costs about 850 bytes of kernel
	// memory, allocated at Load. Default DefaultMaxFiles.
	MaxFiles uint32
	// MaxOpenFiles bounds the open files whose read position is tracked to
	// tell sequential from random reads; the least recently used is evicted.
	// Default DefaultMaxOpenFiles.
	MaxOpenFiles uint32
	// MaxRanges bounds the read ranges (Record.Ranges) kept between two
	// drains; further ranges are dropped and counted in
	// Stats().Drops.RangeMapFull. Each costs about 40 bytes of kernel
	// memory. Default DefaultMaxRanges.
	MaxRanges uint32
	// MaxRangeBlocks bounds the range blocks kept between two drains: the
	// ranges of a file read at random are kept per 4 MiB of the file, in a
	// block of 4 KiB of kernel memory allocated at Load, instead of one
	// MaxRanges entry each (cheaper for the reader: the block stays in the
	// CPU's cache). When every block is in use, further ranges go to the
	// MaxRanges entries. Default DefaultMaxRangeBlocks (1 MiB).
	MaxRangeBlocks uint32
	// MaxCgroups bounds the allow-list. Default DefaultMaxCgroups.
	MaxCgroups uint32
	// MaxSeenFiles bounds the (cgroup, dev, inode) keys remembered to send
	// each first-seen event once; an evicted key may be announced again.
	// Default DefaultMaxSeenFiles.
	MaxSeenFiles uint32
	// RingBufferBytes sizes the event ring buffer; it is rounded up to a power
	// of two of at least one page. Default DefaultRingBufferBytes.
	RingBufferBytes uint32
	// EventBuffer is the capacity of the channel returned by Events. Default
	// DefaultEventBuffer.
	EventBuffer int
	// NoRunTimeStats leaves the kernel's per-program run-time accounting off.
	// It is on by default so Stats reports time spent in the programs. The
	// switch is node-wide while any holder keeps it on: it times every BPF
	// program run on the node, not only eddy's (two clock reads per run,
	// 100 to 150 ns per recorded read in BenchmarkPread on a small VM, more
	// than the programs' own work).
	NoRunTimeStats bool
	// RawSyscalls uses the raw_syscalls tracepoints for the syscall hooks even
	// where the syscalls trace events exist. Each traced read then costs less
	// (about 30 to 50 ns in BenchmarkPread on a small VM), but every other
	// syscall on the node, of any process, runs a program while they are
	// attached (about 40 ns more per syscall in BenchmarkOtherSyscalls). It
	// can pay off on a node whose syscalls are mostly the reads of observed
	// pods.
	RawSyscalls bool
	// AttachAlways keeps the per-syscall and page-cache programs attached
	// while no cgroup is allowed. By default they are attached only while
	// the allow-list holds a cgroup (allowed by user space, or by the kernel
	// under an AllowTree cgroup): Allow and AllowTree attach them before
	// they return, and Disallow and Drain detach them once nothing is
	// allowed, so a node with nothing to observe runs none of them. The
	// cgroup hooks and the thread exit hook stay attached either way.
	AttachAlways bool
	// Logger receives warnings about degraded operation (hooks that did not
	// attach, statistics that could not be enabled).
	Logger logr.Logger
}

func (o Options) withDefaults() Options {
	if o.MaxFiles == 0 {
		o.MaxFiles = DefaultMaxFiles
	}
	if o.MaxOpenFiles == 0 {
		o.MaxOpenFiles = DefaultMaxOpenFiles
	}
	if o.MaxRanges == 0 {
		o.MaxRanges = DefaultMaxRanges
	}
	if o.MaxRangeBlocks == 0 {
		o.MaxRangeBlocks = DefaultMaxRangeBlocks
	}
	if o.MaxCgroups == 0 {
		o.MaxCgroups = DefaultMaxCgroups
	}
	if o.MaxSeenFiles == 0 {
		o.MaxSeenFiles = DefaultMaxSeenFiles
	}
	if o.RingBufferBytes == 0 {
		o.RingBufferBytes = DefaultRingBufferBytes
	}
	page := uint32(os.Getpagesize())
	size := page
	for size < o.RingBufferBytes {
		size <<= 1
	}
	o.RingBufferBytes = size
	if o.EventBuffer <= 0 {
		o.EventBuffer = DefaultEventBuffer
	}
	return o
}

// hook is one program and the kernel attachment points it serves.
type hook struct {
	name    string // as reported by MissingHooks and Stats
	program string // program name in the ELF
	// events are the syscalls trace events (tracefs group "syscalls") the
	// program attaches to; a hook without events is a BTF raw tracepoint
	// named in its program's section.
	events []string
	// essential hooks make Load fail when missing: without them nothing is
	// counted at all.
	essential bool
	// always hooks stay attached while nothing is allowed (the others are
	// attached only while something is, unless Options.AttachAlways).
	always bool
}

// syscallEventHooks are the preferred syscall hooks: one trace event per
// traced syscall, so no other syscall runs a program. They attach all or
// none; without them Load falls back to rawSyscallHooks.
var syscallEventHooks = []hook{
	{name: "syscalls:sys_enter_{read,readv}", program: accessProgOnEnterRead,
		events: []string{"sys_enter_read", "sys_enter_readv"}},
	{name: "syscalls:sys_enter_{pread64,preadv,preadv2}", program: accessProgOnEnterPread,
		events: []string{"sys_enter_pread64", "sys_enter_preadv", "sys_enter_preadv2"}},
	{name: "syscalls:sys_exit_{read,pread64,readv,preadv,preadv2}", program: accessProgOnExitRead,
		events: []string{"sys_exit_read", "sys_exit_pread64", "sys_exit_readv", "sys_exit_preadv", "sys_exit_preadv2"}},
	{name: "syscalls:sys_exit_{write,pwrite64,writev,pwritev,pwritev2}", program: accessProgOnExitWrite,
		events: []string{"sys_exit_write", "sys_exit_pwrite64", "sys_exit_writev", "sys_exit_pwritev", "sys_exit_pwritev2"}},
	{name: "syscalls:sys_exit_open", program: accessProgOnExitOpen, events: []string{"sys_exit_open"}},
	{name: "syscalls:sys_exit_{openat,openat2}", program: accessProgOnExitOpenat,
		events: []string{"sys_exit_openat", "sys_exit_openat2"}},
}

// rawSyscallHooks count the same syscalls where the syscalls trace events
// are missing (no CONFIG_FTRACE_SYSCALLS, or tracefs not mounted): every
// syscall on the node then runs them, at least up to the check of its number.
var rawSyscallHooks = []hook{
	{name: "raw_syscalls:sys_enter", program: accessProgOnSysEnter, essential: true},
	{name: "raw_syscalls:sys_exit", program: accessProgOnSysExit, essential: true},
}

// pageCacheHooks are optional: without them the page-cache and mmap
// counters stay zero.
var pageCacheHooks = []hook{
	{name: "filemap:mm_filemap_get_pages", program: accessProgOnFilemapGetPages},
	{name: "filemap:mm_filemap_add_to_page_cache", program: accessProgOnFilemapAdd},
	{name: "filemap:mm_filemap_fault", program: accessProgOnFilemapFault},
	{name: "filemap:mm_filemap_map_pages", program: accessProgOnFilemapMapPages},
	// Reads through file mappings (Record.MappedReadBytes) and the program
	// files among them (Record.ExecFaults); without it they are not seen.
	{name: "exceptions:page_fault_user", program: accessProgOnPageFaultUser},
	// Read wait of mapped reads: without it their wait is not counted.
	{name: "sched:sched_switch", program: accessProgOnSchedSwitch},
}

// cgroupHooks allow a container's cgroup as it is created under a pod's
// cgroup allowed with AllowTree. Without them AllowTree allows the pod's
// cgroup alone, and its containers are recorded only once allowed one by
// one.
var cgroupHooks = []hook{
	{name: "cgroup:cgroup_mkdir", program: accessProgOnCgroupMkdir, always: true},
	{name: "cgroup:cgroup_rmdir", program: accessProgOnCgroupRmdir, always: true},
}

// threadHooks give a thread its state, which every program checks first,
// as it is created in an allowed cgroup or moved into one. Without them such
// a thread is observed from the next Allow or Drain (the sync_threads
// iterator).
var threadHooks = []hook{
	{name: "task:task_newtask", program: accessProgOnTaskNewtask},
	{name: "cgroup:cgroup_attach_task", program: accessProgOnCgroupAttachTask},
}

// taskExitHook flushes the read batch of an exiting thread. Reads are batched
// per thread only when it and the drain iterator are attached; without them
// each read goes to the map at once, as complete but slower.
// It stays attached while nothing is allowed, so that a batch held when the
// other hooks detached is flushed when its thread exits.
var taskExitHook = hook{name: "sched:sched_process_exit", program: accessProgOnTaskExit, always: true}

// batchReads is how many reads of one file a thread adds up before it adds
// them to the shared map; the drain iterator flushes partial batches.
const batchReads = 256

// attachedHook is a loaded program, the hook it serves, and its links to the
// kernel's attachment points while it is attached.
type attachedHook struct {
	hook
	prog  *ebpf.Program
	links []link.Link
}

// Recorder owns the loaded programs and maps. Its methods are safe for
// concurrent use; Drain calls are serialised with each other.
type Recorder struct {
	maps        accessMaps
	attached    []attachedHook
	missing     []string
	rawSyscalls bool
	opts        Options

	// syncer runs the iterator that moves every thread's batch of reads
	// into the map and gives the threads of allowed cgroups their state.
	syncer *link.Iter
	// batched is true when reads are batched per thread.
	batched bool

	// allowMu serialises allow-list changes with the generation bump that
	// tells the programs to look the list up again.
	allowMu  sync.Mutex
	allowGen uint64
	// allowed holds the cgroups user space allowed, and slots their count
	// per filter slot.
	allowed map[uint64]bool
	slots   [allowSlots]uint32
	// linked is true while the hooks that are not always attached are
	// (under allowMu).
	linked bool

	events    chan FileEvent
	reader    *ringbuf.Reader
	readerWG  sync.WaitGroup
	statsStop io.Closer

	drainMu sync.Mutex
	batchOK bool
	keyBuf  []accessFileKey
	// carriedRanges are ranges drained before their record (drainRanges).
	carriedRanges map[FileKey][]ReadRange
	valBuf        []accessFileStats
	drained       uint64 // entries removed by Drain, for occupancy
	closeOnce     sync.Once
	closeErr      error
}

// Load checks that the kernel and the process can run the programs, loads
// them, and attaches the hooks. The syscall hooks are the syscalls trace
// events where tracefs shows them, else the raw_syscalls tracepoints (logged,
// and reported by RawSyscalls; Options.RawSyscalls chooses them too):
// recording is complete either way. Reads are
// batched per thread where the kernel can run the thread exit hook and the
// task iterator that flush the batches (else logged, and every read updates
// the shared map). A page-cache hook that fails to load or attach is logged
// and listed by MissingHooks, and the Recorder keeps running without it. Load
// fails only when no syscall hooks attach, when kernel BTF or a needed
// capability is absent, or when the kernel lacks a needed map type. Nothing
// is counted until a cgroup is passed to Allow, and, unless
// Options.AttachAlways, only the cgroup and thread exit hooks stay attached
// until then (all are attached once during Load, so that a missing hook
// shows at Load). Load does not touch
// RLIMIT_MEMLOCK: kernels that have the needed map types (5.11+) charge BPF
// memory to the memory cgroup instead.
func Load(opts Options) (*Recorder, error) {
	opts = opts.withDefaults()
	if err := checkPrerequisites(); err != nil {
		return nil, err
	}

	spec, err := loadAccess()
	if err != nil {
		return nil, fmt.Errorf("load bpf spec: %w", err)
	}
	sizes := map[string]uint32{
		accessMapAllowedCgroups: opts.MaxCgroups,
		accessMapStatsByFile:    opts.MaxFiles,
		accessMapOpenFiles:      opts.MaxOpenFiles,
		accessMapReadRanges:     opts.MaxRanges,
		accessMapRangeBlocks:    opts.MaxRangeBlocks,
		accessMapSeenFiles:      opts.MaxSeenFiles,
		accessMapEvents:         opts.RingBufferBytes,
	}
	for name, n := range sizes {
		m, ok := spec.Maps[name]
		if !ok {
			return nil, fmt.Errorf("load bpf spec: map %s missing from the object", name)
		}
		m.MaxEntries = n
	}
	if m := spec.Maps[accessMapAllowSlots]; m == nil || m.MaxEntries != 2*allowSlots {
		return nil, fmt.Errorf("load bpf spec: map %s does not have the %d entries loader.go expects (ALLOW_SLOTS in access.bpf.c)", accessMapAllowSlots, 2*allowSlots)
	}

	r := &Recorder{
		opts:    opts,
		batchOK: true,
		allowed: map[uint64]bool{},
	}
	if err := spec.LoadAndAssign(&r.maps, nil); err != nil {
		return nil, fmt.Errorf("create bpf maps: %w", explainLoadError(err))
	}
	mapReplacements := r.mapsByName()

	if !opts.NoRunTimeStats {
		closer, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
		if err != nil {
			opts.Logger.Info("BPF run-time statistics unavailable; Stats will report zero run time", "error", err.Error())
		} else {
			r.statsStop = closer
		}
	}

	useRaw := opts.RawSyscalls
	if !useRaw {
		if err := r.attachSyscallEvents(spec, mapReplacements); err != nil {
			opts.Logger.Info("syscalls trace events unavailable; falling back to raw_syscalls, which runs a program on every syscall of the node (mount tracefs at /sys/kernel/tracing to avoid that)", "error", err.Error())
			useRaw = true
		}
	}
	if useRaw {
		r.rawSyscalls = true
		for _, h := range rawSyscallHooks {
			if err := r.attach(spec, h, mapReplacements); err != nil {
				r.Close()
				return nil, fmt.Errorf("attach %s: %w", h.name, err)
			}
		}
	}
	for _, h := range append(append(append([]hook{}, pageCacheHooks...), threadHooks...), cgroupHooks...) {
		if err := r.attach(spec, h, mapReplacements); err != nil {
			if h.essential {
				r.Close()
				return nil, fmt.Errorf("attach %s: %w", h.name, err)
			}
			r.missing = append(r.missing, h.name)
			opts.Logger.Info("hook not attached; recording continues without it", "hook", h.name, "error", err.Error())
		}
	}

	if err := r.loadSyncer(spec, mapReplacements); err != nil {
		r.Close()
		return nil, err
	}
	if err := r.enableBatching(spec, mapReplacements); err != nil {
		opts.Logger.Info("reads are not batched per thread; every read updates the shared map, which costs more per read", "error", err.Error())
	}

	rd, err := ringbuf.NewReader(r.maps.Events)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("open event ring buffer: %w", err)
	}
	r.reader = rd
	r.events = make(chan FileEvent, opts.EventBuffer)
	r.readerWG.Add(1)
	go r.readEvents()

	// Every hook attached once, so that what this kernel lacks shows now;
	// unless told otherwise, the per-read ones wait for a cgroup to observe.
	r.linked = true
	if !opts.AttachAlways {
		if err := r.unlinkLearning(); err != nil {
			r.Close()
			return nil, err
		}
		opts.Logger.Info("per-syscall and page-cache programs detached until a cgroup is allowed", "programs", len(r.learningHooks()))
	}
	return r, nil
}

// learningHooks are the hooks attached only while a cgroup is allowed.
func (r *Recorder) learningHooks() []*attachedHook {
	var hs []*attachedHook
	for i := range r.attached {
		if !r.attached[i].always {
			hs = append(hs, &r.attached[i])
		}
	}
	return hs
}

// linkLearning attaches the hooks that are attached only while a cgroup is
// allowed, in their order (syscall entries before exits, so that no exit
// runs without its entry), or, on error, none of them. The caller holds
// allowMu or owns r alone. One read can still come out wrong: a read of a
// cgroup allowed again whose entry ran before the last detach and that was
// still blocked when the exits detached leaves its thread's state in flight;
// if that thread's next read began before the entries attached again and
// ends after the exits did, it is counted with the old read's start and
// descriptor.
func (r *Recorder) linkLearning() error {
	if r.linked {
		return nil
	}
	hs := r.learningHooks()
	for i, a := range hs {
		links, err := a.link(a.prog)
		if err != nil {
			for _, b := range hs[:i] {
				_ = closeLinks(b) // best effort: the attach error is what matters
			}
			return fmt.Errorf("attach %s: %w", a.name, err)
		}
		a.links = links
	}
	r.linked = true
	return nil
}

// unlinkLearning detaches the hooks linkLearning attaches, entries first.
func (r *Recorder) unlinkLearning() error {
	if !r.linked {
		return nil
	}
	var errs []error
	for _, a := range r.learningHooks() {
		if err := closeLinks(a); err != nil {
			errs = append(errs, fmt.Errorf("detach %s: %w", a.name, err))
		}
	}
	r.linked = false
	return errors.Join(errs...)
}

func closeLinks(a *attachedHook) error {
	var errs []error
	for _, l := range a.links {
		errs = append(errs, l.Close())
	}
	a.links = nil
	return errors.Join(errs...)
}

// Attached reports whether the per-syscall and page-cache programs are
// attached now (see Options.AttachAlways).
func (r *Recorder) Attached() bool {
	r.allowMu.Lock()
	defer r.allowMu.Unlock()
	return r.linked
}

// attachForAllow attaches the per-read hooks before a cgroup is allowed, so
// that its reads are recorded from the moment Allow returns. The caller
// holds allowMu.
func (r *Recorder) attachForAllow(cgroupID uint64) error {
	if r.linked {
		return nil
	}
	began := time.Now()
	if err := r.linkLearning(); err != nil {
		return err
	}
	r.opts.Logger.Info("attached per-syscall and page-cache programs: a cgroup is allowed", "cgroupID", cgroupID, "programs", len(r.learningHooks()), "took", time.Since(began).String())
	return nil
}

// detachIfNothingAllowed detaches the per-read hooks when no cgroup is
// allowed, neither by user space nor by the kernel under an AllowTree
// cgroup. The kernel adds cgroups only under an AllowTree cgroup user space
// still allows, so once user space allows none, the kernel's entries only go
// (with their cgroups) and a later call sees them gone. The caller holds
// allowMu.
func (r *Recorder) detachIfNothingAllowed() error {
	if r.opts.AttachAlways || !r.linked || len(r.allowed) > 0 {
		return nil
	}
	var id uint64
	var how uint8
	it := r.maps.AllowedCgroups.Iterate()
	for it.Next(&id, &how) {
		if how != deniedInherited {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read allow-list: %w", err)
	}
	if err := r.unlinkLearning(); err != nil {
		return err
	}
	r.opts.Logger.Info("detached per-syscall and page-cache programs: no cgroup is allowed", "programs", len(r.learningHooks()))
	return nil
}

func (r *Recorder) mapsByName() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		accessMapAllowedCgroups: r.maps.AllowedCgroups,
		accessMapAllowSlots:     r.maps.AllowSlots,
		accessMapSettings:       r.maps.Settings,
		accessMapScratchBatch:   r.maps.ScratchBatch,
		accessMapCounters:       r.maps.Counters,
		accessMapEvents:         r.maps.Events,
		accessMapInflight:       r.maps.Inflight,
		accessMapOpenFiles:      r.maps.OpenFiles,
		accessMapReadRanges:     r.maps.ReadRanges,
		accessMapRangeBlocks:    r.maps.RangeBlocks,
		accessMapSeenFiles:      r.maps.SeenFiles,
		accessMapStatsByFile:    r.maps.StatsByFile,
	}
}

// loadSyncer loads the task iterator that flushes read batches and gives
// threads of allowed cgroups their state: without it no thread already
// running when its cgroup is allowed would be observed.
func (r *Recorder) loadSyncer(spec *ebpf.CollectionSpec, maps map[string]*ebpf.Map) error {
	one := ebpf.CollectionSpec{
		Maps:      spec.Maps,
		Programs:  map[string]*ebpf.ProgramSpec{accessProgSyncThreads: spec.Programs[accessProgSyncThreads]},
		Variables: spec.Variables,
		Types:     spec.Types,
		ByteOrder: spec.ByteOrder,
	}
	coll, err := ebpf.NewCollectionWithOptions(&one, ebpf.CollectionOptions{MapReplacements: maps})
	if err != nil {
		return fmt.Errorf("load program %s: %w", accessProgSyncThreads, explainLoadError(err))
	}
	defer coll.Close()
	it, err := link.AttachIter(link.IterOptions{Program: coll.Programs[accessProgSyncThreads]})
	if err != nil {
		return fmt.Errorf("attach task iterator: %w", err)
	}
	r.syncer = it
	return nil
}

// enableBatching attaches the thread exit hook, which flushes the batch of
// an exiting thread (the iterator flushes the others), and then lets the
// programs batch.
func (r *Recorder) enableBatching(spec *ebpf.CollectionSpec, maps map[string]*ebpf.Map) error {
	if err := r.attach(spec, taskExitHook, maps); err != nil {
		return fmt.Errorf("attach %s: %w", taskExitHook.name, err)
	}
	if err := r.maps.Settings.Put(uint32(settingBatch), uint64(batchReads)); err != nil {
		return fmt.Errorf("enable batching: %w", err)
	}
	r.batched = true
	return nil
}

// syncThreads runs the iterator over every thread of the node: it adds each
// thread's batched reads to the map, so a drain that follows sees every read
// done before it, and gives the threads of allowed cgroups that have none
// their state, so they are observed from their next syscall.
//
// Threads moved into an allowed cgroup get their state at their next
// syscall while the kernel's count of such moves differs from the count as
// of the last run, which every thread without state pays for (a cgroup
// lookup per syscall), so a run records the count it started from.
func (r *Recorder) syncThreads() error {
	var moves uint64
	if err := r.maps.Settings.Lookup(uint32(settingMoves), &moves); err != nil {
		return fmt.Errorf("sync threads: read moves: %w", err)
	}
	rd, err := r.syncer.Open()
	if err != nil {
		return fmt.Errorf("sync threads: %w", err)
	}
	defer rd.Close()
	// The iterator writes nothing; reading runs it to the end.
	if _, err := io.Copy(io.Discard, rd); err != nil {
		return fmt.Errorf("sync threads: %w", err)
	}
	if err := r.maps.Settings.Put(uint32(settingMovesAdopted), moves); err != nil {
		return fmt.Errorf("sync threads: record moves: %w", err)
	}
	return nil
}

// attachSyscallEvents attaches every hook of syscallEventHooks or, on
// error, none.
func (r *Recorder) attachSyscallEvents(spec *ebpf.CollectionSpec, maps map[string]*ebpf.Map) error {
	nAttached := len(r.attached)
	for _, h := range syscallEventHooks {
		if err := r.attach(spec, h, maps); err != nil {
			for i := range r.attached[nAttached:] {
				a := &r.attached[nAttached+i]
				_ = closeLinks(a) // best effort: the attach error is what matters
				a.prog.Close()
			}
			r.attached = r.attached[:nAttached]
			return fmt.Errorf("attach %s: %w", h.name, err)
		}
	}
	return nil
}

// attach loads one program against the shared maps and attaches it.
func (r *Recorder) attach(spec *ebpf.CollectionSpec, h hook, maps map[string]*ebpf.Map) error {
	if spec.Programs[h.program] == nil {
		return fmt.Errorf("load program %s: not in the object file", h.program)
	}
	one := ebpf.CollectionSpec{
		Maps:      spec.Maps,
		Programs:  map[string]*ebpf.ProgramSpec{h.program: spec.Programs[h.program]},
		Variables: spec.Variables,
		Types:     spec.Types,
		ByteOrder: spec.ByteOrder,
	}
	coll, err := ebpf.NewCollectionWithOptions(&one, ebpf.CollectionOptions{MapReplacements: maps})
	if err != nil {
		return fmt.Errorf("load program %s: %w", h.program, explainLoadError(err))
	}
	prog := coll.DetachProgram(h.program)
	coll.Close()
	links, err := h.link(prog)
	if err != nil {
		prog.Close()
		return err
	}
	r.attached = append(r.attached, attachedHook{hook: h, prog: prog, links: links})
	return nil
}

// link attaches a loaded program to the hook's attachment points; on error
// nothing stays attached.
func (h hook) link(prog *ebpf.Program) ([]link.Link, error) {
	if len(h.events) == 0 {
		l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			return nil, fmt.Errorf("attach program %s: %w", h.program, err)
		}
		return []link.Link{l}, nil
	}
	var links []link.Link
	for _, ev := range h.events {
		l, err := link.Tracepoint("syscalls", ev, prog, nil)
		if err != nil {
			for _, l := range links {
				l.Close()
			}
			return nil, fmt.Errorf("attach program %s to syscalls:%s: %w", h.program, ev, err)
		}
		links = append(links, l)
	}
	return links, nil
}

// checkPrerequisites names what is missing before any load is attempted, so
// the error says what to do instead of quoting a verifier log.
func checkPrerequisites() error {
	if runtime.GOARCH != "amd64" {
		return fmt.Errorf("load bpf: unsupported architecture %s: the syscall hooks decode x86-64 registers and syscall numbers; run the collector on amd64 nodes", runtime.GOARCH)
	}
	if _, err := os.Stat(kernelBTFPath); err != nil {
		return fmt.Errorf("load bpf: kernel BTF not found at %s (%w): use a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distributions since Linux 5.8)", kernelBTFPath, err)
	}
	if err := checkCapabilities(); err != nil {
		return err
	}
	for _, mt := range []ebpf.MapType{ebpf.RingBuf, ebpf.TaskStorage, ebpf.LRUHash} {
		if err := features.HaveMapType(mt); err != nil {
			return fmt.Errorf("load bpf: kernel lacks BPF map type %s (%w): eddy needs Linux 5.11 or later", mt, err)
		}
	}
	return nil
}

func checkCapabilities() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("load bpf: read process capabilities: %w", err)
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(uint(c)%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) {
		return nil
	}
	var missing []string
	if !has(unix.CAP_BPF) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(unix.CAP_PERFMON) {
		missing = append(missing, "CAP_PERFMON")
	}
	if len(missing) > 0 {
		return fmt.Errorf("load bpf: missing capabilities %v: run as root or grant CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) to the collector", missing)
	}
	return nil
}

// explainLoadError appends the end of the verifier log, where the reason is,
// to a load error.
func explainLoadError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("%w (verifier: %+.5v)", err, ve)
	}
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w: the kernel refused the program; check capabilities and kernel lockdown", err)
	}
	return err
}

// RawSyscalls reports whether the syscall hooks are the raw_syscalls
// tracepoints, because Options.RawSyscalls asked for them or because the
// syscalls trace events were missing. Recording is complete either way, but
// then every syscall on the node, of any process, runs a program while the
// per-syscall programs are attached (about 40 ns each on a small VM) instead
// of only the traced ones.
func (r *Recorder) RawSyscalls() bool {
	return r.rawSyscalls
}

// MissingHooks returns the tracepoints that could not be attached, in a
// stable order; an empty result means the Recorder runs at full fidelity.
// Without filemap hooks, page-cache and mmap counters stay zero.
func (r *Recorder) MissingHooks() []string {
	out := append([]string(nil), r.missing...)
	sort.Strings(out)
	return out
}

// Allow starts recording for the cgroup (v2) with this id, which is the
// inode number of its directory in the cgroup2 file system. Allowing an
// allowed cgroup is not an error.
func (r *Recorder) Allow(cgroupID uint64) error {
	r.allowMu.Lock()
	defer r.allowMu.Unlock()
	return r.allow(cgroupID, allowCgroup)
}

// Values of the kernel's allow-list (ALLOW_* in access.bpf.c).
const (
	allowCgroup     uint8 = 1
	allowTree       uint8 = 2
	allowInherited  uint8 = 3
	deniedInherited uint8 = 4
)

// AllowTree starts recording reads by tasks in the cgroup and in every
// cgroup created under it from now on: allowing a pod's cgroup as soon as
// it exists records its containers from their first read, before their
// ids are known. Cgroups that already exist under it are not included
// (Allow them). Without the cgroup hooks (MissingHooks) it is Allow.
// Disallow stops recording for the cgroup itself; the cgroups allowed under
// it stay allowed until they are removed, or until Disallowed one by one.
func (r *Recorder) AllowTree(cgroupID uint64) error {
	r.allowMu.Lock()
	defer r.allowMu.Unlock()
	return r.allow(cgroupID, allowTree)
}

func (r *Recorder) allow(cgroupID uint64, how uint8) error {
	if err := r.attachForAllow(cgroupID); err != nil {
		return fmt.Errorf("allow cgroup %d: %w", cgroupID, err)
	}
	if err := r.insertAllowed(cgroupID, how); err != nil {
		return fmt.Errorf("allow cgroup %d: %w", cgroupID, err)
	}
	if err := r.bumpAllowGen(); err != nil {
		return fmt.Errorf("allow cgroup %d: %w", cgroupID, err)
	}
	// Threads already in the cgroup: from here on the hooks give new ones
	// their state.
	if err := r.syncThreads(); err != nil {
		return fmt.Errorf("allow cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// insertAllowed puts cgroupID on the allow-list. An entry the kernel made
// (a container cgroup created under an allowed tree) stays the kernel's, so
// that the kernel removes it, and its count in the filter, with the cgroup;
// only AllowTree takes such an entry over, which leaves the kernel's count
// for its filter slot one too high (harmless: a hash lookup for the slot).
func (r *Recorder) insertAllowed(cgroupID uint64, how uint8) error {
	if r.allowed[cgroupID] {
		return r.maps.AllowedCgroups.Put(cgroupID, how)
	}
	// Count the cgroup in its filter slot before the programs can find it
	// in the list, so the filter never hides an allowed cgroup.
	if err := r.putAllowSlot(cgroupID, 1); err != nil {
		return err
	}
	err := r.maps.AllowedCgroups.Update(cgroupID, how, ebpf.UpdateNoExist)
	if errors.Is(err, ebpf.ErrKeyExist) && how == allowTree {
		err = r.maps.AllowedCgroups.Put(cgroupID, how) // takes the kernel's entry over
	}
	if err == nil {
		r.allowed[cgroupID] = true
		return nil
	}
	if uerr := r.putAllowSlot(cgroupID, -1); uerr != nil {
		return errors.Join(err, uerr)
	}
	if !errors.Is(err, ebpf.ErrKeyExist) {
		return err
	}
	// The kernel's entry, maybe denied: allow it again. Gone meanwhile
	// means its cgroup is gone.
	err = r.maps.AllowedCgroups.Update(cgroupID, allowInherited, ebpf.UpdateExist)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}

// Disallow stops recording for the cgroup; what it recorded so far stays in
// the map until the next Drain. Disallowing an unknown cgroup is not an error.
func (r *Recorder) Disallow(cgroupID uint64) error {
	r.allowMu.Lock()
	defer r.allowMu.Unlock()
	if r.allowed[cgroupID] {
		if err := r.maps.AllowedCgroups.Delete(cgroupID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("disallow cgroup %d: %w", cgroupID, err)
		}
		if err := r.putAllowSlot(cgroupID, -1); err != nil {
			return fmt.Errorf("disallow cgroup %d: %w", cgroupID, err)
		}
		delete(r.allowed, cgroupID)
	} else {
		// Maybe the kernel's entry: deny it, and leave it to the kernel to
		// remove with its cgroup.
		err := r.maps.AllowedCgroups.Update(cgroupID, deniedInherited, ebpf.UpdateExist)
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("disallow cgroup %d: %w", cgroupID, err)
		}
	}
	if err := r.bumpAllowGen(); err != nil {
		return fmt.Errorf("disallow cgroup %d: %w", cgroupID, err)
	}
	return r.detachIfNothingAllowed()
}

// allowSlots is the size of each half of the kernel's allow-list filter
// (ALLOW_SLOTS in access.bpf.c): the first half counts, per slot, the
// cgroups user space allowed, the second those the kernel allowed.
const allowSlots = 4096

func allowSlot(cgroupID uint64) uint32 { return uint32(cgroupID & (allowSlots - 1)) }

// putAllowSlot changes the user-space count of cgroupID's filter slot by
// delta. Only user space writes that half, under allowMu, so r.slots holds
// what the kernel holds.
func (r *Recorder) putAllowSlot(cgroupID uint64, delta int32) error {
	slot := allowSlot(cgroupID)
	n := uint32(int32(r.slots[slot]) + delta)
	if err := r.maps.AllowSlots.Put(slot, n); err != nil {
		return fmt.Errorf("update allow-list filter: %w", err)
	}
	r.slots[slot] = n
	return nil
}

// bumpAllowGen invalidates the allow decisions the programs cached per
// thread. It must follow the change to the allow-list.
func (r *Recorder) bumpAllowGen() error {
	r.allowGen++
	if err := r.maps.Settings.Put(uint32(settingAllowGen), r.allowGen); err != nil {
		return fmt.Errorf("bump allow-list generation: %w", err)
	}
	return nil
}

// drainChunk is the number of entries moved per batch syscall. It must exceed
// the largest hash bucket, or the kernel answers ENOSPC.
const drainChunk = 4096

// Drain moves every entry out of the kernel map: each returned Record holds
// what was counted for its key since the previous Drain, and the key starts
// from zero afterwards. It first has the kernel add the reads that threads
// still hold in their per-thread batches (a BPF task iterator), so every read
// that completed before Drain was called is in the result, except, rarely,
// a batch its thread held throughout (Stats().DeferredBatches), which comes
// out of a later Drain. Records are appended to dst, which is returned, so a
// caller can reuse one slice across drains. It uses batch lookup-and-delete,
// or, where the kernel lacks batch operations, iteration and deletion per key.
//
// No count is reported twice. Counts that a program adds to an entry in the
// instant it is drained may be lost, or, rarely, land on an entry created in
// that instant for another key (the kernel reuses deleted entries at once).
// Drain does not wait for Events to be consumed. It detaches the per-read
// programs when no cgroup is allowed any more (see Options.AttachAlways).
func (r *Recorder) Drain(dst []Record) ([]Record, error) {
	r.drainMu.Lock()
	defer r.drainMu.Unlock()
	if r.keyBuf == nil {
		r.keyBuf = make([]accessFileKey, drainChunk)
		r.valBuf = make([]accessFileStats, drainChunk)
	}
	start := len(dst)
	if err := r.syncThreads(); err != nil {
		return dst, err
	}
	var err error
	if r.batchOK {
		dst, err = r.drainBatch(dst)
		if errors.Is(err, ebpf.ErrNotSupported) {
			r.batchOK = false
			r.opts.Logger.Info("batch map operations unsupported; draining entry by entry")
			dst, err = r.drainIterate(dst)
		}
	} else {
		dst, err = r.drainIterate(dst)
	}
	r.drained += uint64(len(dst) - start)
	if err == nil {
		err = r.drainRanges(dst[start:])
	}
	r.allowMu.Lock()
	derr := r.detachIfNothingAllowed()
	r.allowMu.Unlock()
	return dst, errors.Join(err, derr)
}

func (r *Recorder) drainBatch(dst []Record) ([]Record, error) {
	var cursor ebpf.MapBatchCursor
	for {
		n, err := r.maps.StatsByFile.BatchLookupAndDelete(&cursor, r.keyBuf, r.valBuf, nil)
		for i := 0; i < n; i++ {
			dst = append(dst, toRecord(&r.keyBuf[i], &r.valBuf[i]))
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return dst, nil
		}
		if err != nil {
			return dst, fmt.Errorf("drain file map: %w", err)
		}
	}
}

// drainRanges empties the range map and the range blocks into the records
// of the same key. A read's range is noted at once while its counts may wait
// in its thread's batch, so a range whose record is not among recs (its read
// ended after the file map was drained) is carried to the next drain, once:
// after that its record was lost, and so is the range. Ranges from one page
// found in both maps, or carried and drained again, are one range to the
// furthest end.
func (r *Recorder) drainRanges(recs []Record) error {
	byKey := make(map[FileKey]*Record, len(recs))
	for i := range recs {
		byKey[recs[i].Key] = &recs[i]
	}
	carried := r.carriedRanges
	r.carriedRanges = nil
	for fk, rs := range carried {
		if rec := byKey[fk]; rec != nil {
			rec.Ranges = append(rec.Ranges, rs...)
		}
	}
	add := func(fk FileKey, rr ReadRange) {
		if rec := byKey[fk]; rec != nil {
			rec.Ranges = append(rec.Ranges, rr)
			return
		}
		if r.carriedRanges == nil {
			r.carriedRanges = map[FileKey][]ReadRange{}
		}
		r.carriedRanges[fk] = append(r.carriedRanges[fk], rr)
	}
	var (
		k    accessRangeKey
		end  uint64
		keys []accessRangeKey
		it   = r.maps.ReadRanges.Iterate()
	)
	for it.Next(&k, &end) {
		keys = append(keys, k)
		add(rangeFileKey(&k), ReadRange{Offset: k.Page << pageShift, End: end})
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("drain range map: iterate: %w", err)
	}
	for i := range keys {
		if err := r.maps.ReadRanges.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("drain range map: delete: %w", err)
		}
	}
	if err := r.drainRangeBlocks(add); err != nil {
		return err
	}
	for i := range recs {
		recs[i].Ranges = mergeSamePage(recs[i].Ranges)
	}
	return nil
}

// pageShift is log2 of the 4 KiB pages that ranges are keyed by
// (PAGE_SHIFT_4K in access.bpf.c).
const pageShift = 12

func rangeFileKey(k *accessRangeKey) FileKey {
	return FileKey{CgroupID: k.File.CgroupId, Dev: k.File.Dev, Ino: k.File.Ino}
}

// drainRangeBlocks passes the ranges of every range block to add and
// deletes the blocks. Each block is read and deleted in one step, so a range
// noted after is kept for the next drain unless its program still held the
// deleted block.
func (r *Recorder) drainRangeBlocks(add func(FileKey, ReadRange)) error {
	var (
		k    accessRangeKey
		keys []accessRangeKey
		blk  accessRangeBlock
		it   = r.maps.RangeBlocks.Iterate()
	)
	for it.Next(&k, &blk) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("drain range blocks: iterate: %w", err)
	}
	for i := range keys {
		if err := r.maps.RangeBlocks.LookupAndDelete(&keys[i], &blk); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			return fmt.Errorf("drain range blocks: lookup and delete: %w", err)
		}
		fk := rangeFileKey(&keys[i])
		for j, span := range blk.Span {
			if span != 0 {
				off := (keys[i].Page + uint64(j)) << pageShift
				add(fk, ReadRange{Offset: off, End: off + uint64(span)})
			}
		}
	}
	return nil
}

// mergeSamePage sorts ranges by offset and makes those from one offset one
// range to the furthest end.
func mergeSamePage(rs []ReadRange) []ReadRange {
	sort.Slice(rs, func(a, b int) bool { return rs[a].Offset < rs[b].Offset })
	out := rs[:0]
	for _, rr := range rs {
		if n := len(out); n > 0 && out[n-1].Offset == rr.Offset {
			out[n-1].End = max(out[n-1].End, rr.End)
			continue
		}
		out = append(out, rr)
	}
	return out
}

func (r *Recorder) drainIterate(dst []Record) ([]Record, error) {
	var key accessFileKey
	var keys []accessFileKey
	it := r.maps.StatsByFile.Iterate()
	var val accessFileStats
	for it.Next(&key, &val) {
		keys = append(keys, key)
	}
	if err := it.Err(); err != nil {
		return dst, fmt.Errorf("drain file map: iterate: %w", err)
	}
	for i := range keys {
		if err := r.maps.StatsByFile.LookupAndDelete(&keys[i], &val); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			if errors.Is(err, ebpf.ErrNotSupported) {
				if err := r.maps.StatsByFile.Lookup(&keys[i], &val); err != nil {
					continue
				}
				if err := r.maps.StatsByFile.Delete(&keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return dst, fmt.Errorf("drain file map: delete: %w", err)
				}
			} else {
				return dst, fmt.Errorf("drain file map: lookup and delete: %w", err)
			}
		}
		dst = append(dst, toRecord(&keys[i], &val))
	}
	return dst, nil
}

func toRecord(k *accessFileKey, v *accessFileStats) Record {
	return Record{
		Key:             FileKey{CgroupID: k.CgroupId, Dev: k.Dev, Ino: k.Ino},
		ReadOps:         sum(v.ReadSizeLog2[:]),
		ReadBytes:       v.ReadBytes,
		WriteOps:        v.WriteOps,
		WriteBytes:      v.WriteBytes,
		SeqSteps:        v.SeqSteps,
		RandSteps:       v.RandSteps,
		ReadSizeLog2:    v.ReadSizeLog2,
		ReadLatencyLog2: v.ReadLatencyLog2,
		ReadWaitNs:      v.ReadWaitNs,
		PagesRequested:  v.PagesRequested,
		PagesAdded:      v.PagesAdded,
		MmapFaults:      v.MmapFaults,
		MmapPages:       v.MmapPages,
		MappedReadBytes: v.MappedReadBytes,
		ExecFaults:      v.ExecFaults,
		DirectReads:     v.DirectReads,
		Opens:           v.Opens,
		Passes:          v.Passes,
		LastPassNs:      v.LastPassNs,
		FirstNs:         v.FirstNs,
		LastNs:          v.LastNs,
		MaxOffset:       v.MaxOffset,
		FileSize:        v.FileSize,
	}
}

// sum adds a histogram: the kernel counts each read in exactly one read-size
// bucket and keeps no separate read count.
func sum(h []uint64) uint64 {
	var n uint64
	for _, v := range h {
		n += v
	}
	return n
}

// Events returns the channel of first-seen file events. It is closed by
// Close. Events are read from the kernel by a goroutine of the Recorder; when
// the channel is full that goroutine waits, the kernel ring buffer fills, and
// further events are dropped in the kernel and counted in
// Stats().Drops.RingBuffer. Drain never waits on it.
func (r *Recorder) Events() <-chan FileEvent {
	return r.events
}

func (r *Recorder) readEvents() {
	defer r.readerWG.Done()
	defer close(r.events)
	var rec ringbuf.Record
	for {
		if err := r.reader.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			r.opts.Logger.Error(err, "read event ring buffer")
			continue
		}
		ev, err := decodeEvent(rec.RawSample)
		if err != nil {
			r.opts.Logger.Error(err, "decode file event")
			continue
		}
		r.events <- ev
	}
}

func decodeEvent(raw []byte) (FileEvent, error) {
	var e accessFileEvent
	if len(raw) < int(unsafe.Sizeof(e)) {
		return FileEvent{}, fmt.Errorf("decode file event: %d bytes, want %d", len(raw), unsafe.Sizeof(e))
	}
	// Copy rather than cast: the sample carries no alignment guarantee.
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&e)), unsafe.Sizeof(e)), raw)
	n := int(e.PathLen)
	if n > len(e.Path) {
		n = len(e.Path)
	}
	path := unsafe.Slice((*byte)(unsafe.Pointer(&e.Path[0])), len(e.Path))[:n]
	if i := bytes.IndexByte(path, 0); i >= 0 {
		path = path[:i]
	}
	return FileEvent{
		Key:       FileKey{CgroupID: e.CgroupId, Dev: e.Dev, Ino: e.Ino},
		Path:      string(path),
		Truncated: e.Truncated != 0,
		Pid:       e.Pid,
		TimeNs:    e.TimeNs,
	}, nil
}

// Drops counts what the kernel side could not record, since Load.
type Drops struct {
	// RingBuffer counts first-seen events lost because the ring buffer was
	// full (Events not consumed fast enough).
	RingBuffer uint64
	// StatsMapFull counts accesses not counted because the file map held
	// MaxFiles entries; drain more often or raise MaxFiles.
	StatsMapFull uint64
	// TaskState counts read syscalls not counted because per-thread state
	// could not be allocated.
	TaskState uint64
	// OpenFileState counts reads whose sequential/random step could not be
	// tracked.
	OpenFileState uint64
	// SeenMap counts first-seen events not sent because the key could not be
	// remembered; the next open of the file retries.
	SeenMap uint64
	// UnresolvedFD counts syscalls whose file descriptor no longer resolved
	// to a file at syscall exit (closed concurrently).
	UnresolvedFD uint64
	// RangeMapFull counts read ranges not kept because the range map held
	// MaxRanges entries.
	RangeMapFull uint64
}

// ProgramStats is the kernel's accounting for one attached program.
type ProgramStats struct {
	Hook     string
	RunCount uint64
	RunTime  time.Duration
}

// Stats is a snapshot of the Recorder's health.
type Stats struct {
	Drops Drops
	// FileEntries approximates the entries now in the file map (created by
	// the kernel minus removed by Drain); FileCapacity is MaxFiles.
	FileEntries  uint64
	FileCapacity uint64
	// DeferredBatches counts flushes that found a thread's batch of reads
	// held for too long by the thread or another flusher: a drain leaves
	// those reads to a later drain; at thread exit they are lost (the exit
	// and a drain must meet on that very thread for this).
	DeferredBatches uint64
	// InheritedAllows counts cgroups the kernel allowed as they were created
	// under a cgroup allowed with AllowTree.
	InheritedAllows uint64
	// Attached counts the programs attached now; the per-syscall and
	// page-cache ones are only while a cgroup is allowed (see
	// Options.AttachAlways).
	Attached int
	// Programs has one entry per loaded hook, attached or not, sorted by
	// hook. RunCount and
	// RunTime only advance while the kernel's run-time statistics are on
	// (see Options.NoRunTimeStats).
	Programs []ProgramStats
}

// Indexes of the kernel's settings array (enum setting_index in
// access.bpf.c).
const (
	settingAllowGen     = 0
	settingBatch        = 1
	settingMoves        = 2
	settingMovesAdopted = 3
	settingHostRootSB   = 4 // written by the thread iterator only
)

// Indexes of the kernel counters array (enum counter_index in access.bpf.c).
const (
	cntDropRingbuf = iota
	cntDropStatsFull
	cntDropTaskState
	cntDropOpenFile
	cntDropSeen
	cntDropFD
	cntStatsInserts
	cntBatchBusy
	cntAllowInherited
	cntDropRange
	cntMax
)

// Stats reads the drop counters, map occupancy and per-program statistics.
func (r *Recorder) Stats() (Stats, error) {
	var c [cntMax]uint64
	var perCPU []uint64
	for i := uint32(0); i < cntMax; i++ {
		if err := r.maps.Counters.Lookup(i, &perCPU); err != nil {
			return Stats{}, fmt.Errorf("read counter %d: %w", i, err)
		}
		for _, v := range perCPU {
			c[i] += v
		}
	}
	r.drainMu.Lock()
	drained := r.drained
	r.drainMu.Unlock()
	s := Stats{
		Drops: Drops{
			RingBuffer:    c[cntDropRingbuf],
			StatsMapFull:  c[cntDropStatsFull],
			TaskState:     c[cntDropTaskState],
			OpenFileState: c[cntDropOpenFile],
			SeenMap:       c[cntDropSeen],
			UnresolvedFD:  c[cntDropFD],
			RangeMapFull:  c[cntDropRange],
		},
		FileCapacity: uint64(r.opts.MaxFiles),
	}
	s.DeferredBatches = c[cntBatchBusy]
	s.InheritedAllows = c[cntAllowInherited]
	if c[cntStatsInserts] > drained {
		s.FileEntries = c[cntStatsInserts] - drained
	}
	r.allowMu.Lock()
	for _, a := range r.attached {
		if len(a.links) > 0 {
			s.Attached++
		}
	}
	r.allowMu.Unlock()
	for _, a := range r.attached {
		ps, err := a.prog.Stats()
		if err != nil {
			return s, fmt.Errorf("read stats of %s: %w", a.name, err)
		}
		s.Programs = append(s.Programs, ProgramStats{Hook: a.name, RunCount: ps.RunCount, RunTime: ps.Runtime})
	}
	sort.Slice(s.Programs, func(i, j int) bool { return s.Programs[i].Hook < s.Programs[j].Hook })
	return s, nil
}

// Close detaches every hook and frees the maps; recorded but undrained counts
// are lost. The Events channel is closed once the reader goroutine exits.
// Close is idempotent.
func (r *Recorder) Close() error {
	r.closeOnce.Do(func() {
		var errs []error
		for i := range r.attached {
			if err := closeLinks(&r.attached[i]); err != nil {
				errs = append(errs, fmt.Errorf("detach %s: %w", r.attached[i].name, err))
			}
		}
		if r.syncer != nil {
			if err := r.syncer.Close(); err != nil {
				errs = append(errs, fmt.Errorf("detach task iterator: %w", err))
			}
		}
		if r.reader != nil {
			if err := r.reader.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close ring buffer reader: %w", err))
			}
			r.drainEventsUntilClosed()
		}
		for _, a := range r.attached {
			a.prog.Close()
		}
		if err := r.maps.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close maps: %w", err))
		}
		if r.statsStop != nil {
			r.statsStop.Close()
		}
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}

// drainEventsUntilClosed unblocks the reader goroutine if it waits on a full
// channel nobody reads, then waits for it to exit.
func (r *Recorder) drainEventsUntilClosed() {
	done := make(chan struct{})
	go func() {
		r.readerWG.Wait()
		close(done)
	}()
	for {
		select {
		case <-done:
			return
		case _, ok := <-r.events:
			if !ok {
				<-done
				return
			}
		}
	}
}
