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
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/eddy-autotune/eddy/bpf"
	"github.com/eddy-autotune/eddy/collector"
	"github.com/eddy-autotune/eddy/internal/cgroupv2"
)

func init() {
	rootCmd.AddCommand(newCollectorCmd())
}

type collectorFlags struct {
	node           string
	analyzer       string
	interval       time.Duration
	stateDir       string
	metricsAddress string
	kubeconfig     string
	cgroupRoot     string
	procRoot       string
	kubeletRoot    string
	tokenFile      string
	analyzerCA     string
	analyzerName   string
	maxBuffered    int
	maxFiles       uint32
	runTimeStats   bool
	attach         string
	verbosity      int
}

func newCollectorCmd() *cobra.Command {
	var f collectorFlags
	cmd := &cobra.Command{
		Use:   "collector",
		Short: "Run the node collector: record pods' file reads with eBPF and ship them to the analyzer",
		Long: `Run eddy's node collector (one per node, as a DaemonSet).

It loads eddy's eBPF programs, watches the pods scheduled to this node, and
records file reads only for containers of pods in namespaces labelled
eddy.io/autotune=enabled (pods labelled eddy.io/autotune=disabled are
skipped). Every --interval it drains the kernel's counters, attributes each
file to its pod, the pod's top-level workload (Deployment, StatefulSet, Job,
CronJob, PyTorchJob, ...) and the dataset it lies in (Fluid Dataset, PVC or
pod volume), and ships the result as one window to the analyzer.

The analyzer is reached over TLS (verified with --analyzer-ca) and every call
carries the pod's projected service-account token of audience
eddy.io/access-intake (--token-file): the analyzer takes records only for
pods of this node in opted-in namespaces.

Windows are written to --state-dir before they are sent and removed once the
analyzer acknowledges them, so a restart neither loses nor repeats a window;
when the analyzer stays unreachable the oldest windows are dropped (and
counted) once --max-buffered-windows is reached.

Prometheus metrics (per namespace, pod, workload and dataset, never per file)
and /healthz, /readyz are served on --metrics-address.

Requirements: Linux 5.11+ with BTF (/sys/kernel/btf/vmlinux); CAP_BPF and
CAP_PERFMON (or CAP_SYS_ADMIN); read access to the cgroup2 hierarchy, the
host's /proc (hostPID) and the kubelet's pods folder; RBAC to list and watch
pods and namespaces and to get any owner kind, PersistentVolumeClaims and
PersistentVolumes.`,
		Example: `  eddy collector --node-name "$NODE_NAME" --analyzer-address eddy-analyzer.eddy-system.svc:9470
  eddy collector --kubeconfig ~/.kube/config --node-name node-1 --analyzer-address 127.0.0.1:9470 \
    --analyzer-ca ca.crt --token-file token --state-dir /tmp/eddy-collector`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runCollector(ctx, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.node, "node-name", os.Getenv("NODE_NAME"), "this node's name, as in the pods' spec.nodeName (default $NODE_NAME)")
	fl.StringVar(&f.analyzer, "analyzer-address", "", "host:port of the analyzer's AccessIntake gRPC service (required)")
	fl.StringVar(&f.tokenFile, "token-file", "/var/run/secrets/eddy.io/collector/token", "the pod's projected service-account token of audience eddy.io/access-intake, sent to the analyzer (re-read when rotated)")
	fl.StringVar(&f.analyzerCA, "analyzer-ca", "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", "PEM CA that signs the analyzer's certificate, besides the system's roots (ignored when absent)")
	fl.StringVar(&f.analyzerName, "analyzer-server-name", "", "name the analyzer's certificate must hold (default: the host of --analyzer-address)")
	fl.DurationVar(&f.interval, "interval", 10*time.Second, "how often the kernel counters are drained into one window")
	fl.StringVar(&f.stateDir, "state-dir", "/var/lib/eddy/collector", "directory for the collector id, sequence numbers and unacknowledged windows (keep it across restarts: a hostPath)")
	fl.StringVar(&f.metricsAddress, "metrics-address", ":9464", "address for /metrics, /healthz and /readyz (empty disables)")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, then the in-cluster service account)")
	fl.StringVar(&f.cgroupRoot, "cgroup-root", "", "the host's cgroup2 mount, or a folder holding it as unified/ (hybrid hosts) (default: found in /proc/self/mountinfo, e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified)")
	fl.StringVar(&f.procRoot, "proc-root", "/proc", "the host's /proc (the collector needs hostPID to see pods' processes)")
	fl.StringVar(&f.kubeletRoot, "kubelet-root", "/var/lib/kubelet", "the kubelet's root directory; its pods folder must be readable")
	fl.IntVar(&f.maxBuffered, "max-buffered-windows", 720, "most unacknowledged windows kept in --state-dir before the oldest are dropped")
	fl.Uint32Var(&f.maxFiles, "max-files", 0, "most (container, file) entries the kernel keeps between drains (0: the recorder's default)")
	fl.BoolVar(&f.runTimeStats, "bpf-run-time-stats", false, "turn on the kernel's run-time accounting of BPF programs (eddy_collector_bpf_run_*): it costs 100-150 ns per traced read and slows every BPF program on the node, and needs CAP_SYS_ADMIN (or kernel.bpf_stats_enabled=1 set by the host)")
	fl.StringVar(&f.attach, "attach", "observed", "when the per-syscall and page-cache eBPF programs are attached: observed (only while a container of an opted-in pod runs on this node; a node with none pays nothing) or always")
	fl.IntVarP(&f.verbosity, "v", "v", 0, "log verbosity (0: info, 1: per-container changes, 2+: debug)")
	return cmd
}

func runCollector(ctx context.Context, f collectorFlags) error {
	level := slog.Level(-f.verbosity)
	log := logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})).WithName("collector")

	if f.node == "" {
		return errors.New("--node-name is empty and NODE_NAME is not set: pass this node's name (in a DaemonSet, from the downward API spec.nodeName)")
	}
	if f.analyzer == "" {
		return errors.New("--analyzer-address is required (host:port of the analyzer)")
	}
	if f.interval < 100*time.Millisecond {
		return fmt.Errorf("--interval %s is too short: use 100ms or more", f.interval)
	}
	if f.cgroupRoot == "" {
		mp, err := cgroupv2.Mountpoint()
		if err != nil {
			return fmt.Errorf("find the cgroup2 mount (%w): mount cgroup2 or pass --cgroup-root", err)
		}
		f.cgroupRoot = mp
	} else {
		root, err := cgroupv2.Resolve(f.cgroupRoot)
		if err != nil {
			return fmt.Errorf("--cgroup-root: %w (mount the host's /sys/fs/cgroup there)", err)
		}
		f.cgroupRoot = root
	}
	kubeletPods, err := checkReadable(f, log)
	if err != nil {
		return err
	}
	// The kernel side first: a missing capability or BTF is the most likely
	// deployment mistake, and its error names what is missing.
	if f.attach != "observed" && f.attach != "always" {
		return fmt.Errorf("--attach=%q: want observed or always", f.attach)
	}
	rec, err := bpf.Load(bpf.Options{MaxFiles: f.maxFiles, NoRunTimeStats: !f.runTimeStats, AttachAlways: f.attach == "always", Logger: log.WithName("bpf")})
	if err != nil {
		return err
	}
	if missing := rec.MissingHooks(); len(missing) > 0 {
		log.Info("running without some kernel hooks; their counters stay zero", "missing", missing)
	}
	src := collector.NewKernelSource(rec, 0, log.WithName("kernel"))
	defer src.Close()

	loading := clientcmd.NewDefaultClientConfigLoadingRules()
	loading.ExplicitPath = f.kubeconfig
	kube, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(loading, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return fmt.Errorf("API server configuration: %w (pass --kubeconfig, set KUBECONFIG, or run in a pod with a service account)", err)
	}
	kube.UserAgent = "eddy-collector/" + f.node

	metrics := collector.NewMetrics(0)
	var ready atomic.Bool
	if f.metricsAddress != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(metrics, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			if !ready.Load() {
				http.Error(w, "pod caches not synced yet", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		lis, err := net.Listen("tcp", f.metricsAddress)
		if err != nil {
			return fmt.Errorf("--metrics-address %s: %w", f.metricsAddress, err)
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error(err, "metrics server")
			}
		}()
		defer srv.Close()
		log.Info("serving metrics", "address", lis.Addr().String())
	}

	cfg := collector.NodeConfig{
		Node: f.node, Kube: kube, AnalyzerAddress: f.analyzer, Interval: f.interval,
		TokenFile: f.tokenFile, AnalyzerCA: f.analyzerCA, AnalyzerServerName: f.analyzerName,
		StateDir: f.stateDir, CgroupRoot: f.cgroupRoot, ProcRoot: f.procRoot,
		KubeletPodsDir:     kubeletPods,
		MaxBufferedWindows: f.maxBuffered, Metrics: metrics, Source: src,
		OnReady: func() { ready.Store(true) },
		Log:     log,
	}
	return collector.RunNode(ctx, cfg)
}

// checkReadable fails early, naming the path, when the collector cannot see
// what it needs, and returns the kubelet's pods folder. That folder is only
// warned about when absent (a machine without a kubelet has none); without it
// files whose path was lost are not attributed to a volume.
func checkReadable(f collectorFlags, log logr.Logger) (string, error) {
	if _, err := os.ReadDir(f.cgroupRoot); err != nil {
		return "", fmt.Errorf("cannot read the cgroup2 hierarchy at %s (%w): mount the host's cgroup filesystem read-only into the collector", f.cgroupRoot, err)
	}
	if _, err := os.ReadDir(f.procRoot); err != nil {
		return "", fmt.Errorf("cannot read %s (%w): the collector needs the host's /proc (hostPID: true)", f.procRoot, err)
	}
	pods := filepath.Join(f.kubeletRoot, "pods")
	if _, err := os.ReadDir(pods); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("cannot read the kubelet's pods folder %s (%w): mount it read-only into the collector", pods, err)
		}
		log.Info("kubelet pods folder not found; is this a Kubernetes node?", "path", pods)
		return "", nil
	}
	return pods, nil
}
