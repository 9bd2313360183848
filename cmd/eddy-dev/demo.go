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
	var (
		o      demo.Options
		noNode bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run eddy's whole loop on this machine: record, classify, recommend, apply, inject, verify",
		Long: `Run eddy's whole loop on this machine, as root, from an eddy checkout.

By default on real pods:

  1. a cluster: kube-apiserver, etcd, scheduler and controller-manager, and
     this machine as its node — kubelet, containerd, kube-proxy, CoreDNS (make
     node-binaries builds them; images are built from this checkout);
  2. eddy installed from config/ as pods: the collector DaemonSet (eBPF),
     the analyzer, the webhook and the operator;
  3. a namespace opted in (label eddy.io/autotune=enabled) with an Auto
     policy, and a dataset PVC on a slow remote (rclone serve behind a proxy
     adding --latency and capping --bandwidth, rclone-mounted with its file
     cache on the node);
  4. Job train-1 reading it in shuffled epochs from a cold mount; the
     AccessProfile and Recommendations the analyzer writes; the operator
     applying the Prefetch;
  5. Job train-2, the family's next run, from a cold mount again: the
     webhook injects the prefetch sidecar; both job times side by side;
  6. the operator's verdict on the change, judged by train-2 against
     train-1 (Verified, or Ineffective and rolled back), watched for --watch
     to show that it holds.

--no-node runs the loop without a kubelet: the components as processes, the
pods' containers run by the demo in the cgroups a kubelet would give them
(quicker to start; --local and --ineffective work only there: --local reads
the dataset from local disk, --ineffective empties the mount's cache between
the prefetcher and the trainer so that eddy judges the change Ineffective
and rolls it back once).

It prints each step with timings, the review screen and a summary line, then
stops everything — or, with --keep, says where to look (kubectl eddy
explain, kubectl get ...) and keeps it running until Ctrl-C.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			o.Out = cmd.OutOrStdout()
			var err error
			if noNode {
				_, err = demo.Run(ctx, o)
			} else {
				_, err = demo.RunOnNode(ctx, o)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "dir", "", "folder for the cluster (or, with --no-node, the dataset, state and logs); default /tmp/eddy-demo, emptied first")
	f.StringVar(&o.BinDir, "bin-dir", "", "folder with kube-apiserver, etcd, kubectl, kubelet, kube-proxy (default: bin/ of the eddy checkout)")
	f.StringVar(&o.EddyBin, "eddy", "", "--no-node: the eddy binary the components run from (default: beside this binary; make build makes it)")
	f.StringVar(&o.WorkloadBin, "workload", "", "--no-node: the eddy-workload reader (default: beside this binary; make build makes it)")
	f.IntVar(&o.Files, "files", 128, "files in the demo dataset")
	f.Int64Var(&o.FileBytes, "file-bytes", 256<<10, "size of each file")
	f.IntVar(&o.Epochs, "epochs", 3, "passes of the training run over the dataset")
	f.BoolVar(&o.Local, "local", false, "--no-node: read the dataset from local disk instead of the slow remote (no before/after measurement)")
	f.DurationVar(&o.Latency, "latency", 15*time.Millisecond, "one-way latency of the link to the remote")
	f.Int64Var(&o.Bandwidth, "bandwidth", 32<<20, "bandwidth of the link to the remote, bytes per second")
	f.BoolVar(&o.Ineffective, "ineffective", false, "--no-node: empty the mount's cache after the prefetcher ran: the prefetch cannot help, and is judged Ineffective")
	f.DurationVar(&o.Watch, "watch", 20*time.Second, "how long to keep watching after the verdict")
	f.BoolVar(&noNode, "no-node", false, "run the components as processes and the pods' containers in cgroups, without a kubelet")
	f.BoolVar(&o.Keep, "keep", false, "keep everything running after the loop until Ctrl-C")
	return cmd
}
