package main

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/eddy-autotune/eddy/test/demo"
)

func newDemoCmd() *cobra.Command {
	var o demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run eddy's whole loop on this machine: record, classify, recommend, apply, inject",
		Long: `Run eddy's whole loop on this machine, as root, from an eddy checkout:

  1. a real kube-apiserver and etcd with eddy's CRDs (make tools builds them);
  2. the analyzer, collector (eBPF), webhook and operator as processes of
     the eddy binary beside this one (--eddy);
  3. a namespace opted in with an Auto policy, a Job whose pod reads a
     dataset PVC in shuffled epochs — run on this machine in the cgroup a
     kubelet would give the pod, so the kernel programs attribute its reads;
     the dataset sits behind a slow remote (rclone over WebDAV through a
     proxy adding --latency and capping --bandwidth, mounted with rclone's
     file cache), and this first run is cold;
  4. the AccessProfile and Recommendations the analyzer writes, the operator
     applying one, and the webhook injecting it into the Job's next pod;
  5. that next pod run as a kubelet would: the injected prefetcher warms the
     mount's cache, then the same training run is timed again, and the two
     job times are printed side by side;
  6. the operator's verdict on the applied recommendation, judged by that
     run against the cold one (Verified, or Ineffective and rolled back),
     watched for --watch to show that it holds: nothing rolled back, nothing
     proposed again.

It needs rclone and fuse3 (or --local: the dataset on local disk, no
before/after measurement, no verdict). --ineffective shows the other
verdict: the mount's cache is emptied between the prefetcher and the
trainer, so the prefetch cannot help; eddy judges it Ineffective, rolls it
back once and proposes nothing of the kind during the policy's cool-off.

It prints each step with timings, the review screen and a summary line, then
stops everything (or keeps it running with --keep). Logs are in DIR/logs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			o.Out = cmd.OutOrStdout()
			_, err := demo.Run(ctx, o)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "dir", "", "folder for the dataset, state and logs (default /tmp/eddy-demo; emptied first)")
	f.StringVar(&o.BinDir, "bin-dir", "", "folder with kube-apiserver, etcd, kubectl (default: bin/ of the eddy checkout)")
	f.StringVar(&o.EddyBin, "eddy", "", "the eddy binary the components run from (default: beside this binary; make build makes it)")
	f.StringVar(&o.WorkloadBin, "workload", "", "the eddy-workload reader (default: beside this binary; make build makes it)")
	f.IntVar(&o.Files, "files", 128, "files in the demo dataset")
	f.Int64Var(&o.FileBytes, "file-bytes", 256<<10, "size of each file")
	f.IntVar(&o.Epochs, "epochs", 3, "passes of the training run over the dataset")
	f.BoolVar(&o.Local, "local", false, "read the dataset from local disk instead of the slow remote (no before/after measurement)")
	f.DurationVar(&o.Latency, "latency", 15*time.Millisecond, "one-way latency of the link to the remote")
	f.Int64Var(&o.Bandwidth, "bandwidth", 32<<20, "bandwidth of the link to the remote, bytes per second")
	f.BoolVar(&o.Ineffective, "ineffective", false, "empty the mount's cache after the prefetcher ran: the prefetch cannot help, and is judged Ineffective")
	f.DurationVar(&o.Watch, "watch", 20*time.Second, "how long to keep watching after the verdict")
	f.BoolVar(&o.Keep, "keep", false, "keep everything running after the loop until Ctrl-C")
	return cmd
}
