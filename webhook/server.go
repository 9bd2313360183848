package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/eddy-autotune/eddy/internal/scheme"
	"github.com/eddy-autotune/eddy/internal/workload"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// Paths the webhooks are served on; the webhook configurations in
// config/webhook point at them.
const (
	InjectPath  = "/inject-pods"
	ApprovePath = "/validate-approvals"
)

// NativeSidecarMode says how Options decide between a native sidecar and
// a regular container.
type NativeSidecarMode string

const (
	// NativeSidecarsAuto asks the API server once at start (see DetectNativeSidecars).
	NativeSidecarsAuto NativeSidecarMode = "auto"
	// NativeSidecarsOn always injects native sidecars.
	NativeSidecarsOn NativeSidecarMode = "on"
	// NativeSidecarsOff always injects regular containers.
	NativeSidecarsOff NativeSidecarMode = "off"
)

// Options configure a Server. Config and Injector.Image are required; other
// zero values are documented per field.
type Options struct {
	// Config reaches the API server.
	Config *rest.Config
	// Namespace is eddy's: the certificate Secret lives there and its pods
	// are never injected.
	Namespace string
	// ServiceName is the webhook Service; the serving certificate names
	// it (name, name.ns, name.ns.svc, name.ns.svc.cluster.local). Empty: no
	// Service names.
	ServiceName string
	// DNSNames and IPAddresses are added to the serving certificate.
	DNSNames    []string
	IPAddresses []net.IP
	// SecretName holds the CA and serving certificate. Empty: eddy-webhook-certs.
	SecretName string
	// MutatingWebhookConfiguration and ValidatingWebhookConfiguration get
	// the caBundle. Empty: eddy-pod-injector and eddy-approval.
	MutatingWebhookConfiguration, ValidatingWebhookConfiguration string
	// Addr is the HTTPS listen address. Empty: :9443.
	Addr string
	// MetricsAddr serves /metrics, /healthz and /readyz over HTTP. Empty: none.
	MetricsAddr string
	// Injector is how pods are injected; Injector.NativeSidecars is set
	// from NativeSidecars and Injector.EddyNamespace from Namespace.
	Injector Config
	// NativeSidecars: auto (the default), on or off.
	NativeSidecars NativeSidecarMode
	// Certificate lifetimes and checks; see CertManager.
	CAValidity, CertValidity, CAOverlap, CertCheckInterval time.Duration
	// MissCheckInterval is how often eddy_webhook_uninjected_pods is
	// recounted (see MissCounter). Zero: 30s.
	MissCheckInterval time.Duration
	// Registry receives the metrics. Nil: a new registry.
	Registry *prometheus.Registry
	// Log is the logger. The zero value discards.
	Log logr.Logger
}

// Server runs both webhooks, their certificates and the caches they read.
type Server struct {
	// Metrics are the webhook's metrics.
	Metrics *Metrics
	// Certs manages the certificates.
	Certs *CertManager
	// Injector and Approvals are the two admission handlers.
	Injector  *Injector
	Approvals *ApprovalValidator
	// Registry holds Metrics.
	Registry *prometheus.Registry

	opts        Options
	cache       *Cache
	workloads   *workload.Resolver
	listener    net.Listener
	metricsLn   net.Listener
	broadcaster record.EventBroadcaster
	synced      atomic.Bool
}

// Scheme has client-go's types and eddy's.
func Scheme() *runtime.Scheme { return scheme.New() }

// NewServer checks opts, decides native sidecars, and listens (so Addr is
// known before Serve).
func NewServer(ctx context.Context, opts Options) (*Server, error) {
	if opts.Config == nil {
		return nil, errors.New("webhook server: no API server config")
	}
	if opts.Injector.Image == "" {
		return nil, errors.New("webhook server: no image for the injected containers (--image)")
	}
	if opts.Namespace == "" {
		return nil, errors.New("webhook server: no namespace (--namespace)")
	}
	if opts.SecretName == "" {
		opts.SecretName = "eddy-webhook-certs"
	}
	if opts.MutatingWebhookConfiguration == "" {
		opts.MutatingWebhookConfiguration = "eddy-pod-injector"
	}
	if opts.ValidatingWebhookConfiguration == "" {
		opts.ValidatingWebhookConfiguration = "eddy-approval"
	}
	if opts.Addr == "" {
		opts.Addr = ":9443"
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Log.GetSink() == nil {
		// A logger with a sink, so controller-runtime never falls back on its global one.
		opts.Log = funcr.New(func(string, string) {}, funcr.Options{})
	}
	log := opts.Log
	scheme := Scheme()

	direct, err := client.New(opts.Config, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", opts.Config.Host, err)
	}
	cs, err := kubernetes.NewForConfig(opts.Config)
	if err != nil {
		return nil, fmt.Errorf("clientset for %s: %w", opts.Config.Host, err)
	}

	switch opts.NativeSidecars {
	case NativeSidecarsOn:
		opts.Injector.NativeSidecars = true
	case NativeSidecarsOff:
		opts.Injector.NativeSidecars = false
	case NativeSidecarsAuto, "":
		native, why := DetectNativeSidecars(ctx, cs, opts.Namespace)
		opts.Injector.NativeSidecars = native
		log.Info("native sidecars detected", "native", native, "why", why)
	default:
		return nil, fmt.Errorf("native sidecars %q: want auto, on or off", opts.NativeSidecars)
	}
	opts.Injector.EddyNamespace = opts.Namespace

	c, err := NewCache(opts.Config, opts.Namespace, log.WithName("cache"))
	if err != nil {
		return nil, err
	}

	s := &Server{opts: opts, cache: c, Registry: opts.Registry}
	s.Metrics = NewMetrics(opts.Registry)
	s.broadcaster = record.NewBroadcaster()
	s.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	recorder := s.broadcaster.NewRecorder(scheme, corev1.EventSource{Component: "eddy-webhook"})

	dns := append([]string(nil), opts.DNSNames...)
	if n := opts.ServiceName; n != "" {
		dns = append(dns, n, n+"."+opts.Namespace, n+"."+opts.Namespace+".svc", n+"."+opts.Namespace+".svc.cluster.local")
	}
	s.Certs = &CertManager{
		Client: direct, Namespace: opts.Namespace, SecretName: opts.SecretName,
		DNSNames: dns, IPAddresses: opts.IPAddresses,
		MutatingWebhookConfiguration:   opts.MutatingWebhookConfiguration,
		ValidatingWebhookConfiguration: opts.ValidatingWebhookConfiguration,
		CAValidity:                     opts.CAValidity, CertValidity: opts.CertValidity,
		CAOverlap: opts.CAOverlap, CheckInterval: opts.CertCheckInterval,
		Metrics: s.Metrics, Log: log.WithName("certs"),
	}
	if s.workloads, err = NewWorkloadResolver(c, opts.Config); err != nil {
		return nil, err
	}
	s.Injector = &Injector{Reader: c, Workloads: s.workloads, Config: opts.Injector, Recorder: recorder, Metrics: s.Metrics, Log: log.WithName("inject")}
	s.Approvals = &ApprovalValidator{Client: direct, Mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cs.Discovery())),
		Metrics: s.Metrics, Log: log.WithName("approve")}

	if s.listener, err = net.Listen("tcp", opts.Addr); err != nil {
		return nil, fmt.Errorf("listen on %s for the webhooks: %w", opts.Addr, err)
	}
	if opts.MetricsAddr != "" {
		if s.metricsLn, err = net.Listen("tcp", opts.MetricsAddr); err != nil {
			_ = s.listener.Close()
			return nil, fmt.Errorf("listen on %s for metrics: %w", opts.MetricsAddr, err)
		}
	}
	return s, nil
}

// Addr is the address the webhooks are served on.
func (s *Server) Addr() string { return s.listener.Addr().String() }

// MetricsAddr is the address of the metrics server ("" when none).
func (s *Server) MetricsAddr() string {
	if s.metricsLn == nil {
		return ""
	}
	return s.metricsLn.Addr().String()
}

// Ready reports whether the caches are synced and a certificate is loaded.
func (s *Server) Ready() bool { return s.synced.Load() && s.Certs.Ready() }

// Serve starts the caches, obtains the certificates and serves until ctx
// ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer s.broadcaster.Shutdown()
	log := s.opts.Log
	serving := false
	defer func() {
		if !serving {
			_ = s.listener.Close()
			if s.metricsLn != nil {
				_ = s.metricsLn.Close()
			}
		}
	}()

	cacheErr := make(chan error, 1)
	go func() { cacheErr <- s.cache.Start(ctx) }()
	log.Info("waiting for caches (eddy's CRDs must be installed)")
	if !s.cache.WaitForCacheSync(ctx) {
		select {
		case err := <-cacheErr:
			return fmt.Errorf("cache: %w", err)
		default:
			return fmt.Errorf("cache did not sync: %w", ctx.Err())
		}
	}
	s.synced.Store(true)

	for {
		err := s.Certs.Sync(ctx)
		if err == nil {
			break
		}
		log.Error(err, "initial certificate sync failed; retrying")
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	go s.Certs.Run(ctx)
	misses := &MissCounter{Reader: s.cache, Workloads: s.workloads, EddyNamespace: s.opts.Namespace, Gauge: s.Metrics.Uninjected, Log: log.WithName("misses")}
	interval := s.opts.MissCheckInterval
	if interval <= 0 {
		interval = 30 * time.Second
	}
	go misses.Run(ctx, interval)

	mux := http.NewServeMux()
	// The constructor keeps controller-runtime's global logger out of it.
	logFor := func(name string) func(logr.Logger, *admission.Request) logr.Logger {
		return func(logr.Logger, *admission.Request) logr.Logger { return log.WithName(name) }
	}
	inject, _ := admission.StandaloneWebhook(&admission.Webhook{Handler: s.Injector, LogConstructor: logFor("inject")}, admission.StandaloneOptions{Logger: log})
	approve, _ := admission.StandaloneWebhook(&admission.Webhook{Handler: s.Approvals, LogConstructor: logFor("approve")}, admission.StandaloneOptions{Logger: log})
	mux.Handle(InjectPath, inject)
	mux.Handle(ApprovePath, approve)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{GetCertificate: s.Certs.GetCertificate, MinVersion: tls.VersionTLS12},
	}
	servers := []*http.Server{srv}
	errs := make(chan error, 2)
	serving = true
	go func() { errs <- srv.ServeTLS(s.listener, "", "") }()
	if s.metricsLn != nil {
		mm := http.NewServeMux()
		mm.Handle("/metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{}))
		mm.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
		mm.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			if !s.Ready() {
				http.Error(w, "caches or certificates not ready", http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok"))
		})
		ms := &http.Server{Handler: mm, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, ms)
		go func() { errs <- ms.Serve(s.metricsLn) }()
	}
	log.Info("serving webhooks", "addr", s.Addr(), "metrics", s.MetricsAddr(), "nativeSidecars", s.opts.Injector.NativeSidecars)

	select {
	case <-ctx.Done():
	case err := <-errs:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
	}
	shutdown, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	var errList []error
	for _, hs := range servers {
		if err := hs.Shutdown(shutdown); err != nil {
			errList = append(errList, err)
		}
	}
	return errors.Join(errList...)
}

// NewWorkloadResolver resolves pods' workloads as every eddy component does
// (internal/workload), reading owners from the cache first and from the API
// server when the cache does not have them (yet). What the resolver keeps of
// an owner is stripped as the cache's objects are (no managedFields, no
// annotations): a Deployment applied with kubectl carries its whole spec in
// an annotation.
func NewWorkloadResolver(c client.Reader, cfg *rest.Config) (*workload.Resolver, error) {
	md, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("metadata client for %s: %w", cfg.Host, err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovery client for %s: %w", cfg.Host, err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	lookup := workload.Chain(workload.ReaderLookup(c), workload.MetadataLookup(md, mapper))
	stripped := workload.LookupFunc(func(ctx context.Context, namespace, apiVersion, kind, name string) (*metav1.ObjectMeta, error) {
		m, err := lookup.Get(ctx, namespace, apiVersion, kind, name)
		if m != nil {
			_, _ = stripMetadata(m)
		}
		return m, err
	})
	return workload.NewResolver(stripped, workload.Options{}), nil
}
