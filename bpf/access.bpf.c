//go:build ignore
// (The constraint keeps the Go tool from treating this file as cgo source.)

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Kernel side of eddy's node collector: counts file reads and writes per
// (cgroup, device, inode) for opted-in cgroups only.
//
// Every hook is a BTF raw tracepoint (tp_btf): they need neither tracefs nor
// kprobes, and they receive typed arguments, so most pointer walks are plain
// loads instead of bpf_probe_read_kernel calls. The syscall side uses the
// raw_syscalls sys_enter/sys_exit tracepoints filtered by syscall number,
// which is x86-64 only (pt_regs argument registers and syscall numbers).

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
#define EEXIST_ERR 17

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

// Indexes into the counters array; mirrored in loader.go.
enum counter_index {
	CNT_DROP_RINGBUF = 0,    // ring buffer reserve failed: a first-seen event was lost
	CNT_DROP_STATS_FULL = 1, // stats_by_file full: a read/write/open was not counted
	CNT_DROP_TASK_STATE = 2, // task storage could not be created: a read was not counted
	CNT_DROP_OPEN_FILE = 3,  // per-open-file state could not be stored: one step not classified
	CNT_DROP_SEEN = 4,       // seen map insert failed: an event was not sent (retried on next open)
	CNT_DROP_FD = 5,         // fd did not resolve to a file at syscall exit
	CNT_STATS_INSERTS = 6,   // entries created in stats_by_file (for occupancy)
	CNT_MAX = 7,
};

struct file_key {
	__u64 cgroup_id;
	__u64 dev;
	__u64 ino;
};

// Mirrors bpf.Record after its Key; see record.go for the meaning of each field.
struct file_stats {
	__u64 read_ops;
	__u64 read_bytes;
	__u64 write_ops;
	__u64 write_bytes;
	__u64 seq_steps;
	__u64 rand_steps;
	__u64 read_size_log2[READ_SIZE_BUCKETS];
	__u64 read_latency_log2[LATENCY_BUCKETS];
	__u64 read_wait_ns;
	__u64 pages_requested;
	__u64 pages_added;
	__u64 mmap_faults;
	__u64 mmap_pages;
	__u64 direct_reads;
	__u64 opens;
	__u64 passes;
	__u64 last_pass_ns;
	__u64 first_ns;
	__u64 last_ns;
	__u64 max_offset;
	__u64 file_size;
};

// State of one read syscall in flight on one thread, kept in task storage so
// the hot path needs no hash lookup and no delete at exit.
struct inflight_read {
	__u64 start_ns;
	__u64 cgroup_id;
	__u64 pages_added;
	__u32 active;
	// Set when the read went through the page cache
	// (mm_filemap_get_pages fired during it).
	__u32 buffered;
};

// Where the next sequential read of one open file description would begin.
struct open_file_state {
	__u64 next_offset;
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

// The ring buffer is untyped, so without this global the event struct would
// not be in BTF and bpf2go could not emit its Go type (-type file_event).
const struct file_event *unused_file_event __attribute__((unused));

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

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

static __always_inline bool cgroup_allowed(__u64 cgid)
{
	return bpf_map_lookup_elem(&allowed_cgroups, &cgid) != NULL;
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

// emit_first_seen sends one event per (cgroup, dev, ino) for as long as the
// key stays in seen_files. upath may be NULL when the first access is a read
// of a file opened before the cgroup was allowed.
static __always_inline void emit_first_seen(struct file_key *k, const char *upath, __u64 now)
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
	ev->pid = bpf_get_current_pid_tgid() >> 32;
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

// stats_for returns the entry for k, creating it if absent; a created entry
// also emits the first-seen event (without a path) when announce is set. NULL
// means the map is full.
static __always_inline struct file_stats *stats_for(struct file_key *k, __u64 now, bool announce)
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
			emit_first_seen(k, NULL, now);
	}
	return s;
}

static __always_inline void touch(struct file_stats *s, struct inode *inode, __u64 now)
{
	s->last_ns = now;
	s->file_size = inode->i_size;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(on_sys_enter, struct pt_regs *regs, long id)
{
	switch (id) {
	case NR_read:
	case NR_pread64:
	case NR_readv:
	case NR_preadv:
	case NR_preadv2:
		break;
	default:
		return 0;
	}
	__u64 cgid = bpf_get_current_cgroup_id();
	if (!cgroup_allowed(cgid))
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	// Syscall numbers above are for 64-bit tasks; ia32 numbers differ.
	if (task->thread_info.status & TS_COMPAT_FLAG)
		return 0;
	struct inflight_read *in = bpf_task_storage_get(&inflight, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!in) {
		count(CNT_DROP_TASK_STATE);
		return 0;
	}
	in->start_ns = bpf_ktime_get_ns();
	in->cgroup_id = cgid;
	in->buffered = 0;
	in->pages_added = 0;
	in->active = 1;
	return 0;
}

static __always_inline int exit_read(struct pt_regs *regs, long id, long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct inflight_read *in = bpf_task_storage_get(&inflight, task, 0, 0);
	if (!in || !in->active)
		return 0;
	in->active = 0;
	if (ret < 0)
		return 0;

	__u64 now = bpf_ktime_get_ns();
	__u64 faddr = 0;
	struct file *f = fd_file(task, regs->di, &faddr);
	if (!f) {
		count(CNT_DROP_FD);
		return 0;
	}
	struct inode *inode = f->f_inode;
	if (!inode || (inode->i_mode & S_IFMT) != S_IFREG)
		return 0;

	// Start offset: the explicit position for the p* calls, else the file
	// position after the read minus what was read.
	__u64 bytes = ret;
	__s64 off;
	if (id == NR_pread64 || id == NR_preadv || id == NR_preadv2)
		off = regs->r10;
	else
		off = -1;
	if (off < 0)
		off = f->f_pos - bytes;
	__u64 end = off + bytes;

	struct file_key k = {};
	if (!inode_key(inode, in->cgroup_id, &k))
		return 0;
	struct file_stats *s = stats_for(&k, now, true);
	if (!s)
		return 0;

	__u64 lat = now - in->start_ns;
	__u32 sb = bytes ? log2_u64(bytes) : 0;
	if (sb >= READ_SIZE_BUCKETS)
		sb = READ_SIZE_BUCKETS - 1;
	__u32 lb = lat ? log2_u64(lat) : 0;
	if (lb >= LATENCY_BUCKETS)
		lb = LATENCY_BUCKETS - 1;

	__sync_fetch_and_add(&s->read_ops, 1);
	__sync_fetch_and_add(&s->read_bytes, bytes);
	__sync_fetch_and_add(&s->read_size_log2[sb], 1);
	__sync_fetch_and_add(&s->read_latency_log2[lb], 1);
	__sync_fetch_and_add(&s->read_wait_ns, lat);
	// The pages a buffered read asked the cache for are those its bytes
	// span. The tracepoint's own ranges cannot be summed: a large read calls
	// filemap_get_pages once per batch of folios, each time with the range
	// up to the end of the request (past EOF, too), and a call that returns
	// a partial batch after an error is not traced at all.
	if (in->buffered && bytes)
		__sync_fetch_and_add(&s->pages_requested, ((end - 1) >> PAGE_SHIFT_4K) - ((__u64)off >> PAGE_SHIFT_4K) + 1);
	if (in->pages_added)
		__sync_fetch_and_add(&s->pages_added, in->pages_added);
	if (f->f_flags & O_DIRECT_FLAG)
		__sync_fetch_and_add(&s->direct_reads, 1);
	if (off == 0) {
		__sync_fetch_and_add(&s->passes, 1);
		s->last_pass_ns = in->start_ns;
	}
	// Racy max: a concurrent larger end may be overwritten by a smaller one
	// within the same window; rare and bounded by the next read.
	if (end > s->max_offset)
		s->max_offset = end;
	touch(s, inode, now);

	struct open_file_state *of = bpf_map_lookup_elem(&open_files, &faddr);
	if (of) {
		if (of->next_offset == (__u64)off)
			__sync_fetch_and_add(&s->seq_steps, 1);
		else
			__sync_fetch_and_add(&s->rand_steps, 1);
		of->next_offset = end;
	} else {
		// First read through this open file: no step to classify yet.
		struct open_file_state st = { .next_offset = end };
		if (bpf_map_update_elem(&open_files, &faddr, &st, BPF_ANY))
			count(CNT_DROP_OPEN_FILE);
	}
	return 0;
}

static __always_inline int exit_write(struct pt_regs *regs, long ret)
{
	if (ret <= 0)
		return 0;
	__u64 cgid = bpf_get_current_cgroup_id();
	if (!cgroup_allowed(cgid))
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->thread_info.status & TS_COMPAT_FLAG)
		return 0;
	__u64 faddr = 0;
	struct file *f = fd_file(task, regs->di, &faddr);
	if (!f) {
		count(CNT_DROP_FD);
		return 0;
	}
	struct inode *inode = f->f_inode;
	if (!inode || (inode->i_mode & S_IFMT) != S_IFREG)
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

static __always_inline int exit_open(struct pt_regs *regs, long id, long ret)
{
	if (ret < 0)
		return 0;
	__u64 cgid = bpf_get_current_cgroup_id();
	if (!cgroup_allowed(cgid))
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->thread_info.status & TS_COMPAT_FLAG)
		return 0;
	__u64 faddr = 0;
	struct file *f = fd_file(task, ret, &faddr);
	if (!f) {
		count(CNT_DROP_FD);
		return 0;
	}
	// A new open file may reuse the address of a closed one: forget its
	// stale next offset so the first read is not misclassified.
	bpf_map_delete_elem(&open_files, &faddr);
	struct inode *inode = f->f_inode;
	if (!inode || (inode->i_mode & S_IFMT) != S_IFREG)
		return 0;
	struct file_key k = {};
	if (!inode_key(inode, cgid, &k))
		return 0;
	// The argument registers still hold the syscall's arguments at exit.
	const char *upath = (const char *)(id == NR_open ? regs->di : regs->si);
	__u64 now = bpf_ktime_get_ns();
	// The open announces the file itself, with the path.
	emit_first_seen(&k, upath, now);
	struct file_stats *s = stats_for(&k, now, false);
	if (!s)
		return 0;
	__sync_fetch_and_add(&s->opens, 1);
	touch(s, inode, now);
	return 0;
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
		return exit_read(regs, id, ret);
	case NR_write:
	case NR_pwrite64:
	case NR_writev:
	case NR_pwritev:
	case NR_pwritev2:
		return exit_write(regs, ret);
	case NR_open:
	case NR_openat:
	case NR_openat2:
		return exit_open(regs, id, ret);
	}
	return 0;
}

// page_cache_stats finds the entry for a page-cache event that happened
// outside a traced read syscall (sendfile, splice, io_uring, mmap faults).
static __always_inline struct file_stats *page_cache_stats(struct address_space *mapping, __u64 *now)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	if (!cgroup_allowed(cgid))
		return NULL;
	struct file_key k = {};
	struct inode *inode = mapping->host;
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
	struct inflight_read *in = bpf_task_storage_get(&inflight, bpf_get_current_task_btf(), 0, 0);
	if (in && in->active)
		return in;
	return NULL;
}

SEC("tp_btf/mm_filemap_get_pages")
int BPF_PROG(on_filemap_get_pages, struct address_space *mapping, unsigned long index, unsigned long last_index)
{
	struct inflight_read *in = active_read();
	if (in) {
		in->buffered = 1;
		return 0;
	}
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

SEC("tp_btf/mm_filemap_map_pages")
int BPF_PROG(on_filemap_map_pages, struct address_space *mapping, unsigned long start, unsigned long end)
{
	__u64 now;
	struct file_stats *s = page_cache_stats(mapping, &now);
	if (s && end >= start)
		__sync_fetch_and_add(&s->mmap_pages, end - start + 1);
	return 0;
}
