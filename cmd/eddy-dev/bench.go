package main

import (
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/eddy-autotune/eddy/test/bench"
)

func newBenchCmd() *cobra.Command {
	var o bench.Options
	var short, components bool
	var repeats int
	var classes []string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure eddy against no prefetch, Fluid's file prefetcher, a hand-tuned warm-up and an oracle, on real pods",
		Long: `Measure eddy against what users run today, as root, from an eddy checkout
(make bench). A cluster with a real node starts, eddy is deployed from
config/, and for each class (ShuffledEpochs, a PyTorch DataLoader training
loop in an image built from Debian's python3-torch; the same with a dataset
twice the cache as ShuffledEpochs-2xCache; SequentialScan, RandomReads,
HotSet) a
dataset behind a slow remote (rclone serve, a latency and bandwidth
proxy, a metered link, an rclone FUSE mount) is read by a real pod under each
arm, from cold: no prefetch; Fluid's file prefetcher script as a native
sidecar, sync and async ($EDDY_FLUID_PREFETCHER or Fluid's folder under
/work/shared); 16 parallel readers before the job; eddy (run 1 observed
through the real loop, run 2 measured); and an oracle (data already warm).
It writes report.md, results.json and chart.png into --out. With
--components it first runs eddy's own component benchmarks (go test, from the
checkout) and adds their figures to the report (components.json, and go
test's output in components.txt).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			o.Config = bench.Full()
			if short {
				o.Config = bench.Short()
			}
			if len(classes) > 0 {
				var keep []bench.Class
				for _, c := range o.Config.Classes {
					if slices.Contains(classes, c.Name) {
						keep = append(keep, c)
					}
				}
				if len(keep) == 0 {
					return fmt.Errorf("--classes %v: none of the preset's classes", classes)
				}
				o.Config.Classes = keep
			}
			if components {
				o.Components = bench.Components
			}
			if repeats > 0 {
				o.Config.Repeats = repeats
			}
			o.Config.Log = cmd.OutOrStdout()
			_, err := bench.Main(ctx, o)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "dir", "/tmp/eddy-bench", "folder for the cluster (emptied first)")
	f.StringVar(&o.Out, "out", "docs/bench", "folder for report.md, results.json and chart.png")
	f.BoolVar(&short, "short", false, "the CI version: two small classes, one run per arm")
	f.IntVar(&repeats, "repeats", 0, "runs per arm (0: the preset's)")
	f.BoolVar(&components, "components", false, "first run eddy's component benchmarks (collector overhead, analyzer intake, webhook latency, operator convergence) with go test from this checkout, and report them beside the classes (make bench sets it; about 15 minutes more)")
	f.StringSliceVar(&classes, "classes", nil, "run only these classes (default: all of the preset's)")
	return cmd
}
