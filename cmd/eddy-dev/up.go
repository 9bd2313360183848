package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/eddy-autotune/eddy/config"
	"github.com/eddy-autotune/eddy/test/controlplane"
)

func newUpCmd() *cobra.Command {
	var opts struct {
		dir     string
		binDir  string
		nodes   int
		samples bool
		once    bool
	}
	up := &cobra.Command{
		Use:   "up",
		Short: "Start a local kube-apiserver + etcd with eddy's CRDs (and kwok fake nodes); Ctrl-C stops it",
		Long: `Start a real local Kubernetes control plane for eddy: kube-apiserver and etcd
with eddy's CRDs installed and, with --nodes N, kube-scheduler,
kube-controller-manager and kwok with N fake nodes on which Deployments,
StatefulSets and Jobs get Running pods.

It prints the kubeconfig path for kubectl and runs until interrupted
(Ctrl-C or SIGTERM), then stops every component and removes its state.

The binaries come from bin/ of the eddy checkout (run 'make tools' once), or
from --bin-dir / $EDDY_BIN_DIR.`,
		Example: `  eddy-dev up --nodes 2 --samples
  KUBECONFIG=/tmp/eddy-dev/kubeconfig kubectl get recommendations -A`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.nodes < 0 {
				return fmt.Errorf("--nodes must be 0 or more, got %d", opts.nodes)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return devUp(ctx, cmd, opts.dir, opts.binDir, opts.nodes, opts.samples, opts.once)
		},
	}
	up.Flags().StringVar(&opts.dir, "dir", filepath.Join(os.TempDir(), "eddy-dev"), "folder for the kubeconfig and component logs (emptied on stop)")
	up.Flags().StringVar(&opts.binDir, "bin-dir", "", "folder with kube-apiserver, etcd, kubectl, kwok (default: bin/ of the eddy checkout)")
	up.Flags().IntVar(&opts.nodes, "nodes", 0, "kwok fake nodes to create (0: API server and etcd only)")
	up.Flags().BoolVar(&opts.samples, "samples", false, "apply config/samples after start")
	up.Flags().BoolVar(&opts.once, "once", false, "stop right after start-up and samples (a smoke check)")
	return up
}

func devUp(ctx context.Context, cmd *cobra.Command, dir, binDir string, nodes int, samples, once bool) error {
	out := cmd.OutOrStdout()
	pidFile := filepath.Join(dir, "eddy-dev.pid")
	if data, err := os.ReadFile(pidFile); err == nil {
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(data))); pid > 0 && syscall.Kill(pid, 0) == nil {
			return fmt.Errorf("a dev control plane is already running in %s (pid %d): stop it, or pass another --dir", dir, pid)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clear %s: %w", dir, err)
	}
	fmt.Fprintf(out, "starting kube-apiserver + etcd")
	if nodes > 0 {
		fmt.Fprintf(out, ", kube-scheduler, kube-controller-manager, kwok with %d fake nodes", nodes)
	}
	fmt.Fprintln(out, " ...")
	start := time.Now()
	env, err := controlplane.Start(ctx, controlplane.Options{Dir: dir, BinDir: binDir, Nodes: nodes})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(out, "stopping ...")
		if err := env.Stop(); err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "eddy-dev: stop:", err)
		}
		_ = os.RemoveAll(dir)
		fmt.Fprintln(out, "stopped")
	}()
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "ready in %.1fs: API server %s\n", time.Since(start).Seconds(), env.Config.Host)
	fmt.Fprintf(out, "  export KUBECONFIG=%s\n", env.Kubeconfig)

	if samples {
		objs, err := config.Samples()
		if err != nil {
			return err
		}
		for _, s := range objs {
			obj := s.Object.DeepCopy()
			if err := env.Client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("apply %s (%s %s): %w", s.File, obj.GetKind(), obj.GetName(), err)
			}
		}
		fmt.Fprintf(out, "applied %d sample objects from config/samples\n\n", len(objs))
		if listing, err := env.Kubectl(ctx, "get", "eddy", "-A"); err == nil {
			fmt.Fprintln(out, listing)
		} else {
			return err
		}
	}
	if once {
		return nil
	}
	fmt.Fprintln(out, "running; Ctrl-C to stop")
	<-ctx.Done()
	if errors.Is(context.Cause(ctx), context.Canceled) {
		return nil
	}
	return nil
}
