// Package bpf is the kernel side of eddy's node collector: BPF programs on
// tracepoints that count, per (cgroup, device, inode), how opted-in cgroups
// read and write files, and the Go API that loads them (Load), chooses the
// cgroups (Allow, Disallow), moves the counts out (Drain) and reports rare
// events (Events) and health (Stats, MissingHooks).
//
// Only cgroups in the allow-list cost more than an early exit. Counting
// happens in the kernel; user space sees one Record per file and cgroup per
// drain interval, never one event per read.
package bpf

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -type file_key -type file_stats -type file_event access access.bpf.c

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
	// about 100 ns per recorded read in BenchmarkPread on a small VM).
	NoRunTimeStats bool
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

// hook is one kernel attachment point and the program that serves it.
type hook struct {
	name    string // tracepoint, as reported by MissingHooks
	program string // program name in the ELF
	// essential hooks make Load fail when missing: without them nothing is
	// counted at all.
	essential bool
}

var hooks = []hook{
	{name: "raw_syscalls:sys_enter", program: accessProgOnSysEnter, essential: true},
	{name: "raw_syscalls:sys_exit", program: accessProgOnSysExit, essential: true},
	{name: "filemap:mm_filemap_get_pages", program: accessProgOnFilemapGetPages},
	{name: "filemap:mm_filemap_add_to_page_cache", program: accessProgOnFilemapAdd},
	{name: "filemap:mm_filemap_fault", program: accessProgOnFilemapFault},
	{name: "filemap:mm_filemap_map_pages", program: accessProgOnFilemapMapPages},
}

// Recorder owns the loaded programs and maps. Its methods are safe for
// concurrent use; Drain calls are serialised with each other.
type Recorder struct {
	maps     accessMaps
	programs map[string]*ebpf.Program // by hook name, attached ones only
	links    []link.Link
	missing  []string
	opts     Options

	events    chan FileEvent
	reader    *ringbuf.Reader
	readerWG  sync.WaitGroup
	statsStop io.Closer

	drainMu   sync.Mutex
	batchOK   bool
	keyBuf    []accessFileKey
	valBuf    []accessFileStats
	drained   uint64 // entries removed by Drain, for occupancy
	closeOnce sync.Once
	closeErr  error
}

// Load checks that the kernel and the process can run the programs, loads
// them, and attaches each hook independently. A hook that fails to load or
// attach is logged and listed by MissingHooks, and the Recorder keeps running
// without it; Load fails only when the syscall hooks are missing, when kernel
// BTF or a needed capability is absent, or when the kernel lacks a needed map
// type. Nothing is counted until a cgroup is passed to Allow. Load does not
// touch RLIMIT_MEMLOCK: kernels that have the needed map types (5.11+)
// charge BPF memory to the memory cgroup instead.
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

	r := &Recorder{
		programs: make(map[string]*ebpf.Program),
		opts:     opts,
		batchOK:  true,
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

	for _, h := range hooks {
		if err := r.attach(spec, h, mapReplacements); err != nil {
			if h.essential {
				r.Close()
				return nil, fmt.Errorf("attach %s: %w", h.name, err)
			}
			r.missing = append(r.missing, h.name)
			opts.Logger.Info("hook not attached; recording continues without it", "hook", h.name, "error", err.Error())
		}
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
	return r, nil
}

func (r *Recorder) mapsByName() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		accessMapAllowedCgroups: r.maps.AllowedCgroups,
		accessMapCounters:       r.maps.Counters,
		accessMapEvents:         r.maps.Events,
		accessMapInflight:       r.maps.Inflight,
		accessMapOpenFiles:      r.maps.OpenFiles,
		accessMapSeenFiles:      r.maps.SeenFiles,
		accessMapStatsByFile:    r.maps.StatsByFile,
	}
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
	l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
	if err != nil {
		prog.Close()
		return fmt.Errorf("attach program %s: %w", h.program, err)
	}
	r.programs[h.name] = prog
	r.links = append(r.links, l)
	return nil
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
	if err := r.maps.AllowedCgroups.Put(cgroupID, uint8(1)); err != nil {
		return fmt.Errorf("allow cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// Disallow stops recording for the cgroup; what it recorded so far stays in
// the map until the next Drain. Disallowing an unknown cgroup is not an error.
func (r *Recorder) Disallow(cgroupID uint64) error {
	if err := r.maps.AllowedCgroups.Delete(cgroupID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("disallow cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// drainChunk is the number of entries moved per batch syscall. It must exceed
// the largest hash bucket, or the kernel answers ENOSPC.
const drainChunk = 4096

// Drain moves every entry out of the kernel map: each returned Record holds
// what was counted for its key since the previous Drain, and the key starts
// from zero afterwards. Records are appended to dst, which is returned, so a
// caller can reuse one slice across drains. It uses batch lookup-and-delete,
// or, where the kernel lacks batch operations, iteration and deletion per key.
//
// No count is reported twice. Counts that a program adds to an entry in the
// instant it is drained may be lost, or, rarely, land on an entry created in
// that instant for another key (the kernel reuses deleted entries at once).
// Drain does not wait for Events to be consumed.
func (r *Recorder) Drain(dst []Record) ([]Record, error) {
	r.drainMu.Lock()
	defer r.drainMu.Unlock()
	if r.keyBuf == nil {
		r.keyBuf = make([]accessFileKey, drainChunk)
		r.valBuf = make([]accessFileStats, drainChunk)
	}
	start := len(dst)
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
	return dst, err
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
		ReadOps:         v.ReadOps,
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
	// Programs has one entry per attached hook, sorted by hook. RunCount and
	// RunTime only advance while the kernel's run-time statistics are on
	// (see Options.NoRunTimeStats).
	Programs []ProgramStats
}

// Indexes of the kernel counters array (enum counter_index in access.bpf.c).
const (
	cntDropRingbuf = iota
	cntDropStatsFull
	cntDropTaskState
	cntDropOpenFile
	cntDropSeen
	cntDropFD
	cntStatsInserts
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
		},
		FileCapacity: uint64(r.opts.MaxFiles),
	}
	if c[cntStatsInserts] > drained {
		s.FileEntries = c[cntStatsInserts] - drained
	}
	for name, p := range r.programs {
		ps, err := p.Stats()
		if err != nil {
			return s, fmt.Errorf("read stats of %s: %w", name, err)
		}
		s.Programs = append(s.Programs, ProgramStats{Hook: name, RunCount: ps.RunCount, RunTime: ps.Runtime})
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
		for _, l := range r.links {
			if err := l.Close(); err != nil {
				errs = append(errs, fmt.Errorf("detach: %w", err))
			}
		}
		if r.reader != nil {
			if err := r.reader.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close ring buffer reader: %w", err))
			}
			r.drainEventsUntilClosed()
		}
		for _, p := range r.programs {
			p.Close()
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
