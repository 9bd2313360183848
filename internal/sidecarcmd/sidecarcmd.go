// Package sidecarcmd holds the commands of what eddy's webhook injects into
// application pods: the prefetch sidecar ("prefetch") and the SDK installer
// ("sdk install"). Both the eddy binary and the small eddy-sidecar binary
// (cmd/eddy-sidecar, what the webhook's containers run) register them.
package sidecarcmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"

	"github.com/eddy-autotune/eddy/prefetch"
	"github.com/eddy-autotune/eddy/sdk"
)

// Prefetch is the prefetch sidecar's command ("prefetch").
func Prefetch() *cobra.Command {
	var (
		opts         prefetch.Options
		verbosity    int
		exitWhenDone bool
	)
	cmd := &cobra.Command{
		Use:   "prefetch",
		Short: "Read a dataset ahead of the application (the injected sidecar)",
		Long: `Read a dataset ahead of the application through the pod's dataset mounts, so
the cache below them (page cache, FUSE or Fluid cache) holds the data before
the application asks for it. Nothing outside the --root folders is read.

Strategies:
  WholeDataset  everything under the roots (or the manifest's files), in parallel
  Sequential    first-access order (the manifest's, else lexical), window growing
  Ordered       the manifest's exact order, reordered by SDK hints per epoch
  HotSet        the manifest's hot files, hottest first
  Ranges        only the byte ranges the manifest lists (random reads)
  Resident      whole files within --budget, then each touched every
                --resident-interval so the cache keeps them

Progress is served on --status-addr: /status (JSON), /warm (200 once
--warm-threshold percent is read: use it as the startup probe), /metrics and
/healthz. After the work is done the sidecar keeps serving (and following SDK
hints) until it is stopped, unless --exit-when-done.`,
		Example: `  eddy prefetch --strategy=WholeDataset --root=/eddy/data/train --warm-threshold=90
  eddy prefetch --strategy=Ordered --root=/eddy/data/train --hint-socket=/eddy/sdk/prefetch.sock \
      --path-alias=/data/train=/eddy/data/train`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr,
				&slog.HandlerOptions{Level: slog.Level(-verbosity)})).WithName("prefetch")
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runPrefetch(ctx, opts, log, exitWhenDone)
		},
	}
	opts.BindFlags(cmd.Flags())
	cmd.Flags().IntVarP(&verbosity, "v", "v", 0, "log verbosity (0: info, 1+: debug)")
	cmd.Flags().BoolVar(&exitWhenDone, "exit-when-done", false, "exit once everything is read instead of serving until stopped")
	return cmd
}

func runPrefetch(ctx context.Context, opts prefetch.Options, log logr.Logger, exitWhenDone bool) error {
	p, err := prefetch.New(opts, log)
	if err != nil {
		return err
	}
	defer p.Close()
	addr := opts.StatusAddr
	if addr == "" {
		addr = fmt.Sprintf(":%d", prefetch.StatusPort)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("status server on --status-addr=%s: %w", addr, err)
	}
	srv := &http.Server{Handler: p.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(err, "status server stopped", "addr", addr)
		}
	}()
	defer func() {
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Info("status server listening", "addr", ln.Addr().String())
	if err := p.Run(ctx); err != nil {
		return err
	}
	if !exitWhenDone {
		<-ctx.Done()
	}
	return nil
}

// SDK is the command that installs the SDKs ("sdk install").
func SDK() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sdk",
		Short: "The SDKs eddy injects into application containers",
	}
	var to string
	install := &cobra.Command{
		Use:   "install --to DIR",
		Short: "Write the embedded SDKs into DIR (the webhook's init container runs this)",
		Long: `Write the SDKs embedded in this binary into DIR. The Python SDK is
DIR/sitecustomize.py and DIR/eddy_sdk: put DIR on PYTHONPATH and it activates
itself, following PyTorch DataLoaders and sending each epoch's read order to
the prefetch sidecar's socket ($EDDY_PREFETCH_SOCKET, default
` + prefetch.SDKMountPath + "/" + prefetch.HintSocketName + `).`,
		Example: "  eddy sdk install --to " + prefetch.SDKMountPath,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to == "" {
				return errors.New("--to is required: the folder to write the SDKs into (e.g. " + prefetch.SDKMountPath + ")")
			}
			if err := sdk.Install(to); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed %d SDK files; PYTHONPATH=%s\n", len(sdk.Files()), sdk.PythonPath(to))
			return nil
		},
	}
	install.Flags().StringVar(&to, "to", "", "folder to write the SDKs into")
	cmd.AddCommand(install)
	return cmd
}
