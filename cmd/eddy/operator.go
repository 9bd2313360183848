package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/operator"
)

func init() {
	rootCmd.AddCommand(newOperatorCmd())
}

func newOperatorCmd() *cobra.Command {
	var (
		c          operator.Config
		kubeconfig string
		kubectx    string
		qps        float32
		burst      int
	)
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Run the operator: review or auto-apply recommendations, verify and roll back, scale caches, evict idle datasets",
		Long: `Run eddy's operator (a Deployment in --namespace; replicas elect a leader).

It takes every Recommendation through its lifecycle: Proposed; Approved by a
person (kubectl eddy approve) or, under an AutotunePolicy in mode Auto, by
policy when the action is in autoApply, the confidence is at least
minConfidence and the change budget has room; Applied; then Verified or
Ineffective from the workload's profile once reads recorded after
--verify-settle show a read-wait share at least 20% lower (relative) or a
throughput at least 20% higher than the evidence; Ineffective ones are rolled
back in Auto mode and flagged in Recommend mode. Recommendations nobody
approves expire after --recommendation-ttl; a newer one for the same target,
dataset and action supersedes an older one.

Cache workers are scaled through the /scale subresource of the dataset's
cache target (the Fluid runtime of the dataset's name, or the object named by
the eddy.io/cache-target annotation on its PVC or Fluid Dataset) within the
policy's cacheWorkers bounds; scaling down waits until lower demand held for
--stabilization-window. A dataset no pod references and nobody read for the
policy's idleAfter gets an EvictDataset recommendation; evicted, its cache
is scaled to the minimum; when a pod uses it again, the cache is scaled back.

Nothing is changed while the analyzer's heartbeat Lease (--analyzer-lease in
--namespace) is older than --analyzer-stale-after. With --dry-run (or a
policy's dryRun) it records in conditions and events what it would do.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctrl.SetLogger(zap.New())
			cfg, err := kubeRESTConfig(kubeconfig, kubectx)
			if err != nil {
				return err
			}
			cfg.QPS, cfg.Burst = qps, burst
			mgr, err := operator.New(cfg, c)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return mgr.Start(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster, else $KUBECONFIG, else ~/.kube/config)")
	f.StringVar(&kubectx, "context", "", "kubeconfig context (default: the current one)")
	f.StringVar(&c.Namespace, "namespace", "eddy-system", "namespace of the operator's leader-election Lease and of the analyzer's heartbeat Lease")
	f.StringVar(&c.AnalyzerLease, "analyzer-lease", v1alpha1.AnalyzerHeartbeatLease, "name of the Lease the analyzer renews as its heartbeat")
	f.DurationVar(&c.AnalyzerStaleAfter, "analyzer-stale-after", v1alpha1.AnalyzerStaleAfter, "take no action while the analyzer's Lease was last renewed longer ago than this")
	f.DurationVar(&c.StaleRetry, "stale-retry", 30*time.Second, "how soon an action held back by a stale heartbeat is tried again")
	f.DurationVar(&c.RecommendationTTL, "recommendation-ttl", 7*24*time.Hour, "a recommendation still Proposed after this long is Expired")
	f.DurationVar(&c.VerifySettle, "verify-settle", 10*time.Minute, "only profile data recorded this long after a change was applied judges whether it helped")
	f.DurationVar(&c.StabilizationWindow, "stabilization-window", 5*time.Minute, "scale cache workers down only after lower demand held this long")
	f.IntVar(&c.Workers, "workers", 4, "recommendations and datasets reconciled at once (one dataset's always one at a time)")
	f.Float32Var(&qps, "kube-api-qps", 50, "sustained requests per second to the API server")
	f.IntVar(&burst, "kube-api-burst", 100, "request burst to the API server")
	f.BoolVar(&c.DryRun, "dry-run", false, "in every namespace, record what would be done (conditions, events) and change nothing")
	f.BoolVar(&c.LeaderElection, "leader-elect", true, "elect a leader among operator replicas; only the leader acts")
	f.StringVar(&c.LeaderElectionID, "leader-election-id", "eddy-operator", "name of the leader-election Lease")
	f.StringVar(&c.MetricsBindAddress, "metrics-addr", ":9473", "Prometheus metrics address (controller-runtime's reconcile and client metrics); \"0\" disables it")
	f.StringVar(&c.HealthProbeBindAddress, "health-addr", ":9474", "address of /healthz and /readyz (empty disables it)")
	return cmd
}

// kubeRESTConfig loads the configuration kubectl would: --kubeconfig, else
// $KUBECONFIG, else ~/.kube/config, else in-cluster.
func kubeRESTConfig(kubeconfig, kubectx string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubectx}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("no Kubernetes configuration (--kubeconfig, $KUBECONFIG, ~/.kube/config or in-cluster): %w", err)
	}
	return cfg, nil
}
