package collector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	accessv1 "github.com/eddy-autotune/eddy/api/access/v1"
	"github.com/eddy-autotune/eddy/bpf"
	"github.com/eddy-autotune/eddy/collector/cgroups"
	"github.com/eddy-autotune/eddy/collector/ship"
	"github.com/eddy-autotune/eddy/internal/workload"
)

// NodeConfig is everything a node's collector needs. Node, Kube,
// AnalyzerAddress, StateDir and CgroupRoot are required.
type NodeConfig struct {
	Node string
	// Kube reaches the API server (pods, namespaces, owners, claims).
	Kube            *rest.Config
	AnalyzerAddress string
	// TokenFile is the collector pod's projected service-account token of
	// audience accessv1.Audience, sent with every call to the analyzer.
	TokenFile string
	// AnalyzerCA is a PEM file of the CA that signs the analyzer's
	// certificate (besides the system's roots); AnalyzerServerName the name
	// to verify it for (default: the address's host).
	AnalyzerCA         string
	AnalyzerServerName string
	// Interval between windows (default 10s).
	Interval time.Duration
	StateDir string
	// CgroupRoot is the cgroup2 mount (/sys/fs/cgroup, or
	// /sys/fs/cgroup/unified on hybrid hosts).
	CgroupRoot string
	// ProcRoot is where the host's /proc is mounted (default /proc).
	ProcRoot string
	// KubeletPodsDir is the kubelet's pods folder (/var/lib/kubelet/pods);
	// when set, files whose path is unknown are attributed to a volume by
	// their device.
	KubeletPodsDir string
	// MaxBufferedWindows bounds the windows kept while the analyzer is
	// unreachable (default: ship.Options' default).
	MaxBufferedWindows int
	// Recorder configures the kernel recorder when Source is nil.
	Recorder bpf.Options
	// Source replaces the kernel recorder (tests, replays).
	Source Source
	// Metrics, when set, receives the collector's metrics.
	Metrics *Metrics
	// OnReady is called once the pod caches are synced and the first
	// allow-list is applied.
	OnReady func()
	Log     logr.Logger
}

// RunNode runs a node's collector until ctx ends: it loads the kernel
// recorder, watches the node's pods, drains every interval and ships the
// windows. Windows not yet acknowledged stay in StateDir for the next run.
func RunNode(ctx context.Context, cfg NodeConfig) error {
	switch {
	case cfg.Node == "":
		return errors.New("collector: node name is empty: set --node-name or NODE_NAME")
	case cfg.Kube == nil:
		return errors.New("collector: no API server configuration")
	case cfg.AnalyzerAddress == "":
		return errors.New("collector: analyzer address is empty: set --analyzer-address")
	case cfg.StateDir == "":
		return errors.New("collector: state directory is empty: set --state-dir")
	case cfg.CgroupRoot == "":
		return errors.New("collector: cgroup2 mount is unknown: set --cgroup-root")
	}
	log := cfg.Log
	src := cfg.Source
	if src == nil {
		opts := cfg.Recorder
		opts.Logger = log.WithName("bpf")
		rec, err := bpf.Load(opts)
		if err != nil {
			return err
		}
		ks := NewKernelSource(rec, 0, log.WithName("kernel"))
		defer ks.Close()
		if missing := rec.MissingHooks(); len(missing) > 0 {
			log.Info("running without some kernel hooks; their counters stay zero", "missing", missing)
		}
		src = ks
	}

	shipper, err := ship.Open(ship.Options{Dir: cfg.StateDir, Node: cfg.Node, MaxBuffered: cfg.MaxBufferedWindows, Log: log.WithName("ship")})
	if err != nil {
		return err
	}
	defer shipper.Close()
	if cfg.Metrics != nil {
		cfg.Metrics.SetShipperStats(shipper.Stats)
	}
	if cfg.TokenFile == "" {
		return errors.New("collector: no token file: set --token-file to the pod's projected service-account token of audience " + accessv1.Audience)
	}
	tlsCfg, err := intakeTLS(cfg.AnalyzerAddress, cfg.AnalyzerCA, cfg.AnalyzerServerName)
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	conn, err := grpc.NewClient(cfg.AnalyzerAddress, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithPerRPCCredentials(&tokenFile{path: cfg.TokenFile}))
	if err != nil {
		return fmt.Errorf("collector: analyzer address %q: %w", cfg.AnalyzerAddress, err)
	}
	defer conn.Close()

	cs, err := kubernetes.NewForConfig(cfg.Kube)
	if err != nil {
		return fmt.Errorf("collector: API client: %w", err)
	}
	md, err := metadata.NewForConfig(cfg.Kube)
	if err != nil {
		return fmt.Errorf("collector: API metadata client: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cs.Discovery()))

	dyn, err := dynamic.NewForConfig(cfg.Kube)
	if err != nil {
		return fmt.Errorf("collector: API dynamic client: %w", err)
	}
	workloads := NewWorkloadResolver(md, mapper)
	learner, err := NewProfileLearner(dyn, workloads, log.WithName("learning"))
	if err != nil {
		return err
	}

	resolver := cgroups.NewResolver(cfg.CgroupRoot, cgroups.ResolverOptions{})
	if err := resolver.Rescan(); err != nil {
		return fmt.Errorf("collector: read cgroups: %w", err)
	}
	pods, err := NewPodIndex(cs, src, resolver, PodIndexOptions{Node: cfg.Node, Retain: 2 * max(cfg.Interval, time.Minute), Learner: learner, Log: log.WithName("pods")})
	if err != nil {
		return err
	}
	datasets := NewDatasetResolver(ClientClaimLookup(cs), ClientVolumeLookup(cs), 0)
	if cfg.KubeletPodsDir != "" {
		datasets.SetKubeletPodsDir(cfg.KubeletPodsDir)
	}
	c, err := New(Options{
		Node: cfg.Node, Source: src, Pods: pods, Sink: shipper, Metrics: cfg.Metrics,
		Workloads: workloads,
		Datasets:  datasets,
		Interval:  cfg.Interval, ProcRoot: cfg.ProcRoot, Log: log.WithName("drain"),
	})
	if err != nil {
		return err
	}
	log.Info("collector starting", "node", cfg.Node, "collector", shipper.Collector(), "analyzer", cfg.AnalyzerAddress,
		"interval", c.opts.Interval, "stateDir", cfg.StateDir, "cgroupRoot", cfg.CgroupRoot, "bufferedWindows", shipper.Stats().Buffered)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { learner.Run(gctx); return nil })
	g.Go(func() error { return pods.Run(gctx) })
	g.Go(func() error {
		// Draining starts once the allow-list reflects the node's pods. It
		// does not wait for the profiles: until they are listed every pod
		// is observed.
		for !pods.Synced() {
			select {
			case <-gctx.Done():
				return nil
			case <-time.After(50 * time.Millisecond):
			}
		}
		pods.Sync()
		if cfg.OnReady != nil {
			cfg.OnReady()
		}
		return c.Run(gctx)
	})
	g.Go(func() error { return shipper.Run(gctx, accessv1.NewAccessIntakeClient(conn)) })
	err = g.Wait()
	st := shipper.Stats()
	log.Info("collector stopped", "windows", c.windows, "unattributedRecords", c.unattributed,
		"acked", st.Acked, "buffered", st.Buffered, "droppedWindows", st.Dropped, "error", err)
	return err
}

// NewWorkloadResolver resolves pods' workloads as every eddy component does
// (internal/workload), reading owners' metadata from the API server.
func NewWorkloadResolver(md metadata.Interface, mapper *restmapper.DeferredDiscoveryRESTMapper) *workload.Resolver {
	return workload.NewResolver(workload.MetadataLookup(md, mapper), workload.Options{})
}
