package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/eddy-autotune/eddy/test/controlplane"
	"github.com/eddy-autotune/eddy/test/node"
	"github.com/eddy-autotune/eddy/test/node/workload"
)

// Full is `make bench`: the four classes, and ShuffledEpochs with a
// dataset twice the cache, at sizes a 2-core machine runs in
// well under an hour.
func Full() Config {
	return Config{
		Classes: []Class{
			{Name: "ShuffledEpochs", Pattern: workload.SmallFilesShuffled, Torch: true, Epochs: 3, Compute: 5 * time.Millisecond, Files: 256, FileSize: 256 << 10},
			// The same dataset, twice the cache: rclone evicts down to its
			// bound every 2 s, and a file reopened on the mount does not keep
			// its pages, so a later epoch fetches again what was evicted.
			{Name: "ShuffledEpochs-2xCache", Pattern: workload.SmallFilesShuffled, Torch: true, Epochs: 3, Compute: 5 * time.Millisecond, Files: 256, FileSize: 256 << 10, CacheMaxSize: "32M"},
			{Name: "SequentialScan", Pattern: workload.Sequential, Files: 4, FileSize: 32 << 20},
			// A random-access dataset is mounted as rclone advises for one:
			// small first chunks, no read-ahead. With rclone's defaults each
			// 4 KiB read streamed megabytes (the cold run fetched 3× the
			// file), so no ranged read could fetch less than the whole file.
			// The seed is the same every run: the same records, as a job's
			// fixed index reads them.
			{Name: "RandomReads", Pattern: workload.Random4K, Files: 0, LargeSize: 256 << 20, OpsPerFile: 400, Compute: 2 * time.Millisecond, ReadChunkSize: "64k"},
			{Name: "HotSet", Pattern: workload.HotSet, Epochs: 30, Compute: 5 * time.Millisecond, Files: 128, FileSize: 1 << 20},
		},
		Arms: AllArms, Repeats: 2,
		Latency: 20 * time.Millisecond, Bandwidth: 64 << 20, CacheMaxSize: "1G",
	}
}

// Short is the CI version: small data, two classes, one run per arm.
func Short() Config {
	return Config{
		Classes: []Class{
			{Name: "ShuffledEpochs", Pattern: workload.SmallFilesShuffled, Torch: true, Epochs: 3, Compute: 5 * time.Millisecond, Files: 96, FileSize: 128 << 10},
			{Name: "SequentialScan", Pattern: workload.Sequential, Files: 2, FileSize: 48 << 20}, // long enough (about 3 s cold) that a pod start's noise does not decide
		},
		Arms: AllArms, Repeats: 2,
		Latency: 20 * time.Millisecond, Bandwidth: 64 << 20, CacheMaxSize: "512M",
	}
}

// Options of a whole benchmark: a cluster, eddy deployed, the runs, the
// report.
type Options struct {
	Config Config
	// Dir holds the cluster; Out receives report.md, results.json and
	// chart.png.
	Dir, Out string
	// Components are run first, from the checkout (ModuleRoot of the
	// working folder), and reported beside the classes; none when empty.
	Components []Component
}

// Main starts a cluster with a real node and eddy deployed from config/,
// runs the benchmark, writes the report and stops everything. It returns
// the results even when a later step failed.
func Main(ctx context.Context, o Options) ([]Result, error) {
	start := time.Now()
	comps, err := runComponents(ctx, o)
	if err != nil {
		return nil, err
	}
	images := []string{"pause", "workload", "eddy"}
	arms := o.Config.Arms
	o.Config.Arms = nil
	for _, a := range arms {
		if (a == ArmFluidSync || a == ArmFluidAsync) && !fileExists(node.FluidPrefetcherScript()) {
			logf(o.Config, "no Fluid prefetcher script at %s: arm %s left out", node.FluidPrefetcherScript(), a)
			continue
		}
		o.Config.Arms = append(o.Config.Arms, a)
	}
	for _, a := range o.Config.Arms {
		if a == ArmFluidSync || a == ArmFluidAsync {
			images = append(images, node.FluidPrefetcherName)
			break
		}
	}
	for _, c := range o.Config.Classes {
		if c.Torch {
			images = append(images, node.TorchName)
			break
		}
	}
	c, err := node.Start(ctx, node.Options{Dir: o.Dir, Images: images, RemoteDatasets: true, Log: o.Config.Log})
	if err != nil {
		return nil, fmt.Errorf("start the cluster: %w", err)
	}
	defer func() { _ = c.Stop() }()
	if _, err := c.DeployEddy(ctx, node.EddyOptions{Args: map[string][]string{
		// A workload is advised once its run ended: 5 s without a read
		// (the default, 30 s, is for pods that pause between reads).
		"analyzer":  {"--flush-interval=2s", "--run-ended-after=5s"},
		"collector": {"--interval=1s"},
		"operator":  {"--verify-settle=-1s"},
	}}); err != nil {
		return nil, fmt.Errorf("deploy eddy: %w", err)
	}
	logf(o.Config, "cluster and eddy up in %.0fs", time.Since(start).Seconds())
	r := &Runner{Cluster: c, Config: o.Config}
	results, runErr := r.Run(ctx)
	if err := Write(o.Config, results, comps, o.Out); err != nil {
		return results, err
	}
	logf(o.Config, "report in %s after %.0fs", o.Out, time.Since(start).Seconds())
	return results, runErr
}

// runComponents runs o.Components from the checkout, go test's output into
// components.txt in o.Out.
func runComponents(ctx context.Context, o Options) ([]ComponentResult, error) {
	if len(o.Components) == 0 {
		return nil, nil
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, fmt.Errorf("the component benchmarks run with go test from an eddy checkout: %w", err)
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	raw, err := os.Create(filepath.Join(o.Out, "components.txt"))
	if err != nil {
		return nil, err
	}
	comps := RunComponents(ctx, o.Config, root, o.Components, raw)
	if err := raw.Close(); err != nil {
		return nil, err
	}
	return comps, ctx.Err()
}

// Write writes report.md, results.json and chart.png into dir, and
// components.json when component benchmarks ran.
func Write(cfg Config, results []Result, comps []ComponentResult, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	md := "# eddy benchmark\n\n" + time.Now().UTC().Format(time.RFC3339) + "\n\n![chart](chart.png)\n\n" + Markdown(cfg, results) + componentsMarkdown(comps)
	if len(comps) > 0 {
		data, _ := json.MarshalIndent(comps, "", "  ")
		if err := os.WriteFile(filepath.Join(dir, "components.json"), data, 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(md), 0o644); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(results, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "results.json"), data, 0o644); err != nil {
		return err
	}
	return Chart(cfg, results, filepath.Join(dir, "chart.png"))
}

func logf(cfg Config, format string, args ...any) {
	(&Runner{Config: cfg}).logf(format, args...)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
