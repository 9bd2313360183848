package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/eddy-autotune/eddy/test/controlplane"
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
	bounded := cfg
	bounded.Classes = []Class{cfg.Classes[0]}
	bounded.Classes[0].CacheMaxSize = "6M"
	if md := Markdown(bounded, results); !strings.Contains(md, "FUSE cache bound 6M)") {
		t.Errorf("a class with its own cache bound does not say so:\n%s", md)
	}
	dir := t.TempDir()
	if err := Write(cfg, results, nil, dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"report.md", "results.json", "chart.png"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s not written: %v", f, err)
		}
	}
}

// TestTorchPodSpec checks what the ShuffledEpochs job runs: the PyTorch
// loop in the torch image with today's compute per file (5 ms) slept per
// batch, while the warm-up arm's init container stays eddy-workload's, and
// the other classes keep eddy-workload as their job.
func TestTorchPodSpec(t *testing.T) {
	for _, cfg := range []Config{Short(), Full()} {
		for _, class := range cfg.Classes {
			spec := (&Runner{Config: cfg}).podSpec(class, ArmWarm16)
			job := spec.Containers[0]
			if !strings.HasPrefix(class.Name, "ShuffledEpochs") {
				assert.Equal(t, node.WorkloadImage, job.Image, class.Name)
				continue
			}
			require.True(t, class.Torch, class.Name)
			assert.Equal(t, node.TorchImage, job.Image, class.Name)
			assert.Equal(t, []string{"/usr/bin/python3", node.TrainScript, "--dir", "/data", "--epochs", "3", "--seed", "7",
				"--batch-size", "8", "--workers", "2", "--compute", "0.04"}, job.Command, class.Name)
			require.Len(t, spec.InitContainers, 1)
			assert.Equal(t, node.WorkloadImage, spec.InitContainers[0].Image, class.Name)
		}
	}
}

// TestBenchShort is the CI benchmark: two small classes, every arm on the
// real node. It fails when eddy's prefetch, applied through the real loop,
// does not remove the share of the job's data stall it removes today
// (minStallRemoved), or when eddy, counting its warm-up, is slower than any
// other arm — no prefetch, Fluid's prefetcher, the 16-reader warm-up —
// beyond 10% or 1 s of noise on a shared 2-core machine (before eddy's
// prefetch ran alongside the job, Fluid's async prefetcher beat it by 1.3 s
// on ShuffledEpochs and this failed). Run it under flock
// /tmp/eddy-realnode.lock.
func TestBenchShort(t *testing.T) {
	// Guards against regressions, below what was measured on a shared
	// 2-core VM (ShuffledEpochs 0.91–0.98 with the Go reader, 1.02 in one
	// run with the PyTorch loop; SequentialScan 0.13–0.52 over five runs);
	// issue 16's goal is 0.9 for both.
	minStallRemoved := map[string]float64{"ShuffledEpochs": 0.75, "SequentialScan": 0.05}
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
			if p := r.Median(total); e > p*1.1 && e-p > 1 {
				t.Errorf("%s: eddy %.2fs counting warm-up, slower than %s (%.2fs)", class.Name, e, r.Arm, p)
			}
		}
	}
}

// BenchmarkComponentProbe is TestComponents' benchmark: it reports one
// figure per sub-benchmark.
func BenchmarkComponentProbe(b *testing.B) {
	for _, n := range []int{3, 5} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			b.ReportMetric(float64(n)*1.5, "widgets/s")
		})
	}
}

// TestComponents runs a component benchmark through go test as make bench
// does (this package's BenchmarkComponentProbe), reads its figures back by
// sub-benchmark, and reports a figure it never printed as missing, in the
// report too.
func TestComponents(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go test")
	}
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	probe := Component{Name: "probe", Package: "./test/bench", Benchmark: "^BenchmarkComponentProbe$", Benchtime: "1x",
		Figures: []Figure{
			{"ComponentProbe/n=3", "widgets/s", "three"},
			{"ComponentProbe/n=5", "widgets/s", "five"},
		}}
	absent := probe
	absent.Name = "absent"
	absent.Figures = []Figure{{"ComponentProbe/n=7", "widgets/s", "seven"}}
	var raw bytes.Buffer
	got := RunComponents(context.Background(), Config{Log: io.Discard}, root, []Component{probe, absent}, &raw)
	require.Len(t, got, 2)
	assert.Empty(t, got[0].Err)
	assert.Equal(t, 4.5, got[0].Values["ComponentProbe/n=3 widgets/s"])
	assert.Equal(t, 7.5, got[0].Values["ComponentProbe/n=5 widgets/s"])
	assert.Contains(t, got[1].Err, "ComponentProbe/n=7 widgets/s")
	assert.Contains(t, raw.String(), "BenchmarkComponentProbe/n=3")
	md := componentsMarkdown(got)
	assert.Contains(t, md, "| three | 4.50 |")
	assert.Contains(t, md, "**failed**: not reported")
}

// TestComponentBenchmarks runs make bench's component benchmarks as it does
// and checks each reports every figure the report shows (a renamed metric
// would otherwise show up only as "failed" in the next full report). About
// 15 minutes on the real node: set EDDY_BENCH_COMPONENTS=1, under flock
// /tmp/eddy-realnode.lock.
func TestComponentBenchmarks(t *testing.T) {
	if os.Getenv("EDDY_BENCH_COMPONENTS") == "" {
		t.Skip("set EDDY_BENCH_COMPONENTS=1 to run the component benchmarks (about 15 minutes)")
	}
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	got := RunComponents(context.Background(), Config{Log: node.TestLog(t)}, root, Components, io.Discard)
	for _, c := range got {
		assert.Empty(t, c.Err, c.Name)
	}
	t.Logf("\n%s", componentsMarkdown(got))
}

func TestRcloneSize(t *testing.T) {
	for in, want := range map[string]string{"32M": "32Mi", "1G": "1Gi", "512": "512Ki", "4096B": "4Ki", "2t": "2Ti"} {
		q, err := rcloneSize(in)
		if assert.NoError(t, err, in) {
			w := resource.MustParse(want)
			assert.Equal(t, w.Value(), q.Value(), in)
		}
	}
	for _, bad := range []string{"", "M", "-1M", "1.5G", "3X", "1Mi"} {
		_, err := rcloneSize(bad)
		assert.Error(t, err, bad)
	}
}
