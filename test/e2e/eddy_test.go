// Package e2e runs eddy the way it runs in production, on the real node of
// test/node: every component a pod installed from config/ under its own
// service account, the collector a DaemonSet pod holding only CAP_BPF and
// CAP_PERFMON, the webhook called by the API server through its Service,
// and training jobs whose pods read a dataset from a PersistentVolumeClaim
// backed by a slow remote store behind a FUSE mount.
package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/node"
	"github.com/eddy-autotune/eddy/test/node/workload"
)

const (
	// ns holds the CronJob whose runs are its Jobs; runsNS the run
	// families: Jobs a person creates anew for each run.
	ns      = "eddy-e2e"
	runsNS  = "eddy-runs"
	cronJob = "train"
	dataset = "imagenet"
	files   = 128
	size    = 256 << 10
	epochs  = 3
	// The remote: 15 ms each way per request, 32 MiB/s shared.
	remoteDelay     = 15 * time.Millisecond
	remoteBandwidth = 32 << 20
	// holdVerdict is how long a verdict must hold, nothing proposed again.
	holdVerdict = 20 * time.Second
)

// TestEddyOnRealNode is the whole loop with real pods, left on Auto.
//
// A CronJob's first run reads its dataset (a PVC of a slow remote) in
// shuffled epochs; the collector DaemonSet records it; the analyzer
// classifies it ShuffledEpochs and proposes Prefetch; the operator applies
// it under the namespace's Auto policy. The remote is made cold again (as
// the next run on a fresh node would find it) and the CronJob's next run is
// injected by the webhook (through its Service) with the prefetch sidecar,
// which starts as a native sidecar, fetches its manifest from the analyzer
// with the pod's token and reads the dataset ahead of the trainer. The
// operator then judges the recommendation by that run alone: Verified, with
// the runs before and after in its status, and the verdict holds — nothing
// rolled back, nothing proposed again.
//
// Then run families: Jobs train-1, train-2 and one made with generateName
// train-, same template and PVC, are one workload (Job/train): the second
// and third runs are injected and the recommendation verified from the
// second's reads. A Job of that family reading another PVC is not merged
// with it; the eddy.io/workload label joins two differently named Jobs and
// splits two same-prefixed ones; a Deployment stays itself.
func TestEddyOnRealNode(t *testing.T) {
	node.SkipUnlessAvailable(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("/tmp", "eddy-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)

	start := time.Now()
	c, err := node.Start(ctx, node.Options{Dir: dir, Images: []string{"pause", "workload", "eddy"}, RemoteDatasets: true, Log: node.TestLog(t)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer func() {
		if err := c.Stop(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	}()
	t.Logf("cluster up in %.1fs (DNS %v)", time.Since(start).Seconds(), c.DNS)

	phase := time.Now()
	eddy, err := c.DeployEddy(ctx, node.EddyOptions{Args: map[string][]string{
		// A run ends 5s after its last read, so the verdict comes soon
		// after the run it judges.
		"analyzer":  {"--flush-interval=2s", "--run-ended-after=5s"},
		"collector": {"--interval=1s"},
		"webhook":   {"--verbose"},
		"operator":  {"--verify-settle=-1s"},
	}})
	if err != nil {
		t.Fatalf("deploy eddy from config/: %v\n%s", err, componentLogs(ctx, c))
	}
	t.Logf("eddy deployed from config/ and ready in %.1fs; analyzer at %s", time.Since(phase).Seconds(), eddy.AnalyzerURL)
	defer func() {
		if t.Failed() {
			t.Logf("component logs:\n%s", componentLogs(context.Background(), c))
			if os.Getenv("EDDY_E2E_HOLD") != "" {
				t.Logf("EDDY_E2E_HOLD: holding the cluster for 10 minutes: export KUBECONFIG=%s", c.Kubeconfig)
				time.Sleep(10 * time.Minute)
			}
		}
	}()

	prom, stopProm := startPrometheus(ctx, t, c)
	defer stopProm() // before the cluster stops: it lists the cluster's pods
	t.Run("collector holds only CAP_BPF and CAP_PERFMON", func(t *testing.T) { checkCollectorPrivileges(ctx, t, c) })
	t.Run("CronJob: applied, injected, verified, stable", func(t *testing.T) { testCronJob(ctx, t, c) })
	t.Run("run families", func(t *testing.T) { testRunFamilies(ctx, t, c) })
	t.Run("every dashboard panel and rule returns data", func(t *testing.T) { checkDashboards(ctx, t, c, prom) })
}

func testCronJob(ctx context.Context, t *testing.T, c *node.Cluster) {
	d := addRemote(ctx, t, c, ns, dataset)
	optIn(ctx, t, c, ns)
	createCronJob(ctx, t, c, d.Claim)

	phase := time.Now()
	first := runJob(ctx, t, c, cronRun(ctx, t, c, "train-1"))
	t.Logf("first run (no eddy yet) finished in %.1fs", time.Since(phase).Seconds())
	if _, injected := first.Annotations[v1.InjectedAnnotation]; injected {
		t.Fatalf("pod %s was injected before any recommendation existed", first.Name)
	}

	prof := waitProfile(ctx, t, c, ns, dataset, float64(files)*size*epochs*0.999)
	if prof.Spec.WorkloadRef.Kind != "CronJob" || prof.Spec.WorkloadRef.Name != cronJob {
		t.Errorf("profile's workload is %s/%s, want CronJob/%s (pod → Job → CronJob)", prof.Spec.WorkloadRef.Kind, prof.Spec.WorkloadRef.Name, cronJob)
	}
	if prof.Status.Class != v1.ClassShuffledEpochs {
		t.Fatalf("class %s, want %s", prof.Status.Class, v1.ClassShuffledEpochs)
	}

	rec := waitApplied(ctx, t, c, ns, prof.Name)
	t.Logf("Recommendation %s (%s) is %s", rec.Name, rec.Spec.Action, rec.Status.Phase)

	resetRemote(t, d)
	phase = time.Now()
	second := runJob(ctx, t, c, cronRun(ctx, t, c, "train-2"))
	t.Logf("second run finished in %.1fs", time.Since(phase).Seconds())
	checkSidecarRan(ctx, t, c, second)
	checkVerified(ctx, t, c, rec, second.Name)

	// The sidecar read the whole dataset (33 MB) and its own token; that
	// must not reach the workload's profiles: the dataset's profile holds
	// the trainer's two runs and no more, and no profile of the sidecar's
	// token volume exists.
	var list v1.AccessProfileList
	if err := c.Env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Items {
		var read int64
		if p.Status.Features != nil {
			read = p.Status.Features.BytesRead
		}
		t.Logf("AccessProfile %s: %s %q, %d files, %.1f MiB", p.Name, p.Spec.Dataset.Source, p.Spec.Dataset.Name, featureFiles(&p), float64(read)/(1<<20))
		switch {
		case p.Spec.Dataset.Name == dataset && float64(read) > 2*files*size*epochs*1.02:
			t.Errorf("AccessProfile %s holds %.1f MiB, more than the trainer's two runs (%.1f MiB): the sidecar's reads were counted", p.Name, float64(read)/(1<<20), 2.0*files*size*epochs/(1<<20))
		case strings.HasPrefix(p.Spec.Dataset.Name, "kube-api-access"):
			t.Errorf("AccessProfile %s: the sidecar's token reads were attributed to the workload", p.Name)
		}
	}
}

func testRunFamilies(ctx context.Context, t *testing.T, c *node.Cluster) {
	d := addRemote(ctx, t, c, runsNS, dataset)
	small, err := c.AddLocalDataset(ctx, runsNS, "small", func(dir string) error { return workload.WriteSample(dir, 16, 64<<10, 0) })
	if err != nil {
		t.Fatal(err)
	}
	optIn(ctx, t, c, runsNS)
	labels := map[string]string{"app": "train"}

	first := runJob(ctx, t, c, trainJob(runsNS, "train-1", "", d.Claim, labels))
	if _, injected := first.Annotations[v1.InjectedAnnotation]; injected {
		t.Fatalf("pod %s was injected before any recommendation existed", first.Name)
	}
	prof := waitProfile(ctx, t, c, runsNS, d.Claim, float64(files)*size*epochs*0.999)
	ref := prof.Spec.WorkloadRef
	if ref.Kind != "Job" || ref.Name != "train" || ref.Rule != v1.RuleNameSuffix {
		t.Fatalf("Job/train-1's workload is %s/%s (rule %s), want Job/train by its name without the run number", ref.Kind, ref.Name, ref.Rule)
	}
	rec := waitApplied(ctx, t, c, runsNS, prof.Name)
	if tr := rec.Spec.TargetRef; tr == nil || tr.Name != "train" {
		t.Fatalf("recommendation %s targets %+v, want the family Job/train", rec.Name, rec.Spec.TargetRef)
	}
	t.Logf("Recommendation %s (%s) for the family %s/%s is %s", rec.Name, rec.Spec.Action, ref.Kind, ref.Name, rec.Status.Phase)

	// The analyzer is rescheduled (a rollout, a drained node) between the
	// runs: the manifest the next run's sidecar fetches must survive it
	// (its state claim), or the sidecar has no plan and the change is
	// judged on runs it never touched; and no window of the runs after it
	// may be lost (their profiles below must be whole).
	restartAnalyzer(ctx, t, c)

	// A new Job of the family, another name: injected, and verified by its
	// own reads.
	resetRemote(t, d)
	second := runJob(ctx, t, c, trainJob(runsNS, "train-2", "", d.Claim, labels))
	checkSidecarRan(ctx, t, c, second)
	checkVerified(ctx, t, c, rec, second.Name)

	// One made with generateName is of the family too.
	third := runJob(ctx, t, c, trainJob(runsNS, "", "train-", d.Claim, labels))
	if _, injected := third.Annotations[v1.InjectedAnnotation]; !injected {
		t.Errorf("pod %s of Job generated from train- was not injected", third.Name)
	}

	// The family reading another dataset is another profile, and a pod
	// mounting only that dataset gets nothing of the first's.
	// The eddy.io/workload label joins two differently named Jobs and
	// splits two same-prefixed ones; a Deployment stays itself. These run
	// together, each reading the small local dataset once.
	other := trainJob(runsNS, "train-4", "", small.Claim, labels)
	alpha := trainJob(runsNS, "alpha", "", small.Claim, map[string]string{v1.WorkloadLabel: "nightly"})
	beta := trainJob(runsNS, "beta", "", small.Claim, map[string]string{v1.WorkloadLabel: "nightly"})
	etl1 := trainJob(runsNS, "etl-1", "", small.Claim, map[string]string{v1.WorkloadLabel: "etl-small"})
	etl2 := trainJob(runsNS, "etl-2", "", small.Claim, map[string]string{v1.WorkloadLabel: "etl-big"})
	jobs := []*batchv1.Job{other, alpha, beta, etl1, etl2}
	for _, j := range jobs {
		j.Spec.Template.Spec.Containers[0].Command = readerCommand(1)
		if err := c.Env.Client.Create(ctx, j); err != nil {
			t.Fatalf("create Job %s: %v", j.Name, err)
		}
	}
	deploy := readerDeployment(runsNS, "serve", small.Claim)
	if err := c.Env.Client.Create(ctx, deploy); err != nil {
		t.Fatalf("create Deployment: %v", err)
	}
	for _, j := range jobs {
		pod := waitJob(ctx, t, c, j)
		if _, injected := pod.Annotations[v1.InjectedAnnotation]; injected {
			t.Errorf("pod %s of Job %s (dataset %s) was injected: nothing was applied for it", pod.Name, j.Name, small.Claim)
		}
	}
	smallBytes := float64(16 * (64 << 10))
	want := map[string]struct {
		kind, name string
		rule       v1.WorkloadRule
		bytes      float64
	}{
		"the family on another dataset": {"Job", "train", v1.RuleNameSuffix, smallBytes},
		"joined by the label":           {"Job", "nightly", v1.RuleLabel, 2 * smallBytes},
		"split by the label (small)":    {"Job", "etl-small", v1.RuleLabel, smallBytes},
		"split by the label (big)":      {"Job", "etl-big", v1.RuleLabel, smallBytes},
		"a Deployment":                  {"Deployment", "serve", v1.RuleObject, smallBytes},
	}
	for what, w := range want {
		p := waitProfileOf(ctx, t, c, runsNS, small.Claim, w.kind, w.name, w.bytes*0.999)
		rule := p.Spec.WorkloadRef.Rule
		if rule == "" {
			rule = v1.RuleObject // an empty rule means the owning object
		}
		if rule != w.rule {
			t.Errorf("%s: profile %s formed by rule %q, want %q", what, p.Name, p.Spec.WorkloadRef.Rule, w.rule)
		}
		if got := float64(p.Status.Features.BytesRead); got > w.bytes*1.02 {
			t.Errorf("%s: profile %s holds %.0f bytes, want %.0f: runs of other workloads were merged into it", what, p.Name, got, w.bytes)
		}
		t.Logf("%s: AccessProfile %s (%s/%s, rule %s), %.0f KiB", what, p.Name, p.Spec.WorkloadRef.Kind, p.Spec.WorkloadRef.Name, p.Spec.WorkloadRef.Rule, float64(p.Status.Features.BytesRead)/1024)
	}
}

func featureFiles(p *v1.AccessProfile) int64 {
	if p.Status.Features == nil {
		return 0
	}
	return int64(p.Status.Features.Files)
}

// addRemote adds a remote dataset of the sample files to namespace.
func addRemote(ctx context.Context, t *testing.T, c *node.Cluster, namespace, name string) *node.Dataset {
	t.Helper()
	d, err := c.AddRemoteDataset(ctx, namespace, name, func(dir string) error { return workload.WriteSample(dir, files, size, 0) },
		node.RemoteOptions{Delay: remoteDelay, Bandwidth: remoteBandwidth})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// resetRemote makes the remote cold again, as the next run on a fresh node
// would find it: without that, the run after a change would read the first
// run's cached data and any change would look like a win.
func resetRemote(t *testing.T, d *node.Dataset) {
	t.Helper()
	if err := d.Reset(); err != nil {
		t.Fatal(err)
	}
}

// optIn labels the namespace eddy.io/autotune=enabled and gives it an Auto
// policy for Prefetch.
func optIn(ctx context.Context, t *testing.T, c *node.Cluster, namespace string) {
	t.Helper()
	policy := node.AutoPolicy("500Mi", v1.ActionPrefetch)
	if err := c.OptIn(ctx, namespace, policy); err != nil {
		t.Fatal(err)
	}
}

// readerCommand reads /data in shuffled epochs from the pod's first
// instant: the collector allows the pod's cgroup as soon as the kubelet
// makes it, and the kernel each container's as it is created.
func readerCommand(epochs int) []string {
	return []string{"eddy-workload", "read", "--dir", "/data", "--pattern", "smallfiles", "--epochs", strconv.Itoa(epochs), "--seed", "7"}
}

func readerPod(claim string, labels map[string]string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			NodeSelector:  map[string]string{node.NodeLabel: "real"},
			Containers: []corev1.Container{{
				Name: "trainer", Image: node.WorkloadImage, ImagePullPolicy: corev1.PullNever,
				Command:      readerCommand(epochs),
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim, ReadOnly: true},
			}}},
		},
	}
}

// trainJob is a Job named name (or generated from generateName) whose pod
// reads claim; labels go on the Job and its pod, as a person's template
// would put them.
func trainJob(namespace, name, generateName, claim string, labels map[string]string) *batchv1.Job {
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, GenerateName: generateName, Labels: labels},
		Spec:       batchv1.JobSpec{BackoffLimit: ptr.To(int32(0)), Template: readerPod(claim, labels)},
	}
}

// readerDeployment reads claim once and then holds.
func readerDeployment(namespace, name, claim string) *appsv1.Deployment {
	tmpl := readerPod(claim, map[string]string{"app": name})
	tmpl.Spec.RestartPolicy = corev1.RestartPolicyAlways
	tmpl.Spec.Containers[0].Command = append(readerCommand(1), "--hold")
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: tmpl,
		},
	}
}

// createCronJob creates the suspended CronJob whose Jobs the test starts.
func createCronJob(ctx context.Context, t *testing.T, c *node.Cluster, claim string) {
	t.Helper()
	cj := &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: cronJob, Namespace: ns},
		Spec: batchv1.CronJobSpec{
			// Never fires on its own: the test starts each run, as
			// `kubectl create job --from=cronjob/train` would.
			Schedule: "0 0 1 1 *",
			Suspend:  ptr.To(true),
			JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
				BackoffLimit: ptr.To(int32(0)),
				Template:     readerPod(claim, nil),
			}},
		},
	}
	if err := c.Env.Client.Create(ctx, cj); err != nil {
		t.Fatalf("create CronJob: %v", err)
	}
}

// cronRun is a Job from the CronJob's template, owned by the CronJob.
func cronRun(ctx context.Context, t *testing.T, c *node.Cluster, name string) *batchv1.Job {
	t.Helper()
	var cj batchv1.CronJob
	if err := c.Env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: cronJob}, &cj); err != nil {
		t.Fatal(err)
	}
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "batch/v1", Kind: "CronJob", Name: cj.Name, UID: cj.UID, Controller: ptr.To(true),
		}}},
		Spec: *cj.Spec.JobTemplate.Spec.DeepCopy(),
	}
}

// runJob creates the Job, waits for it to complete and returns its pod.
func runJob(ctx context.Context, t *testing.T, c *node.Cluster, job *batchv1.Job) *corev1.Pod {
	t.Helper()
	if err := c.Env.Client.Create(ctx, job); err != nil {
		t.Fatalf("create Job %s%s: %v", job.Name, job.GenerateName, err)
	}
	phase := time.Now()
	pod := waitJob(ctx, t, c, job)
	t.Logf("Job %s/%s finished in %.1fs", job.Namespace, job.Name, time.Since(phase).Seconds())
	return pod
}

// waitJob waits for a created Job to complete and returns its pod.
func waitJob(ctx context.Context, t *testing.T, c *node.Cluster, job *batchv1.Job) *corev1.Pod {
	t.Helper()
	name := job.Name
	var pod *corev1.Pod
	poll(ctx, t, c, job.Namespace, 4*time.Minute, "Job "+name+" to complete", func() (bool, error) {
		if err := c.Env.Client.Get(ctx, client.ObjectKeyFromObject(job), job); err != nil {
			return false, err
		}
		for _, cond := range job.Status.Conditions {
			if cond.Type == batchv1.JobFailed && cond.Status == corev1.ConditionTrue {
				return false, fmt.Errorf("job %s failed: %s %s; pods:\n%s", name, cond.Reason, cond.Message, podsSummary(ctx, c, job.Namespace, name))
			}
		}
		done := job.Status.Succeeded > 0
		if done {
			var pods corev1.PodList
			if err := c.Env.Client.List(ctx, &pods, client.InNamespace(job.Namespace), client.MatchingLabels{"job-name": name}); err != nil {
				return false, err
			}
			if len(pods.Items) != 1 {
				return false, fmt.Errorf("job %s has %d pods, want 1", name, len(pods.Items))
			}
			pod = &pods.Items[0]
		}
		return done, nil
	})
	return pod
}

// checkCollectorPrivileges finds the collector's process on this host and
// reads what the kernel says it holds: exactly CAP_BPF and CAP_PERFMON
// effective, no new privileges, a seccomp filter.
func checkCollectorPrivileges(ctx context.Context, t *testing.T, c *node.Cluster) {
	pod, err := collectorPod(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if sc := pod.Spec.Containers[0].SecurityContext; sc == nil || (sc.Privileged != nil && *sc.Privileged) {
		t.Fatalf("collector container is privileged or has no security context: %+v", sc)
	}
	pid := collectorPID(t, string(pod.UID))
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(status), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	const capPerfmon, capBPF = 38, 39
	want := uint64(1)<<capPerfmon | uint64(1)<<capBPF
	for _, set := range []string{"CapEff", "CapPrm"} {
		got, err := strconv.ParseUint(fields[set], 16, 64)
		if err != nil {
			t.Fatalf("%s of pid %d: %q: %v", set, pid, fields[set], err)
		}
		if got != want {
			t.Errorf("collector %s = %#x, want %#x (CAP_BPF|CAP_PERFMON only)", set, got, want)
		}
	}
	if fields["NoNewPrivs"] != "1" {
		t.Errorf("collector NoNewPrivs = %q, want 1 (allowPrivilegeEscalation: false)", fields["NoNewPrivs"])
	}
	if fields["Seccomp"] != "2" {
		t.Errorf("collector Seccomp = %q, want 2 (a filter: RuntimeDefault)", fields["Seccomp"])
	}
	t.Logf("collector pid %d on the host: CapEff %s, NoNewPrivs %s, Seccomp %s", pid, fields["CapEff"], fields["NoNewPrivs"], fields["Seccomp"])

	// Its kernel programs are attached: the metrics it serves say so.
	body, err := get(ctx, fmt.Sprintf("http://%s:9464/metrics", pod.Status.PodIP))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, "eddy_collector_") {
		t.Errorf("collector metrics carry no eddy_collector_ series:\n%.2000s", body)
	}
}

// collectorPID is the host PID of the eddy collector process in the pod
// with this UID (found by its cgroup, which names the pod).
func collectorPID(t *testing.T, podUID string) int {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	uidPart := strings.ReplaceAll(podUID, "-", "_")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmd), "\x00")
		if len(args) < 2 || filepath.Base(args[0]) != "eddy" || args[1] != "collector" {
			continue
		}
		cg, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if strings.Contains(string(cg), podUID) || strings.Contains(string(cg), uidPart) {
			return pid
		}
	}
	t.Fatalf("no `eddy collector` process in the cgroup of pod %s", podUID)
	return 0
}

// checkSidecarRan checks that the pod was injected with the prefetch
// sidecar, that the kubelet started it as a native sidecar, and, from its
// log, that it fetched its manifest from the analyzer and read the dataset.
func checkSidecarRan(ctx context.Context, t *testing.T, c *node.Cluster, pod *corev1.Pod) {
	t.Helper()
	if _, ok := pod.Annotations[v1.InjectedAnnotation]; !ok {
		t.Fatalf("pod %s was not injected (annotations %v): the webhook did not act through its Service", pod.Name, pod.Annotations)
	}
	var sidecar *corev1.Container
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == v1.PrefetchContainerName {
			sidecar = &pod.Spec.InitContainers[i]
		}
	}
	if sidecar == nil || sidecar.RestartPolicy == nil || *sidecar.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatalf("pod %s has no native %s sidecar: init containers %+v", pod.Name, v1.PrefetchContainerName, pod.Spec.InitContainers)
	}
	t.Logf("injected: %s %s", strings.Join(sidecar.Command, " "), strings.Join(sidecar.Args, " "))
	var st *corev1.ContainerStatus
	for i := range pod.Status.InitContainerStatuses {
		if pod.Status.InitContainerStatuses[i].Name == v1.PrefetchContainerName {
			st = &pod.Status.InitContainerStatuses[i]
		}
	}
	if st == nil || (st.State.Running == nil && st.State.Terminated == nil && st.LastTerminationState.Terminated == nil) {
		t.Fatalf("the kubelet never started %s: %+v", v1.PrefetchContainerName, st)
	}
	logs, err := c.Env.Kubectl(ctx, "logs", "-n", pod.Namespace, pod.Name, "-c", v1.PrefetchContainerName)
	if err != nil {
		t.Fatalf("kubectl logs %s -c %s: %v", pod.Name, v1.PrefetchContainerName, err)
	}
	if strings.Contains(logs, "manifest unavailable") {
		t.Fatalf("the sidecar could not fetch its manifest from the analyzer:\n%s", logs)
	}
	planned := logLine(logs, `"plan ready"`)
	if planned == "" || strings.Contains(planned, `"files":0,`) {
		t.Fatalf("the sidecar planned nothing to read; its log:\n%s", logs)
	}
	t.Logf("sidecar: %s", planned)
	if l := logLine(logs, `"prefetch finished"`); l != "" {
		t.Logf("sidecar: %s", l)
	}
}

func logLine(logs, marker string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, marker) {
			return l
		}
	}
	return ""
}

// waitProfile waits for a classified AccessProfile of the claim in
// namespace that has seen at least minBytes.
func waitProfile(ctx context.Context, t *testing.T, c *node.Cluster, namespace, claim string, minBytes float64) *v1.AccessProfile {
	t.Helper()
	return waitProfileOf(ctx, t, c, namespace, claim, "", "", minBytes)
}

// waitProfileOf is waitProfile for the workload kind/name ("" matches any).
func waitProfileOf(ctx context.Context, t *testing.T, c *node.Cluster, namespace, claim, kind, name string, minBytes float64) *v1.AccessProfile {
	t.Helper()
	var out *v1.AccessProfile
	what := fmt.Sprintf("an AccessProfile of %s %s/%s reading %s (%.0f bytes)", namespace, kind, name, claim, minBytes)
	poll(ctx, t, c, namespace, 2*time.Minute, what, func() (bool, error) {
		var list v1.AccessProfileList
		if err := c.Env.Client.List(ctx, &list, client.InNamespace(namespace)); err != nil {
			return false, err
		}
		for i := range list.Items {
			p := &list.Items[i]
			if p.Spec.Dataset.Name != claim || (kind != "" && (p.Spec.WorkloadRef.Kind != kind || p.Spec.WorkloadRef.Name != name)) {
				continue
			}
			if p.Status.Class != "" && p.Status.Features != nil && float64(p.Status.Features.BytesRead) >= minBytes {
				out = p
				return true, nil
			}
		}
		return false, nil
	})
	f := out.Status.Features
	t.Logf("AccessProfile %s: %s/%s (rule %s) reading %s/%s: class %s, confidence %.2f, %d files, %.1f MiB, whole files %.0f%%, %.1f epochs, read wait %.0f%%",
		out.Name, out.Spec.WorkloadRef.Kind, out.Spec.WorkloadRef.Name, out.Spec.WorkloadRef.Rule, out.Spec.Dataset.Source, out.Spec.Dataset.Name,
		out.Status.Class, out.Status.Confidence, f.Files, float64(f.BytesRead)/(1<<20), f.WholeFileRatio*100, f.Epochs, f.ReadWaitShare*100)
	return out
}

// waitApplied waits for the operator to apply a Prefetch made from profile.
func waitApplied(ctx context.Context, t *testing.T, c *node.Cluster, namespace, profile string) *v1.Recommendation {
	t.Helper()
	var out *v1.Recommendation
	poll(ctx, t, c, namespace, 2*time.Minute, "the operator to apply a Prefetch recommendation of "+profile, func() (bool, error) {
		var list v1.RecommendationList
		if err := c.Env.Client.List(ctx, &list, client.InNamespace(namespace)); err != nil {
			return false, err
		}
		for i := range list.Items {
			r := &list.Items[i]
			if r.Spec.Action == v1.ActionPrefetch && r.Spec.Evidence.Profile == profile && r.Status.Phase.InForce() {
				out = r
				return true, nil
			}
		}
		return false, nil
	})
	return out
}

// checkVerified waits for the operator's verdict on rec, which must be
// Verified from the run of pod alone with less read wait after than before,
// and then holds it for holdVerdict: still Verified, no Prefetch of the same
// profile proposed again.
func checkVerified(ctx context.Context, t *testing.T, c *node.Cluster, rec *v1.Recommendation, pod string) {
	t.Helper()
	key := client.ObjectKeyFromObject(rec)
	var got v1.Recommendation
	poll(ctx, t, c, rec.Namespace, 2*time.Minute, "the operator's verdict on "+rec.Name, func() (bool, error) {
		if err := c.Env.Client.Get(ctx, key, &got); err != nil {
			return false, err
		}
		return got.Status.Phase != v1.PhaseApplied, nil
	})
	v := got.Status.Verification
	if got.Status.Phase != v1.PhaseVerified || v == nil {
		t.Fatalf("%s is %s, want Verified: %+v", rec.Name, got.Status.Phase, got.Status)
	}
	t.Logf("%s is Verified: read wait %.0f%% → %.0f%%, %.1f → %.1f MiB/s, %.1fs → %.1fs reading (runs after: %v)", rec.Name,
		v.Before.ReadWaitShare*100, v.After.ReadWaitShare*100, v.Before.ThroughputBytesPerSecond/(1<<20), v.After.ThroughputBytesPerSecond/(1<<20),
		v.Before.WallSeconds, v.After.WallSeconds, v.Runs)
	if len(v.Runs) != 1 || v.Runs[0] != pod {
		t.Errorf("judged by runs %v, want the run it was applied to (%s)", v.Runs, pod)
	}
	// The job's reading time and throughput, not its read-wait share: a job
	// that barely computes waits on reads most of its time however fast
	// they are, and with the prefetch beside it (not holding it) its first
	// epoch waits on the prefetcher.
	if v.After.WallSeconds >= v.Before.WallSeconds || v.After.ThroughputBytesPerSecond <= v.Before.ThroughputBytesPerSecond {
		t.Errorf("Verified with reading time %.1fs → %.1fs, throughput %.1f → %.1f MiB/s", v.Before.WallSeconds, v.After.WallSeconds,
			v.Before.ThroughputBytesPerSecond/(1<<20), v.After.ThroughputBytesPerSecond/(1<<20))
	}
	time.Sleep(holdVerdict)
	if err := c.Env.Client.Get(ctx, key, &got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != v1.PhaseVerified {
		t.Errorf("%s moved from Verified to %s within %s", rec.Name, got.Status.Phase, holdVerdict)
	}
	var list v1.RecommendationList
	if err := c.Env.Client.List(ctx, &list, client.InNamespace(rec.Namespace)); err != nil {
		t.Fatal(err)
	}
	for _, r := range list.Items {
		if r.Name != rec.Name && r.Spec.Action == rec.Spec.Action && r.Spec.Evidence.Profile == rec.Spec.Evidence.Profile {
			t.Errorf("%s %s proposed again as %s (%s) after the verdict", rec.Spec.Action, rec.Spec.Evidence.Profile, r.Name, r.Status.Phase)
		}
	}
}

func poll(ctx context.Context, t *testing.T, c *node.Cluster, namespace string, timeout time.Duration, what string, fn func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done, err := fn()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if done {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			screen, _ := c.Env.Kubectl(context.Background(), "get", "accessprofiles,recommendations,jobs,pods", "-n", namespace, "-o", "wide")
			t.Fatalf("timed out after %s waiting for %s; in %s:\n%s\n%s", timeout, what, namespace, screen, componentMetrics(c))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// restartAnalyzer deletes the analyzer's pod and waits for its Deployment's
// next one to be ready.
func restartAnalyzer(ctx context.Context, t *testing.T, c *node.Cluster) {
	t.Helper()
	sel := client.MatchingLabels{"app.kubernetes.io/component": "analyzer"}
	var pods corev1.PodList
	if err := c.Env.Client.List(ctx, &pods, client.InNamespace(node.EddySystem), sel); err != nil || len(pods.Items) != 1 {
		t.Fatalf("the analyzer's pod: %d pods, %v", len(pods.Items), err)
	}
	old := pods.Items[0]
	start := time.Now()
	if err := c.Env.Client.Delete(ctx, &old); err != nil {
		t.Fatalf("delete the analyzer's pod: %v", err)
	}
	poll(ctx, t, c, node.EddySystem, 2*time.Minute, "the analyzer's next pod to be ready", func() (bool, error) {
		if err := c.Env.Client.List(ctx, &pods, client.InNamespace(node.EddySystem), sel); err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if p.UID == old.UID || p.DeletionTimestamp != nil {
				continue
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					t.Logf("analyzer rescheduled: pod %s ready %.1fs after %s was deleted", p.Name, time.Since(start).Seconds(), old.Name)
					return true, nil
				}
			}
		}
		return false, nil
	})
}

// componentMetrics are eddy's own series of the collector and the
// analyzer (not the per-pod ones), for failures.
func componentMetrics(c *node.Cluster) string {
	var b strings.Builder
	for _, m := range []struct {
		component string
		port      int
		prefix    string
	}{{"collector", 9464, "eddy_collector_"}, {"analyzer", 9472, "eddy_analyzer_"}} {
		fmt.Fprintf(&b, "%s:\n", m.component)
		pod, err := componentPod(context.Background(), c, m.component)
		if err != nil {
			fmt.Fprintf(&b, "%v\n", err)
			continue
		}
		body, err := get(context.Background(), fmt.Sprintf("http://%s:%d/metrics", pod.Status.PodIP, m.port))
		if err != nil {
			fmt.Fprintf(&b, "%v\n", err)
			continue
		}
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, m.prefix) && !strings.Contains(l, "_bucket") {
				b.WriteString(l + "\n")
			}
		}
	}
	return b.String()
}

// collectorPod is the collector DaemonSet's one pod (on the real node).
func collectorPod(ctx context.Context, c *node.Cluster) (*corev1.Pod, error) {
	return componentPod(ctx, c, "collector")
}

// componentPod is the one running pod of an eddy component.
func componentPod(ctx context.Context, c *node.Cluster, component string) (*corev1.Pod, error) {
	var pods corev1.PodList
	if err := c.Env.Client.List(ctx, &pods, client.InNamespace(node.EddySystem), client.MatchingLabels{"app.kubernetes.io/component": component}); err != nil {
		return nil, err
	}
	var running []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			running = append(running, p)
		}
	}
	if len(running) != 1 {
		return nil, fmt.Errorf("%d running %s pods, want 1", len(running), component)
	}
	return &running[0], nil
}

func podsSummary(ctx context.Context, c *node.Cluster, namespace, job string) string {
	out, _ := c.Env.Kubectl(ctx, "get", "pods", "-n", namespace, "-l", "job-name="+job, "-o", "yaml")
	return out
}

// componentLogs is the tail of each eddy component's log, for failures.
func componentLogs(ctx context.Context, c *node.Cluster) string {
	var b strings.Builder
	for _, comp := range []string{"analyzer", "collector", "webhook", "operator"} {
		out, err := c.Env.Kubectl(ctx, "logs", "-n", node.EddySystem, "-l", "app.kubernetes.io/component="+comp, "--tail=40", "--all-containers")
		if err != nil {
			fmt.Fprintf(&b, "--- %s: kubectl logs: %v\n", comp, err)
			continue
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", comp, out)
	}
	return b.String()
}

// get returns the body of a 200 answer to GET url.
func get(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: HTTP %d: %s", url, resp.StatusCode, body)
	}
	return string(body), nil
}
