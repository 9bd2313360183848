// Package bench measures eddy against what users run today, on the real
// node of test/node: every workload is a real pod reading a PersistentVolumeClaim
// backed by a slow remote (rclone serve behind a latency and bandwidth
// proxy, an rclone FUSE mount with its own cache), and every arm runs from
// cold: no prefetch, Fluid's file prefetcher (its real script, as a native
// sidecar, sync and async), a hand-tuned 16-reader warm-up, eddy (run 1
// observed through the real loop, run 2 measured) and an oracle (data
// already warm). The remote's requests and bytes are counted by a meter in
// front of it, independently of eddy.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/eddy-autotune/eddy/analyzer/advice"
	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/node"
	"github.com/eddy-autotune/eddy/test/node/workload"
	"github.com/eddy-autotune/eddy/test/slowremote"
)

// Arm is one way of getting the data to the job.
type Arm string

// The arms, in the order they run and are reported.
const (
	ArmCold       Arm = "cold"
	ArmFluidSync  Arm = "fluid-sync"
	ArmFluidAsync Arm = "fluid-async"
	ArmWarm16     Arm = "warmup-16"
	ArmEddy       Arm = "eddy"
	ArmOracle     Arm = "oracle"
)

// AllArms are every arm, in report order.
var AllArms = []Arm{ArmCold, ArmFluidSync, ArmFluidAsync, ArmWarm16, ArmEddy, ArmOracle}

// Class is one workload: a dataset and how the job reads it.
type Class struct {
	// Name is the access-pattern class eddy should find (v1alpha1 names),
	// with a suffix for a variant of it ("ShuffledEpochs-2xCache"); the
	// report's tables and the namespace are named after it.
	Name string
	// Pattern and the numbers after it are eddy-workload read's. Compute
	// is per file read (per 4 KiB read for Random4K).
	Pattern    workload.Pattern
	Epochs     int
	Compute    time.Duration
	OpsPerFile int
	// Torch runs the job as a PyTorch DataLoader training loop (train.py
	// in node.TorchImage) instead of eddy-workload: Pattern must be
	// SmallFilesShuffled; it sleeps Compute per file of each batch, once
	// per batch of torchBatch files.
	Torch bool
	// Files small files of FileSize bytes under small/, and one file of
	// LargeSize bytes (0: none).
	Files     int
	FileSize  int64
	LargeSize int64
	// Subdir is the folder under the dataset the job reads ("" for all).
	Subdir string
	// CacheMaxSize bounds this class's FUSE cache instead of
	// Config.CacheMaxSize ("": the Config's).
	CacheMaxSize string
	// ReadChunkSize mounts this class's remote with small first requests
	// (node.RemoteOptions.ReadChunkSize); every arm of the class shares it.
	ReadChunkSize string
}

// The training loop's DataLoader: two worker processes read batches of
// eight files while the main process "computes". Two workers is one per
// core of the machine the benchmark is sized for; eight files a batch keeps
// twelve batches in an epoch of the short benchmark's 96 files, so each
// epoch runs at the loop's steady state (two workers × two batches
// prefetched each, 32 files ahead) rather than at its start.
const (
	torchBatch   = 8
	torchWorkers = 2
)

// cacheMaxSize is the FUSE cache bound the class runs with.
func (c Class) cacheMaxSize(cfg Config) string {
	if c.CacheMaxSize != "" {
		return c.CacheMaxSize
	}
	return cfg.CacheMaxSize
}

// rcloneSize reads a size in rclone's syntax (a number with a binary
// suffix B, K, M, G or T; KiB without one) as a quantity.
func rcloneSize(v string) (resource.Quantity, error) {
	num, unit := v, "K"
	if i := strings.IndexAny(v, "BbKkMmGgTt"); i >= 0 {
		num, unit = v[:i], strings.ToUpper(v[i:])
	}
	suffix, ok := map[string]string{"B": "", "K": "Ki", "M": "Mi", "G": "Gi", "T": "Ti"}[unit]
	if _, err := strconv.ParseUint(num, 10, 63); err != nil || !ok {
		return resource.Quantity{}, fmt.Errorf("%q: want a whole number with B, K, M, G or T", v)
	}
	return resource.ParseQuantity(num + suffix)
}

// Bytes is the dataset's size.
func (c Class) Bytes() int64 { return int64(c.Files)*c.FileSize + c.LargeSize }

// Describe says in words what the class's job reads.
func (c Class) Describe() string {
	epochs := max(c.Epochs, 1)
	switch c.Pattern {
	case workload.SmallFilesShuffled:
		if c.Torch {
			return fmt.Sprintf("%d files of %s read whole in a new random order each of %d epochs by a PyTorch DataLoader (batches of %d, %d workers)", c.Files, sizeOf(c.FileSize), epochs, torchBatch, torchWorkers)
		}
		return fmt.Sprintf("%d files of %s read whole in a new random order each of %d epochs", c.Files, sizeOf(c.FileSize), epochs)
	case workload.Sequential:
		return fmt.Sprintf("%d files of %s read front to back, %d pass(es)", c.Files, sizeOf(c.FileSize), epochs)
	case workload.Random4K:
		return fmt.Sprintf("%d reads of 4 KiB at random offsets of a %s file", c.OpsPerFile, sizeOf(c.LargeSize))
	case workload.HotSet:
		return fmt.Sprintf("of %d files of %s, the hot tenth read each of %d epochs, every other file once", c.Files, sizeOf(c.FileSize), epochs)
	}
	return fmt.Sprintf("%s over %d files, %s", c.Pattern, c.Files, sizeOf(c.Bytes()))
}

func sizeOf(b int64) string { return advice.Bytes(float64(b)) }

// Config is one benchmark run.
type Config struct {
	Classes []Class
	Arms    []Arm
	// Repeats runs each arm this many times (eddy: run 2 only).
	Repeats int
	// Latency (one way) and Bandwidth (bytes/s) of the link to the remote.
	Latency   time.Duration
	Bandwidth int64
	// CacheMaxSize bounds the FUSE mount's cache (rclone syntax).
	CacheMaxSize string
	// Log receives progress lines.
	Log io.Writer
}

// Sample is one measured run of an arm.
type Sample struct {
	// Job is the time the job's container spent reading (and computing).
	Job float64 `json:"jobSeconds"`
	// Total runs from the Job's creation to the job's end: warm-up,
	// start-up and the job.
	Total float64 `json:"totalSeconds"`
	// Start runs from the Job's creation to the start of the job
	// program, as the program reports it (to the millisecond; the kubelet's
	// record of the container's start, to the second, for a program that
	// does not say): the API server, the Job controller, the webhook, the
	// kubelet and whatever the arm starts first. Total − Start − Job is the
	// program's own start-up (Python importing torch) before its loop.
	Start float64 `json:"startSeconds"`
	// Queued is how long the Job controller took to create the pod, as the
	// benchmark saw it (polled every 100 ms): part of Start.
	Queued float64 `json:"queuedSeconds"`
	// Remote is what the remote served during the arm.
	Remote slowremote.MeterCounts `json:"remote"`
}

// StartUp is the program's own time before its loop: Total − Start − Job.
func (s Sample) StartUp() float64 { return s.Total - s.Start - s.Job }

// Result is one class × arm.
type Result struct {
	Class   string   `json:"class"`
	Arm     Arm      `json:"arm"`
	Samples []Sample `json:"samples"`
	// Note says what happened that the numbers do not (eddy's
	// recommendation, or why an arm did not run).
	Note string `json:"note,omitempty"`
}

// Median returns the median of f over the samples.
func (r Result) Median(f func(Sample) float64) float64 {
	if len(r.Samples) == 0 {
		return 0
	}
	v := make([]float64, len(r.Samples))
	for i, s := range r.Samples {
		v[i] = f(s)
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Spread returns max − min of f over the samples.
func (r Result) Spread(f func(Sample) float64) float64 {
	if len(r.Samples) == 0 {
		return 0
	}
	lo, hi := f(r.Samples[0]), f(r.Samples[0])
	for _, s := range r.Samples[1:] {
		lo, hi = min(lo, f(s)), max(hi, f(s))
	}
	return hi - lo
}

// Runner runs a Config on a cluster where eddy is deployed.
type Runner struct {
	Cluster *node.Cluster
	Config  Config
	seq     int
}

func (r *Runner) logf(format string, args ...any) {
	if r.Config.Log != nil {
		fmt.Fprintf(r.Config.Log, time.Now().Format("15:04:05 ")+format+"\n", args...)
	}
}

const (
	dataMount   = "/data"
	claimName   = "data"
	cronJobName = "train"
	// fluidStatus is where Fluid's script records that it finished.
	fluidStatus = "/tmp/fluid-file-prefetcher/status/prefetcher.status"
)

// Run runs every class and arm and returns the results in order.
func (r *Runner) Run(ctx context.Context) ([]Result, error) {
	var out []Result
	for _, class := range r.Config.Classes {
		res, err := r.runClass(ctx, class)
		out = append(out, res...)
		if err != nil {
			return out, fmt.Errorf("class %s: %w", class.Name, err)
		}
	}
	return out, nil
}

func namespaceFor(class Class) string { return "bench-" + strings.ToLower(class.Name) }

func (r *Runner) runClass(ctx context.Context, class Class) ([]Result, error) {
	ns := namespaceFor(class)
	d, err := r.Cluster.AddRemoteDataset(ctx, ns, claimName, func(dir string) error {
		return workload.WriteSample(dir, class.Files, class.FileSize, class.LargeSize)
	}, node.RemoteOptions{Delay: r.Config.Latency, Bandwidth: r.Config.Bandwidth, CacheMaxSize: class.cacheMaxSize(r.Config), ReadChunkSize: class.ReadChunkSize})
	if err != nil {
		return nil, err
	}
	if err := r.optIn(ctx, ns, class); err != nil {
		return nil, err
	}
	r.logf("class %s: %d files, %.1f MiB in namespace %s", class.Name, class.Files, float64(class.Bytes())/(1<<20), ns)
	var out []Result
	for _, arm := range r.Config.Arms {
		res := Result{Class: class.Name, Arm: arm}
		var err error
		if arm == ArmEddy {
			err = r.runEddy(ctx, d, class, &res)
		} else {
			for i := 0; i < max(r.Config.Repeats, 1) && err == nil; i++ {
				var s Sample
				s, err = r.runPeer(ctx, d, class, arm)
				if err == nil {
					res.Samples = append(res.Samples, s)
				}
			}
		}
		if err != nil {
			res.Note = err.Error()
			r.logf("  %s: %v", arm, err)
		} else {
			r.logf("  %-12s job %6.2fs  total %6.2fs  program started %5.2fs (pod made %4.2fs), its start-up %5.2fs  remote %6.1f MiB %5d GETs  %s", arm,
				res.Median(func(s Sample) float64 { return s.Job }), res.Median(func(s Sample) float64 { return s.Total }),
				res.Median(func(s Sample) float64 { return s.Start }), res.Median(func(s Sample) float64 { return s.Queued }), res.Median(Sample.StartUp),
				res.Median(func(s Sample) float64 { return float64(s.Remote.Bytes) / (1 << 20) }),
				int64(res.Median(func(s Sample) float64 { return float64(s.Remote.Gets) })), res.Note)
		}
		out = append(out, res)
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
	return out, nil
}

// optIn labels the namespace for eddy, gives it an Auto policy for
// Prefetch, and creates the suspended CronJob whose Jobs are eddy's arm.
// Peer arms run as Jobs of their own whose pods are labelled out of eddy.
func (r *Runner) optIn(ctx context.Context, ns string, class Class) error {
	policy := node.AutoPolicy("1Gi", v1.ActionPrefetch)
	// A user knows their cache's size: the policy states the FUSE cache's
	// bound, as a Fluid user would state the runtime's quota.
	capacity, err := rcloneSize(class.cacheMaxSize(r.Config))
	if err != nil {
		return fmt.Errorf("class %s: cache size: %w", class.Name, err)
	}
	policy.Spec.CacheCapacity = &capacity
	if err := r.Cluster.OptIn(ctx, ns, policy); err != nil {
		return err
	}
	cl := r.Cluster.Env.Client
	spec := r.podSpec(class, ArmEddy)
	objs := []client.Object{
		&batchv1.CronJob{
			ObjectMeta: metav1.ObjectMeta{Name: cronJobName, Namespace: ns},
			Spec: batchv1.CronJobSpec{
				Schedule: "0 0 1 1 *",
				Suspend:  ptr.To(true),
				JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
					BackoffLimit: ptr.To(int32(0)),
					Template:     corev1.PodTemplateSpec{Spec: spec},
				}},
			},
		},
	}
	for _, o := range objs {
		if err := cl.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}

// podSpec is the pod of one arm: the job container, and what the arm adds.
func (r *Runner) podSpec(class Class, arm Arm) corev1.PodSpec {
	dir := dataMount
	if class.Subdir != "" {
		dir += "/" + class.Subdir
	}
	args := []string{"read", "--dir", dir, "--pattern", string(class.Pattern),
		"--epochs", strconv.Itoa(max(class.Epochs, 1)), "--seed", "7", "--compute", class.Compute.String()}
	if class.OpsPerFile > 0 {
		args = append(args, "--ops-per-file", strconv.Itoa(class.OpsPerFile))
	}
	image, command := node.WorkloadImage, append([]string{"eddy-workload"}, args...)
	if class.Torch {
		image, command = node.TorchImage, []string{"/usr/bin/python3", node.TrainScript, "--dir", dir,
			"--epochs", strconv.Itoa(max(class.Epochs, 1)), "--seed", "7",
			"--batch-size", strconv.Itoa(torchBatch), "--workers", strconv.Itoa(torchWorkers),
			"--compute", strconv.FormatFloat((class.Compute * torchBatch).Seconds(), 'f', -1, 64)}
	}
	data := corev1.VolumeMount{Name: "data", MountPath: dataMount, ReadOnly: true}
	spec := corev1.PodSpec{
		RestartPolicy:                 corev1.RestartPolicyNever,
		TerminationGracePeriodSeconds: ptr.To(int64(1)),
		NodeSelector:                  map[string]string{node.NodeLabel: "real"},
		Containers: []corev1.Container{{
			Name: "job", Image: image, ImagePullPolicy: corev1.PullNever,
			Command: command, VolumeMounts: []corev1.VolumeMount{data},
		}},
		Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claimName, ReadOnly: true},
		}}},
	}
	always := corev1.ContainerRestartPolicyAlways
	fluid := corev1.Container{
		Name: "fluid-file-prefetcher", Image: node.FluidPrefetcherImage, ImagePullPolicy: corev1.PullNever,
		RestartPolicy: &always,
		// Fluid's entrypoint.sh, in busybox sh: run the script once, then idle.
		Command:      []string{"/bin/sh", "-c", "[ -e " + fluidStatus + " ] || /usr/bin/python3 /root/main.py; exec sleep 2147483647"},
		Env:          []corev1.EnvVar{{Name: "FILE_PREFETCHER_FILE_LIST", Value: dir}},
		VolumeMounts: []corev1.VolumeMount{data},
	}
	switch arm {
	case ArmFluidSync:
		// Sync: the job starts once the script reports it is done.
		fluid.StartupProbe = &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-e", fluidStatus}}},
			PeriodSeconds: 1, FailureThreshold: 3600,
		}
		spec.InitContainers = []corev1.Container{fluid}
	case ArmFluidAsync:
		spec.InitContainers = []corev1.Container{fluid}
	case ArmWarm16:
		spec.InitContainers = []corev1.Container{{
			Name: "warmup", Image: node.WorkloadImage, ImagePullPolicy: corev1.PullNever,
			Command:      []string{"eddy-workload", "warm", "--dir", dir, "--parallel", "16"},
			VolumeMounts: []corev1.VolumeMount{data},
		}}
	}
	return spec
}

// runPeer runs one arm other than eddy from cold and measures it.
func (r *Runner) runPeer(ctx context.Context, d *node.Dataset, class Class, arm Arm) (Sample, error) {
	if err := d.Reset(); err != nil {
		return Sample{}, err
	}
	if arm == ArmOracle {
		if _, err := r.runPod(ctx, d, class, ArmCold); err != nil {
			return Sample{}, fmt.Errorf("oracle's warming run: %w", err)
		}
	}
	return r.runPod(ctx, d, class, arm)
}

// runPod runs arm's pod to the end of its job container, as a Job of its
// own, as a user runs a training job: every arm pays the Job controller's
// pod creation, as eddy's Jobs of the CronJob do. The pod is labelled out
// of eddy.
func (r *Runner) runPod(ctx context.Context, d *node.Dataset, class Class, arm Arm) (Sample, error) {
	r.seq++
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: fmt.Sprintf("%s-%d", arm, r.seq)},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To(int32(0)),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{v1.AutotuneLabel: v1.AutotuneDisabled, "eddy.io/bench-arm": string(arm)}},
				Spec:       r.podSpec(class, arm),
			},
		},
	}
	return r.runJobObject(ctx, d, job)
}

// finish waits for the pod's job container to end, reads its report,
// deletes the pod, and returns the sample.
func (r *Runner) finish(ctx context.Context, d *node.Dataset, pod *corev1.Pod, created time.Time, before slowremote.MeterCounts, cpu map[string]int64) (Sample, error) {
	cl := r.Cluster.Env.Client
	defer func() {
		_ = cl.Delete(context.Background(), pod, client.GracePeriodSeconds(1))
		waitGone(context.Background(), cl, pod, time.Minute)
	}()
	deadline := time.Now().Add(15 * time.Minute)
	var term *corev1.ContainerStateTerminated
	for {
		if err := cl.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return Sample{}, err
		}
		if term = jobTerminated(pod); term != nil {
			r.logf("    %s: %s", pod.Name, topCPU(cpu, cpuTicks(), 6))
			if term.ExitCode != 0 {
				return Sample{}, fmt.Errorf("pod %s: job exited %d: %s", pod.Name, term.ExitCode, term.Message)
			}
			break
		}
		if time.Now().After(deadline) {
			return Sample{}, fmt.Errorf("pod %s: job not done after 15m (phase %s)", pod.Name, pod.Status.Phase)
		}
		select {
		case <-ctx.Done():
			return Sample{}, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	logs, err := r.Cluster.Env.Kubectl(ctx, "logs", "-n", pod.Namespace, pod.Name, "-c", "job")
	if err != nil {
		return Sample{}, fmt.Errorf("logs of %s: %w", pod.Name, err)
	}
	var rep workload.Report
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rep); err != nil {
		return Sample{}, fmt.Errorf("pod %s: last log line is not a report: %v: %q", pod.Name, err, logs)
	}
	_ = cl.Delete(ctx, pod, client.GracePeriodSeconds(1))
	waitGone(ctx, cl, pod, time.Minute)
	s := Sample{
		Job:    rep.Seconds,
		Total:  rep.End - float64(created.UnixNano())/1e9,
		Start:  term.StartedAt.Sub(created).Seconds(),
		Remote: d.Remote.Meter.Counts().Sub(before),
	}
	if rep.Began > 0 {
		s.Start = rep.Began - float64(created.UnixNano())/1e9
	}
	return s, nil
}

func jobTerminated(p *corev1.Pod) *corev1.ContainerStateTerminated {
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == "job" && s.State.Terminated != nil {
			return s.State.Terminated
		}
	}
	return nil
}

func waitGone(ctx context.Context, cl client.Client, pod *corev1.Pod, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var p corev1.Pod
		if err := cl.Get(ctx, client.ObjectKeyFromObject(pod), &p); apierrors.IsNotFound(err) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runEddy runs the CronJob once from cold for eddy to observe, waits for
// the loop (collector → analyzer → operator) to apply a recommendation,
// then runs it again from cold, injected by the webhook, and measures that.
func (r *Runner) runEddy(ctx context.Context, d *node.Dataset, class Class, res *Result) error {
	if err := d.Reset(); err != nil {
		return err
	}
	observed, err := r.runJob(ctx, d)
	if err != nil {
		return fmt.Errorf("observed run: %w", err)
	}
	r.logf("  eddy run 1 (observed): job %.2fs  total %.2fs  program started %.2fs, its start-up %.2fs", observed.Job, observed.Total, observed.Start, observed.StartUp())
	rec, why := r.waitRecommendation(ctx, d.Namespace)
	switch {
	case rec != nil:
		p := rec.Spec.Prefetch
		res.Note = fmt.Sprintf("%s %s", rec.Spec.Action, rec.Status.Phase)
		if p != nil {
			res.Note += fmt.Sprintf(" strategy %s, concurrency %d", p.Strategy, p.Concurrency)
			if p.BudgetBytes != nil {
				res.Note += ", budget " + p.BudgetBytes.String()
			}
		}
	default:
		res.Note = why
	}
	for i := 0; i < max(r.Config.Repeats, 1); i++ {
		if err := d.Reset(); err != nil {
			return err
		}
		s, err := r.runJob(ctx, d)
		if err != nil {
			return fmt.Errorf("measured run: %w", err)
		}
		res.Samples = append(res.Samples, s)
	}
	// The operator judges the change by the runs after it: say what it
	// decided by the end of the measured runs (Verified, RolledBack).
	if rec != nil {
		applied := rec.Status.Phase
		if err := r.Cluster.Env.Client.Get(ctx, client.ObjectKeyFromObject(rec), rec); err == nil && rec.Status.Phase != applied {
			res.Note += fmt.Sprintf("; then %s", rec.Status.Phase)
		}
	}
	return nil
}

// waitRecommendation waits for the class's AccessProfile, then for an
// Applied Prefetch recommendation. A class eddy should not prefetch gets
// none: then it returns nil and what the profile said.
func (r *Runner) waitRecommendation(ctx context.Context, ns string) (*v1.Recommendation, string) {
	cl := r.Cluster.Env.Client
	deadline := time.Now().Add(90 * time.Second)
	profiled := time.Time{}
	var class v1.AccessClass
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var profiles v1.AccessProfileList
		if err := cl.List(ctx, &profiles, client.InNamespace(ns)); err == nil {
			for _, p := range profiles.Items {
				if p.Spec.WorkloadRef.Name == cronJobName && p.Status.Class != "" && profiled.IsZero() {
					profiled, class = time.Now(), p.Status.Class
					r.logf("  eddy: AccessProfile %s class %s confidence %.2f", p.Name, p.Status.Class, p.Status.Confidence)
				}
			}
		}
		var recs v1.RecommendationList
		if err := cl.List(ctx, &recs, client.InNamespace(ns)); err == nil {
			for i := range recs.Items {
				rec := &recs.Items[i]
				if rec.Spec.Action == v1.ActionPrefetch && (rec.Status.Phase == v1.PhaseApplied || rec.Status.Phase == v1.PhaseVerified) {
					return rec, ""
				}
			}
		}
		// A class with nothing to prefetch gets no Prefetch: give the
		// analyzer two flushes after the profile, then go on.
		if !profiled.IsZero() && time.Since(profiled) > 20*time.Second {
			return nil, fmt.Sprintf("class %s, no Prefetch applied", class)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if profiled.IsZero() {
		return nil, "no AccessProfile of the observed run after 90s"
	}
	return nil, fmt.Sprintf("class %s, no Prefetch applied after 90s", class)
}

// runJob starts a Job from the CronJob (owned by it, as `kubectl create
// job --from=cronjob/train` does) and measures its pod.
func (r *Runner) runJob(ctx context.Context, d *node.Dataset) (Sample, error) {
	cl := r.Cluster.Env.Client
	var cj batchv1.CronJob
	if err := cl.Get(ctx, client.ObjectKey{Namespace: d.Namespace, Name: cronJobName}, &cj); err != nil {
		return Sample{}, err
	}
	r.seq++
	name := fmt.Sprintf("train-%d", r.seq)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: name, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "batch/v1", Kind: "CronJob", Name: cj.Name, UID: cj.UID, Controller: ptr.To(true),
		}}},
		Spec: *cj.Spec.JobTemplate.Spec.DeepCopy(),
	}
	return r.runJobObject(ctx, d, job)
}

// runJobObject creates job, waits for its pod, and measures it from the
// Job's creation.
func (r *Runner) runJobObject(ctx context.Context, d *node.Dataset, job *batchv1.Job) (Sample, error) {
	cl := r.Cluster.Env.Client
	name := job.Name
	before, cpu := d.Remote.Meter.Counts(), cpuTicks()
	created := time.Now()
	if err := cl.Create(ctx, job); err != nil {
		return Sample{}, fmt.Errorf("create Job %s: %w", name, err)
	}
	defer func() {
		_ = cl.Delete(context.Background(), job, client.PropagationPolicy(metav1.DeletePropagationBackground))
	}()
	var pod *corev1.Pod
	var queued time.Duration
	deadline := time.Now().Add(2 * time.Minute)
	for pod == nil {
		var pods corev1.PodList
		if err := cl.List(ctx, &pods, client.InNamespace(d.Namespace), client.MatchingLabels{"job-name": name}); err != nil {
			return Sample{}, err
		}
		if len(pods.Items) > 0 {
			pod = &pods.Items[0]
			queued = time.Since(created)
			break
		}
		if time.Now().After(deadline) {
			return Sample{}, fmt.Errorf("job %s made no pod in 2m", name)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s, err := r.finish(ctx, d, pod, created, before, cpu)
	s.Queued = queued.Seconds()
	return s, err
}
