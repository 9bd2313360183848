package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the webhook's Prometheus metrics. Labels are low-cardinality:
// the webhook (inject, approve), what was injected, a skip reason, an
// error stage — never a pod or namespace name.
type Metrics struct {
	// Requests counts admission requests by webhook.
	Requests *prometheus.CounterVec
	// Injections counts pods injected, by what (prefetch, sdk).
	Injections *prometheus.CounterVec
	// Skips counts skip decisions by reason.
	Skips *prometheus.CounterVec
	// Errors counts internal errors by webhook and stage; each one still
	// admitted the pod unchanged (inject) or was answered (approve).
	Errors *prometheus.CounterVec
	// Duration is the time to answer a request, by webhook.
	Duration *prometheus.HistogramVec
	// Approvals counts approval decisions checked, by result (allowed, denied).
	Approvals *prometheus.CounterVec
	// CertRotations counts serving certificates (and CAs) issued.
	CertRotations *prometheus.CounterVec
	// CertExpiry is the serving certificate's NotAfter, in Unix seconds.
	CertExpiry prometheus.Gauge
	// Uninjected is what MissCounter counts: pods that should carry an
	// injection and do not (admissions missed while eddy was down or slow).
	Uninjected prometheus.Gauge
	// ResolveFailures counts pods whose owner chain could not be read to
	// the top; the highest owner known was taken as their workload.
	ResolveFailures prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eddy_webhook_requests_total", Help: "Admission requests received, by webhook (inject, approve).",
		}, []string{"webhook"}),
		Injections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eddy_webhook_injections_total", Help: "Pods injected, by what was injected (prefetch, sdk).",
		}, []string{"what"}),
		Skips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eddy_webhook_skips_total", Help: "Pods, recommendations or containers left alone, by reason.",
		}, []string{"reason"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eddy_webhook_errors_total", Help: "Internal errors by webhook and stage; the pod was admitted unchanged.",
		}, []string{"webhook", "stage"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "eddy_webhook_request_duration_seconds",
			Help:    "Time to answer an admission request, by webhook.",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1},
		}, []string{"webhook"}),
		Approvals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eddy_webhook_approvals_total", Help: "Changes to the Approved or Denied condition checked, by result (allowed, denied).",
		}, []string{"result"}),
		CertRotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eddy_webhook_certificates_issued_total", Help: "Certificates issued, by kind (ca, serving).",
		}, []string{"kind"}),
		CertExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "eddy_webhook_serving_certificate_expiry_timestamp_seconds", Help: "NotAfter of the serving certificate in use.",
		}),
		Uninjected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "eddy_webhook_uninjected_pods",
			Help: "Pods in opted-in namespaces created after a Prefetch or InjectSDK recommendation for their workload was applied, " +
				"without the eddy.io/injected annotation: admissions the webhook missed (down, timed out), or recommendations that did not fit the pod.",
		}),
		ResolveFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "eddy_webhook_workload_resolve_failures_total",
			Help: "Pods whose owner chain could not be read to the top at admission; the highest owner known was taken as their workload.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Requests, m.Injections, m.Skips, m.Errors, m.Duration, m.Approvals, m.CertRotations, m.CertExpiry, m.Uninjected, m.ResolveFailures)
	}
	return m
}
