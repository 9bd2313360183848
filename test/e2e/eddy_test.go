// Package e2e runs eddy the way it runs in production, on the real node of
// test/node: every component a pod installed from config/ under its own
// service account, the collector a DaemonSet pod holding only CAP_BPF and
// CAP_PERFMON, the webhook called by the API server through its Service,
// and a training job whose pods read a dataset from a PersistentVolumeClaim.
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

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/node"
	"github.com/eddy-autotune/eddy/test/node/workload"
)

const (
	ns      = "eddy-e2e"
	cronJob = "train"
	dataset = "imagenet"
	files   = 128
	size    = 256 << 10
	epochs  = 3
)

// TestEddyOnRealNode is the whole loop with real pods: a CronJob's first run
// reads its dataset (PVC) in shuffled epochs; the collector DaemonSet records
// it; the analyzer classifies it ShuffledEpochs and proposes Prefetch; the
// operator applies it under the namespace's Auto policy; the CronJob's next
// run is injected by the webhook (through its Service) with the prefetch
// sidecar, which starts as a native sidecar, fetches its manifest from the
// analyzer with the pod's token and reads the dataset ahead of the trainer.
func TestEddyOnRealNode(t *testing.T) {
	node.SkipUnlessAvailable(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("/tmp", "eddy-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)

	start := time.Now()
	c, err := node.Start(ctx, node.Options{Dir: dir, Images: []string{"pause", "workload", "eddy"}, Log: node.TestLog(t)})
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
		"analyzer":  {"--flush-interval=2s"},
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

	t.Run("collector holds only CAP_BPF and CAP_PERFMON", func(t *testing.T) { checkCollectorPrivileges(ctx, t, c) })

	d, err := c.AddLocalDataset(ctx, ns, dataset, func(dir string) error { return workload.WriteSample(dir, files, size, 0) })
	if err != nil {
		t.Fatal(err)
	}
	setupNamespace(ctx, t, c)
	prom := startPrometheus(ctx, t, c)

	phase = time.Now()
	first := runJob(ctx, t, c, "train-1")
	t.Logf("first run (no eddy yet) finished in %.1fs", time.Since(phase).Seconds())
	if _, injected := first.Annotations[v1.InjectedAnnotation]; injected {
		t.Fatalf("pod %s was injected before any recommendation existed", first.Name)
	}

	prof := waitProfile(ctx, t, c, float64(files)*size*epochs*0.999)
	f := prof.Status.Features
	t.Logf("AccessProfile %s: %s/%s reading %s/%s: class %s, confidence %.2f, %d files, %.1f MiB, whole files %.0f%%, %.1f epochs",
		prof.Name, prof.Spec.WorkloadRef.Kind, prof.Spec.WorkloadRef.Name, prof.Spec.Dataset.Source, prof.Spec.Dataset.Name,
		prof.Status.Class, prof.Status.Confidence, f.Files, float64(f.BytesRead)/(1<<20), f.WholeFileRatio*100, f.Epochs)
	if prof.Spec.WorkloadRef.Kind != "CronJob" || prof.Spec.WorkloadRef.Name != cronJob {
		t.Errorf("profile's workload is %s/%s, want CronJob/%s (pod → Job → CronJob)", prof.Spec.WorkloadRef.Kind, prof.Spec.WorkloadRef.Name, cronJob)
	}
	if prof.Spec.Dataset.Name != d.Claim {
		t.Errorf("profile's dataset is %s %s, want the claim %s", prof.Spec.Dataset.Source, prof.Spec.Dataset.Name, d.Claim)
	}
	if prof.Status.Class != v1.ClassShuffledEpochs {
		t.Fatalf("class %s, want %s", prof.Status.Class, v1.ClassShuffledEpochs)
	}

	rec := waitApplied(ctx, t, c)
	t.Logf("Recommendation %s (%s) is %s", rec.Name, rec.Spec.Action, rec.Status.Phase)

	phase = time.Now()
	second := runJob(ctx, t, c, "train-2")
	t.Logf("second run finished in %.1fs", time.Since(phase).Seconds())
	checkSidecarRan(ctx, t, c, second)

	// The sidecar read the whole dataset (33 MB) and its own token; that
	// must not reach the workload's profiles. Two flushes after the run:
	// the dataset's profile holds the trainer's two runs and no more, and
	// no profile of the sidecar's token volume exists. (Reads of files
	// whose path was missed land in a profile of an "unknown" dataset,
	// reported here: seen with a few files on this machine.)
	time.Sleep(5 * time.Second)
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
	checkDashboards(ctx, t, c, prom)
}

func featureFiles(p *v1.AccessProfile) int64 {
	if p.Status.Features == nil {
		return 0
	}
	return int64(p.Status.Features.Files)
}

// setupNamespace opts the test namespace in with an Auto policy for
// Prefetch and creates the suspended CronJob whose Jobs the test starts.
func setupNamespace(ctx context.Context, t *testing.T, c *node.Cluster) {
	t.Helper()
	var nsObj corev1.Namespace
	if err := c.Env.Client.Get(ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil {
		t.Fatal(err)
	}
	if nsObj.Labels == nil {
		nsObj.Labels = map[string]string{}
	}
	nsObj.Labels[v1.AutotuneLabel] = v1.AutotuneEnabled
	if err := c.Env.Client.Update(ctx, &nsObj); err != nil {
		t.Fatal(err)
	}
	objs := []client.Object{
		&v1.AutotunePolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns},
			Spec: v1.AutotunePolicySpec{
				Mode:          v1.ModeAuto,
				AutoApply:     []v1.Action{v1.ActionPrefetch},
				MinConfidence: ptr.To(0.5),
				Prefetch:      &v1.PrefetchBounds{MaxBandwidth: ptr.To(resource.MustParse("500Mi")), BudgetBytes: ptr.To(resource.MustParse("10Gi"))},
			},
		},
		&batchv1.CronJob{
			ObjectMeta: metav1.ObjectMeta{Name: cronJob, Namespace: ns},
			Spec: batchv1.CronJobSpec{
				// Never fires on its own: the test starts each run, as
				// `kubectl create job --from=cronjob/train` would.
				Schedule: "0 0 1 1 *",
				Suspend:  ptr.To(true),
				JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
					BackoffLimit: ptr.To(int32(0)),
					Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
						RestartPolicy: corev1.RestartPolicyNever,
						NodeSelector:  map[string]string{node.NodeLabel: "real"},
						Containers: []corev1.Container{{
							Name: "trainer", Image: node.WorkloadImage, ImagePullPolicy: corev1.PullNever,
							// Reads from its first instant: the collector allows
							// the pod's cgroup as soon as the kubelet makes it,
							// and the kernel each container's as it is created.
							Command: []string{"eddy-workload", "read", "--dir", "/data", "--pattern", "smallfiles",
								"--epochs", strconv.Itoa(epochs), "--seed", "7"},
							VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data", ReadOnly: true}},
						}},
						Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
							PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: dataset, ReadOnly: true},
						}}},
					}},
				}},
			},
		},
	}
	for _, o := range objs {
		if err := c.Env.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %T %s: %v", o, o.GetName(), err)
		}
	}
}

// runJob starts a Job from the CronJob's template, owned by the CronJob,
// waits for it to complete and returns its pod.
func runJob(ctx context.Context, t *testing.T, c *node.Cluster, name string) *corev1.Pod {
	t.Helper()
	var cj batchv1.CronJob
	if err := c.Env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: cronJob}, &cj); err != nil {
		t.Fatal(err)
	}
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "batch/v1", Kind: "CronJob", Name: cj.Name, UID: cj.UID, Controller: ptr.To(true),
		}}},
		Spec: *cj.Spec.JobTemplate.Spec.DeepCopy(),
	}
	if err := c.Env.Client.Create(ctx, job); err != nil {
		t.Fatalf("create Job %s: %v", name, err)
	}
	var pod *corev1.Pod
	poll(ctx, t, c, 4*time.Minute, "Job "+name+" to complete", func() (bool, error) {
		if err := c.Env.Client.Get(ctx, client.ObjectKeyFromObject(job), job); err != nil {
			return false, err
		}
		for _, cond := range job.Status.Conditions {
			if cond.Type == batchv1.JobFailed && cond.Status == corev1.ConditionTrue {
				return false, fmt.Errorf("job %s failed: %s %s; pods:\n%s", name, cond.Reason, cond.Message, podsSummary(ctx, c, name))
			}
		}
		done := job.Status.Succeeded > 0
		if done {
			var pods corev1.PodList
			if err := c.Env.Client.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{"job-name": name}); err != nil {
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
	logs, err := c.Env.Kubectl(ctx, "logs", "-n", ns, pod.Name, "-c", v1.PrefetchContainerName)
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

func waitProfile(ctx context.Context, t *testing.T, c *node.Cluster, minBytes float64) *v1.AccessProfile {
	t.Helper()
	var out *v1.AccessProfile
	poll(ctx, t, c, 2*time.Minute, "an AccessProfile of the whole first run", func() (bool, error) {
		var list v1.AccessProfileList
		if err := c.Env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for i := range list.Items {
			p := &list.Items[i]
			if p.Status.Class != "" && p.Status.Features != nil && float64(p.Status.Features.BytesRead) >= minBytes {
				out = p
				return true, nil
			}
		}
		return false, nil
	})
	return out
}

func waitApplied(ctx context.Context, t *testing.T, c *node.Cluster) *v1.Recommendation {
	t.Helper()
	var out *v1.Recommendation
	poll(ctx, t, c, 2*time.Minute, "the operator to apply a Prefetch recommendation", func() (bool, error) {
		var list v1.RecommendationList
		if err := c.Env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for i := range list.Items {
			r := &list.Items[i]
			if r.Spec.Action == v1.ActionPrefetch && (r.Status.Phase == v1.PhaseApplied || r.Status.Phase == v1.PhaseVerified) {
				out = r
				return true, nil
			}
		}
		return false, nil
	})
	return out
}

func poll(ctx context.Context, t *testing.T, c *node.Cluster, timeout time.Duration, what string, fn func() (bool, error)) {
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
			screen, _ := c.Env.Kubectl(context.Background(), "get", "accessprofiles,recommendations,jobs,pods", "-n", ns, "-o", "wide")
			t.Fatalf("timed out after %s waiting for %s; in %s:\n%s\ncollector:\n%s", timeout, what, ns, screen, collectorMetrics(c))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// collectorMetrics are the collector's own series (not the per-pod ones).
func collectorMetrics(c *node.Cluster) string {
	pod, err := collectorPod(context.Background(), c)
	if err != nil {
		return err.Error()
	}
	body, err := get(context.Background(), fmt.Sprintf("http://%s:9464/metrics", pod.Status.PodIP))
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "eddy_collector_") && !strings.Contains(l, "_bucket") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// collectorPod is the collector DaemonSet's one pod (on the real node).
func collectorPod(ctx context.Context, c *node.Cluster) (*corev1.Pod, error) {
	var pods corev1.PodList
	if err := c.Env.Client.List(ctx, &pods, client.InNamespace(node.EddySystem), client.MatchingLabels{"app.kubernetes.io/component": "collector"}); err != nil {
		return nil, err
	}
	if len(pods.Items) != 1 {
		return nil, fmt.Errorf("%d collector pods, want 1 (on the real node only)", len(pods.Items))
	}
	return &pods.Items[0], nil
}

func podsSummary(ctx context.Context, c *node.Cluster, job string) string {
	out, _ := c.Env.Kubectl(ctx, "get", "pods", "-n", ns, "-l", "job-name="+job, "-o", "yaml")
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
