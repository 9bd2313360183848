// Package webhook is eddy's admission: a mutating webhook that applies
// Applied recommendations to new pods (a prefetch sidecar, an SDK copied in by
// an init container), a validating webhook that lets only users allowed the
// verb approve decide on recommendations, and the certificates both are
// served with, which eddy creates, publishes and rotates itself.
//
// The injection itself is Mutate, a pure function of the pod, the
// recommendations, the namespace's policy and the injector's Config; the
// admission handlers only gather those inputs and turn the result into a
// patch, events and metrics.
package webhook

import (
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"

	manifestv1 "github.com/eddy-autotune/eddy/api/manifest/v1"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	eddyv1alpha1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/prefetch"
)

// Names of what the webhook adds to a pod. A pod that already has any of
// them is never injected again.
const (
	// PrefetchContainerName is the prefetch sidecar.
	PrefetchContainerName = eddyv1alpha1.PrefetchContainerName
	// SDKInitContainerName is the init container that copies the SDK.
	SDKInitContainerName = eddyv1alpha1.SDKInitContainerName
	// SDKVolumeName is the emptyDir the SDK is copied into.
	SDKVolumeName = "eddy-sdk"
	// ManifestTokenVolumeName is the projected volume with the prefetcher's
	// token for the analyzer's manifest endpoint (audience
	// manifestv1.Audience) and the cluster's CA, mounted at ManifestTokenDir.
	ManifestTokenVolumeName = "eddy-manifest-token"
	ManifestTokenDir        = "/var/run/secrets/eddy.io/manifest"
	// SidecarCommand is what the injected containers run (cmd/eddy-sidecar,
	// in the eddy image beside the eddy binary): a small binary, so that
	// the sidecar's start does not compete with the application's.
	SidecarCommand = "eddy-sidecar"
	// StatusPortName names the prefetcher's status port.
	StatusPortName = "eddy-prefetch"

	// InjectedPrefetch and InjectedSDK are the values listed in the
	// eddy.io/injected annotation.
	InjectedPrefetch = "prefetch"
	InjectedSDK      = "sdk"

	// PythonPathEnv is extended (never replaced) with SDKMountPath so that
	// Python imports the SDK without a change to the image.
	PythonPathEnv = "PYTHONPATH"
	// HintSocketEnv tells the SDK where the prefetcher's hint socket is.
	HintSocketEnv = "EDDY_PREFETCH_SOCKET"

	// MirrorPodAnnotation marks a static pod's mirror in the API server.
	MirrorPodAnnotation = "kubernetes.io/config.mirror"
)

// Reasons a pod, a recommendation or a container was skipped. They are
// stable, low-cardinality values: the reason label of
// eddy_webhook_skips_total and the reason of the events the webhook emits.
const (
	SkipExcludedNamespace   = "ExcludedNamespace"
	SkipNamespaceNotEnabled = "NamespaceNotEnabled"
	SkipOptedOut            = "OptedOut"
	SkipHostNetwork         = "HostNetwork"
	SkipStaticPod           = "StaticPod"
	SkipAlreadyInjected     = "AlreadyInjected"
	SkipPolicyOff           = "PolicyOff"
	SkipNoRecommendation    = "NoRecommendation"
	SkipOnePrefetcher       = "OnePrefetcherPerPod"
	SkipInvalid             = "InvalidRecommendation"
	SkipNameConflict        = "NameConflict"
	SkipPortConflict        = "PortConflict"
	SkipEnvConflict         = "EnvConflict"
	SkipMountConflict       = "MountConflict"
	SkipNoContainer         = "NoTargetContainer"
	SkipBlocksCompletion    = "SidecarWouldBlockCompletion"
	SkipInvalidPod          = "InvalidPod"
)

// Reasons of decisions that are not skips.
const (
	ReasonInjected         = "Injected"
	ReasonClamped          = "ClampedToPolicy"
	ReasonWarmNotEnforced  = "WarmNotEnforced"
	ReasonPythonPathAppend = "PythonPathAppended"
)

// Config is how the injector builds what it adds. Image is required; every
// other zero value has the default its field documents.
type Config struct {
	// Image is the eddy image, which runs both `eddy prefetch` and
	// `eddy sdk install`.
	Image string
	// ImagePullPolicy of the injected containers; empty leaves the
	// Kubernetes default.
	ImagePullPolicy corev1.PullPolicy
	// NativeSidecars injects the prefetcher as an init container with
	// restartPolicy Always (Kubernetes ≥ 1.29); false injects a regular
	// container, which cannot hold the main containers while warming.
	NativeSidecars bool
	// EddyNamespace is where eddy runs; its pods are never injected.
	EddyNamespace string
	// AnalyzerURL is the analyzer's base URL; when set, the prefetcher
	// fetches its manifest from AnalyzerURL/v1/manifests/<namespace>/<profile>.
	AnalyzerURL string
	// PrefetchResources are the sidecar's requests and limits before the
	// policy's maxCPU and maxMemory cap them. Empty: requests 50m CPU and
	// 64Mi memory, limits 500m CPU and 256Mi memory. A BestEffort pod's
	// sidecar gets none and a Guaranteed pod's requests equal to its limits,
	// so that the pod keeps its QoS class (injectedResources).
	PrefetchResources corev1.ResourceRequirements
	// RunAsUser is the UID of the injected containers when the pod sets
	// none of its own. Zero: 65532.
	RunAsUser int64
	// WarmTimeoutSeconds bounds how long the startup probe waits for the
	// warm threshold before the kubelet restarts the sidecar. Zero: 1800.
	WarmTimeoutSeconds int32
}

func (c Config) withDefaults() Config {
	if len(c.PrefetchResources.Requests) == 0 && len(c.PrefetchResources.Limits) == 0 {
		c.PrefetchResources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
		}
	}
	if c.RunAsUser == 0 {
		c.RunAsUser = 65532
	}
	if c.WarmTimeoutSeconds == 0 {
		c.WarmTimeoutSeconds = 1800
	}
	return c
}

// Input is everything Mutate decides from.
type Input struct {
	// Pod as submitted. Mutate never changes it.
	Pod *corev1.Pod
	// Namespace of the admission request (a new pod's metadata may not carry it).
	Namespace string
	// NamespaceLabels are the labels of the pod's namespace.
	NamespaceLabels map[string]string
	// Workload is the pod's top-level workload (see ResolveWorkload).
	Workload eddyv1alpha1.WorkloadReference
	// Recommendations in the namespace; Mutate picks those that apply.
	Recommendations []eddyv1alpha1.Recommendation
	// Policy is the namespace's AutotunePolicy, nil when it has none.
	Policy *eddyv1alpha1.AutotunePolicy
}

// Outcome says what a Decision did.
type Outcome string

const (
	// OutcomeInjected: something was added to the pod.
	OutcomeInjected Outcome = "Injected"
	// OutcomeSkipped: the pod, a recommendation or a container was left alone.
	OutcomeSkipped Outcome = "Skipped"
	// OutcomeAdjusted: something was injected in a changed form (a value
	// clamped to the policy, a variable appended to).
	OutcomeAdjusted Outcome = "Adjusted"
)

// Decision is one thing Mutate decided, and why.
type Decision struct {
	Outcome Outcome `json:"outcome"`
	// Reason is one of the Skip* or Reason* constants.
	Reason string `json:"reason"`
	// Message says it for people, naming the container, variable or value.
	Message string `json:"message"`
	// Recommendation the decision concerns, if any.
	Recommendation string `json:"recommendation,omitempty"`
}

// Result is what Mutate produced.
type Result struct {
	// Pod to admit: a changed copy, or Input.Pod itself when nothing changed.
	Pod *corev1.Pod
	// Injected lists what was added: InjectedPrefetch, InjectedSDK.
	Injected []string
	// Applied names the recommendations applied, sorted.
	Applied []string
	// Decisions in the order they were made.
	Decisions []Decision
}

// Changed reports whether the pod was modified.
func (r Result) Changed() bool { return len(r.Injected) > 0 }

func (r *Result) decide(o Outcome, reason, rec, format string, args ...any) {
	r.Decisions = append(r.Decisions, Decision{Outcome: o, Reason: reason, Recommendation: rec, Message: fmt.Sprintf(format, args...)})
}

// Mutate applies the Applied (or Verified) Prefetch and InjectSDK
// recommendations that target in.Workload and a dataset the pod mounts. It
// is pure and total: any pod, however malformed, yields a Result, and a pod
// it already injected (or one with eddy's names in use) comes back unchanged.
func Mutate(in Input, cfg Config) Result {
	res := Result{Pod: in.Pod}
	pod := in.Pod
	if pod == nil {
		res.decide(OutcomeSkipped, SkipInvalidPod, "", "no pod in the request")
		return res
	}
	cfg = cfg.withDefaults()
	if reason, msg := excluded(in, cfg); reason != "" {
		res.decide(OutcomeSkipped, reason, "", "%s", msg)
		return res
	}
	if in.Policy != nil && in.Policy.Spec.Mode == eddyv1alpha1.ModeOff {
		res.decide(OutcomeSkipped, SkipPolicyOff, "", "AutotunePolicy %s is in mode Off", in.Policy.Name)
		return res
	}

	volumes := datasetVolumes(pod)
	var prefetchRecs, sdkRecs []*eddyv1alpha1.Recommendation
	for i := range in.Recommendations {
		rec := &in.Recommendations[i]
		if !applies(rec, in.Workload, volumes) {
			continue
		}
		switch rec.Spec.Action {
		case eddyv1alpha1.ActionPrefetch:
			prefetchRecs = append(prefetchRecs, rec)
		case eddyv1alpha1.ActionInjectSDK:
			sdkRecs = append(sdkRecs, rec)
		}
	}
	if len(prefetchRecs) == 0 && len(sdkRecs) == 0 {
		res.decide(OutcomeSkipped, SkipNoRecommendation, "", "no Applied Prefetch or InjectSDK recommendation for %s %s and the datasets this pod mounts", in.Workload.Kind, in.Workload.Name)
		return res
	}

	out := pod.DeepCopy()
	sdkApplied := injectSDK(out, sdkRecs, volumes, cfg, in.Policy, &res)
	prefetchApplied := injectPrefetch(out, prefetchRecs, volumes, sdkApplied != nil, in.Namespace, cfg, in.Policy, &res)

	var applied []string
	if prefetchApplied != "" {
		res.Injected = append(res.Injected, InjectedPrefetch)
		applied = append(applied, prefetchApplied)
	}
	if sdkApplied != nil {
		res.Injected = append(res.Injected, InjectedSDK)
		applied = append(applied, sdkApplied...)
	}
	if len(res.Injected) == 0 {
		return res
	}
	sort.Strings(applied)
	res.Applied = applied
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[eddyv1alpha1.InjectedAnnotation] = strings.Join(res.Injected, ",")
	out.Annotations[eddyv1alpha1.RecommendationAnnotation] = strings.Join(applied, ",")
	res.Pod = out
	return res
}

// excluded re-checks in code what the webhook configuration's selectors
// already filter, so that a hand-edited configuration cannot widen them.
func excluded(in Input, cfg Config) (reason, message string) {
	pod := in.Pod
	ns := in.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	switch {
	case ns == "kube-system" || (cfg.EddyNamespace != "" && ns == cfg.EddyNamespace):
		return SkipExcludedNamespace, fmt.Sprintf("namespace %s is never injected", ns)
	case in.NamespaceLabels[eddyv1alpha1.AutotuneLabel] != eddyv1alpha1.AutotuneEnabled:
		return SkipNamespaceNotEnabled, fmt.Sprintf("namespace %s is not labelled %s=%s", ns, eddyv1alpha1.AutotuneLabel, eddyv1alpha1.AutotuneEnabled)
	case pod.Labels[eddyv1alpha1.AutotuneLabel] == eddyv1alpha1.AutotuneDisabled:
		return SkipOptedOut, fmt.Sprintf("pod is labelled %s=%s", eddyv1alpha1.AutotuneLabel, eddyv1alpha1.AutotuneDisabled)
	case pod.Spec.HostNetwork:
		return SkipHostNetwork, "pod uses the host network"
	case isStatic(pod):
		return SkipStaticPod, "pod is a static (mirror) pod"
	}
	if v, ok := pod.Annotations[eddyv1alpha1.InjectedAnnotation]; ok {
		return SkipAlreadyInjected, fmt.Sprintf("pod is already annotated %s=%q", eddyv1alpha1.InjectedAnnotation, v)
	}
	return "", ""
}

func isStatic(pod *corev1.Pod) bool {
	if _, ok := pod.Annotations[MirrorPodAnnotation]; ok {
		return true
	}
	for _, o := range pod.OwnerReferences {
		if o.Kind == "Node" && o.APIVersion == "v1" {
			return true
		}
	}
	return false
}

// datasetVolumes maps each dataset the pod mounts to its volumes, in the
// pod's volume order. Keys are "PVC/<claim>" (a Fluid Dataset's PVC is named
// like the Dataset, so Fluid references use the same key) and
// "Volume/<name>".
func datasetVolumes(pod *corev1.Pod) map[string][]string {
	out := map[string][]string{}
	for _, v := range pod.Spec.Volumes {
		if v.Name == "" {
			continue
		}
		out["Volume/"+v.Name] = append(out["Volume/"+v.Name], v.Name)
		if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName != "" {
			k := "PVC/" + v.PersistentVolumeClaim.ClaimName
			out[k] = append(out[k], v.Name)
		}
	}
	return out
}

// applies reports whether rec is in force for this workload and a dataset
// the pod mounts.
func applies(rec *eddyv1alpha1.Recommendation, w eddyv1alpha1.WorkloadReference, volumes map[string][]string) bool {
	if !rec.Status.Phase.InForce() {
		return false
	}
	if t := rec.Spec.TargetRef; t == nil || !t.Same(w) {
		return false
	}
	return len(volumes[rec.Spec.Dataset.VolumeKey()]) > 0
}

// pickPrefetch orders candidates by confidence (highest first), then name,
// so the same recommendations always pick the same winner.
func pickPrefetch(recs []*eddyv1alpha1.Recommendation) []*eddyv1alpha1.Recommendation {
	out := append([]*eddyv1alpha1.Recommendation(nil), recs...)
	sort.SliceStable(out, func(i, j int) bool {
		ci, cj := out[i].Spec.Evidence.Confidence, out[j].Spec.Evidence.Confidence
		if ci != cj {
			return ci > cj
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// injectPrefetch adds the prefetch sidecar for the most confident valid
// Prefetch recommendation and returns its name ("" when nothing was
// injected). A pod runs one prefetcher: its status port is fixed.
func injectPrefetch(pod *corev1.Pod, recs []*eddyv1alpha1.Recommendation, volumes map[string][]string, withSDK bool, namespace string, cfg Config, policy *eddyv1alpha1.AutotunePolicy, res *Result) string {
	if len(recs) == 0 {
		return ""
	}
	ordered := pickPrefetch(recs)
	if hasContainer(pod, PrefetchContainerName) {
		res.decide(OutcomeSkipped, SkipNameConflict, ordered[0].Name, "the pod already has a container named %s", PrefetchContainerName)
		return ""
	}
	if c, ok := usesPort(pod, prefetch.StatusPort); ok {
		res.decide(OutcomeSkipped, SkipPortConflict, ordered[0].Name, "container %s already uses port %d or its name %s, the prefetcher's status port", c, prefetch.StatusPort, StatusPortName)
		return ""
	}
	if !cfg.NativeSidecars && pod.Spec.RestartPolicy != "" && pod.Spec.RestartPolicy != corev1.RestartPolicyAlways {
		res.decide(OutcomeSkipped, SkipBlocksCompletion, ordered[0].Name,
			"restartPolicy %s: without native sidecars (Kubernetes < 1.29) a prefetch container would keep the pod from completing", pod.Spec.RestartPolicy)
		return ""
	}
	var bounds eddyv1alpha1.PrefetchBounds
	if policy != nil && policy.Spec.Prefetch != nil {
		bounds = *policy.Spec.Prefetch
	}
	var chosen *eddyv1alpha1.Recommendation
	var c corev1.Container
	for _, rec := range ordered {
		if chosen != nil {
			res.decide(OutcomeSkipped, SkipOnePrefetcher, rec.Name, "a pod runs one prefetcher; %s (confidence %.2f) was chosen over %s (confidence %.2f)",
				chosen.Name, chosen.Spec.Evidence.Confidence, rec.Name, rec.Spec.Evidence.Confidence)
			continue
		}
		var decisions Result
		built, err := prefetchContainer(pod, rec, volumes[rec.Spec.Dataset.VolumeKey()], withSDK, namespace, cfg, bounds, &decisions)
		if err != nil {
			res.decide(OutcomeSkipped, SkipInvalid, rec.Name, "%v", err)
			continue
		}
		res.Decisions = append(res.Decisions, decisions.Decisions...)
		chosen, c = rec, built
	}
	if chosen == nil {
		return ""
	}
	if slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == ManifestTokenVolumeName }) && !hasVolume(pod, ManifestTokenVolumeName) {
		pod.Spec.Volumes = append(pod.Spec.Volumes, manifestTokenVolume())
	}
	if cfg.NativeSidecars {
		always := corev1.ContainerRestartPolicyAlways
		c.RestartPolicy = &always
		if withSDK {
			foldSDKInstall(pod, &c)
		}
		// First, so that the prefetcher runs (and, when warming, holds)
		// the pod's own init containers too; with the SDK's copy folded
		// into it, it is the only container eddy adds here.
		pod.Spec.InitContainers = append([]corev1.Container{c}, pod.Spec.InitContainers...)
	} else {
		pod.Spec.Containers = append(pod.Spec.Containers, c)
	}
	res.decide(OutcomeInjected, ReasonInjected, chosen.Name, "prefetch sidecar (%s, %s) on %s", sidecarKind(cfg), chosen.Spec.Prefetch.Strategy, strings.Join(volumes[chosen.Spec.Dataset.VolumeKey()], ", "))
	return chosen.Name
}

// prefetchContainer builds the sidecar for rec, or says what is wrong with
// the recommendation's parameters.
func prefetchContainer(pod *corev1.Pod, rec *eddyv1alpha1.Recommendation, vols []string, withSDK bool, namespace string, cfg Config, bounds eddyv1alpha1.PrefetchBounds, res *Result) (corev1.Container, error) {
	p := rec.Spec.Prefetch
	if p == nil {
		return corev1.Container{}, fmt.Errorf("action Prefetch without spec.prefetch")
	}
	opts := prefetch.Options{
		Strategy:             p.Strategy,
		BlockSize:            max(p.BlockSize.Value(), 0),
		Concurrency:          int(min(max(p.Concurrency, 1), 256)),
		WarmThresholdPercent: int(min(max(p.WarmThresholdPercent, 0), 100)),
		StatusAddr:           fmt.Sprintf(":%d", prefetch.StatusPort),
	}
	roots := map[string]string{}
	for _, v := range vols {
		root := path.Join(prefetch.DataMountRoot, v)
		opts.Roots = append(opts.Roots, root)
		roots[v] = root
	}
	opts.PathAliases = pathAliases(pod, roots)
	opts.MaxBandwidth = clampBytes(res, rec.Name, "maxBandwidth", p.MaxBandwidth, bounds.MaxBandwidth)
	opts.BudgetBytes = clampBytes(res, rec.Name, "budgetBytes", p.BudgetBytes, bounds.BudgetBytes)
	if withSDK {
		opts.HintSocket = path.Join(prefetch.SDKMountPath, prefetch.HintSocketName)
	}
	if cfg.AnalyzerURL != "" && rec.Spec.Evidence.Profile != "" {
		order := manifestv1.OrderAccess
		switch p.Strategy {
		case eddyv1alpha1.StrategyHotSet:
			order = manifestv1.OrderHot
		case eddyv1alpha1.StrategyRanges:
			order = manifestv1.OrderRanges
		}
		opts.ManifestURL = manifestv1.URL(cfg.AnalyzerURL, namespace, rec.Spec.Evidence.Profile, order)
		opts.ServiceAccountDir = ManifestTokenDir
	}
	if err := opts.Validate(); err != nil {
		return corev1.Container{}, fmt.Errorf("prefetch parameters: %w", err)
	}
	c := corev1.Container{
		Name:            PrefetchContainerName,
		Image:           cfg.Image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Command:         []string{SidecarCommand},
		Args:            opts.Args(),
		Ports:           []corev1.ContainerPort{{Name: StatusPortName, ContainerPort: prefetch.StatusPort, Protocol: corev1.ProtocolTCP}},
		Resources:       injectedResources(pod, cfg.PrefetchResources, bounds),
		SecurityContext: securityContext(pod, cfg),
	}
	for _, v := range vols {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: v, MountPath: roots[v], ReadOnly: true})
	}
	if withSDK {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: SDKVolumeName, MountPath: prefetch.SDKMountPath})
	}
	if opts.ManifestURL != "" {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: ManifestTokenVolumeName, MountPath: ManifestTokenDir, ReadOnly: true})
	}
	if p.WarmBeforeStart {
		// The probe's period is what the main containers may wait beyond the
		// warm threshold: the shortest the API allows.
		const period = 1
		c.StartupProbe = &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/warm", Port: intOrStringPort(StatusPortName), Scheme: corev1.URISchemeHTTP,
			}},
			PeriodSeconds:    period,
			TimeoutSeconds:   1,
			SuccessThreshold: 1,
			FailureThreshold: max(cfg.WarmTimeoutSeconds/period, 1),
		}
		if !cfg.NativeSidecars {
			res.decide(OutcomeAdjusted, ReasonWarmNotEnforced, rec.Name,
				"warmBeforeStart: without native sidecars the main containers start without waiting for the warm threshold")
		}
	}
	return c, nil
}

// pathAliases maps where the application containers mount a dataset volume
// (whole, without subPath) to where the prefetcher sees it, so that SDK
// hints carrying application paths can be followed. The first container
// to claim a path wins.
func pathAliases(pod *corev1.Pod, roots map[string]string) []string {
	var out []string
	seen := map[string]bool{}
	for _, c := range pod.Spec.Containers {
		for _, m := range c.VolumeMounts {
			root, ok := roots[m.Name]
			if !ok || m.SubPath != "" || m.SubPathExpr != "" || !path.IsAbs(m.MountPath) {
				continue
			}
			app := path.Clean(m.MountPath)
			if seen[app] || app == root {
				continue
			}
			seen[app] = true
			out = append(out, app+"="+root)
		}
	}
	return out
}

func sidecarKind(cfg Config) string {
	if cfg.NativeSidecars {
		return "native sidecar"
	}
	return "regular container"
}

// foldSDKInstall moves the SDK's copy from its own init container into the
// native sidecar's postStart hook. The kubelet starts the containers after a
// native sidecar only once its postStart hook has returned, so the SDK is
// still in place before the application starts, and the pod is spared one
// container's creation and the wait for its exit to be noticed (the kubelet
// relists containers every second). A hook that fails restarts the sidecar,
// as a failed copy failed the init container.
func foldSDKInstall(pod *corev1.Pod, sidecar *corev1.Container) {
	i := slices.IndexFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == SDKInitContainerName })
	if i < 0 {
		return
	}
	install := pod.Spec.InitContainers[i]
	pod.Spec.InitContainers = slices.Delete(pod.Spec.InitContainers, i, i+1)
	sidecar.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{
		Exec: &corev1.ExecAction{Command: append(slices.Clone(install.Command), install.Args...)},
	}}
}

// clampBytes returns the smaller of a recommendation's value and the
// policy's bound (either may be absent), recording a clamp.
func clampBytes(res *Result, rec, field string, want, bound *resource.Quantity) int64 {
	var v int64
	if want != nil {
		v = max(want.Value(), 0)
	}
	if bound == nil {
		return v
	}
	b := max(bound.Value(), 0)
	if v == 0 || v > b {
		if v != 0 {
			res.decide(OutcomeAdjusted, ReasonClamped, rec, "%s %d clamped to the policy's %d", field, v, b)
		}
		return b
	}
	return v
}

// clampResources caps limits (and requests) at the policy's maxCPU and
// maxMemory, and sets a limit equal to the cap where none was given.
func clampResources(r corev1.ResourceRequirements, b eddyv1alpha1.PrefetchBounds) corev1.ResourceRequirements {
	out := *r.DeepCopy()
	caps := map[corev1.ResourceName]*resource.Quantity{corev1.ResourceCPU: b.MaxCPU, corev1.ResourceMemory: b.MaxMemory}
	for name, limit := range caps {
		if limit == nil {
			continue
		}
		if out.Limits == nil {
			out.Limits = corev1.ResourceList{}
		}
		if l, ok := out.Limits[name]; !ok || l.Cmp(*limit) > 0 {
			out.Limits[name] = limit.DeepCopy()
		}
		if q, ok := out.Requests[name]; ok && q.Cmp(out.Limits[name]) > 0 {
			out.Requests[name] = out.Limits[name].DeepCopy()
		}
	}
	return out
}

// injectedResources are an injected container's resources: r within the
// policy's caps, shaped so that the pod keeps the QoS class it was created
// with, which decides its eviction order, its OOM score and whether the CPU
// manager may pin it. A BestEffort pod's injected containers get none (unless
// the policy caps them: a person asked for limits, and the pod becomes
// Burstable with the small requests of r); a Guaranteed pod's get
// requests equal to their limits; a Burstable pod's get r. pod is the pod
// before this injection.
func injectedResources(pod *corev1.Pod, r corev1.ResourceRequirements, b eddyv1alpha1.PrefetchBounds) corev1.ResourceRequirements {
	switch podQoS(pod) {
	case corev1.PodQOSBestEffort:
		if b.MaxCPU == nil && b.MaxMemory == nil {
			return corev1.ResourceRequirements{}
		}
	case corev1.PodQOSGuaranteed:
		capped := clampResources(r, b)
		eq := corev1.ResourceList{}
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			q, ok := capped.Limits[name]
			if !ok {
				q, ok = capped.Requests[name]
			}
			if ok {
				eq[name] = q.DeepCopy()
			}
		}
		return corev1.ResourceRequirements{Requests: eq, Limits: eq.DeepCopy()}
	}
	return clampResources(r, b)
}

// podQoS is the pod's QoS class as the kubelet derives it from its
// containers' and init containers' CPU and memory requests and limits (the
// API server has already set unset requests to their limits).
func podQoS(pod *corev1.Pod) corev1.PodQOSClass {
	some, guaranteed := false, true
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, hasReq := c.Resources.Requests[name]
				lim, hasLim := c.Resources.Limits[name]
				hasReq = hasReq && !req.IsZero()
				hasLim = hasLim && !lim.IsZero()
				some = some || hasReq || hasLim
				if !hasLim || (hasReq && req.Cmp(lim) != 0) {
					guaranteed = false
				}
			}
		}
	}
	switch {
	case !some:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}

// securityContext is the injected containers' hardening. The pod's own
// non-root UID is kept when it has one, so the prefetcher reads the dataset
// with the application's permissions.
func securityContext(pod *corev1.Pod, cfg Config) *corev1.SecurityContext {
	no, yes := false, true
	sc := &corev1.SecurityContext{
		RunAsNonRoot:             &yes,
		AllowPrivilegeEscalation: &no,
		ReadOnlyRootFilesystem:   &yes,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	if psc := pod.Spec.SecurityContext; psc == nil || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		uid := cfg.RunAsUser
		sc.RunAsUser = &uid
	}
	return sc
}

// injectSDK copies the SDK into the containers the InjectSDK
// recommendations choose and returns the names of those applied (nil when
// no container received it).
func injectSDK(pod *corev1.Pod, recs []*eddyv1alpha1.Recommendation, volumes map[string][]string, cfg Config, policy *eddyv1alpha1.AutotunePolicy, res *Result) []string {
	if len(recs) == 0 {
		return nil
	}
	if hasContainer(pod, SDKInitContainerName) || hasVolume(pod, SDKVolumeName) {
		for _, rec := range recs {
			res.decide(OutcomeSkipped, SkipNameConflict, rec.Name, "the pod already has a container or volume named %s", SDKVolumeName)
		}
		return nil
	}
	socket := path.Join(prefetch.SDKMountPath, prefetch.HintSocketName)
	injected := map[string]bool{}
	var applied []string
	for _, rec := range recs {
		targets := sdkTargets(pod, rec, volumes, res)
		var got []string
		for _, i := range targets {
			c := &pod.Spec.Containers[i]
			if injected[c.Name] || addSDKTo(c, socket, rec.Name, res) {
				injected[c.Name] = true
				got = append(got, c.Name)
			}
		}
		if len(got) > 0 {
			applied = append(applied, rec.Name)
			res.decide(OutcomeInjected, ReasonInjected, rec.Name, "SDK (%s) into %s", sdkName(rec), strings.Join(got, ", "))
		} else if len(targets) > 0 {
			res.decide(OutcomeSkipped, SkipNoContainer, rec.Name, "no container could take the SDK")
		}
	}
	if len(applied) == 0 {
		return nil
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
		Name:         SDKVolumeName,
		VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptrQuantity("64Mi")}},
	})
	var bounds eddyv1alpha1.PrefetchBounds
	if policy != nil && policy.Spec.Prefetch != nil {
		bounds = *policy.Spec.Prefetch
	}
	install := corev1.Container{
		Name:            SDKInitContainerName,
		Image:           cfg.Image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Command:         []string{SidecarCommand},
		Args:            []string{"sdk", "install", "--to", prefetch.SDKMountPath},
		VolumeMounts:    []corev1.VolumeMount{{Name: SDKVolumeName, MountPath: prefetch.SDKMountPath}},
		Resources: injectedResources(pod, corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		}, bounds),
		SecurityContext: securityContext(pod, cfg),
	}
	pod.Spec.InitContainers = append([]corev1.Container{install}, pod.Spec.InitContainers...)
	return applied
}

func sdkName(rec *eddyv1alpha1.Recommendation) string {
	lang, fw := "Python", "PyTorch"
	if s := rec.Spec.SDK; s != nil {
		if s.Language != "" {
			lang = s.Language
		}
		if s.Framework != "" {
			fw = s.Framework
		}
	}
	return lang + "/" + fw
}

// sdkTargets returns the indexes of the containers rec chooses: those it
// names, else every container that mounts the recommendation's dataset.
func sdkTargets(pod *corev1.Pod, rec *eddyv1alpha1.Recommendation, volumes map[string][]string, res *Result) []int {
	var out []int
	if rec.Spec.SDK != nil && len(rec.Spec.SDK.Containers) > 0 {
		for _, name := range rec.Spec.SDK.Containers {
			found := false
			for i := range pod.Spec.Containers {
				if pod.Spec.Containers[i].Name == name {
					out = append(out, i)
					found = true
					break
				}
			}
			if !found {
				res.decide(OutcomeSkipped, SkipNoContainer, rec.Name, "container %q named in spec.sdk.containers is not in the pod", name)
			}
		}
		return out
	}
	vols := map[string]bool{}
	for _, v := range volumes[rec.Spec.Dataset.VolumeKey()] {
		vols[v] = true
	}
	for i, c := range pod.Spec.Containers {
		for _, m := range c.VolumeMounts {
			if vols[m.Name] {
				out = append(out, i)
				break
			}
		}
	}
	if len(out) == 0 {
		res.decide(OutcomeSkipped, SkipNoContainer, rec.Name, "no container mounts dataset %s", rec.Spec.Dataset.Name)
	}
	return out
}

// addSDKTo mounts the SDK into c and sets its environment without
// clobbering the user's: PYTHONPATH is appended to, a variable from
// valueFrom or with another value is a conflict that skips the container.
func addSDKTo(c *corev1.Container, socket, rec string, res *Result) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath == prefetch.SDKMountPath || strings.HasPrefix(m.MountPath, prefetch.SDKMountPath+"/") {
			res.decide(OutcomeSkipped, SkipMountConflict, rec, "container %s already mounts something at %s", c.Name, m.MountPath)
			return false
		}
	}
	pyIdx, sockIdx := -1, -1
	for i, e := range c.Env {
		switch e.Name {
		case PythonPathEnv:
			pyIdx = i
		case HintSocketEnv:
			sockIdx = i
		}
	}
	if pyIdx >= 0 && c.Env[pyIdx].ValueFrom != nil {
		res.decide(OutcomeSkipped, SkipEnvConflict, rec, "container %s: %s comes from valueFrom, which eddy leaves alone; without it the SDK cannot be imported", c.Name, PythonPathEnv)
		return false
	}
	if sockIdx >= 0 && (c.Env[sockIdx].ValueFrom != nil || c.Env[sockIdx].Value != socket) {
		res.decide(OutcomeSkipped, SkipEnvConflict, rec, "container %s already sets %s to something other than %s", c.Name, HintSocketEnv, socket)
		return false
	}
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: SDKVolumeName, MountPath: prefetch.SDKMountPath, ReadOnly: true})
	switch {
	case pyIdx >= 0:
		if !containsPathEntry(c.Env[pyIdx].Value, prefetch.SDKMountPath) {
			old := c.Env[pyIdx].Value
			if old == "" {
				c.Env[pyIdx].Value = prefetch.SDKMountPath
			} else {
				c.Env[pyIdx].Value = old + ":" + prefetch.SDKMountPath
				res.decide(OutcomeAdjusted, ReasonPythonPathAppend, rec, "container %s: %s %q kept, %s appended", c.Name, PythonPathEnv, old, prefetch.SDKMountPath)
			}
		}
	case len(c.EnvFrom) > 0:
		// envFrom may define PYTHONPATH; $(PYTHONPATH) keeps it (and stays a
		// harmless literal entry when it does not).
		c.Env = append(c.Env, corev1.EnvVar{Name: PythonPathEnv, Value: "$(" + PythonPathEnv + "):" + prefetch.SDKMountPath})
	default:
		c.Env = append(c.Env, corev1.EnvVar{Name: PythonPathEnv, Value: prefetch.SDKMountPath})
	}
	if sockIdx < 0 {
		c.Env = append(c.Env, corev1.EnvVar{Name: HintSocketEnv, Value: socket})
	}
	return true
}

func containsPathEntry(list, entry string) bool {
	for _, p := range strings.Split(list, ":") {
		if p == entry {
			return true
		}
	}
	return false
}

func hasContainer(pod *corev1.Pod, name string) bool {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			if c.Name == name {
				return true
			}
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		if c.Name == name {
			return true
		}
	}
	return false
}

// manifestTokenVolume holds a token of the pod's service account for the
// manifest endpoint only (an hour, renewed by the kubelet) and the CA that
// signed the analyzer's certificate.
func manifestTokenVolume() corev1.Volume {
	return corev1.Volume{Name: ManifestTokenVolumeName, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: manifestv1.Audience, ExpirationSeconds: ptr.To(int64(3600)), Path: "token"}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
		},
	}}}
}

func hasVolume(pod *corev1.Pod, name string) bool {
	for _, v := range pod.Spec.Volumes {
		if v.Name == name {
			return true
		}
	}
	return false
}

func usesPort(pod *corev1.Pod, port int32) (string, bool) {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				if p.ContainerPort == port || p.Name == StatusPortName {
					return c.Name, true
				}
			}
		}
	}
	return "", false
}

func intOrStringPort(name string) intstr.IntOrString { return intstr.FromString(name) }

func ptrQuantity(s string) *resource.Quantity {
	q := resource.MustParse(s)
	return &q
}
