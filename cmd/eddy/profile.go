package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/eddy-autotune/eddy/analyzer/advice"
	"github.com/eddy-autotune/eddy/profile"
)

func init() {
	rootCmd.AddCommand(newProfileCmd())
}

func newProfileCmd() *cobra.Command {
	var (
		asJSON      bool
		output      string
		interval    time.Duration
		data        []string
		cacheBudget int64
	)
	cmd := &cobra.Command{
		Use:   "profile [flags] -- CMD [ARGS...]",
		Short: "Run a command and say how it reads its data and what eddy would do",
		Long: `Run CMD in a cgroup of its own while eddy's eBPF recorder counts its file
reads, then report its access pattern (class and confidence), the features
behind it, the share of time it spent waiting on reads, and the
recommendations eddy would make. No cluster needed; needs root.

CMD's standard streams and exit status pass through. The report goes to
standard error (as text) or standard output (with --json) after CMD ends, or
to --output. Reads through memory mappings (NumPy memmaps, Arrow, LMDB,
SQLite with mmap) count as reads of their file. The program's own files are
left out and the report says which and why: files of the system (/usr,
/proc, ...), files mapped executable (binaries, libraries, native modules),
files under the interpreter's own prefix (a venv, conda environment, pyenv
version or a copy under /opt) and the interpreter's script.

The data is grouped by dataset root and each root gets its own class,
features and advice, beside the whole command's totals. Files on different
mounts, or read differently (at random offsets or in order), are in
different groups; a group's root is the deepest directory holding 90% of
its bytes, the rest found the same way. A file under no root holding 2% of
the bytes (a settings file read at start, say) is left out. --data
(repeatable) names the roots instead: files under none of them are left
out.`,
		Example: `  eddy profile -- sha256sum /data/*
  eddy profile --json --data /data -- python3 train.py`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return profile.ErrNoCommand
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() > 0 {
				return fmt.Errorf("unexpected arguments before --: %v (put eddy's flags before -- and the command after it)", args[:cmd.ArgsLenAtDash()])
			}
			rep, err := profile.Run(cmd.Context(), args, profile.Options{
				Interval: interval,
				Data:     data,
				Stdin:    os.Stdin,
				Stdout:   os.Stdout,
				Stderr:   os.Stderr,
				Bounds:   advice.Bounds{CacheBudgetBytes: float64(cacheBudget)},
			})
			var exitErr *profile.ExitError
			if err != nil && !errors.As(err, &exitErr) {
				return err
			}
			out := io.Writer(os.Stderr)
			if asJSON {
				out = os.Stdout
			}
			if output != "" {
				f, ferr := os.Create(output)
				if ferr != nil {
					return fmt.Errorf("write the report: %w", ferr)
				}
				defer f.Close()
				out = f
			}
			if werr := writeReport(out, rep, asJSON); werr != nil {
				return fmt.Errorf("write the report: %w", werr)
			}
			if exitErr != nil {
				return silentExit{code: exitErr.Code}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.Flags().StringVarP(&output, "output", "o", "", "write the report to this file")
	cmd.Flags().DurationVar(&interval, "interval", profile.DefaultInterval, "how often the kernel counters are drained into a window")
	cmd.Flags().StringSliceVar(&data, "data", nil, "a dataset root: profile the files under this directory as one dataset, and no files outside every --data (repeatable)")
	cmd.Flags().Int64Var(&cacheBudget, "cache-budget", 0, "cache budget in bytes for the advice (default 64 GiB)")
	return cmd
}

func writeReport(w io.Writer, rep *profile.Report, asJSON bool) error {
	if !asJSON {
		return rep.WriteText(w)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// silentExit passes the profiled command's exit status through. Its message
// is what main prints before exiting with the code.
type silentExit struct{ code int }

func (e silentExit) Error() string {
	return fmt.Sprintf("the profiled command exited with status %d", e.code)
}

// ExitCode is the status eddy exits with.
func (e silentExit) ExitCode() int { return e.code }
