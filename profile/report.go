package profile

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/eddy-autotune/eddy/analyzer/advice"
	"github.com/eddy-autotune/eddy/analyzer/features"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
)

func sortTop(fs []FileSummary) {
	slices.SortFunc(fs, func(a, b FileSummary) int {
		if c := cmp.Compare(b.ReadBytes, a.ReadBytes); c != 0 {
			return c
		}
		return strings.Compare(a.Path, b.Path)
	})
}

// classWords says what each class means, for people.
var classWords = map[v1.AccessClass]string{
	v1.ClassSequentialScan: "reads its data front to back in a stable order (a scan)",
	v1.ClassShuffledEpochs: "reads whole files in a new random order each epoch, covering the whole dataset",
	v1.ClassRandomReads:    "makes small reads at random offsets of large files",
	v1.ClassHotSet:         "reads a small subset of its data again and again",
	v1.ClassWriteMostly:    "mostly writes",
	v1.ClassIdle:           "did not read or write any data file",
	v1.ClassUnknown:        "does not fit a known pattern",
}

var actionWords = map[v1.Action]string{
	v1.ActionPrefetch:     "Prefetch",
	v1.ActionInjectSDK:    "Inject the SDK",
	v1.ActionScaleCache:   "Scale the cache",
	v1.ActionEvictDataset: "Evict the dataset",
}

// WriteText writes the report for people: the dataset roots, then the
// access pattern, features and advice of the data (of each root apart when
// there are several, then the whole command's totals), then what was left
// out.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "\neddy profile: %s\n", strings.Join(r.Command, " "))
	fmt.Fprintf(&b, "  ran %s, exit status %d\n\n", advice.Seconds(r.WallSeconds), r.ExitCode)
	if len(r.Roots) > 0 {
		how := "found (the deepest directory holding 90% of the bytes of files read alike)"
		if r.Roots[0].Named {
			how = "named with --data"
		}
		fmt.Fprintf(&b, "Dataset roots: %d, %s\n", len(r.Roots), how)
		for _, root := range r.Roots {
			fmt.Fprintf(&b, "  %s: %d file(s), %s read, %s written\n", root.Path, root.Files,
				advice.Bytes(float64(root.BytesRead)), advice.Bytes(float64(root.BytesWritten)))
		}
		b.WriteString("\n")
	}
	if len(r.Roots) <= 1 {
		writeClass(&b, "", &r.Analysis)
		fmt.Fprintf(&b, "What it read:\n")
		writeFeatures(&b, &r.Features)
		r.writeFilesAndLeftOut(&b)
		writeAdvice(&b, "", &r.Analysis)
	} else {
		for i := range r.Roots {
			root := &r.Roots[i]
			writeClass(&b, " of "+root.Path, &root.Analysis)
			fmt.Fprintf(&b, "What it read there:\n")
			writeFeatures(&b, &root.Features)
			writeAdvice(&b, " there", &root.Analysis)
			b.WriteString("\n")
		}
		f := &r.Features
		fmt.Fprintf(&b, "The whole command, all roots together:\n")
		fmt.Fprintf(&b, "  %s in %.0f reads from %.0f files; %s written\n", advice.Bytes(f.BytesRead), f.ReadOps, f.Files, advice.Bytes(f.BytesWritten))
		fmt.Fprintf(&b, "  time waiting on reads: %s of the run\n", advice.Percent(f.ReadWaitShare))
		r.writeFilesAndLeftOut(&b)
	}
	if d := r.Dropped; d.RingBuffer+d.StatsMapFull+d.TaskState+d.OpenFileState+d.SeenMap > 0 {
		fmt.Fprintf(&b, "\nNote: the recorder lost some data (events %d, full file map %d, thread state %d, open-file state %d, seen map %d); figures may be low\n",
			d.RingBuffer, d.StatsMapFull, d.TaskState, d.OpenFileState, d.SeenMap)
	}
	if len(r.MissingHooks) > 0 {
		fmt.Fprintf(&b, "\nNote: kernel hooks not attached: %s (their counters are zero)\n", strings.Join(r.MissingHooks, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeClass(b *strings.Builder, of string, a *Analysis) {
	fmt.Fprintf(b, "Access pattern%s: %s (confidence %.2f)\n", of, a.Class, a.Confidence)
	fmt.Fprintf(b, "  The command %s.\n", classWords[a.Class])
	fmt.Fprintf(b, "  Why: %s\n\n", a.Decision.Reason)
}

func writeFeatures(b *strings.Builder, f *features.Features) {
	fmt.Fprintf(b, "  %s in %.0f reads from %.0f files (%s of files seen); %s written\n",
		advice.Bytes(f.BytesRead), f.ReadOps, f.Files, advice.Bytes(f.DatasetBytes), advice.Bytes(f.BytesWritten))
	fmt.Fprintf(b, "  sequential %s, whole files %s, coverage %s per epoch, %.0f epoch(s)",
		advice.Percent(f.SequentialRatio), advice.Percent(f.WholeFileRatio), advice.Percent(f.Coverage), f.Epochs)
	if f.OrderKnown {
		fmt.Fprintf(b, ", order correlation between epochs %.2f", f.OrderCorrelation)
	}
	fmt.Fprintf(b, "\n  median read %s, median file %s, reuse %s, hot-set share %s, working set %s\n",
		advice.Bytes(f.MedianReadBytes), advice.Bytes(f.MedianFileBytes), advice.Percent(f.Reuse), advice.Percent(f.HotSetShare), advice.Bytes(f.WorkingSetBytes))
	fmt.Fprintf(b, "  throughput %s/s, read latency p50 %s p99 %s, page-cache misses %s\n",
		advice.Bytes(f.ThroughputBytesPerSec), advice.Seconds(f.ReadLatencyP50Sec), advice.Seconds(f.ReadLatencyP99Sec), advice.Percent(f.PageCacheMissRatio))
	fmt.Fprintf(b, "  time waiting on reads: %s of the run\n", advice.Percent(f.ReadWaitShare))
	if f.MmapShare > 0 {
		fmt.Fprintf(b, "  %s of the bytes were read through memory mappings (pages the program faulted in)\n", advice.Percent(f.MmapShare))
	}
}

// writeFilesAndLeftOut writes the files read most and what was left out.
func (r *Report) writeFilesAndLeftOut(b *strings.Builder) {
	if len(r.TopFiles) > 0 {
		fmt.Fprintf(b, "  most read:")
		for _, t := range r.TopFiles {
			name := t.Path
			if name == "" {
				name = "(path unknown)"
			}
			fmt.Fprintf(b, " %s (%s)", name, advice.Bytes(float64(t.ReadBytes)))
		}
		b.WriteString("\n")
	}
	if r.FilesExcluded == 0 {
		return
	}
	fmt.Fprintf(b, "  %d files left out as not data:", r.FilesExcluded)
	whys := make([]string, 0, len(r.ExcludedBy))
	for why := range r.ExcludedBy {
		whys = append(whys, why)
	}
	slices.Sort(whys)
	for i, why := range whys {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(b, " %d %s", r.ExcludedBy[why], why)
	}
	b.WriteString("\n")
	if len(r.ProgramPrefixes) > 0 {
		fmt.Fprintf(b, "  the interpreter's prefix: %s (use --data to name the data instead)\n", strings.Join(r.ProgramPrefixes, ", "))
	}
}

func writeAdvice(b *strings.Builder, there string, a *Analysis) {
	fmt.Fprintf(b, "\nWhat eddy would do%s:\n", there)
	if len(a.Recommendations) == 0 {
		fmt.Fprintf(b, "  nothing: %s\n", a.Withheld)
	}
	for _, rec := range a.Recommendations {
		fmt.Fprintf(b, "  - %s", actionWords[rec.Action])
		switch {
		case rec.Prefetch != nil:
			p := rec.Prefetch
			fmt.Fprintf(b, " (%s): %s blocks, %d in flight, up to %s/s, budget %s", p.Strategy, advice.Bytes(float64(p.BlockBytes)), p.Concurrency, advice.Bytes(float64(p.BandwidthBytesPerSec)), advice.Bytes(float64(p.BudgetBytes)))
			if p.WarmBeforeStart {
				b.WriteString(", warmed before the job starts")
			}
		case rec.Cache != nil:
			fmt.Fprintf(b, ": %d cache worker(s)", rec.Cache.Workers)
		case rec.Evict != nil:
			fmt.Fprintf(b, ": scale cache workers to %d", rec.Evict.ScaleWorkersTo)
		}
		fmt.Fprintf(b, "\n      %s\n", rec.Evidence.Explanation)
		if ben := rec.Evidence.Benefit; ben.WallTimeReduction > 0 {
			fmt.Fprintf(b, "      expected: read wait %s → %s of the run (about %s less wall time)\n",
				advice.Percent(ben.ReadWaitShareBefore), advice.Percent(ben.ReadWaitShareAfter), advice.Percent(ben.WallTimeReduction))
		}
	}
}
