package bench

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eddy-autotune/eddy/test/node"
)

// TestReportOffline renders a report from fixed results: the table names
// every arm and computes the stall removed from cold and oracle.
func TestReportOffline(t *testing.T) {
	cfg := Short()
	cfg.Classes = cfg.Classes[:1]
	cls := cfg.Classes[0].Name
	mk := func(arm Arm, job, total float64) Result {
		return Result{Class: cls, Arm: arm, Samples: []Sample{{Job: job, Total: total}}}
	}
	results := []Result{mk(ArmCold, 10, 12), mk(ArmWarm16, 2, 6), mk(ArmEddy, 3, 5), mk(ArmOracle, 2, 4)}
	if got, ok := StallRemoved(results, cls, ArmEddy, total); !ok || got != 0.875 {
		t.Fatalf("stall removed by eddy counting warm-up = %v, %v; want 0.875", got, ok)
	}
	dir := t.TempDir()
	if err := Write(cfg, results, dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"report.md", "results.json", "chart.png"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s not written: %v", f, err)
		}
	}
}

// TestBenchShort is the CI benchmark: two small classes, every arm on the
// real node. It fails when eddy's prefetch, applied through the real loop,
// does not remove the share of the job's data stall it removes today
// (minStallRemoved), or when eddy,
// counting its warm-up, is slower than no prefetch at all (beyond 10% or
// 1 s of noise on a shared 2-core machine). Where a peer arm beats eddy
// counting warm-up it says so in the log: on ShuffledEpochs a 16-reader
// warm-up and Fluid's async prefetcher do today (eddy holds the job until
// its sidecar has warmed the whole dataset; issue 16 is open on it). Run
// it under flock /tmp/eddy-realnode.lock.
func TestBenchShort(t *testing.T) {
	// Guards against regressions, below what was measured on a shared
	// 2-core VM (ShuffledEpochs 0.91–0.98, SequentialScan 0.24–0.52 over
	// four runs); issue 16's goal is 0.9 for both.
	minStallRemoved := map[string]float64{"ShuffledEpochs": 0.75, "SequentialScan": 0.1}
	node.SkipUnlessAvailable(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("/tmp", "eddy-bench-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := Short()
	cfg.Log = node.TestLog(t)
	out := os.Getenv("EDDY_BENCH_OUT")
	if out == "" {
		out = filepath.Join(dir, "report")
	}
	results, err := Main(ctx, Options{Config: cfg, Dir: filepath.Join(dir, "c"), Out: out})
	if md, rerr := os.ReadFile(filepath.Join(out, "report.md")); rerr == nil {
		t.Logf("\n%s", md)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, class := range cfg.Classes {
		var eddy *Result
		for i := range results {
			if results[i].Class == class.Name && results[i].Arm == ArmEddy {
				eddy = &results[i]
			}
		}
		if eddy == nil || len(eddy.Samples) == 0 {
			t.Errorf("%s: eddy's arm did not run", class.Name)
			continue
		}
		if removed, ok := StallRemoved(results, class.Name, ArmEddy, job); !ok || removed < minStallRemoved[class.Name] {
			t.Errorf("%s: eddy's prefetch removed %.2f of the job's data stall, want at least %.2f", class.Name, removed, minStallRemoved[class.Name])
		}
		e := eddy.Median(total)
		for _, r := range results {
			if r.Class != class.Name || r.Arm == ArmEddy || r.Arm == ArmOracle || len(r.Samples) == 0 {
				continue
			}
			p := r.Median(total)
			switch {
			case e <= p*1.1 || e-p <= 1:
			case r.Arm == ArmCold:
				t.Errorf("%s: eddy %.2fs counting warm-up, slower than no prefetch (%.2fs)", class.Name, e, p)
			default:
				t.Logf("%s: eddy %.2fs counting warm-up, slower than %s %.2fs (known, issue 16)", class.Name, e, r.Arm, p)
			}
		}
	}
}
