package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/tools/clientcmd"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/eddy-autotune/eddy/webhook"
)

func init() {
	rootCmd.AddCommand(newWebhookCmd())
}

func newWebhookCmd() *cobra.Command {
	var (
		opts                                       webhook.Options
		kubeconfig, pullPolicy, native             string
		ips                                        []string
		cpuRequest, cpuLimit, memRequest, memLimit string
		verbose                                    bool
	)
	cmd := &cobra.Command{
		Use:   "webhook",
		Short: "Run eddy's admission webhooks: inject prefetch sidecars and SDKs, guard approvals",
		Long: `Run eddy's two admission webhooks over HTTPS.

The mutating webhook (` + webhook.InjectPath + `) sees every pod created in a
namespace labelled eddy.io/autotune=enabled (except kube-system and eddy's own
namespace, host-network and static pods, and pods labelled
eddy.io/autotune=disabled). It finds the pod's workload and the datasets it
mounts, and applies the recommendations in phase Applied or Verified:

  Prefetch   'eddy-sidecar prefetch' (the eddy image's small binary) as
             a native sidecar (an init container with restartPolicy
             Always; a regular container before Kubernetes 1.29), the
             dataset volumes mounted read-only, the tuned parameters as
             flags, resources within the namespace's AutotunePolicy and
             shaped to keep the pod's QoS class (none for a BestEffort
             pod, requests equal to limits for a Guaranteed one),
             hardened; with warmBeforeStart a startup probe holds the
             main containers until the warm threshold is reached.
  InjectSDK  an init container copies the SDK into an emptyDir mounted into
             the chosen containers; PYTHONPATH is appended to, never
             replaced; a conflicting variable skips that container, with an
             event on the recommendation saying why.

It fails open: any error admits the pod unchanged, with a warning, an event
and eddy_webhook_errors_total; the webhook configuration uses
failurePolicy Ignore. The eddy.io/injected annotation makes re-invocation
a no-op.

The validating webhook (` + webhook.ApprovePath + `) lets a change to a
recommendation's Approved or Denied condition through only for users allowed
the verb 'approve' on recommendations.eddy.io (bind the ClusterRole
eddy-recommendation-approver).

Certificates are eddy's own: a CA and serving certificate in the Secret
--secret-name (created when absent, reused while valid), the CA bundle
patched into both webhook configurations, both renewed when a third of their
validity remains, the new serving certificate served without a restart.

Deploy with config/webhook (kubectl apply -k config/webhook). Metrics,
/healthz and /readyz are served over HTTP on --metrics-addr.`,
		Example: `  eddy webhook --namespace eddy-system --service-name eddy-webhook \
    --image ghcr.io/eddy-autotune/eddy:v0.1.0

  # outside a cluster, for a local API server calling back on loopback:
  eddy webhook --kubeconfig /tmp/eddy-dev/kubeconfig --namespace eddy-system \
    --ip 127.0.0.1 --addr 127.0.0.1:9443 --image eddy:dev`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if verbose {
				level = slog.Level(-1)
			}
			log := logr.FromSlogHandler(slog.NewJSONHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			ctrllog.SetLogger(log)
			opts.Log = log

			cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
				&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig, Precedence: clientcmd.NewDefaultClientConfigLoadingRules().Precedence},
				&clientcmd.ConfigOverrides{}).ClientConfig()
			if err != nil {
				return fmt.Errorf("API server config (--kubeconfig %q, $KUBECONFIG or in-cluster): %w", kubeconfig, err)
			}
			cfg.QPS, cfg.Burst = 50, 100
			opts.Config = cfg
			opts.NativeSidecars = webhook.NativeSidecarMode(native)
			switch pullPolicy {
			case "", string(corev1.PullAlways), string(corev1.PullIfNotPresent), string(corev1.PullNever):
				opts.Injector.ImagePullPolicy = corev1.PullPolicy(pullPolicy)
			default:
				return fmt.Errorf("--image-pull-policy %q: want Always, IfNotPresent or Never", pullPolicy)
			}
			for _, s := range ips {
				ip := net.ParseIP(s)
				if ip == nil {
					return fmt.Errorf("--ip %q: not an IP address", s)
				}
				opts.IPAddresses = append(opts.IPAddresses, ip)
			}
			res, err := parseResources(cpuRequest, memRequest, cpuLimit, memLimit)
			if err != nil {
				return err
			}
			opts.Injector.PrefetchResources = res

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			srv, err := webhook.NewServer(ctx, opts)
			if err != nil {
				return err
			}
			return srv.Serve(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else in-cluster)")
	f.StringVar(&opts.Namespace, "namespace", envOr("POD_NAMESPACE", "eddy-system"), "eddy's namespace: holds the certificate Secret; its pods are never injected ($POD_NAMESPACE)")
	f.StringVar(&opts.ServiceName, "service-name", "eddy-webhook", "Service in front of the webhook; its DNS names go into the serving certificate (\"\" for none)")
	f.StringSliceVar(&opts.DNSNames, "dns-name", nil, "extra DNS names for the serving certificate (repeatable)")
	f.StringSliceVar(&ips, "ip", nil, "IP addresses for the serving certificate (repeatable; e.g. 127.0.0.1 when the API server calls a URL on loopback)")
	f.StringVar(&opts.Addr, "addr", ":9443", "HTTPS listen address of the webhooks")
	f.StringVar(&opts.MetricsAddr, "metrics-addr", ":8080", "HTTP listen address for /metrics, /healthz and /readyz (\"\" disables)")
	f.StringVar(&opts.SecretName, "secret-name", "eddy-webhook-certs", "Secret holding the CA and serving certificate")
	f.StringVar(&opts.MutatingWebhookConfiguration, "mutating-config", "eddy-pod-injector", "MutatingWebhookConfiguration whose caBundle eddy keeps current")
	f.StringVar(&opts.ValidatingWebhookConfiguration, "validating-config", "eddy-approval", "ValidatingWebhookConfiguration whose caBundle eddy keeps current")
	f.DurationVar(&opts.CAValidity, "ca-validity", 5*365*24*time.Hour, "lifetime of the self-signed CA; a new one is published when a third remains")
	f.DurationVar(&opts.CertValidity, "cert-validity", 90*24*time.Hour, "lifetime of the serving certificate; renewed when a third remains")
	f.DurationVar(&opts.CAOverlap, "ca-overlap", time.Minute, "how long a new CA is trusted (in the caBundle) before it signs")
	f.DurationVar(&opts.CertCheckInterval, "cert-check-interval", 0, "how often certificates are checked (default: a tenth of --cert-validity, at most 1m)")
	f.StringVar(&opts.Injector.Image, "image", os.Getenv("EDDY_IMAGE"), "eddy image for the injected containers ($EDDY_IMAGE; required)")
	f.StringVar(&pullPolicy, "image-pull-policy", "", "pull policy of the injected containers (default: Kubernetes' default)")
	f.StringVar(&native, "native-sidecars", string(webhook.NativeSidecarsAuto), "inject the prefetcher as a native sidecar: auto (ask the API server once), on, off")
	f.StringVar(&opts.Injector.AnalyzerURL, "analyzer-url", "", "analyzer base URL; the prefetcher fetches its manifest from <url>/v1/manifests/<namespace>/<profile>")
	f.Int64Var(&opts.Injector.RunAsUser, "run-as-user", 65532, "UID of the injected containers when the pod sets none")
	f.Int32Var(&opts.Injector.WarmTimeoutSeconds, "warm-timeout-seconds", 1800, "how long warmBeforeStart may hold a pod before the sidecar is restarted")
	f.StringVar(&cpuRequest, "prefetch-cpu-request", "50m", "CPU request of the prefetch sidecar")
	f.StringVar(&cpuLimit, "prefetch-cpu-limit", "500m", "CPU limit of the prefetch sidecar, before the policy's maxCPU caps it")
	f.StringVar(&memRequest, "prefetch-memory-request", "64Mi", "memory request of the prefetch sidecar")
	f.StringVar(&memLimit, "prefetch-memory-limit", "256Mi", "memory limit of the prefetch sidecar, before the policy's maxMemory caps it")
	f.BoolVar(&verbose, "verbose", false, "log every injection")
	return cmd
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func parseResources(cpuReq, memReq, cpuLim, memLim string) (corev1.ResourceRequirements, error) {
	r := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	for _, q := range []struct {
		flag, value string
		list        corev1.ResourceList
		name        corev1.ResourceName
	}{
		{"--prefetch-cpu-request", cpuReq, r.Requests, corev1.ResourceCPU},
		{"--prefetch-memory-request", memReq, r.Requests, corev1.ResourceMemory},
		{"--prefetch-cpu-limit", cpuLim, r.Limits, corev1.ResourceCPU},
		{"--prefetch-memory-limit", memLim, r.Limits, corev1.ResourceMemory},
	} {
		if q.value == "" {
			continue
		}
		v, err := resource.ParseQuantity(q.value)
		if err != nil {
			return r, fmt.Errorf("%s %q: %w", q.flag, q.value, err)
		}
		q.list[q.name] = v
	}
	return r, nil
}
