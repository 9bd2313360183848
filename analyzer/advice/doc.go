// Package advice turns a classified access pattern into recommendations:
// what to prefetch and how, how many cache workers, what to evict, and the
// benefit expected. It outputs plain structs; the control plane maps them
// onto Recommendation objects.
//
// Nothing is recommended below Bounds.MinConfidence, for WriteMostly, or for
// Unknown.
//
// # Formulas
//
// Inputs are the features (throughput T, read-wait share w, p90 read latency
// L, dataset bytes D, working set W from the miss-ratio curve, median file
// bytes M) and the bounds.
//
//   - Demanded throughput: what the job would read at if reads cost nothing,
//     T_d = T / max(1 − w, MinComputeShare).
//   - Bandwidth: B = min(Bounds.MaxBandwidth, T_d · BandwidthHeadroom).
//   - Block size: scans use 2^⌈log2(B · BlockSeconds)⌉ clamped to
//     [MinScanBlock, MaxScanBlock] (8–16 MiB); whole-file strategies fetch
//     files whole, so 2^⌈log2 M⌉ clamped to [MinFileBlock, MaxScanBlock].
//   - Concurrency: the bandwidth-delay product in blocks,
//     ⌈B · L / block⌉ clamped to [1, Bounds.MaxConcurrency]; L is the p90
//     read latency as the stand-in for a miss's latency (cache hits pull the
//     median down).
//   - Byte budget: Ranges none of its own (the ranges bound it; the
//     policy's budget caps it); Sequential and Ordered min(D, CacheBudget)
//     (the budget is the prefetcher's total: a scan is read ahead whole
//     when it fits); WholeDataset D;
//     Resident ResidentShare · CacheBudget (what it keeps);
//     HotSet D when D fits the cache budget (the hot files first, then the
//     rest), else min(W, CacheBudget).
//   - Never warm before start: the prefetcher runs alongside the job (on
//     real pods the hold costs more than it saves; see
//     PrefetchParams.WarmBeforeStart).
//   - Cache workers: max(⌈W'/PerWorkerCapacity⌉, ⌈T_d/PerWorkerThroughput⌉)
//     clamped to [MinWorkers, MaxWorkers], where W' is D for ShuffledEpochs
//     (every epoch reads everything) and for a HotSet whose D fits the
//     budget (all of it is prefetched), W otherwise.
//   - Expected benefit: with an expected hit ratio h after the action, the
//     read-wait share becomes w · (1 − h) and the wall-time reduction is
//     w · h. h is 1 − 1/(2E) for a dataset warmed whole beside a job of E
//     epochs (its first epoch races the prefetcher), min(1, B / T_d) for
//     streaming prefetch (Sequential, Ordered), K/D · (1 − 1/(2E)) for a
//     Resident part K of a dataset D read whole each epoch, 1 − MRC(cache) for
//     HotSet and cache scaling, MRC being the miss-ratio curve at the cache
//     size that results; for ShuffledEpochs a cache that holds the whole
//     dataset is taken to miss nothing (every epoch rereads all of it).
//
// # Actions by class
//
//   - SequentialScan: Prefetch/Sequential across files in first-access order,
//     not kept in cache (read once), unless the scan repeats (reuse) and D
//     fits the budget, in which case it is kept.
//   - ShuffledEpochs: Prefetch/WholeDataset (kept, never evicted within the
//     job) when D fits the cache budget (the policy's cacheCapacity, when it
//     states one); otherwise Prefetch/Resident: a fixed part, ResidentShare
//     of the cache, read once and kept resident, since a least-recently-used
//     cache smaller than an epoch keeps almost nothing a shuffled epoch
//     reads again. ScaleCache to hold the dataset. (InjectSDK with
//     Prefetch/Ordered follows the exact order, but its byte budget ends
//     the read-ahead after one cache's worth: a person may apply it; the
//     advice does not.)
//   - HotSet: Prefetch/HotSet of everything read, hot files first, and
//     ScaleCache to hold it, when D fits the cache budget — the files read
//     once stall the job too (a job reading a hot tenth 30 times and the
//     rest once lost 85% of its stall to them in the benchmark); otherwise
//     Prefetch/HotSet of the working set and ScaleCache at the knee, so
//     that cold files never push hot ones out.
//   - RandomReads: Prefetch/Ranges — the byte ranges the latest run read of
//     each file, from the manifest, at least MinFileConcurrency at a time
//     beside the job, blocks of the median read rounded as for files; never
//     the whole file (it would waste bandwidth) — and ScaleCache by the
//     working set.
//   - Idle: EvictDataset and scale cache workers to MinWorkers.
package advice
