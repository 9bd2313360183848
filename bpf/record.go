package bpf

// ReadSizeBuckets and LatencyBuckets are the number of log2 buckets in the
// read-size and read-latency histograms kept per file.
const (
	ReadSizeBuckets = 32
	LatencyBuckets  = 40
)

// FileKey identifies what the kernel aggregates over: one cgroup (a pod's
// container) reading one inode of one device.
type FileKey struct {
	CgroupID uint64
	Dev      uint64 // s_dev of the inode's super block, in the kernel's encoding (MKDEV: major<<20 | minor)
	Ino      uint64
}

// Record is one drained map entry: everything counted for a FileKey since the
// previous drain. Times are CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns);
// the collector converts them to wall-clock time.
type Record struct {
	Key FileKey

	ReadOps   uint64
	ReadBytes uint64
	// WriteOps and WriteBytes count successful write, pwrite64, writev,
	// pwritev and pwritev2 calls on regular files.
	WriteOps   uint64
	WriteBytes uint64
	// SeqSteps and RandSteps classify each read against the previous read
	// through the same open file description (the kernel's struct file, so
	// two opens of one file by two readers do not make each other look
	// random): a step is sequential when the read begins exactly where the
	// previous one ended. The first read through each open file is no step,
	// so SeqSteps+RandSteps is at most ReadOps.
	SeqSteps  uint64
	RandSteps uint64
	// ReadSizeLog2[i] counts reads of [2^i, 2^(i+1)) bytes (bucket 0: 0 or 1 byte).
	ReadSizeLog2 [ReadSizeBuckets]uint64
	// ReadLatencyLog2[i] counts read syscalls that took [2^i, 2^(i+1)) ns.
	ReadLatencyLog2 [LatencyBuckets]uint64
	// ReadWaitNs is the total time spent in read syscalls (and blocked in
	// read faults, see MappedReadBytes).
	//
	// ReadOps, ReadBytes, the histograms and ReadWaitNs count the read
	// syscalls (read, pread64, readv, preadv, preadv2) that succeeded on a
	// regular file, including reads that returned 0 at end of file, and
	// reads through mappings of the file (MappedReadBytes).
	ReadWaitNs uint64
	// PagesRequested counts page-cache pages asked for by buffered reads:
	// for a read syscall that went through the page cache
	// (filemap:mm_filemap_get_pages fired), the pages its bytes span; for
	// page-cache reads outside a read syscall (sendfile, splice, io_uring),
	// the tracepoint's range, which may overcount. PagesAdded counts pages
	// inserted into the cache by this cgroup (misses plus read-ahead, and
	// pages first written), so PagesAdded/PagesRequested approximates the
	// miss ratio. During a read syscall both are attributed to the file
	// read; outside one to the inode whose cache it is.
	PagesRequested uint64
	PagesAdded     uint64
	// MmapFaults counts page faults on mappings of the file that reached
	// filemap_fault, i.e. that fault-around could not serve from the cache
	// (mostly major faults); MmapPages counts pages covered by fault-around
	// (filemap:mm_filemap_map_pages), the cached side of mmap access.
	MmapFaults uint64
	MmapPages  uint64
	// MappedReadBytes is the part of ReadBytes read through file mappings
	// (mmap): each read fault on a page of a mapping of the file (not
	// executable, not a write) counts as one read of that page at its
	// offset, in ReadOps, ReadSizeLog2 (4 KiB), SeqSteps/RandSteps,
	// Passes and MaxOffset, and its bytes are the page plus the cached
	// pages fault-around mapped with it (those the program then reads
	// without faulting) — the pages the fault made resident in the
	// mapping, as /proc/PID/smaps counts them. When a sequential run of
	// faults resumes up to 2 MiB past where the previous fault's pages
	// ended, the pages in between were mapped without a fault (the kernel
	// maps a large folio whole) and count with the later read. Pages read again after
	// they were mapped are not seen (no fault), nor are reads of pages
	// another process of the cgroup mapped. Time the thread spent blocked
	// (uninterruptible) after a read fault until it ran again is added to
	// ReadWaitNs; mapped reads have no latency histogram entries.
	MappedReadBytes uint64
	// ExecFaults counts faults on executable mappings of the file: the
	// program's code (its binary, libraries, native extension modules),
	// not data; they are not counted as reads.
	ExecFaults uint64
	// DirectReads counts read syscalls on files opened with O_DIRECT; they
	// bypass the page cache, so they have no PagesRequested.
	DirectReads uint64
	// Opens counts successful open, openat and openat2 calls.
	Opens uint64
	// Passes counts reads that began at offset 0; LastPassNs is when the
	// latest one began.
	Passes     uint64
	LastPassNs uint64
	// FirstNs is when the entry was created (its first access after the
	// previous drain); LastNs is when it was last updated.
	FirstNs uint64
	LastNs  uint64
	// MaxOffset is the highest end offset (offset + bytes) of any read.
	MaxOffset uint64
	// FileSize is i_size when the entry was last updated.
	FileSize uint64
	// Ranges are where the read syscalls that did not continue the previous
	// read through their open file began (random steps, and the first read
	// of each open), each from its 4 KiB page to the furthest end of such a
	// read from that page, sorted by offset. Sequential reads after them
	// are not included: a scan has one range per open. Mapped reads are
	// not recorded.
	Ranges []ReadRange
}

// ReadRange is a byte range [Offset, End) of a file.
type ReadRange struct {
	Offset, End uint64
}

// FileEvent is a rare event from the ring buffer: a cgroup opened (or first
// read) a file that the kernel had not seen for it before.
type FileEvent struct {
	Key FileKey
	// Path as passed to open/openat/openat2 (possibly relative to the task's
	// cwd or to the openat directory fd), at most 255 bytes; Truncated
	// reports a cut. Path is empty when the first access was not an open
	// (a file opened before its cgroup was allowed, or an mmap fault).
	Path      string
	Truncated bool
	Pid       uint32
	TimeNs    uint64
}
