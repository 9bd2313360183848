// Command eddy-dev holds eddy's development harnesses, kept out of the eddy
// binary that runs in clusters (they link test/controlplane and envtest):
//
//	eddy-dev up     a local kube-apiserver + etcd with eddy's CRDs
//	eddy-dev demo   eddy's whole loop on this machine (make demo)
//	eddy-dev bench  eddy against its peers on real pods (make bench)
package main

import (
	"fmt"
	"os"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

func main() {
	// The harnesses print their own progress; controller-runtime's clients
	// and envtest would otherwise print a stack trace saying no logger was
	// set, before the first step of `eddy-dev bench`.
	ctrllog.SetLogger(logr.Discard())
	root := &cobra.Command{
		Use:   "eddy-dev",
		Short: "eddy's development harnesses: a local control plane and the whole-loop demo",
		Long: `eddy's development harnesses, run from an eddy checkout as root:

  eddy-dev up     a real local kube-apiserver + etcd with eddy's CRDs
                  (and kwok fake nodes), until Ctrl-C
  eddy-dev demo   eddy's whole loop on this machine, timed (make demo)
  eddy-dev bench  eddy against Fluid's prefetcher, a warm-up and an oracle,
                  on real pods (make bench)

The components themselves are subcommands of the eddy binary beside it.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newUpCmd(), newDemoCmd(), newBenchCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "eddy-dev:", err)
		os.Exit(1)
	}
}
