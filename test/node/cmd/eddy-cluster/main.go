// Command eddy-cluster runs eddy's local cluster with a real node (package
// test/node) for people: `make cluster` and `make cluster-down` call it.
//
//	eddy-cluster up --dir /tmp/eddy-cluster [--kwok-nodes 2] [--eddy=false] [--foreground]
//	eddy-cluster down --dir /tmp/eddy-cluster
//	eddy-cluster images --out bin/images
//
// up starts the cluster in the background (its log is DIR.log) and returns
// once it is ready, printing the kubeconfig; down stops it and checks that
// nothing is left behind.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/eddy-autotune/eddy/test/node"
	"github.com/eddy-autotune/eddy/test/node/workload"
)

const pidFile = "cluster.pid"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: eddy-cluster up|down|images [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = up(os.Args[2:])
	case "down":
		err = down(os.Args[2:])
	case "images":
		err = images(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: use up, down or images", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "eddy-cluster:", err)
		os.Exit(1)
	}
}

func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	dir := fs.String("dir", "/tmp/eddy-cluster", "folder for the cluster's state and logs (emptied first)")
	kwok := fs.Int("kwok-nodes", 2, "kwok fake nodes beside the real node")
	datasets := fs.Bool("datasets", true, "create the sample datasets default/dataset-local and default/dataset-remote")
	foreground := fs.Bool("foreground", false, "run in this process until SIGINT/SIGTERM")
	imageList := fs.String("images", strings.Join(node.ImageNames, ","), "images to build and import")
	withEddy := fs.Bool("eddy", true, "install eddy from config/ (analyzer, collector DaemonSet, webhook, operator) as pods on the real node")
	_ = fs.Parse(args)
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if pid := runningPID(abs); pid > 0 {
		return fmt.Errorf("a cluster is already running in %s (pid %d): make cluster-down first", abs, pid)
	}
	if !*foreground {
		return daemonize(abs, args)
	}
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Println("starting the control plane and a real node ...")
	c, err := node.Start(ctx, node.Options{
		Dir: abs, KwokNodes: *kwok, RemoteDatasets: *datasets, Images: strings.Split(*imageList, ","), Log: os.Stdout,
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("stopping ...")
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "eddy-cluster: stop:", err)
			return
		}
		fmt.Println("stopped; nothing left behind")
	}()
	if *datasets {
		sample := func(dir string) error { return workload.WriteSample(dir, 64, 256<<10, 64<<20) }
		if _, err := c.AddLocalDataset(ctx, "default", "dataset-local", sample); err != nil {
			return err
		}
		if _, err := c.AddRemoteDataset(ctx, "default", "dataset-remote", sample, node.RemoteOptions{Delay: 5 * time.Millisecond, Bandwidth: 50 << 20}); err != nil {
			return err
		}
		fmt.Println("datasets: PVCs default/dataset-local (host folder) and default/dataset-remote (rclone FUSE mount)")
	}
	if *withEddy {
		e, err := c.DeployEddy(ctx, node.EddyOptions{})
		if err != nil {
			return fmt.Errorf("install eddy: %w", err)
		}
		fmt.Printf("eddy: analyzer, collector, webhook and operator running in %s (analyzer %s);\n  opt a namespace in with: kubectl label namespace NAME eddy.io/autotune=enabled\n", node.EddySystem, e.AnalyzerURL)
	}
	if err := os.WriteFile(filepath.Join(abs, pidFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	fmt.Printf("ready: node %s (%s), DNS %v\n  export KUBECONFIG=%s\n", c.NodeName, c.NodeIP, c.DNS, c.Kubeconfig)
	<-ctx.Done()
	return nil
}

// daemonize re-runs `up --foreground` in a new session with its output in
// DIR.log and waits until it is ready or has failed.
func daemonize(dir string, args []string) error {
	logPath := dir + ".log"
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, append([]string{"up", "--foreground"}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	start := time.Now()
	for {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("cluster failed to start (%v); %s:\n%s", err, logPath, log)
		case <-time.After(500 * time.Millisecond):
		}
		if runningPID(dir) == cmd.Process.Pid {
			log, _ := os.ReadFile(logPath)
			fmt.Print(string(log))
			fmt.Printf("up in %.0fs; log %s; stop with make cluster-down\n", time.Since(start).Seconds(), logPath)
			return nil
		}
	}
}

func down(args []string) error {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	dir := fs.String("dir", "/tmp/eddy-cluster", "the cluster's folder")
	_ = fs.Parse(args)
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if pid := runningPID(abs); pid > 0 {
		fmt.Printf("stopping the cluster (pid %d) ...\n", pid)
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(3 * time.Minute)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if syscall.Kill(pid, 0) == nil {
			fmt.Printf("the cluster did not stop within 3 minutes; killing pid %d and cleaning up after it\n", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := node.Teardown(ctx, abs); err != nil {
		return err
	}
	if err := os.RemoveAll(abs); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	fmt.Println("down: no process, mount, network device, iptables chain or cgroup of the cluster is left")
	return nil
}

func images(args []string) error {
	fs := flag.NewFlagSet("images", flag.ExitOnError)
	out := fs.String("out", "bin/images", "folder for the image tarballs")
	_ = fs.Parse(args)
	built, err := node.BuildImages(context.Background(), *out, fs.Args()...)
	for _, b := range built {
		state := "unchanged"
		if b.Rebuilt {
			state = "rebuilt"
		}
		fmt.Printf("%-9s %-24s %s (%s)\n", b.Name, b.Ref, b.Tarball, state)
	}
	return err
}

// runningPID returns the pid recorded in dir if that process is alive.
func runningPID(dir string) int {
	data, err := os.ReadFile(filepath.Join(dir, pidFile))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}
