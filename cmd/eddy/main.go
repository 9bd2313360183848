// Command eddy is one binary for every eddy component: each component is a
// subcommand, registered by the file that defines it. Invoked as kubectl-eddy
// it acts as the kubectl plugin.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/eddy-autotune/eddy/internal/memlimit"
)

var rootCmd = &cobra.Command{
	Use:   "eddy",
	Short: "eddy learns how pods read their data and makes the next run faster",
	Long: `eddy watches how pods read their files (eBPF, per node), classifies each
workload's access pattern, and turns it into recommendations: prefetch
sidecars or SDKs injected at admission, cache workers scaled to the working
set, and idle datasets evicted.

Start with 'eddy profile -- CMD' on any Linux machine (root, no cluster).`,
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	memlimit.Set()
	if strings.HasPrefix(filepath.Base(os.Args[0]), "kubectl-eddy") {
		rootCmd.Use = "kubectl eddy"
	}
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "eddy:", err)
		var code exitCoder
		if ok := asExitCoder(err, &code); ok {
			os.Exit(code.ExitCode())
		}
		os.Exit(1)
	}
}
