package operator

import (
	"context"
	"fmt"

	"github.com/eddy-autotune/eddy/internal/scheme"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// Config configures the operator's manager. The zero value, with Options
// defaulted, runs without leader election and without metrics or probe
// servers.
type Config struct {
	Options
	// LeaderElection makes only one replica act at a time (Lease
	// LeaderElectionID in Options.Namespace).
	LeaderElection bool
	// LeaderElectionID names the leader-election Lease. Default "eddy-operator".
	LeaderElectionID string
	// MetricsBindAddress serves Prometheus metrics; "" or "0" disables.
	MetricsBindAddress string
	// HealthProbeBindAddress serves /healthz and /readyz; "" disables.
	HealthProbeBindAddress string
	// SkipControllerNameValidation allows several managers in one process
	// (tests that restart the operator).
	SkipControllerNameValidation bool
}

// Scheme returns the scheme the operator works with: client-go's types and eddy's.
func Scheme() *runtime.Scheme { return scheme.New() }

// New returns a manager with the operator's controllers registered; start it
// with Start.
func New(cfg *rest.Config, c Config) (ctrl.Manager, error) {
	c.Options = c.withDefaults()
	if c.LeaderElectionID == "" {
		c.LeaderElectionID = "eddy-operator"
	}
	metricsAddr := c.MetricsBindAddress
	if metricsAddr == "" {
		metricsAddr = "0"
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        Scheme(),
		LeaderElection:                c.LeaderElection,
		LeaderElectionID:              c.LeaderElectionID,
		LeaderElectionNamespace:       c.Namespace,
		LeaderElectionReleaseOnCancel: true,
		Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:        c.HealthProbeBindAddress,
		Controller:                    config.Controller{SkipNameValidation: ptr.To(c.SkipControllerNameValidation)},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			// Only the heartbeat Lease's namespace is watched.
			&coordinationv1.Lease{}: {Namespaces: map[string]cache.Config{c.Namespace: {}}},
			// Pods are kept only as far as the dataset controller needs them.
			&corev1.Pod{}: {Transform: slimPod},
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("create operator manager for %s: %w", cfg.Host, err)
	}
	if err := Setup(mgr, c.Options); err != nil {
		return nil, err
	}
	if c.HealthProbeBindAddress != "" {
		if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
			return nil, err
		}
		if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
			return nil, err
		}
	}
	return mgr, nil
}

// Setup registers the operator's indexes and controllers with mgr.
func Setup(mgr ctrl.Manager, o Options) error {
	o = o.withDefaults()
	registerMetrics()
	state.SetReader(mgr.GetClient(), o)
	if err := addIndexes(context.Background(), mgr.GetFieldIndexer()); err != nil {
		return err
	}
	rec := recorder{mgr.GetEventRecorder("eddy-operator")}
	locks := &datasetLocks{}
	reconcilers := []interface{ SetupWithManager(ctrl.Manager) error }{
		&PolicyReconciler{Client: mgr.GetClient(), Options: o},
		&RecommendationReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: rec, Options: o, locks: locks},
		&DatasetReconciler{Client: mgr.GetClient(), Recorder: rec, Options: o, locks: locks},
	}
	for _, r := range reconcilers {
		if err := r.SetupWithManager(mgr); err != nil {
			return fmt.Errorf("set up %T: %w", r, err)
		}
	}
	return nil
}

// slimPod keeps a pod's identity, phase and PVC volumes, which is all the
// operator reads, so that caching every pod stays cheap.
func slimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	slim := &corev1.Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			DeletionTimestamp: p.DeletionTimestamp, Labels: p.Labels,
		},
		Status: corev1.PodStatus{Phase: p.Status.Phase},
	}
	for _, v := range p.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			slim.Spec.Volumes = append(slim.Spec.Volumes, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: v.PersistentVolumeClaim}})
		}
	}
	return slim, nil
}
