package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/eddy-autotune/eddy/test/demo"
)

func init() {
	rootCmd.AddCommand(newDemoCmd())
}

func newDemoCmd() *cobra.Command {
	var o demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run eddy's whole loop on this machine: record, classify, recommend, apply, inject",
		Long: `Run eddy's whole loop on this machine, as root, from an eddy checkout:

  1. a real kube-apiserver and etcd with eddy's CRDs (make tools builds them);
  2. the analyzer, collector (eBPF), webhook and operator as eddy processes;
  3. a namespace opted in with an Auto policy, a Job whose pod reads a
     dataset PVC in shuffled epochs — run on this machine in the cgroup a
     kubelet would give the pod, so the kernel programs attribute its reads;
  4. the AccessProfile and Recommendations the analyzer writes, the operator
     applying one, and the webhook injecting it into the Job's next pod.

It prints each step with timings and the review screen, then stops
everything (or keeps it running with --keep). Logs are in DIR/logs.`,
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
	f.StringVar(&o.WorkloadBin, "workload", "", "the eddy-workload reader (default: beside this binary; make build makes it)")
	f.IntVar(&o.Files, "files", 256, "files in the demo dataset")
	f.Int64Var(&o.FileBytes, "file-bytes", 256<<10, "size of each file")
	f.IntVar(&o.Epochs, "epochs", 4, "passes of the training run over the dataset")
	f.BoolVar(&o.Keep, "keep", false, "keep everything running after the loop until Ctrl-C")
	return cmd
}
