package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/internal/workload"
)

// Event reasons the injector records.
const (
	EventInjectionSkip   = "InjectionSkipped"
	EventInjectionFailed = "InjectionFailed"
)

// Injector is the mutating webhook on pod CREATE. It gathers Mutate's
// inputs from Reader (an informer cache in production), admits the patched
// pod, and fails open: an internal error admits the pod unchanged with a
// warning, an event and eddy_webhook_errors_total.
type Injector struct {
	// Reader reads Namespaces, Recommendations and AutotunePolicies.
	Reader client.Reader
	// Workloads resolves a pod's workload, as the collector does; nil
	// resolves through Reader.
	Workloads *workload.Resolver
	// Config is how pods are injected.
	Config Config
	// Recorder receives events; nil records none.
	Recorder record.EventRecorder
	// Metrics are updated for every request; nil updates none.
	Metrics *Metrics
	// Log receives one line per error and per injection.
	Log logr.Logger
	// Timeout bounds the lookups of one request, below the webhook
	// configuration's timeoutSeconds so that a slow cache fails open here,
	// counted and reported, rather than silently at the API server.
	// Zero: 1.5s.
	Timeout time.Duration

	once sync.Once
}

var _ admission.Handler = (*Injector)(nil)

// Handle answers one admission request.
func (h *Injector) Handle(ctx context.Context, req admission.Request) admission.Response {
	start := time.Now()
	m := h.Metrics
	if m != nil {
		m.Requests.WithLabelValues("inject").Inc()
		defer func() { m.Duration.WithLabelValues("inject").Observe(time.Since(start).Seconds()) }()
	}
	if req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" || req.SubResource != "" {
		return admission.Allowed("eddy injects pods on create only")
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(req.Object.Raw, pod); err != nil {
		return h.failOpen(req, nil, "decode", fmt.Errorf("decode pod %s/%s: %w", req.Namespace, req.Name, err))
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 1500 * time.Millisecond
	}
	lookupCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	in, err := h.gather(lookupCtx, req, pod)
	if err != nil {
		return h.failOpen(req, pod, "lookup", err)
	}
	res, err := mutateSafely(in, h.Config)
	if err != nil {
		return h.failOpen(req, pod, "mutate", err)
	}
	warnings := h.report(req, pod, res)
	if !res.Changed() {
		return admission.Allowed("").WithWarnings(warnings...)
	}
	h.Log.V(1).Info("injected", "namespace", req.Namespace, "pod", podName(req, pod), "injected", res.Injected, "recommendations", res.Applied)
	return admission.Patched("", PodPatch(pod, res.Pod)...).WithWarnings(warnings...)
}

// PodPatch is the JSON patch from before to after for the fields Mutate
// changes: the annotations, init containers, containers and volumes, each
// set whole ("add" replaces an existing member). Building it from what is
// known to have changed avoids diffing two serialized pods on every request.
func PodPatch(before, after *corev1.Pod) []jsonpatch.JsonPatchOperation {
	var ops []jsonpatch.JsonPatchOperation
	add := func(path string, v any) {
		ops = append(ops, jsonpatch.JsonPatchOperation{Operation: "add", Path: path, Value: v})
	}
	if !reflect.DeepEqual(before.Annotations, after.Annotations) {
		add("/metadata/annotations", after.Annotations)
	}
	if !reflect.DeepEqual(before.Spec.InitContainers, after.Spec.InitContainers) {
		add("/spec/initContainers", after.Spec.InitContainers)
	}
	if !reflect.DeepEqual(before.Spec.Containers, after.Spec.Containers) {
		add("/spec/containers", after.Spec.Containers)
	}
	if !reflect.DeepEqual(before.Spec.Volumes, after.Spec.Volumes) {
		add("/spec/volumes", after.Spec.Volumes)
	}
	return ops
}

// mutateSafely runs Mutate, turning a panic into an error so that a bug
// never blocks a pod.
func mutateSafely(in Input, cfg Config) (res Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("mutator panicked on pod %s/%s: %v", in.Namespace, in.Pod.Name, r)
		}
	}()
	return Mutate(in, cfg), nil
}

// gather reads what Mutate decides from. The namespace is read first: in a
// namespace that is not opted in nothing else is needed.
func (h *Injector) gather(ctx context.Context, req admission.Request, pod *corev1.Pod) (Input, error) {
	in := Input{Pod: pod, Namespace: req.Namespace}
	ns := &corev1.Namespace{}
	if err := h.Reader.Get(ctx, client.ObjectKey{Name: req.Namespace}, ns); err != nil && !apierrors.IsNotFound(err) {
		return in, fmt.Errorf("read namespace %s: %w", req.Namespace, err)
	}
	in.NamespaceLabels = ns.Labels
	if in.NamespaceLabels[eddyv1alpha1.AutotuneLabel] != eddyv1alpha1.AutotuneEnabled {
		return in, nil
	}
	// At admission the pod may carry no namespace yet: the request's is it.
	subject := pod
	if pod.Namespace != req.Namespace {
		subject = pod.DeepCopy()
		subject.Namespace = req.Namespace
	}
	id, err := h.workloads().Resolve(ctx, subject)
	if err != nil {
		// The best identity known is used, as the collector does when the
		// same owner cannot be read; a pod that goes uninjected because of
		// it is counted by the MissCounter.
		h.Log.Info("workload resolved to the highest owner known", "namespace", req.Namespace, "pod", podName(req, pod), "workload", id.Key(), "error", err.Error())
		if h.Metrics != nil {
			h.Metrics.ResolveFailures.Inc()
		}
	}
	w := id.Ref
	in.Workload = w
	var recs eddyv1alpha1.RecommendationList
	// Mutate never changes its inputs, so the cache's objects need no copy.
	if err := h.Reader.List(ctx, &recs, client.InNamespace(req.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return in, fmt.Errorf("list recommendations in %s: %w", req.Namespace, err)
	}
	in.Recommendations = recs.Items
	var policies eddyv1alpha1.AutotunePolicyList
	if err := h.Reader.List(ctx, &policies, client.InNamespace(req.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return in, fmt.Errorf("list autotunepolicies in %s: %w", req.Namespace, err)
	}
	in.Policy = eddyv1alpha1.PolicyInForce(policies.Items)
	return in, nil
}

// report counts the result and records a warning event on the
// recommendation for each conflict that kept it from a pod. It returns the
// warnings shown to the pod's creator.
func (h *Injector) report(req admission.Request, pod *corev1.Pod, res Result) []string {
	if h.Metrics != nil {
		for _, what := range res.Injected {
			h.Metrics.Injections.WithLabelValues(what).Inc()
		}
	}
	var warnings []string
	for _, d := range res.Decisions {
		if d.Outcome == OutcomeSkipped && h.Metrics != nil {
			h.Metrics.Skips.WithLabelValues(d.Reason).Inc()
		}
		if d.Recommendation == "" {
			continue
		}
		if d.Outcome == OutcomeSkipped || d.Outcome == OutcomeAdjusted {
			warnings = append(warnings, fmt.Sprintf("eddy: recommendation %s: %s", d.Recommendation, d.Message))
		}
		if h.Recorder == nil || req.DryRun != nil && *req.DryRun {
			continue
		}
		ref := &corev1.ObjectReference{
			APIVersion: eddyv1alpha1.GroupVersion.String(), Kind: "Recommendation",
			Namespace: req.Namespace, Name: d.Recommendation,
		}
		msg := fmt.Sprintf("pod %s: %s", podName(req, pod), d.Message)
		// Injections are counted, not recorded one event per pod: at hundreds
		// of pods a second that would be an event storm.
		if d.Outcome == OutcomeSkipped {
			h.Recorder.Event(ref, corev1.EventTypeWarning, EventInjectionSkip, d.Reason+": "+msg)
		}
	}
	return warnings
}

// failOpen admits the pod unchanged and makes the failure visible.
func (h *Injector) failOpen(req admission.Request, pod *corev1.Pod, stage string, err error) admission.Response {
	if h.Metrics != nil {
		h.Metrics.Errors.WithLabelValues("inject", stage).Inc()
	}
	h.Log.Error(err, "admitting pod without injection", "namespace", req.Namespace, "stage", stage)
	if h.Recorder != nil && (req.DryRun == nil || !*req.DryRun) {
		h.Recorder.Event(eventTarget(req, pod), corev1.EventTypeWarning, EventInjectionFailed,
			fmt.Sprintf("pod %s admitted without eddy's injection: %v", podName(req, pod), err))
	}
	return admission.Allowed("").WithWarnings(fmt.Sprintf("eddy: pod admitted without injection (%s failed): %v", stage, err))
}

// eventTarget is where a failed injection is reported: the pod's controller
// (where its creation problems are usually looked for), else its namespace.
func eventTarget(req admission.Request, pod *corev1.Pod) *corev1.ObjectReference {
	if pod != nil {
		if o := metav1.GetControllerOfNoCopy(pod); o != nil {
			return &corev1.ObjectReference{APIVersion: o.APIVersion, Kind: o.Kind, Name: o.Name, Namespace: req.Namespace, UID: o.UID}
		}
		if pod.Name != "" {
			return &corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, Namespace: req.Namespace}
		}
	}
	return &corev1.ObjectReference{APIVersion: "v1", Kind: "Namespace", Name: req.Namespace}
}

func podName(req admission.Request, pod *corev1.Pod) string {
	switch {
	case pod != nil && pod.Name != "":
		return pod.Name
	case req.Name != "":
		return req.Name
	case pod != nil && pod.GenerateName != "":
		return pod.GenerateName + "*"
	}
	return "(unnamed)"
}

// workloads is the resolver in use.
func (h *Injector) workloads() *workload.Resolver {
	h.once.Do(func() {
		if h.Workloads == nil {
			h.Workloads = workload.NewResolver(workload.ReaderLookup(h.Reader), workload.Options{})
		}
	})
	return h.Workloads
}
