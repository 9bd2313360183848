//go:build ignore
// (The constraint keeps the Go tool from treating this file as cgo source.)

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Kernel side of eddy's node collector: counts file reads and writes per
// (cgroup, device, inode) for opted-in cgroups only.
//
// The syscall side prefers the syscalls:sys_{enter,exit}_* trace events, so
// that only the traced syscalls run a program; where they are missing it falls
// back to the raw_syscalls sys_enter/sys_exit BTF tracepoints filtered by
// syscall number, which every syscall on the node runs. The page-cache side
// uses BTF raw tracepoints (tp_btf): they receive typed arguments, so most
// pointer walks are plain loads instead of bpf_probe_read_kernel calls. Both
// syscall paths decode x86-64 registers and syscall numbers.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define READ_SIZE_BUCKETS 32
#define LATENCY_BUCKETS 40
#define PATH_BYTES 256
#define PAGE_SHIFT_4K 12

#define S_IFMT 00170000
#define S_IFREG 0100000
#define O_DIRECT_FLAG 00040000
#define TS_COMPAT_FLAG 0x0002
#define PF_IO_WORKER_FLAG 0x00000010
#define PF_KTHREAD_FLAG 0x00200000
#define EEXIST_ERR 17
#define VM_EXEC_FLAG 0x00000004
#define PF_WRITE_FLAG 0x2
#define TASK_UNINTERRUPTIBLE_STATE 0x2
#define PAGE_BYTES 4096
// The largest gap between two faults of a sequential run through a mapping
// taken for pages mapped without faults (a PMD-sized folio).
#define MAX_FAULT_GAP (2 << 20)

// x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
#define NR_read 0
#define NR_write 1
#define NR_open 2
#define NR_pread64 17
#define NR_pwrite64 18
#define NR_readv 19
#define NR_writev 20
#define NR_openat 257
#define NR_preadv 295
#define NR_pwritev 296
#define NR_preadv2 327
#define NR_pwritev2 328
#define NR_openat2 437

// Indexes into the settings array; mirrored in loader.go.
enum setting_index {
	SETTING_ALLOW_GEN = 0,
	SETTING_BATCH = 1,
	SETTING_MOVES = 2,
	SETTING_MOVES_ADOPTED = 3,
	SETTING_HOST_ROOT_SB = 4,
	SETTING_MAX = 5,
};

// Indexes into the counters array; mirrored in loader.go.
enum counter_index {
	CNT_DROP_RINGBUF = 0,    // ring buffer reserve failed: a first-seen event was lost
	CNT_DROP_STATS_FULL = 1, // stats_by_file full: a read/write/open was not counted
	CNT_DROP_TASK_STATE = 2, // task storage could not be created: a read was not counted
	CNT_DROP_OPEN_FILE = 3,  // per-open-file state could not be stored: one step not classified
	CNT_DROP_SEEN = 4,       // seen map insert failed: an event was not sent (retried on next open)
	CNT_DROP_FD = 5,         // fd did not resolve to a file at syscall exit
	CNT_STATS_INSERTS = 6,   // entries created in stats_by_file (for occupancy)
	CNT_BATCH_BUSY = 7,      // a flush found a thread's batch locked: left to a later drain (lost at thread exit)
	CNT_ALLOW_INHERITED = 8, // cgroups allowed by the kernel as they were created under an allowed tree
	CNT_DROP_RANGE = 9,      // read_ranges full: the range of a read that jumped was not kept
	CNT_MAX = 10,
};

struct file_key {
	__u64 cgroup_id;
	__u64 dev;
	__u64 ino;
};

// A byte range where a read began that did not continue the previous read
// through its open file (a random step, or the first read of an open): the
// file and the 4 KiB page the read began in. The value is the furthest end
// offset of such reads from that page. Sequential reads extend no range, so
// a scan costs one entry per open, and a random reader one per read.
struct range_key {
	struct file_key file;
	__u64 page;
};

// A random reader notes a range on almost every read, each at a page it
// rarely reads again, so a hash entry per range misses the cache on every
// read (about 500 ns a read for fio's 4 KiB random reads of a 64 MiB file).
// Once an open file has jumped RANGE_BLOCK_AFTER times its ranges go to
// range blocks instead: one per RANGE_BLOCK_PAGES pages of a file (keyed by
// a range_key naming the block's first page), holding for each page the
// furthest end of a range from it, as bytes past the page's start (0: no
// range). A block is 4 KiB for 4 MiB of file, so a file read at random
// keeps its blocks' keys and most of their lines in the cache. A range
// fits: a read returns less than 2 GiB. Ranges of a page may be in both
// maps (those noted before the file's open reached RANGE_BLOCK_AFTER); user
// space keeps the furthest end.
#define RANGE_BLOCK_PAGES 1024
#define RANGE_BLOCK_MASK (RANGE_BLOCK_PAGES - 1)
#define RANGE_BLOCK_AFTER 4
struct range_block {
	__u32 span[RANGE_BLOCK_PAGES];
};

// Mirrors bpf.Record after its Key (less ReadOps, the sum of read_size_log2);
// see record.go for the meaning of each field. The fields every read
// updates come first and fill one 64-byte cache line, so that concurrent
// readers of one file contend on as few lines as possible.
struct file_stats {
	__u64 read_bytes;
	__u64 read_wait_ns;
	__u64 pages_requested;
	__u64 seq_steps;
	__u64 rand_steps;
	__u64 last_ns;
	__u64 max_offset;
	__u64 file_size;
	__u64 read_size_log2[READ_SIZE_BUCKETS];
	__u64 read_latency_log2[LATENCY_BUCKETS];
	__u64 write_ops;
	__u64 write_bytes;
	__u64 pages_added;
	__u64 mmap_faults;
	__u64 mmap_pages;
	__u64 direct_reads;
	__u64 opens;
	__u64 passes;
	__u64 last_pass_ns;
	__u64 first_ns;
	__u64 mapped_read_bytes;
	__u64 exec_faults;
};

// read_batch holds one thread's recent reads of one file, added up in the
// layout of the map entry, until flush_batch adds them to stats_by_file: the
// reads in between need no hash lookup and no atomic operation on an entry
// other threads update too. Only the read fields of st are used.
struct read_batch {
	// 1 while the owning thread or a flusher works on the batch (64 bits:
	// BPF's compare-and-swap before -mcpu=v3).
	__u64 lock;
	// Reads in the batch; 0 means empty.
	__u32 reads;
	// Process of the reading thread, for the first-seen event.
	__u32 pid;
	struct file_key key;
	struct file_stats st;
};

// State of one thread that reads in an allowed cgroup: the read syscall in
// flight, and the batch of its reads not yet in stats_by_file. It is kept in
// task storage so the hot path needs no hash lookup and no delete at exit.
//
// A thread without this state is not observed: every program stops there,
// so another pod's syscall loads nothing beyond its own task (the state
// pointer is a field of the task) and one settings line. For that to hold, a
// thread gets its state as soon as its cgroup is allowed: when it is created
// in an allowed cgroup (on_task_newtask); when it moves into one, at its
// next syscall (on_cgroup_attach_task cannot allocate: it runs under a spin
// lock with interrupts off, so it counts a pending move, and until user
// space has run the iterator past it every thread without state looks its
// cgroup up, as all did before); and, for the threads already there when
// user space allows a cgroup or any the hooks missed, from the task iterator
// that user space runs after every Allow and before every Drain
// (sync_threads).
struct inflight_read {
	__u64 start_ns;
	// The thread's cgroup and whether it was allowed, as of the allow-list's
	// generation allow_gen (settings[SETTING_ALLOW_GEN]) while the thread's
	// css_set was css_set: the list need not be looked up again until
	// either changes. The css_set is a field of the task (the cgroup id is
	// two loads further, each a cache miss at a syscall's entry); a thread
	// that moves has css_set reset (on_cgroup_attach_task), so an address
	// reused by a later css_set is never mistaken for the old one.
	__u64 cgroup_id;
	__u64 css_set;
	__u64 allow_gen;
	__u64 pages_added;
	// The syscall's file descriptor and explicit offset (-1: the file
	// position), saved at entry because the exit event lacks them.
	__s64 pos;
	__u32 fd;
	__u8 allowed;
	__u8 active;
	// Set when the read went through the page cache
	// (mm_filemap_get_pages fired during it).
	__u8 buffered;
	__u8 _pad;
	// The thread's latest read fault on a file mapping: when it began
	// (0: none pending), when the thread last blocked during it, the page
	// it faulted, its file, and the open file it maps (for the step).
	// fault_window is set until fault-around for that fault is counted;
	// fault_seq when the fault continued the previous read of the file.
	__u64 fault_ns;
	__u64 fault_blocked_ns;
	__u64 fault_page;
	__u64 fault_file;
	struct file_key fault_key;
	__u8 fault_window;
	__u8 fault_seq;
	__u8 _pad2[6];
	struct read_batch batch;
};

#define NOT_READ ((__u64)-1)

// Where the next sequential read of one open file description would begin.
struct open_file_state {
	// NOT_READ: nothing read through it since it was opened.
	__u64 next_offset;
	// 1 + the page of the latest read fault through a mapping of it (0:
	// none), so that the same fault seen twice counts once.
	__u64 last_fault;
	// Set when that fault continued a sequential run.
	__u64 fault_seq_run;
	// Reads through this open file that jumped, up to RANGE_BLOCK_AFTER.
	__u64 jumps;
};

struct file_event {
	__u64 cgroup_id;
	__u64 dev;
	__u64 ino;
	__u64 time_ns;
	__u32 pid;
	__u16 path_len;
	__u8 truncated;
	__u8 _pad;
	char path[PATH_BYTES];
};

// max_entries of the hash maps are placeholders: the loader sets them.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} allowed_cgroups SEC(".maps");

// Values of allowed_cgroups. ALLOW_TREE marks a pod's cgroup: the cgroups
// created under it afterwards (its containers', before any process runs in
// them) are allowed by on_cgroup_mkdir with ALLOW_INHERITED, and removed
// with their cgroup by on_cgroup_rmdir. So a container is recorded from its
// first read, however late user space learns its id. User space leaves the
// kernel's entries to the kernel: it stops recording one (eddy's own
// containers) by marking it DENIED_INHERITED, and allowing it again marks
// it ALLOW_INHERITED, so that on_cgroup_rmdir still removes it and its count
// in allow_slots.
#define ALLOW_CGROUP 1
#define ALLOW_TREE 2
#define ALLOW_INHERITED 3
#define DENIED_INHERITED 4

// allow_slots is a counting filter in front of allowed_cgroups: slot
// (id & ALLOW_SLOT_MASK) counts the allowed cgroups whose id maps to it, and
// when it is zero the cgroup is certainly not allowed, which an inlined array
// load tells without a hash lookup (for a thread created or moved on the
// node, and for a thread's first decision). The first ALLOW_SLOTS elements
// count the cgroups user space allowed (it rewrites them); the next
// ALLOW_SLOTS count those the kernel allowed under an allowed tree (atomic
// adds, here only), so neither side overwrites the other's counts. Counts rise before an insert into
// allowed_cgroups and fall after a delete; a slot that overcounts only costs
// a hash lookup, never a read.
#define ALLOW_SLOTS 4096
#define ALLOW_SLOT_MASK (ALLOW_SLOTS - 1)
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * ALLOW_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} allow_slots SEC(".maps");

// Values user space sets for the programs. settings[SETTING_ALLOW_GEN] is
// the allow-list's generation: user space bumps it after every change to
// allowed_cgroups. settings[SETTING_BATCH] is how many reads a thread may
// batch before flushing them (0 or 1: every read is added at once); user
// space raises it only once everything that flushes batches (thread exit,
// the drain iterator) is attached. settings[SETTING_MOVES] counts moves of
// threads into allowed cgroups (on_cgroup_attach_task);
// settings[SETTING_MOVES_ADOPTED] is that count as of the start of the last
// iterator run, so while they differ a moved thread may lack its state.
// settings[SETTING_HOST_ROOT_SB] is the address of the host's root file
// system's super_block (kernel threads' root), set by the thread iterator, which
// runs at every Allow before a thread of the cgroup is observed; while it is
// 0 no file is left out as a container's own (on_own_root).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SETTING_MAX);
	__type(key, __u32);
	__type(value, __u64);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct file_key);
	__type(value, struct file_stats);
} stats_by_file SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct open_file_state);
} open_files SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct range_key);
	__type(value, __u64);
} read_ranges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct range_key);
	__type(value, struct range_block);
} range_blocks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct file_key);
	__type(value, __u8);
} seen_files SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct inflight_read);
} inflight SEC(".maps");

// A batch of one read, for a thread whose own batch a flusher holds.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct read_batch);
} scratch_batch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

// Template for new file_stats entries: too large for the 512-byte stack.
const struct file_stats zero_stats = {};
const struct range_block zero_block = {};

// The ring buffer is untyped, so without this global the event struct would
// not be in BTF and bpf2go could not emit its Go type (-type file_event).
const struct file_event *unused_file_event __attribute__((unused));

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
extern int bpf_iter_task_new(struct bpf_iter_task *it, struct task_struct *task, unsigned int flags) __ksym;
extern struct task_struct *bpf_iter_task_next(struct bpf_iter_task *it) __ksym;
extern void bpf_iter_task_destroy(struct bpf_iter_task *it) __ksym;

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &idx);
	if (c)
		*c += 1;
}

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;
	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { r += 1; }
	return r;
}

// kernel_allow_slot is the kernel's count for the slot of cgid.
static __always_inline __u32 *kernel_allow_slot(__u64 cgid)
{
	__u32 slot = ALLOW_SLOTS + (cgid & ALLOW_SLOT_MASK);
	return bpf_map_lookup_elem(&allow_slots, &slot);
}

// maybe_allowed is false when the cgroup is certainly not allowed.
static __always_inline bool maybe_allowed(__u64 cgid)
{
	__u32 slot = cgid & ALLOW_SLOT_MASK;
	__u32 *n = bpf_map_lookup_elem(&allow_slots, &slot);
	if (n && *n)
		return true;
	n = kernel_allow_slot(cgid);
	return n && *n;
}

static __always_inline bool cgroup_allowed(__u64 cgid)
{
	if (!maybe_allowed(cgid))
		return false;
	__u8 *v = bpf_map_lookup_elem(&allowed_cgroups, &cgid);
	return v && *v != DENIED_INHERITED;
}

// fd_file returns the struct file behind fd in the current task's table, and
// its raw address for keying, or NULL. One probe read is needed because the
// fd array is a pointer-to-pointer, which BTF loads treat as a scalar; the
// rest are direct (fault-safe) loads.
static __always_inline struct file *fd_file(struct task_struct *task, __u64 fd, __u64 *addr)
{
	struct files_struct *files = task->files;
	if (!files)
		return NULL;
	struct fdtable *fdt = files->fdt;
	if (!fdt || fd >= fdt->max_fds)
		return NULL;
	struct file **fds = fdt->fd;
	__u64 f = 0;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return NULL;
	*addr = f;
	return bpf_rdonly_cast((void *)f, bpf_core_type_id_kernel(struct file));
}

static __always_inline bool inode_key(struct inode *inode, __u64 cgid, struct file_key *k)
{
	if (!inode)
		return false;
	k->cgroup_id = cgid;
	k->dev = inode->i_sb->s_dev;
	k->ino = inode->i_ino;
	return true;
}

// on_own_root reports whether a file on the file system sb (a struct
// super_block's address) lies on the reading task's own root file system
// while that root is not the host's: a container's image (its overlay),
// never data, since data reaches a container through its volumes, which
// are other mounts. Python's imports, a program's libraries and binary are
// left out here, before any map, event or path copy, instead of being
// recorded and dropped by user space as outside every volume. A process
// whose root is the host's (eddy profile's, or one chrooted into a folder of
// the host's file system) is recorded as before. The root is read at each
// access, not cached: a container's first process joins its cgroup before
// it moves into its root.
static __always_inline bool on_own_root(struct task_struct *task, __u64 sb)
{
	struct fs_struct *fs = task->fs;
	if (!fs)
		return false;
	__u64 root = (__u64)fs->root.mnt->mnt_sb;
	if (sb != root)
		return false;
	__u32 idx = SETTING_HOST_ROOT_SB;
	__u64 *host = bpf_map_lookup_elem(&settings, &idx);
	return host && *host && *host != root;
}

// emit_first_seen sends one event per (cgroup, dev, ino) for as long as the
// key stays in seen_files. upath may be NULL when the first access is a read
// of a file opened before the cgroup was allowed.
static __always_inline void emit_first_seen(struct file_key *k, const char *upath, __u64 now, __u32 pid)
{
	if (bpf_map_lookup_elem(&seen_files, k))
		return;
	__u8 one = 1;
	long err = bpf_map_update_elem(&seen_files, k, &one, BPF_NOEXIST);
	if (err) {
		// EEXIST: another CPU announced the key first.
		if (err != -EEXIST_ERR)
			count(CNT_DROP_SEEN);
		return;
	}
	struct file_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		// Forget the key so the next access retries the event.
		bpf_map_delete_elem(&seen_files, k);
		count(CNT_DROP_RINGBUF);
		return;
	}
	ev->cgroup_id = k->cgroup_id;
	ev->dev = k->dev;
	ev->ino = k->ino;
	ev->time_ns = now;
	ev->pid = pid;
	ev->path_len = 0;
	ev->truncated = 0;
	ev->_pad = 0;
	ev->path[0] = 0;
	if (upath) {
		long n = bpf_probe_read_user_str(ev->path, sizeof(ev->path), upath);
		if (n > 0) {
			ev->path_len = n - 1;
			if (n == sizeof(ev->path)) {
				char next = 0;
				bpf_probe_read_user(&next, 1, upath + sizeof(ev->path) - 1);
				ev->truncated = next != 0;
			}
		}
	}
	bpf_ringbuf_submit(ev, 0);
}

static __always_inline __u32 current_pid(void)
{
	return bpf_get_current_pid_tgid() >> 32;
}

// stats_for returns the entry for k, creating it (first access at now) if
// absent; a created entry also emits the first-seen event (without a path,
// for process pid) when announce is set. NULL means the map is full.
static __always_inline struct file_stats *stats_for_pid(struct file_key *k, __u64 now, bool announce, __u32 pid)
{
	struct file_stats *s = bpf_map_lookup_elem(&stats_by_file, k);
	if (s)
		return s;
	long err = bpf_map_update_elem(&stats_by_file, k, &zero_stats, BPF_NOEXIST);
	if (err && err != -EEXIST_ERR) {
		count(CNT_DROP_STATS_FULL);
		return NULL;
	}
	s = bpf_map_lookup_elem(&stats_by_file, k);
	if (!s)
		return NULL;
	if (!err) {
		s->first_ns = now;
		count(CNT_STATS_INSERTS);
		if (announce)
			emit_first_seen(k, NULL, now, pid);
	}
	return s;
}

static __always_inline struct file_stats *stats_for(struct file_key *k, __u64 now, bool announce)
{
	return stats_for_pid(k, now, announce, current_pid());
}

static __always_inline void touch(struct file_stats *s, struct inode *inode, __u64 now)
{
	s->last_ns = now;
	__u64 size = inode->i_size;
	if (s->file_size != size)
		s->file_size = size;
}

// Layout of the syscalls:sys_enter_* and sys_exit_* trace events: the common
// header (8 bytes), the syscall number, then the arguments or the return
// value, each widened to 8 bytes.
struct syscall_enter_ctx {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__u64 args[6];
};

struct syscall_exit_ctx {
	__u64 common;
	__s32 nr;
	__u32 pad;
	__s64 ret;
};

// thread_state returns the thread's state, or NULL for a thread that is not
// observed. The state pointer is loaded from the task first: for a thread
// without it (every other pod's) that is all a program touches.
static __always_inline struct inflight_read *thread_state(struct task_struct *task)
{
	if (!task->bpf_storage)
		return NULL;
	return bpf_task_storage_get(&inflight, task, 0, 0);
}

static __always_inline __u64 allow_gen(void)
{
	__u32 idx = SETTING_ALLOW_GEN;
	__u64 *genp = bpf_map_lookup_elem(&settings, &idx);
	return genp ? *genp : 0;
}

// set_allowed caches whether the thread's cgroup is allowed, and returns it.
static __always_inline bool set_allowed(struct task_struct *task, struct inflight_read *in, __u64 gen)
{
	struct css_set *css = task->cgroups;
	__u64 cgid = css->dfl_cgrp->kn->id;
	in->cgroup_id = cgid;
	in->css_set = (__u64)css;
	in->allow_gen = gen;
	in->allowed = cgroup_allowed(cgid);
	return in->allowed;
}

// thread_allowed reports whether the thread whose state is in is in an
// allowed cgroup (in->cgroup_id), from the decision cached in its state
// while neither its css_set nor the allow-list changed, so the allow-list's
// hash is looked up once per thread and change.
static __always_inline bool thread_allowed(struct task_struct *task, struct inflight_read *in)
{
	// Read the generation before the allow-list: a decision cached under a
	// generation never predates the list as of that generation.
	__u64 gen = allow_gen();
	if (in->css_set != (__u64)task->cgroups || in->allow_gen != gen)
		return set_allowed(task, in, gen);
	return in->allowed;
}

// adopt_thread gives task its state if its cgroup is allowed and it has
// none yet, and returns its state. moved marks a thread that just changed
// cgroups, in a context that cannot allocate: a state it already has
// decides again at its next syscall, and one it lacks is left to that
// syscall (counted in settings[SETTING_MOVES]).
static __always_inline struct inflight_read *adopt_thread(struct task_struct *task, bool moved)
{
	struct inflight_read *in = thread_state(task);
	if (in) {
		if (moved)
			in->css_set = 0;
		return in;
	}
	__u64 cgid = task->cgroups->dfl_cgrp->kn->id;
	if (!cgroup_allowed(cgid))
		return NULL;
	if (moved) {
		__u32 idx = SETTING_MOVES;
		__u64 *moves = bpf_map_lookup_elem(&settings, &idx);
		if (moves)
			__sync_fetch_and_add(moves, 1);
		return NULL;
	}
	in = bpf_task_storage_get(&inflight, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!in) {
		count(CNT_DROP_TASK_STATE);
		return NULL;
	}
	set_allowed(task, in, allow_gen());
	return in;
}

// moves_pending is true while a thread moved into an allowed cgroup may
// still lack its state.
static __always_inline bool moves_pending(void)
{
	__u32 idx = SETTING_MOVES;
	__u64 *moves = bpf_map_lookup_elem(&settings, &idx);
	idx = SETTING_MOVES_ADOPTED;
	__u64 *adopted = bpf_map_lookup_elem(&settings, &idx);
	return moves && adopted && *moves != *adopted;
}

// own_state is thread_state for the current thread in a syscall, which may
// allocate: a thread that moved into an allowed cgroup gets its state here.
static __always_inline struct inflight_read *own_state(struct task_struct *task)
{
	struct inflight_read *in = thread_state(task);
	if (in || !moves_pending())
		return in;
	return adopt_thread(task, false);
}

// observed_thread returns the state of the current thread when its cgroup
// is allowed, else NULL.
static __always_inline struct inflight_read *observed_thread(struct task_struct *task)
{
	struct inflight_read *in = own_state(task);
	if (!in || !thread_allowed(task, in))
		return NULL;
	return in;
}


// enter_read starts tracking one read syscall of the current thread. pos is
// the explicit offset of the p* calls, -1 for read and readv.
static __always_inline int enter_read(struct task_struct *task, __u64 fd, __s64 pos)
{
	// Threads without state, every other pod's, stop here. A thread that
	// moved out of an allowed cgroup keeps its state, inactive.
	struct inflight_read *in = observed_thread(task);
	if (!in)
		return 0;
	in->start_ns = bpf_ktime_get_ns();
	// Blocking from here on is the read's, not an earlier fault's.
	in->fault_ns = 0;
	in->fault_blocked_ns = 0;
	in->pos = pos;
	in->fd = fd;
	in->buffered = 0;
	in->pages_added = 0;
	in->active = 1;
	return 0;
}

#define ADD_IF(dst, src) \
	do { \
		if (src) \
			__sync_fetch_and_add(&(dst), (src)); \
	} while (0)

// flush_batch adds a batch to stats_by_file and empties it. The caller holds
// the batch's lock.
static __always_inline void flush_batch(struct read_batch *b)
{
	if (!b->reads)
		return;
	struct file_stats *t = &b->st;
	struct file_stats *s = stats_for_pid(&b->key, t->first_ns, true, b->pid);
	if (s) {
		ADD_IF(s->read_bytes, t->read_bytes);
		ADD_IF(s->read_wait_ns, t->read_wait_ns);
		ADD_IF(s->pages_requested, t->pages_requested);
		ADD_IF(s->seq_steps, t->seq_steps);
		ADD_IF(s->rand_steps, t->rand_steps);
		ADD_IF(s->pages_added, t->pages_added);
		ADD_IF(s->direct_reads, t->direct_reads);
		ADD_IF(s->passes, t->passes);
		for (int i = 0; i < READ_SIZE_BUCKETS; i++)
			ADD_IF(s->read_size_log2[i], t->read_size_log2[i]);
		for (int i = 0; i < LATENCY_BUCKETS; i++)
			ADD_IF(s->read_latency_log2[i], t->read_latency_log2[i]);
		// Racy maxima, as for single reads: a concurrent update may be
		// overwritten within the same window.
		if (t->last_pass_ns > s->last_pass_ns)
			s->last_pass_ns = t->last_pass_ns;
		if (t->max_offset > s->max_offset)
			s->max_offset = t->max_offset;
		if (t->last_ns > s->last_ns) {
			s->last_ns = t->last_ns;
			s->file_size = t->file_size;
		}
	}
	__u64 *w = (__u64 *)t;
	for (int i = 0; i < sizeof(*t) / sizeof(__u64); i++)
		w[i] = 0;
	b->reads = 0;
}

// lock_batch takes a batch's lock, trying a bounded number of times: the
// holder keeps it for one read or one flush.
static __always_inline bool lock_batch(struct read_batch *b, int tries)
{
	for (int i = 0; i < tries; i++) {
		if (__sync_val_compare_and_swap(&b->lock, 0, 1) == 0)
			return true;
	}
	return false;
}

// unlock_batch releases the lock with a plain store: on x86-64 (the only
// architecture the syscall hooks support) stores are not reordered with
// earlier loads and stores, so the compiler barrier is all a release needs.
static __always_inline void unlock_batch(struct read_batch *b)
{
	asm volatile("" ::: "memory");
	*(volatile __u64 *)&b->lock = 0;
}

static __always_inline __u64 batch_limit(void)
{
	__u32 idx = SETTING_BATCH;
	__u64 *n = bpf_map_lookup_elem(&settings, &idx);
	return n ? *n : 0;
}

// note_block_range notes a range in its range block, creating the block if
// needed; false when the block map is full.
static __always_inline bool note_block_range(struct file_key *k, __u64 page, __u64 span)
{
	if (span > 0xffffffff)
		return false;
	struct range_key bk = { .file = *k, .page = page & ~(__u64)RANGE_BLOCK_MASK };
	struct range_block *b = bpf_map_lookup_elem(&range_blocks, &bk);
	if (!b) {
		bpf_map_update_elem(&range_blocks, &bk, &zero_block, BPF_NOEXIST);
		b = bpf_map_lookup_elem(&range_blocks, &bk);
		if (!b)
			return false;
	}
	__u32 *e = &b->span[page & RANGE_BLOCK_MASK];
	if (span > *e)
		*e = span; // racy max, as below
	return true;
}

// note_range keeps where a read that jumped began and how far it reached,
// so a prefetcher can later read exactly those ranges of the file: in the
// file's range blocks once its open file has jumped often (block set), else,
// or when the block map is full, in read_ranges.
static __always_inline void note_range(struct file_key *k, __u64 off, __u64 end, bool block)
{
	__u64 page = off >> PAGE_SHIFT_4K;
	if (block && note_block_range(k, page, end - (page << PAGE_SHIFT_4K)))
		return;
	struct range_key rk = { .file = *k, .page = page };
	__u64 *e = bpf_map_lookup_elem(&read_ranges, &rk);
	if (e) {
		if (end > *e)
			*e = end; // racy max: a lost update shortens one range
		return;
	}
	if (bpf_map_update_elem(&read_ranges, &rk, &end, BPF_NOEXIST) && !bpf_map_lookup_elem(&read_ranges, &rk))
		count(CNT_DROP_RANGE);
}

static __always_inline int exit_read(long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct inflight_read *in = thread_state(task);
	if (!in || !in->active)
		return 0;
	in->active = 0;
	if (ret < 0)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 faddr = 0;
	struct file *f = fd_file(task, in->fd, &faddr);
	if (!f) {
		count(CNT_DROP_FD);
		return 0;
	}
	struct inode *inode = f->f_inode;
	if (!inode || (inode->i_mode & S_IFMT) != S_IFREG)
		return 0;
	if (on_own_root(task, (__u64)inode->i_sb))
		return 0;

	// Start offset: the explicit position for the p* calls, else the file
	// position after the read minus what was read.
	__u64 bytes = ret;
	__s64 off = in->pos;
	if (off < 0)
		off = f->f_pos - bytes;
	__u64 end = off + bytes;

	struct file_key k = {};
	if (!inode_key(inode, in->cgroup_id, &k))
		return 0;

	// Classify the step against the previous read through this open file.
	// The position is kept per open file, not per thread: thread pools
	// (Go's, tokio's blocking pool) move one sequential reader across
	// threads, and a per-thread position would call its reads random.
	int step = 0; // 1 sequential, 2 random, 0 first read: no step
	bool block = false;
	struct open_file_state *of = bpf_map_lookup_elem(&open_files, &faddr);
	if (of) {
		if (of->next_offset != NOT_READ)
			step = of->next_offset == (__u64)off ? 1 : 2;
		of->next_offset = end;
		if (step == 2 && of->jumps < RANGE_BLOCK_AFTER)
			of->jumps++;
		block = of->jumps >= RANGE_BLOCK_AFTER;
	} else {
		struct open_file_state st = { .next_offset = end };
		if (bpf_map_update_elem(&open_files, &faddr, &st, BPF_ANY))
			count(CNT_DROP_OPEN_FILE);
	}
	if (step != 1 && bytes)
		note_range(&k, off, end, block);

	struct read_batch *b = &in->batch;
	bool own = lock_batch(b, 1);
	if (!own) {
		// A flusher holds this thread's batch: count the read alone.
		__u32 zero = 0;
		b = bpf_map_lookup_elem(&scratch_batch, &zero);
		if (!b)
			return 0;
	}
	__u64 limit = batch_limit();
	if (b->reads && (b->reads >= limit || b->key.cgroup_id != k.cgroup_id || b->key.ino != k.ino || b->key.dev != k.dev))
		flush_batch(b);

	struct file_stats *t = &b->st;
	if (!b->reads) {
		b->key = k;
		b->pid = current_pid();
		t->first_ns = now;
	}
	b->reads++;
	__u64 lat = now - in->start_ns;
	__u32 sb = bytes ? log2_u64(bytes) : 0;
	if (sb >= READ_SIZE_BUCKETS)
		sb = READ_SIZE_BUCKETS - 1;
	__u32 lb = lat ? log2_u64(lat) : 0;
	if (lb >= LATENCY_BUCKETS)
		lb = LATENCY_BUCKETS - 1;
	// Every counted read lands in exactly one read_size_log2 bucket, so the
	// loader derives the read count from that histogram.
	t->read_bytes += bytes;
	t->read_size_log2[sb]++;
	t->read_latency_log2[lb]++;
	t->read_wait_ns += lat;
	// The pages a buffered read asked the cache for are those its bytes
	// span. The tracepoint's own ranges cannot be summed: a large read calls
	// filemap_get_pages once per batch of folios, each time with the range
	// up to the end of the request (past EOF, too), and a call that returns
	// a partial batch after an error is not traced at all.
	if (in->buffered && bytes)
		t->pages_requested += ((end - 1) >> PAGE_SHIFT_4K) - ((__u64)off >> PAGE_SHIFT_4K) + 1;
	t->pages_added += in->pages_added;
	if (f->f_flags & O_DIRECT_FLAG)
		t->direct_reads++;
	if (off == 0) {
		t->passes++;
		t->last_pass_ns = in->start_ns;
	}
	if (step == 1)
		t->seq_steps++;
	else if (step == 2)
		t->rand_steps++;
	if (end > t->max_offset)
		t->max_offset = end;
	t->last_ns = now;
	t->file_size = inode->i_size;

	if (!own || b->reads >= limit)
		flush_batch(b);
	if (own)
		unlock_batch(b);
	return 0;
}

// flush_task_batch flushes the batch of a thread that may be reading
// concurrently (drain iterator) or is exiting.
static __always_inline void flush_task_batch(struct task_struct *task)
{
	struct inflight_read *in = thread_state(task);
	if (!in || !in->batch.reads)
		return;
	struct read_batch *b = &in->batch;
	if (!lock_batch(b, 1000)) {
		count(CNT_BATCH_BUSY);
		return;
	}
	flush_batch(b);
	unlock_batch(b);
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(on_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	// Only the cgroup2 hierarchy: its ids are what bpf_get_current_cgroup_id
	// returns; a v1 hierarchy's ids are another numbering.
	struct task_struct *task = bpf_get_current_task_btf();
	if (BPF_CORE_READ(task, cgroups, dfl_cgrp, root) != BPF_CORE_READ(cgrp, root))
		return 0;
	struct cgroup_subsys_state *parent = BPF_CORE_READ(cgrp, self.parent);
	if (!parent)
		return 0;
	__u64 pid = BPF_CORE_READ(parent, cgroup, kn, id);
	__u8 *v = bpf_map_lookup_elem(&allowed_cgroups, &pid);
	if (!v || *v != ALLOW_TREE)
		return 0;
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	__u32 *slot = kernel_allow_slot(id);
	if (!slot)
		return 0;
	__sync_fetch_and_add(slot, 1);
	__u8 inherited = ALLOW_INHERITED;
	if (bpf_map_update_elem(&allowed_cgroups, &id, &inherited, BPF_NOEXIST) == 0)
		count(CNT_ALLOW_INHERITED);
	else
		__sync_fetch_and_add(slot, -1);
	return 0;
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(on_cgroup_rmdir, struct cgroup *cgrp, const char *path)
{
	struct task_struct *task = bpf_get_current_task_btf();
	if (BPF_CORE_READ(task, cgroups, dfl_cgrp, root) != BPF_CORE_READ(cgrp, root))
		return 0;
	__u64 id = BPF_CORE_READ(cgrp, kn, id);
	__u8 *v = bpf_map_lookup_elem(&allowed_cgroups, &id);
	if (!v || (*v != ALLOW_INHERITED && *v != DENIED_INHERITED) || bpf_map_delete_elem(&allowed_cgroups, &id))
		return 0;
	__u32 *slot = kernel_allow_slot(id);
	if (slot)
		__sync_fetch_and_add(slot, -1);
	return 0;
}

// The batch of an exiting thread would be freed with its task storage.
SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_task_exit, struct task_struct *p)
{
	flush_task_batch(bpf_get_current_task_btf());
	return 0;
}

// Visits every thread on the node. Run by Drain before it reads
// stats_by_file, so every read done before the drain is in the map; and
// after every Allow, so the threads already in an allowed cgroup are
// observed from their next syscall (and any a hook missed from the next
// drain).
SEC("iter/task")
int sync_threads(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	if (!task)
		return 0;
	// Kernel threads share the kernel's first fs_struct, whose root init
	// moved to the host's root file system at boot.
	if (task->flags & PF_KTHREAD_FLAG) {
		struct fs_struct *fs = task->fs;
		__u32 idx = SETTING_HOST_ROOT_SB;
		__u64 *host = bpf_map_lookup_elem(&settings, &idx);
		if (fs && host) {
			__u64 sb = (__u64)fs->root.mnt->mnt_sb;
			if (sb && *host != sb)
				*host = sb;
		}
	}
	flush_task_batch(task);
	adopt_thread(task, false);
	return 0;
}

// A thread created in an allowed cgroup is observed from its first syscall.
// It is not running yet, and its cgroup is final.
SEC("tp_btf/task_newtask")
int BPF_PROG(on_task_newtask, struct task_struct *task, u64 clone_flags)
{
	adopt_thread(task, false);
	return 0;
}

// A thread (or all threads of a process) moved into a cgroup: observed from
// its next syscall if the cgroup is allowed (see adopt_thread).
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(on_cgroup_attach_task, struct cgroup *dst, const char *path, struct task_struct *task, bool threadgroup)
{
	if (!threadgroup) {
		adopt_thread(task, true);
		return 0;
	}
	struct bpf_iter_task it;
	struct task_struct *t;
	bpf_iter_task_new(&it, task, BPF_TASK_ITER_PROC_THREADS);
	while ((t = bpf_iter_task_next(&it)))
		adopt_thread(t, true);
	bpf_iter_task_destroy(&it);
	return 0;
}

static __always_inline int exit_write(struct task_struct *task, __u64 fd, long ret)
{
	if (ret <= 0)
		return 0;
	struct inflight_read *in = observed_thread(task);
	if (!in)
		return 0;
	__u64 cgid = in->cgroup_id;
	__u64 faddr = 0;
	struct file *f = fd_file(task, fd, &faddr);
	if (!f) {
		count(CNT_DROP_FD);
		return 0;
	}
	struct inode *inode = f->f_inode;
	if (!inode || (inode->i_mode & S_IFMT) != S_IFREG)
		return 0;
	if (on_own_root(task, (__u64)inode->i_sb))
		return 0;
	struct file_key k = {};
	if (!inode_key(inode, cgid, &k))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	struct file_stats *s = stats_for(&k, now, true);
	if (!s)
		return 0;
	__sync_fetch_and_add(&s->write_ops, 1);
	__sync_fetch_and_add(&s->write_bytes, (__u64)ret);
	touch(s, inode, now);
	return 0;
}

// exit_open handles a successful open; upath is the path argument, still in
// the argument registers at exit.
static __always_inline int exit_open(struct task_struct *task, const char *upath, long ret)
{
	if (ret < 0)
		return 0;
	struct inflight_read *in = observed_thread(task);
	if (!in)
		return 0;
	__u64 cgid = in->cgroup_id;
	__u64 faddr = 0;
	struct file *f = fd_file(task, ret, &faddr);
	if (!f) {
		count(CNT_DROP_FD);
		return 0;
	}
	// A new open file may reuse the address of a closed one: forget its
	// stale state so the first read is not misclassified (in place: a
	// delete would take the map's bucket lock on every open).
	struct open_file_state *of = bpf_map_lookup_elem(&open_files, &faddr);
	if (of) {
		of->next_offset = NOT_READ;
		of->last_fault = 0;
		of->fault_seq_run = 0;
		of->jumps = 0;
	}
	struct inode *inode = f->f_inode;
	if (!inode || (inode->i_mode & S_IFMT) != S_IFREG)
		return 0;
	if (on_own_root(task, (__u64)inode->i_sb))
		return 0;
	struct file_key k = {};
	if (!inode_key(inode, cgid, &k))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	// The open announces the file itself, with the path.
	emit_first_seen(&k, upath, now, current_pid());
	struct file_stats *s = stats_for(&k, now, false);
	if (!s)
		return 0;
	__sync_fetch_and_add(&s->opens, 1);
	touch(s, inode, now);
	return 0;
}

// Preferred syscall hooks: one trace event per traced syscall, so the kernel
// runs a program only for these syscalls instead of for every syscall on the
// node. The kernel does not fire them for 32-bit (compat) syscalls.

// One program serves read and readv, another pread64, preadv and preadv2,
// which take the offset as the fourth argument (preadv's pos_l holds all 64
// bits on x86-64; preadv2 passes -1 for the file position).
SEC("tracepoint/syscalls/sys_enter_read")
int on_enter_read(struct syscall_enter_ctx *ctx)
{
	return enter_read(bpf_get_current_task_btf(), ctx->args[0], -1);
}

SEC("tracepoint/syscalls/sys_enter_pread64")
int on_enter_pread(struct syscall_enter_ctx *ctx)
{
	return enter_read(bpf_get_current_task_btf(), ctx->args[0], ctx->args[3]);
}

// One program serves the exits of all five read syscalls: the state saved at
// entry holds what differs between them.
SEC("tracepoint/syscalls/sys_exit_read")
int on_exit_read(struct syscall_exit_ctx *ctx)
{
	return exit_read(ctx->ret);
}

// The exit events carry only the return value; the arguments are read from
// the task's saved user registers. One program serves write, pwrite64,
// writev, pwritev and pwritev2 (the descriptor is the first argument of each).
SEC("tracepoint/syscalls/sys_exit_write")
int on_exit_write(struct syscall_exit_ctx *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	return exit_write(task, regs->di, ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_open")
int on_exit_open(struct syscall_exit_ctx *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	return exit_open(task, (const char *)regs->di, ctx->ret);
}

// openat and openat2 take the path as the second argument.
SEC("tracepoint/syscalls/sys_exit_openat")
int on_exit_openat(struct syscall_exit_ctx *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	return exit_open(task, (const char *)regs->si, ctx->ret);
}

// Fallback syscall hooks, for kernels without the syscalls trace events
// (CONFIG_FTRACE_SYSCALLS off) or without tracefs to find them: the
// raw_syscalls tracepoints, filtered by syscall number. Every syscall on the
// node then runs them, at least to the switch below.

SEC("tp_btf/sys_enter")
int BPF_PROG(on_sys_enter, struct pt_regs *regs, long id)
{
	__s64 pos;
	switch (id) {
	case NR_read:
	case NR_readv:
		pos = -1;
		break;
	case NR_pread64:
	case NR_preadv:
	case NR_preadv2:
		pos = regs->r10;
		break;
	default:
		return 0;
	}
	struct task_struct *task = bpf_get_current_task_btf();
	// Syscall numbers above are for 64-bit tasks; ia32 numbers differ.
	if (task->thread_info.status & TS_COMPAT_FLAG)
		return 0;
	return enter_read(task, regs->di, pos);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(on_sys_exit, struct pt_regs *regs, long ret)
{
	long id = regs->orig_ax;
	switch (id) {
	case NR_read:
	case NR_pread64:
	case NR_readv:
	case NR_preadv:
	case NR_preadv2:
		return exit_read(ret);
	case NR_write:
	case NR_pwrite64:
	case NR_writev:
	case NR_pwritev:
	case NR_pwritev2:
	case NR_open:
	case NR_openat:
	case NR_openat2:
		break;
	default:
		return 0;
	}
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->thread_info.status & TS_COMPAT_FLAG)
		return 0;
	if (id == NR_open)
		return exit_open(task, (const char *)regs->di, ret);
	if (id == NR_openat || id == NR_openat2)
		return exit_open(task, (const char *)regs->si, ret);
	return exit_write(task, regs->di, ret);
}

// page_cache_stats finds the entry for a page-cache event that happened
// outside a traced read syscall (sendfile, splice, io_uring, mmap faults).
static __always_inline struct file_stats *page_cache_stats(struct address_space *mapping, __u64 *now)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct inflight_read *in = observed_thread(task);
	if (!in)
		return NULL;
	__u64 cgid = in->cgroup_id;
	struct file_key k = {};
	struct inode *inode = mapping->host;
	if (!inode || on_own_root(task, (__u64)inode->i_sb))
		return NULL;
	if (!inode_key(inode, cgid, &k))
		return NULL;
	*now = bpf_ktime_get_ns();
	struct file_stats *s = stats_for(&k, *now, true);
	if (s)
		touch(s, inode, *now);
	return s;
}

// active_read returns the current thread's read syscall in flight, if any.
// It stands in for the allow-list check: a read is only in flight for a
// thread whose cgroup was allowed at sys_enter, and looking it up in task
// storage is cheaper than a hash lookup.
static __always_inline struct inflight_read *active_read(void)
{
	struct inflight_read *in = thread_state(bpf_get_current_task_btf());
	if (in && in->active)
		return in;
	return NULL;
}

// in_read_syscall reports whether the current thread is inside one of the
// read syscalls the syscall hooks trace. io_uring workers and kernel threads
// are not in a syscall, whatever their saved registers say.
static __always_inline bool in_read_syscall(struct task_struct *task)
{
	if (task->flags & (PF_KTHREAD_FLAG | PF_IO_WORKER_FLAG))
		return false;
	if (task->thread_info.status & TS_COMPAT_FLAG)
		return false;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	switch (regs->orig_ax) {
	case NR_read:
	case NR_pread64:
	case NR_readv:
	case NR_preadv:
	case NR_preadv2:
		return true;
	}
	return false;
}

SEC("tp_btf/mm_filemap_get_pages")
int BPF_PROG(on_filemap_get_pages, struct address_space *mapping, unsigned long index, unsigned long last_index)
{
	// Every buffered read on the node runs this: other pods' stop here.
	struct task_struct *task = bpf_get_current_task_btf();
	struct inflight_read *in = thread_state(task);
	if (!in)
		return 0;
	if (in->active) {
		in->buffered = 1;
		return 0;
	}
	// A read syscall that is not in flight is one of a cgroup that is not
	// allowed: skip the allow-list lookup below.
	if (in_read_syscall(task))
		return 0;
	// Outside a read syscall (sendfile, splice, io_uring) the range is all
	// there is; it may overcount as explained in exit_read.
	__u64 n = last_index >= index ? last_index - index + 1 : 0;
	__u64 now;
	struct file_stats *s = page_cache_stats(mapping, &now);
	if (s)
		__sync_fetch_and_add(&s->pages_requested, n);
	return 0;
}

SEC("tp_btf/mm_filemap_add_to_page_cache")
int BPF_PROG(on_filemap_add, struct folio *folio)
{
	__u64 n = 1;
	if (folio->flags.f & (1UL << bpf_core_enum_value(enum pageflags, PG_head)))
		n = 1UL << (folio->_flags_1 & 0xff);
	struct inflight_read *in = active_read();
	if (in) {
		in->pages_added += n;
		return 0;
	}
	__u64 now;
	struct file_stats *s = page_cache_stats(folio->mapping, &now);
	if (s)
		__sync_fetch_and_add(&s->pages_added, n);
	return 0;
}

SEC("tp_btf/mm_filemap_fault")
int BPF_PROG(on_filemap_fault, struct address_space *mapping, unsigned long index)
{
	__u64 now;
	struct file_stats *s = page_cache_stats(mapping, &now);
	if (s)
		__sync_fetch_and_add(&s->mmap_faults, 1);
	return 0;
}

// Reads through file mappings. A read fault on a page of a file mapping
// (exceptions:page_fault_user, in the faulting thread) counts as one read of
// that page at its offset; fault-around (filemap:mm_filemap_map_pages, in
// the same fault) then maps the cached pages around it, which the program
// reads without faulting again, and adds them to the bytes of that read. So
// a mapped read's bytes are the pages its fault mapped, the way
// /proc/PID/smaps counts a mapping's resident pages; the read-size histogram
// holds the faulting page only.

// fault_vma is what fault_vma_cb copies out of the VMA of a faulting address.
struct fault_vma {
	__u64 file;
	__u64 page;
	__u64 size;
	__u64 dev;
	__u64 ino;
	__u64 flags;
	__u64 sb;
	__u8 regular;
};

static long fault_vma_cb(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct fault_vma *fv = data;
	struct file *f = vma->vm_file;
	if (!f)
		return 0;
	struct inode *inode = f->f_inode;
	if (!inode || (inode->i_mode & S_IFMT) != S_IFREG)
		return 0;
	fv->file = (__u64)f;
	fv->page = ((fv->page - vma->vm_start) >> PAGE_SHIFT_4K) + vma->vm_pgoff;
	fv->size = inode->i_size;
	fv->sb = (__u64)inode->i_sb;
	fv->dev = inode->i_sb->s_dev;
	fv->ino = inode->i_ino;
	fv->flags = vma->vm_flags;
	fv->regular = 1;
	return 0;
}

// add_mapped_bytes counts bytes read through a mapping ending at end.
static __always_inline void add_mapped_bytes(struct file_stats *s, __u64 bytes, __u64 end, __u64 now)
{
	__sync_fetch_and_add(&s->read_bytes, bytes);
	__sync_fetch_and_add(&s->mapped_read_bytes, bytes);
	if (end > s->max_offset)
		s->max_offset = end;
	s->last_ns = now;
}

SEC("tp_btf/page_fault_user")
int BPF_PROG(on_page_fault_user, unsigned long address, struct pt_regs *regs, unsigned long error_code)
{
	if (error_code & PF_WRITE_FLAG)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct inflight_read *in = observed_thread(task);
	if (!in)
		return 0;
	__u64 cgid = in->cgroup_id;
	struct fault_vma fv = { .page = address };
	if (bpf_find_vma(task, address, fault_vma_cb, &fv, 0) || !fv.regular)
		return 0;
	if (on_own_root(task, fv.sb))
		return 0;
	struct file_key k = { .cgroup_id = cgid, .dev = fv.dev, .ino = fv.ino };
	__u64 now = bpf_ktime_get_ns();
	struct file_stats *s = stats_for(&k, now, true);
	if (!s)
		return 0;
	if (fv.flags & VM_EXEC_FLAG) {
		// Code: the program's own file, not its data.
		__sync_fetch_and_add(&s->exec_faults, 1);
		return 0;
	}
	__u64 off = fv.page << PAGE_SHIFT_4K;
	if (off >= fv.size)
		return 0;
	in->fault_ns = now;
	in->fault_blocked_ns = 0;
	__u64 end = off + PAGE_BYTES;
	if (end > fv.size)
		end = fv.size;

	int step = 0;
	__u64 gap = 0;
	struct open_file_state *of = bpf_map_lookup_elem(&open_files, &fv.file);
	if (of) {
		// The page faulted last, again: a fault that was abandoned before
		// the page was mapped (the kernel retries after waiting for the
		// page; a signal interrupts the wait), perhaps retried by another
		// thread. It reads nothing new, but may wait again, and its
		// fault-around maps what the abandoned one did not.
		if (of->last_fault == fv.page + 1) {
			in->fault_page = fv.page;
			in->fault_file = fv.file;
			in->fault_key = k;
			in->fault_window = 1;
			in->fault_seq = 0;
			return 0;
		}
		if (of->next_offset != NOT_READ)
			step = of->next_offset == off ? 1 : 2;
		// A sequential run that resumes a little ahead: the pages in
		// between were mapped without a fault of their own (a large
		// folio is mapped whole), and are counted with this read.
		if (step == 2 && of->fault_seq_run && of->next_offset < off && off - of->next_offset <= MAX_FAULT_GAP) {
			gap = off - of->next_offset;
			step = 1;
		}
		of->next_offset = end;
		of->last_fault = fv.page + 1;
		of->fault_seq_run = step == 1;
	} else {
		struct open_file_state st = { .next_offset = end, .last_fault = fv.page + 1 };
		if (bpf_map_update_elem(&open_files, &fv.file, &st, BPF_ANY))
			count(CNT_DROP_OPEN_FILE);
	}

	__sync_fetch_and_add(&s->read_size_log2[PAGE_SHIFT_4K], 1);
	add_mapped_bytes(s, gap + end - off, end, now);
	if (step == 1)
		__sync_fetch_and_add(&s->seq_steps, 1);
	else if (step == 2)
		__sync_fetch_and_add(&s->rand_steps, 1);
	if (off == 0) {
		__sync_fetch_and_add(&s->passes, 1);
		s->last_pass_ns = now;
	}
	if (s->file_size != fv.size)
		s->file_size = fv.size;

	in->fault_page = fv.page;
	in->fault_file = fv.file;
	in->fault_key = k;
	in->fault_window = 1;
	in->fault_seq = step == 1;
	return 0;
}

// fault_around adds the pages that fault-around mapped in [start, end] to
// the thread's pending read fault on the same file, once per fault: those
// past the end of the file and the faulting page itself (already counted)
// are left out, and so are those before the faulting page when the fault
// continued a sequential read (the previous fault mapped them).
static __always_inline void fault_around(struct address_space *mapping, struct file_stats *s, __u64 start, __u64 end)
{
	struct inflight_read *in = thread_state(bpf_get_current_task_btf());
	if (!in || !in->fault_window)
		return;
	struct inode *inode = mapping->host;
	if (!inode || inode->i_ino != in->fault_key.ino || inode->i_sb->s_dev != in->fault_key.dev)
		return;
	in->fault_window = 0;
	__u64 size = inode->i_size;
	if (!size)
		return;
	__u64 last = (size - 1) >> PAGE_SHIFT_4K;
	if (end > last)
		end = last;
	__u64 page = in->fault_page;
	if (in->fault_seq && start <= page)
		start = page + 1;
	if (end < start)
		return;
	__u64 pages = end - start + 1;
	if (page >= start && page <= end)
		pages--;
	if (!pages)
		return;
	__u64 stop = (end + 1) << PAGE_SHIFT_4K;
	__u64 bytes = pages << PAGE_SHIFT_4K;
	if (stop > size) {
		bytes -= stop - size;
		stop = size;
	}
	add_mapped_bytes(s, bytes, stop, bpf_ktime_get_ns());
	struct open_file_state *of = bpf_map_lookup_elem(&open_files, &in->fault_file);
	if (of && of->next_offset < stop)
		of->next_offset = stop;
}

SEC("tp_btf/mm_filemap_map_pages")
int BPF_PROG(on_filemap_map_pages, struct address_space *mapping, unsigned long start, unsigned long end)
{
	__u64 now;
	struct file_stats *s = page_cache_stats(mapping, &now);
	if (!s || end < start)
		return 0;
	__sync_fetch_and_add(&s->mmap_pages, end - start + 1);
	fault_around(mapping, s, start, end);
	return 0;
}

// The time a thread spends blocked (uninterruptible: waiting for I/O or a
// page lock) after a read fault, until it runs again, is read wait of the
// faulted file. One wait per fault (a retried fault may wait again); a read
// syscall ends the pending fault.
SEC("tp_btf/sched_switch")
int BPF_PROG(on_sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)
{
	// Only observed threads fault with fault_ns set.
	if (!preempt && (prev_state & TASK_UNINTERRUPTIBLE_STATE)) {
		struct inflight_read *in = thread_state(prev);
		if (in && in->fault_ns && !in->fault_blocked_ns)
			in->fault_blocked_ns = bpf_ktime_get_ns();
	}
	struct inflight_read *in = thread_state(next);
	if (!in || !in->fault_blocked_ns)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 wait = now - in->fault_blocked_ns;
	in->fault_blocked_ns = 0;
	in->fault_ns = 0;
	struct file_stats *s = bpf_map_lookup_elem(&stats_by_file, &in->fault_key);
	if (s)
		__sync_fetch_and_add(&s->read_wait_ns, wait);
	return 0;
}
