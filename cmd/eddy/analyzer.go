package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/eddy-autotune/eddy/api/v1alpha1"

	"github.com/eddy-autotune/eddy/analyzer"
	"github.com/eddy-autotune/eddy/analyzer/history"
	"github.com/eddy-autotune/eddy/analyzer/intake"
	"github.com/eddy-autotune/eddy/analyzer/publish"
	"github.com/eddy-autotune/eddy/analyzer/service"
	"github.com/eddy-autotune/eddy/internal/scheme"
	"github.com/eddy-autotune/eddy/internal/tlsreload"
)

func init() {
	rootCmd.AddCommand(newAnalyzerCmd())
}

func newAnalyzerCmd() *cobra.Command {
	var (
		opt                 service.Options
		metricsAddr         string
		pprofAddr           string
		halfLife            time.Duration
		tlsCert, tlsKey     string
		minStable           int
		collectorSAs        []string
		excluded            []string
		kubeconfig, kubectx string
		qps                 float32
		burst               int
	)
	cmd := &cobra.Command{
		Use:   "analyzer",
		Short: "Learn each workload's access pattern from collector windows and propose recommendations",
		Long: `The analyzer takes AccessWindows from the collectors (gRPC, --grpc-addr),
keeps a decaying history per (workload, dataset), classifies the access
pattern with a confidence, and writes an AccessProfile per workload × dataset
and Recommendations within each namespace's AutotunePolicy.

Every --flush-interval, what changed is checkpointed into a local log in
--checkpoint-dir (one write, one fdatasync) and the windows it covers are
acknowledged to collectors at once, so that a restart neither loses nor
double-counts anything and collectors never wait on the API server.
AccessProfiles and Recommendations are written behind, at the API server's
pace: only profiles that changed materially, each with its latest state, and
a profile's checkpoint at least every --profile-checkpoint-every. On start,
each key's state comes from the log, or from its AccessProfile's checkpoint
when that is newer (the log is missing, damaged or from an older volume).
What the log held and the profiles did not is lost with the log's volume:
on a volume that does not outlive the pod (emptyDir), deleting the pod loses
up to --profile-checkpoint-every of each workload's windows, more if the
writing of profiles is behind (eddy_analyzer_publish_pending_keys): they
were acknowledged, so are not sent again. A container restart loses nothing. With
--checkpoint-dir=none the AccessProfiles are the only durable state and
windows are acknowledged only once written to them (slow at scale). The
per-workload manifest (which files, in which order) is served over HTTPS on
--manifest-addr to service accounts of the workload's namespace and
persisted in --state-dir.

Collectors are trusted only as far as they prove: each call carries the
collector pod's projected service-account token of audience
eddy.io/access-intake, which must belong to --collector-service-account and
be bound to a pod on a node; the gRPC intake is TLS (--tls-cert), and a
collector's records are taken only for pods of its own node in namespaces
labelled eddy.io/autotune=enabled (never --excluded-namespaces). Calls are
bounded in size (16 MiB) and rate.

Profiles are written --flush-workers at once, each without reading it
first. The analyzer renews the Lease "eddy-analyzer" in --lease-namespace on
its own timer while writing profiles makes progress (a key written counts,
however far behind the writing is); the operator takes no action while that
Lease is stale. On SIGTERM the flush in progress, a final flush and the
writing of what they made durable have --shutdown-flush-timeout to finish
(what is left is written by the next start, from the log): keep it under
the pod's terminationGracePeriodSeconds.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opt.FlushInterval < time.Second {
				return fmt.Errorf("--flush-interval %s: at least 1s", opt.FlushInterval)
			}
			if limit := v1alpha1.AnalyzerStaleAfter / 4; opt.FlushInterval > limit {
				// Progress is proven at most once a flush; the heartbeat
				// must be renewed several times within the operator's
				// stale-after.
				return fmt.Errorf("--flush-interval %s: at most %s (a quarter of the operator's default stale-after)", opt.FlushInterval, limit)
			}
			if halfLife < time.Minute {
				return fmt.Errorf("--half-life %s: at least 1m", halfLife)
			}
			if opt.PublishWorkers < 1 {
				return fmt.Errorf("--flush-workers %d: at least 1", opt.PublishWorkers)
			}
			switch opt.CheckpointDir {
			case "none":
				opt.CheckpointDir = ""
			case "":
				if opt.StateDir == "" {
					return errors.New("--checkpoint-dir: no --state-dir to put it under; give a folder, or none")
				}
				opt.CheckpointDir = filepath.Join(opt.StateDir, "checkpoints")
			}
			if opt.ProfileCheckpointEvery < opt.FlushInterval {
				return fmt.Errorf("--profile-checkpoint-every %s: at least --flush-interval (%s)", opt.ProfileCheckpointEvery, opt.FlushInterval)
			}
			if opt.ShutdownFlushTimeout <= 0 {
				return fmt.Errorf("--shutdown-flush-timeout %s: must be positive", opt.ShutdownFlushTimeout)
			}
			if opt.RunEndedAfter <= 0 || opt.LongRunAfter <= 0 {
				return fmt.Errorf("--run-ended-after %s, --long-run-after %s: must be positive", opt.RunEndedAfter, opt.LongRunAfter)
			}
			if (tlsCert == "") != (tlsKey == "") {
				return errors.New("--tls-cert and --tls-key go together")
			}
			if len(collectorSAs) == 0 {
				return errors.New("--collector-service-account: at least one NAMESPACE:NAME")
			}
			var users []string
			for _, sa := range collectorSAs {
				ns, name, ok := strings.Cut(sa, ":")
				if !ok || ns == "" || name == "" {
					return fmt.Errorf("--collector-service-account %q: want NAMESPACE:NAME", sa)
				}
				users = append(users, "system:serviceaccount:"+ns+":"+name)
			}
			log := zap.New()
			cfg, err := kubeRESTConfig(kubeconfig, kubectx)
			if err != nil {
				return err
			}
			cfg.QPS, cfg.Burst = qps, burst
			c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
			if err != nil {
				return err
			}
			if tlsCert != "" {
				// Re-read on renewal: the manifest endpoint and the gRPC
				// intake serve a renewed Secret without a restart.
				files, err := tlsreload.Load(tlsCert, tlsKey)
				if err != nil {
					return fmt.Errorf("manifest TLS: %w", err)
				}
				opt.ManifestTLS = files.Config()
			}
			adm, admCache, err := intake.NewClusterAdmission(cmd.Context(), cfg, c, excluded)
			if err != nil {
				return err
			}
			opt.Intake = intake.Options{Auth: &intake.TokenReviews{Client: c, Users: users}, Admission: adm}
			if opt.Identity == "" {
				opt.Identity, _ = os.Hostname()
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			opt.Client, opt.Log, opt.Registry = c, log, reg
			opt.Analyzer = analyzer.Options{History: history.Config{HalfLife: halfLife}}
			opt.StableAssessments = minStable

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			go func() {
				if err := admCache.Start(ctx); err != nil {
					log.Error(err, "admission cache")
				}
			}()
			if !admCache.WaitForCacheSync(ctx) {
				return fmt.Errorf("the pod and namespace caches did not sync: %w", ctx.Err())
			}
			svc, err := service.New(ctx, opt)
			if err != nil {
				return err
			}
			if metricsAddr != "" {
				srv := &http.Server{Addr: metricsAddr, Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
				go func() {
					if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
						log.Error(err, "metrics server")
					}
				}()
				defer srv.Shutdown(context.Background()) //nolint:errcheck
			}
			if pprofAddr != "" {
				srv, err := servePprof(pprofAddr, log)
				if err != nil {
					return err
				}
				defer srv.Shutdown(context.Background()) //nolint:errcheck
			}
			log.Info("analyzer serving", "grpc", svc.Addr(), "manifests", svc.ManifestAddr(), "metrics", metricsAddr)
			return svc.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster)")
	f.StringVar(&kubectx, "context", "", "kubeconfig context (default: the current one)")
	f.StringVar(&opt.GRPCAddr, "grpc-addr", ":9470", "address collectors ship windows to")
	f.StringVar(&opt.ManifestAddr, "manifest-addr", ":9443", "HTTPS address of the manifest endpoint (empty disables it)")
	f.StringVar(&tlsCert, "tls-cert", "", "PEM serving certificate of the gRPC intake and the manifest endpoint (default: self-signed, which collectors and prefetchers will not trust)")
	f.StringVar(&tlsKey, "tls-key", "", "PEM key for --tls-cert")
	f.StringVar(&tlsCert, "manifest-tls-cert", "", "")
	f.StringVar(&tlsKey, "manifest-tls-key", "", "")
	_ = f.MarkDeprecated("manifest-tls-cert", "use --tls-cert (it serves the intake too)")
	_ = f.MarkDeprecated("manifest-tls-key", "use --tls-key")
	f.StringSliceVar(&collectorSAs, "collector-service-account", []string{"eddy-system:eddy-collector"}, "NAMESPACE:NAME of the service account collectors run as (repeatable)")
	f.StringSliceVar(&excluded, "excluded-namespaces", []string{"kube-system", "eddy-system"}, "namespaces whose pods are never profiled, opted in or not")
	f.StringVar(&metricsAddr, "metrics-addr", ":9472", "Prometheus metrics address (empty disables it)")
	f.StringVar(&pprofAddr, "pprof-addr", "", "address serving Go's profiles at /debug/pprof/ (heap, CPU, goroutines) for diagnosis; keep it on loopback (empty disables it)")
	f.StringVar(&opt.StateDir, "state-dir", "/var/lib/eddy/analyzer", "folder persisting manifests (mount a PVC here)")
	f.StringVar(&opt.CheckpointDir, "checkpoint-dir", "", "folder of the local checkpoint log: windows are acknowledged once it holds them; keep it on a volume that outlives the container (default: <--state-dir>/checkpoints; on an emptyDir, deleting the pod loses what the AccessProfiles do not hold yet: --profile-checkpoint-every of windows per workload, more while profile writes are behind); none: acknowledge only what the AccessProfiles hold")
	f.DurationVar(&opt.ProfileCheckpointEvery, "profile-checkpoint-every", service.DefaultProfileCheckpointEvery, "with a local checkpoint log, the longest a profile's checkpoint (the fallback if the log is lost) goes without an update while its workload reads")
	f.DurationVar(&opt.FlushInterval, "flush-interval", 10*time.Second, "how often to assess, checkpoint and acknowledge (profiles are written behind)")
	f.DurationVar(&halfLife, "half-life", 6*time.Hour, "how long until an observation counts half")
	f.StringVar(&opt.LeaseNamespace, "lease-namespace", "eddy-system", "namespace of the heartbeat Lease")
	f.StringVar(&opt.Identity, "identity", "", "heartbeat holder identity (default: hostname)")
	f.IntVar(&minStable, "stable-assessments", 2, "consecutive agreeing assessments before a recommendation is proposed")
	f.DurationVar(&opt.RunEndedAfter, "run-ended-after", publish.DefaultRunEndedAfter, "how long without a read a run (a pod's reads) counts as ended, so that an applied recommendation can be judged by it")
	f.DurationVar(&opt.LongRunAfter, "long-run-after", v1alpha1.DefaultLongRunAfter, "a workload is advised once one of its runs ended, or has read for this long (a run's first minutes can look like another class than the whole run)")
	f.IntVar(&opt.PublishWorkers, "flush-workers", publish.DefaultWorkers, "profiles written to the API server at once")
	f.DurationVar(&opt.ShutdownFlushTimeout, "shutdown-flush-timeout", service.DefaultShutdownFlushTimeout, "on SIGTERM, how long the flush in progress, the final flush and writing what they made durable to the profiles may take (keep it under the pod's terminationGracePeriodSeconds)")
	f.Float32Var(&qps, "kube-api-qps", 200, "sustained requests per second to the API server (a flush of N keys makes about N)")
	f.IntVar(&burst, "kube-api-burst", 400, "request burst to the API server")
	return cmd
}
