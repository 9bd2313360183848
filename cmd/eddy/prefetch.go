package main

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
)

func init() {
	rootCmd.AddCommand(newPrefetchCmd())
}

func newPrefetchCmd() *cobra.Command {
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
