// Package history keeps what the analyzer remembers about one (workload,
// dataset): a compact state updated window by window from collector
// AccessWindows, with exponential decay, bounded memory and a lossless JSON
// form for checkpoints in API objects.
//
// # What the kernel gives, and what is approximated
//
// Collectors send per-window aggregates per (pod, container, file), not a
// trace of reads. History therefore keeps:
//
//   - Exact decayed aggregates over every record: operations, bytes,
//     sequential and random steps, passes, read-size and latency log2
//     histograms, read wait, page-cache lookups and insertions.
//   - Per-file state for a hash-sampled subset of files (SHARDS-style spatial
//     sampling: a file is tracked when the hash of its identity is at or below
//     FileThreshold; when more than Config.MaxFiles are tracked the largest
//     hash is dropped and the threshold lowered to exclude it). Sums over the
//     sampled files divided by FileRate estimate sums over all files.
//   - Pass times per file: the numbers and start times of the two latest
//     passes (reads that began at offset 0) whose start is known. A window
//     reports only how many passes began and when the latest did, so a
//     single new pass follows the previous latest, while two or more in one
//     window give the first (dated by the window's first access to the file)
//     and the latest; the ones in between stay unknown.
//   - A sampled reuse-distance histogram (SHARDS with a fixed sample size) over
//     the reference stream the windows imply: one reference per (window,
//     chunk) in first-access order, where a file of up to ChunkBytes is one
//     chunk and larger files are cut into chunks. Sequential records reference
//     the chunks of the byte range they must have read (ending at max_offset);
//     random records reference min(read_ops, MaxRefsPerRecord) chunks drawn
//     uniformly, because the kernel does not report which offsets were read.
//     Locality inside a large file is therefore invisible; reuse across files
//     and windows is not. Re-reads of a small file within one window (its
//     pass count) are added as hits at an estimated distance: with reads
//     spread evenly over the window, a file read p times is re-read every
//     1/p of the window, and a file read q times was touched in between with
//     probability 1 − e^(−q/p).
//
// # Decay
//
// Every additive quantity is stored multiplied by 2^((t-Base)/HalfLife),
// where t is the end of the window that contributed it. A value's decayed
// worth at time now is the stored value times DecayFactor(now). Adding is O(1)
// and exact; when weights grow past 2^64 everything is rescaled once and Base
// moves forward. Ratios of stored values need no factor at all.
package history
