// Package demo runs eddy's whole loop on one machine: a real control plane,
// the analyzer, the collector with its kernel programs, the webhook and the
// operator as separate eddy processes, and a training-style workload whose
// reads are recorded, classified and turned into a recommendation that is
// applied to the workload's next pod. `eddy-dev demo` and the end-to-end test
// both run it.
//
// By default the dataset sits behind a slow remote (rclone serving it over
// WebDAV through a proxy that adds latency and caps bandwidth, mounted with
// rclone's file cache, the shape of a Fluid runtime), and the demo measures
// the job twice: its first pod cold, its next pod after the injected
// prefetcher warmed the mount's cache.
//
// Pods here do not run in containers: the workload runs on this machine in
// the cgroup a kubelet would have made for its pod
// (kubepods/besteffort/pod<UID>/<container>), which is all the collector
// needs to attribute its reads. The real-node cluster (test/node) runs real
// containers.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/internal/cgroupv2"
	"github.com/eddy-autotune/eddy/test/controlplane"
	"github.com/eddy-autotune/eddy/test/loopbackcert"
	"github.com/eddy-autotune/eddy/test/node"
	"github.com/eddy-autotune/eddy/test/promserver"
	"github.com/eddy-autotune/eddy/test/slowremote"
)

// Names the demo uses.
const (
	Namespace = "eddy-demo"
	System    = "eddy-system"
	NodeName  = "eddy-demo-node"
	JobName   = "train"
	Dataset   = "imagenet"
)

// Options configure a run. Zero values are documented defaults.
type Options struct {
	// Dir holds the dataset, component state and logs. Default /tmp/eddy-demo.
	Dir string
	// EddyBin is the eddy binary the components run from. Default: eddy
	// beside this executable (eddy-dev).
	EddyBin string
	// WorkloadBin is the reader (eddy-workload). Default: beside EddyBin.
	WorkloadBin string
	// BinDir holds the control-plane binaries (see test/controlplane).
	BinDir string
	// Files, FileBytes and Epochs shape the dataset and the training run.
	// Defaults 128 files of 256 KiB, 3 epochs.
	Files     int
	FileBytes int64
	Epochs    int
	// Local reads the dataset from local disk instead of the slow remote,
	// and skips the before/after measurement.
	Local bool
	// Latency (one way) and Bandwidth (bytes/s, shared by all connections)
	// shape the link to the remote. Defaults 15ms, 32 MiB/s.
	Latency   time.Duration
	Bandwidth int64
	// Ineffective empties the mount's cache after the injected prefetcher
	// warmed it and before the trainer runs, as if another job had evicted
	// it: the prefetch cannot help, and eddy must judge it Ineffective, roll
	// it back (the policy is Auto) and not propose it again during its
	// cool-off. Not with Local.
	Ineffective bool
	// Watch is how long the demo keeps watching after the verdict, to show
	// that it holds (nothing rolled back or re-proposed). Default 20s.
	Watch time.Duration
	// Out receives progress. Default io.Discard.
	Out io.Writer
	// Keep leaves everything running until ctx ends.
	Keep bool
}

func (o *Options) defaults() error {
	if o.Dir == "" {
		o.Dir = filepath.Join(os.TempDir(), "eddy-demo")
	}
	if o.EddyBin == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.EddyBin = filepath.Join(filepath.Dir(exe), "eddy")
	}
	if o.WorkloadBin == "" {
		o.WorkloadBin = filepath.Join(filepath.Dir(o.EddyBin), "eddy-workload")
	}
	if o.Files <= 0 {
		o.Files = 128
	}
	if o.FileBytes <= 0 {
		o.FileBytes = 256 << 10
	}
	if o.Epochs <= 0 {
		o.Epochs = 3
	}
	if o.Latency <= 0 {
		o.Latency = 15 * time.Millisecond
	}
	if o.Bandwidth <= 0 {
		o.Bandwidth = 32 << 20
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Watch <= 0 {
		o.Watch = 20 * time.Second
	}
	if o.Ineffective && o.Local {
		return errors.New("--ineffective empties the remote mount's cache: it needs the remote (not --local)")
	}
	return nil
}

// Result is what the run produced.
type Result struct {
	Profile         v1.AccessProfile
	Recommendations []v1.Recommendation
	// Applied is the recommendation the operator applied (nil when none was).
	Applied *v1.Recommendation
	// NextPod is the workload's pod created after the recommendation applied.
	NextPod *corev1.Pod
	// ColdSeconds is the wall time of the first pod's training run, the one
	// recorded (from a fresh mount and cache of the remote, unless Local).
	ColdSeconds float64
	// ColdReadWaitShare is the profile's read-wait share of wall time for
	// that run.
	ColdReadWaitShare float64
	// With the remote: WarmSeconds is the next pod's training run,
	// PrefetchSeconds its injected prefetcher's run — before it when Held
	// (the Prefetch says WarmBeforeStart, or --ineffective), else beside
	// it — and Speedup ColdSeconds / WarmSeconds.
	WarmSeconds     float64
	PrefetchSeconds float64
	Held            bool
	Speedup         float64
	// Verdict is Applied as the operator judged it from the next pod's run:
	// Verified, or Ineffective (RolledBack under the Auto policy).
	Verdict *v1.Recommendation
	// Later is every recommendation Watch after the verdict, and
	// ProfileAfter the profile then.
	Later        []v1.Recommendation
	ProfileAfter v1.AccessProfile
	Watched      time.Duration
	// ReviewScreen is `kubectl get recommendations` at the end.
	ReviewScreen string
	// Summary is the demo's last line.
	Summary string
}

type run struct {
	o     Options
	env   *controlplane.Env
	procs []*exec.Cmd
	pods  []*cgroupv2.Group
	out   io.Writer
	start time.Time
	// dataPath is where pods read the dataset: the remote's mount, or the
	// local folder with Local.
	dataPath string
	remote   *slowremote.Remote
	mount    *slowremote.Mount
	prom     *promserver.Server
	// logs is the end of a component's log, for errors; nil reads the
	// host demo's log files.
	logs func(component string) string
}

// Run runs the loop once and returns what it produced; everything it
// started is stopped before it returns (after ctx ends, with Keep).
func Run(ctx context.Context, o Options) (res *Result, err error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the demo loads eddy's kernel programs and creates cgroups: run it as root (sudo make demo)")
	}
	// The demo's own API clients have nothing to say: the components log
	// to files and the demo prints its steps (without this,
	// controller-runtime prints a stack trace asking for a logger).
	ctrllog.SetLogger(logr.Discard())
	if !o.Local {
		if why := slowremote.Unavailable(); why != "" {
			return nil, fmt.Errorf("the slow remote cannot run here (%s); --local reads the dataset from local disk", why)
		}
	}
	for _, b := range []string{o.EddyBin, o.WorkloadBin} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("%s not found: build it with `make build` (it builds eddy and eddy-workload into bin/)", b)
		}
	}
	r := &run{o: o, out: o.Out, start: time.Now()}
	defer r.stop()
	// A demo killed before its cleanup may have left its mount behind, which
	// would make the folder impossible to empty.
	slowremote.CleanStale(o.Dir + "/")
	if err := os.RemoveAll(o.Dir); err != nil {
		return nil, err
	}
	for _, d := range []string{"data", "logs", "analyzer", "collector", "tls"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(o.Dir, "data")
	r.step("writing the dataset: %d files of %s in %s", o.Files, resource.NewQuantity(o.FileBytes, resource.BinarySI), data)
	if err := writeDataset(data, o.Files, o.FileBytes); err != nil {
		return nil, err
	}
	r.dataPath = data
	if !o.Local {
		remoteDir := filepath.Join(o.Dir, "remote")
		if r.remote, err = slowremote.Start(data, remoteDir, o.Latency, o.Bandwidth); err != nil {
			return nil, err
		}
		if r.mount, err = r.remote.Mount(remoteDir); err != nil {
			return nil, err
		}
		r.dataPath = r.mount.Path
		r.say("remote: rclone serve webdav %s behind a link of %s each way and %s/s; mounted with rclone's file cache at %s",
			data, o.Latency, resource.NewQuantity(o.Bandwidth, resource.BinarySI), r.dataPath)
	}
	certFile, keyFile, err := loopbackcert.Write(filepath.Join(o.Dir, "tls"))
	if err != nil {
		return nil, err
	}

	r.step("starting kube-apiserver and etcd with eddy's CRDs")
	if r.env, err = controlplane.Start(ctx, controlplane.Options{Dir: filepath.Join(o.Dir, "controlplane"), BinDir: o.BinDir}); err != nil {
		return nil, err
	}
	r.say("  export KUBECONFIG=%s", r.env.Kubeconfig)
	if err := r.setupCluster(ctx); err != nil {
		return nil, err
	}
	ports, err := controlplane.FreePorts(8)
	if err != nil {
		return nil, err
	}
	grpcAddr, manifestAddr, webhookAddr := addr(ports[0]), addr(ports[1]), addr(ports[2])
	if err := r.env.InstallWebhooks(ctx, webhookAddr); err != nil {
		return nil, err
	}
	kubeconfigs, err := r.env.InstallIdentities(ctx, components...)
	if err != nil {
		return nil, err
	}
	tokenFile, err := r.collectorToken(ctx)
	if err != nil {
		return nil, err
	}
	kc := func(component string) string { return "--kubeconfig=" + kubeconfigs[component] }
	r.step("starting the analyzer, collector, webhook and operator (logs in %s)", filepath.Join(o.Dir, "logs"))
	components := []struct {
		name string
		args []string
	}{
		{"analyzer", []string{"analyzer", kc("analyzer"), "--grpc-addr=" + grpcAddr, "--manifest-addr=" + manifestAddr, "--metrics-addr=" + addr(ports[3]),
			"--state-dir=" + filepath.Join(o.Dir, "analyzer"), "--tls-cert=" + certFile, "--tls-key=" + keyFile, "--flush-interval=2s", "--stable-assessments=2", "--run-ended-after=4s", "--lease-namespace=" + System}},
		{"collector", []string{"collector", kc("collector"), "--node-name=" + NodeName, "--analyzer-address=" + grpcAddr, "--interval=250ms",
			"--token-file=" + tokenFile, "--analyzer-ca=" + certFile,
			"--state-dir=" + filepath.Join(o.Dir, "collector"), "--metrics-address=" + addr(ports[4])}},
		{"webhook", []string{"webhook", kc("webhook"), "--namespace=" + System, "--service-name=", "--ip=127.0.0.1", "--addr=" + webhookAddr,
			"--metrics-addr=" + addr(ports[5]), "--image=eddy.local/eddy:dev", "--analyzer-url=https://" + manifestAddr}},
		{"operator", []string{"operator", kc("operator"), "--namespace=" + System, "--leader-elect=false", "--metrics-addr=" + addr(ports[6]),
			"--health-addr=" + addr(ports[7]), "--verify-settle=-1s"}},
	}
	for _, comp := range components {
		if err := r.startProcess(comp.name, o.EddyBin, comp.args...); err != nil {
			return nil, err
		}
	}
	if err := r.waitWebhookReady(ctx, "http://"+addr(ports[5])+"/readyz"); err != nil {
		return nil, err
	}
	r.startPrometheus(ctx, map[string]string{"analyzer": addr(ports[3]), "collector": addr(ports[4]), "webhook": addr(ports[5]), "operator": addr(ports[6])})

	res = &Result{}
	r.step("creating Job %s/%s and its first pod on %s; the pod reads %s (PVC) in %d shuffled epochs", Namespace, JobName, NodeName, Dataset, o.Epochs)
	pod1, err := r.createPod(ctx, "train-1")
	if err != nil {
		return nil, err
	}
	if _, injected := pod1.Annotations[v1.InjectedAnnotation]; injected {
		return nil, fmt.Errorf("pod %s was injected before any recommendation existed", pod1.Name)
	}
	groups, err := r.startPod(ctx, pod1, "trainer")
	if err != nil {
		return nil, err
	}
	if res.ColdSeconds, err = r.runReader(ctx, pod1, groups["trainer"], r.dataPath); err != nil {
		return nil, err
	}
	from := "from local disk"
	if !o.Local {
		from = "from a cold mount of the remote"
	}
	r.say("  the training run read %d files × %d epochs %s in %.2fs", o.Files, o.Epochs, from, res.ColdSeconds)

	r.step("waiting for the analyzer's AccessProfile and Recommendations")
	if err := r.waitProfile(ctx, &res.Profile); err != nil {
		return nil, err
	}
	f := res.Profile.Status.Features
	if f != nil {
		res.ColdReadWaitShare = f.ReadWaitShare
	}
	r.say("  AccessProfile %s: class %s, confidence %.2f", res.Profile.Name, res.Profile.Status.Class, res.Profile.Status.Confidence)
	if f != nil {
		r.say("  features: %d files, %.1f MiB read, sequential %.0f%%, whole files %.0f%%, %.1f epochs, order correlation %s, read wait %.0f%% of wall time",
			f.Files, float64(f.BytesRead)/(1<<20), f.SequentialRatio*100, f.WholeFileRatio*100, f.Epochs, corr(f.OrderCorrelation), f.ReadWaitShare*100)
	}
	if res.Recommendations, err = r.waitRecommendations(ctx, res.Profile.Status.Class); err != nil {
		return nil, err
	}
	for _, rec := range res.Recommendations {
		r.say("  Recommendation %s: %s (%s)", rec.Name, rec.Spec.Action, summary(&rec))
	}

	r.step("the policy is Auto for Prefetch and InjectSDK: waiting for the operator to apply")
	res.Applied, err = r.waitApplied(ctx, res.Profile.Status.Class)
	if err != nil {
		return nil, err
	}
	r.say("  %s is %s", res.Applied.Name, res.Applied.Status.Phase)

	r.step("creating the Job's next pod: the webhook injects what was applied")
	if res.NextPod, err = r.createPod(ctx, "train-2"); err != nil {
		return nil, err
	}
	r.say("  %s: %s=%q", res.NextPod.Name, v1.InjectedAnnotation, res.NextPod.Annotations[v1.InjectedAnnotation])
	for _, ctr := range append(append([]corev1.Container{}, res.NextPod.Spec.InitContainers...), res.NextPod.Spec.Containers...) {
		if strings.HasPrefix(ctr.Name, "eddy-") {
			r.say("  injected container %s: %s %s", ctr.Name, strings.Join(ctr.Command, " "), strings.Join(ctr.Args, " "))
		}
	}
	if !o.Local {
		if err := r.measureWarm(ctx, res, certFile); err != nil {
			return nil, err
		}
		r.step("the job before and after eddy (%d files × %d epochs over the remote)", o.Files, o.Epochs)
		r.say("%-34s %8s", "", "job time")
		r.say("%-34s %7.2fs   read wait %.0f%% of wall time (profile)", "cold ("+pod1.Name+")", res.ColdSeconds, res.ColdReadWaitShare*100)
		if res.Held {
			r.say("%-34s %7.2fs   after %.2fs of prefetch", "with eddy's prefetch ("+res.NextPod.Name+")", res.WarmSeconds, res.PrefetchSeconds)
			r.say("%-34s %7.1f×", "speedup", res.Speedup)
			total := res.PrefetchSeconds + res.WarmSeconds
			r.say("counting the prefetch as part of the job (a pod held until warm): %.2fs, %.1f×", total, res.ColdSeconds/total)
		} else {
			r.say("%-34s %7.2fs   the prefetch (%.2fs) ran alongside", "with eddy's prefetch ("+res.NextPod.Name+")", res.WarmSeconds, res.PrefetchSeconds)
			r.say("%-34s %7.1f×", "speedup", res.Speedup)
		}
		if err := r.waitVerdict(ctx, res); err != nil {
			return nil, err
		}
	}
	if err := r.finish(ctx, res); err != nil {
		return nil, err
	}
	if o.Keep {
		r.say("running; Ctrl-C to stop (KUBECONFIG=%s)", r.env.Kubeconfig)
		<-ctx.Done()
	}
	return res, nil
}

// finish reads the profile again, prints the review screen and the
// summary line.
func (r *run) finish(ctx context.Context, res *Result) (err error) {
	if err := r.env.Client.Get(ctx, client.ObjectKeyFromObject(&res.Profile), &res.Profile); err != nil {
		return err
	}
	if res.ReviewScreen, err = r.env.Kubectl(ctx, "get", "recommendations", "-n", Namespace); err != nil {
		return err
	}
	r.step("review screen: kubectl get recommendations -n %s", Namespace)
	fmt.Fprint(r.out, res.ReviewScreen)
	res.Summary = summaryLine(res)
	r.step("summary: %s", res.Summary)
	r.step("done in %.0fs", time.Since(r.start).Seconds())
	return nil
}

func (r *run) step(format string, args ...any) {
	fmt.Fprintf(r.out, "[%5.1fs] %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
}

func (r *run) say(format string, args ...any) {
	fmt.Fprintf(r.out, "         %s\n", fmt.Sprintf(format, args...))
}

func corr(c *float64) string {
	if c == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", *c)
}

func summary(rec *v1.Recommendation) string {
	if b := rec.Spec.Evidence.ExpectedBenefit; b != nil && b.Summary != "" {
		return b.Summary
	}
	return string(rec.Spec.Evidence.Class)
}

func addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

func writeDataset(dir string, n int, size int64) error {
	buf := make([]byte, size)
	for i := range n {
		if _, err := rand.Read(buf); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("sample-%05d.bin", i)), buf, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// setupCluster creates the namespaces, the policy, the node, the dataset's
// PVC and the Job.
func (r *run) setupCluster(ctx context.Context) error {
	c := r.env.Client
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: System}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace, Labels: map[string]string{v1.AutotuneLabel: v1.AutotuneEnabled}}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: Namespace}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: NodeName, Labels: map[string]string{"kubernetes.io/hostname": NodeName}}},
		demoPolicy(),
		&corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: Dataset, Namespace: Namespace},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		},
		&batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Name: JobName, Namespace: Namespace},
			Spec: batchv1.JobSpec{
				// No job controller runs here: the demo creates the Job's pods
				// itself, as the controller would.
				Suspend: ptr.To(true),
				Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
					RestartPolicy: corev1.RestartPolicyNever,
					Containers:    []corev1.Container{{Name: "trainer", Image: "eddy.local/workload:dev"}},
				}},
			},
		},
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}

// demoPolicy is the demo namespace's policy: Auto for Prefetch and
// InjectSDK.
func demoPolicy() *v1.AutotunePolicy {
	p := node.AutoPolicy("500Mi", v1.ActionPrefetch, v1.ActionInjectSDK)
	p.Namespace = Namespace
	return p
}

// startProcess runs `bin args...` with its output in logs/<name>.log.
func (r *run) startProcess(name, bin string, args ...string) error {
	logPath := filepath.Join(r.o.Dir, "logs", name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), "KUBECONFIG="+r.env.Kubeconfig)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	r.procs = append(r.procs, cmd)
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(exited) }()
	select {
	case <-exited:
		out, _ := os.ReadFile(logPath)
		return fmt.Errorf("%s exited at start; its log %s:\n%s", name, logPath, tail(out, 3000))
	case <-time.After(700 * time.Millisecond):
		return nil
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (r *run) stop() {
	if r.prom != nil {
		r.prom.Stop()
	}
	for i := len(r.procs) - 1; i >= 0; i-- {
		p := r.procs[i].Process
		_ = syscall.Kill(-p.Pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, cmd := range r.procs {
		for time.Now().Before(deadline) && syscall.Kill(cmd.Process.Pid, 0) == nil {
			time.Sleep(50 * time.Millisecond)
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	// The prefetcher, which holds the mount open, is gone by now.
	if r.mount != nil {
		if err := r.mount.Close(); err != nil {
			fmt.Fprintf(r.out, "eddy-dev demo: unmount %s: %v\n", r.mount.Path, err)
		}
	}
	if r.remote != nil {
		r.remote.Close()
	}
	for _, g := range r.pods {
		parent := &cgroupv2.Group{Path: filepath.Dir(g.Path)}
		if err := parent.Remove(); err != nil {
			fmt.Fprintf(r.out, "eddy-dev demo: remove cgroup %s: %v\n", parent.Path, err)
		}
	}
	if r.env != nil {
		if err := r.env.Stop(); err != nil {
			fmt.Fprintf(r.out, "eddy-dev demo: stop control plane: %v\n", err)
		}
	}
}

// measureWarm runs the next pod as a kubelet would: its injected prefetch
// sidecar and the training reader over the same mount, together, or the
// sidecar first until it has read everything when the pod is held until
// warm. The mount is first
// remounted at the same path with an empty cache: the first pod's run
// filled rclone's cache, and without this the second run would be fast
// with or without eddy (as if it ran on another node, or after the cache
// was evicted). The page cache is dropped before the reader, so what it
// gains is the remote's cache, not this machine's memory.
func (r *run) measureWarm(ctx context.Context, res *Result, caFile string) error {
	pod := res.NextPod
	var sidecar *corev1.Container
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == "eddy-prefetch" {
			sidecar = &pod.Spec.InitContainers[i]
		}
	}
	if sidecar == nil {
		return fmt.Errorf("pod %s has no eddy-prefetch sidecar to measure", pod.Name)
	}
	r.step("starting %s: its prefetch sidecar warms the mount's cache for the trainer", pod.Name)
	if err := r.mount.Close(); err != nil {
		return err
	}
	mount, err := r.remote.Mount(filepath.Dir(r.mount.Path))
	r.mount = mount
	if err != nil {
		return err
	}
	r.say("  remounted %s with an empty cache: the first run's reads are not cached any more", r.mount.Path)
	groups, err := r.startPod(ctx, pod, sidecar.Name, "trainer")
	if err != nil {
		return err
	}
	saDir, err := r.writeServiceAccount(ctx, pod, caFile)
	if err != nil {
		return err
	}
	// The webhook holds the trainer only for a Prefetch that says
	// WarmBeforeStart (a startup probe on the sidecar): otherwise both start
	// together, and the prefetcher races ahead of the trainer.
	res.Held = sidecar.StartupProbe != nil || r.o.Ineffective
	var pre *prefetchRun
	if res.Held {
		pre, err = r.runHeld(ctx, pod, sidecar, groups, saDir, res)
	} else {
		pre, err = r.runBeside(ctx, pod, sidecar, groups, saDir, res)
	}
	if err != nil {
		return err
	}
	res.PrefetchSeconds = pre.Seconds
	r.say("  %s read %d files (%.1f MiB) in %.2fs, concurrency %d, %d errors",
		sidecar.Name, pre.Status.Files, float64(pre.Status.Bytes)/(1<<20), pre.Seconds, pre.Status.Concurrency, pre.Status.Errors)
	res.Speedup = res.ColdSeconds / res.WarmSeconds
	r.say("  the training run read %d files × %d epochs in %.2fs", r.o.Files, r.o.Epochs, res.WarmSeconds)
	return nil
}

// runBeside runs the trainer while the sidecar prefetches, and returns the
// sidecar's run once both have finished; the trainer's time is in res.
func (r *run) runBeside(ctx context.Context, pod *corev1.Pod, sidecar *corev1.Container, groups map[string]*cgroupv2.Group, saDir string, res *Result) (*prefetchRun, error) {
	wait, err := r.startSidecar(ctx, pod, sidecar, groups[sidecar.Name], saDir)
	if err != nil {
		return nil, err
	}
	r.say("  the trainer starts beside it: the pod is not held until the data is warm")
	if res.WarmSeconds, err = r.runReader(ctx, pod, groups["trainer"], r.dataPath); err != nil {
		return nil, err
	}
	return wait()
}

// runHeld runs the sidecar until it has read everything, then the trainer
// (with --ineffective, over a mount emptied in between).
func (r *run) runHeld(ctx context.Context, pod *corev1.Pod, sidecar *corev1.Container, groups map[string]*cgroupv2.Group, saDir string, res *Result) (*prefetchRun, error) {
	pre, err := r.runSidecar(ctx, pod, sidecar, groups[sidecar.Name], saDir)
	if err != nil {
		return nil, err
	}
	if r.o.Ineffective {
		if err := r.mount.Close(); err != nil {
			return nil, err
		}
		if r.mount, err = r.remote.Mount(filepath.Dir(r.mount.Path)); err != nil {
			return nil, err
		}
		r.say("  --ineffective: remounted %s with an empty cache again, as if another job had evicted what the prefetcher read", r.mount.Path)
	}
	if res.WarmSeconds, err = r.runReader(ctx, pod, groups["trainer"], r.dataPath); err != nil {
		return nil, err
	}
	return pre, nil
}
