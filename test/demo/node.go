package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/node"
	"github.com/eddy-autotune/eddy/test/node/workload"
)

// RunOnNode is the demo on real pods: a control plane with this machine as
// a real node (kubelet, containerd, kube-proxy, CoreDNS: test/node), eddy
// installed from config/ as pods, a namespace opted in with an Auto policy,
// and a training Job run twice, as two Jobs of one family (train-1,
// train-2), reading a PVC backed by the slow remote. It prints the same
// steps and summary as Run. Options about host processes (EddyBin,
// WorkloadBin, Local, Ineffective) do not apply.
func RunOnNode(ctx context.Context, o Options) (res *Result, err error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if o.Local || o.Ineffective {
		return nil, errors.New("--local and --ineffective are options of the host demo (--no-node)")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the demo runs a kubelet and loads eddy's kernel programs: run it as root (sudo make demo)")
	}
	ctrllog.SetLogger(logr.Discard())
	r := &run{o: o, out: o.Out, start: time.Now()}
	r.step("starting a cluster: kube-apiserver, etcd, scheduler and controllers, and this machine as its node (kubelet, containerd, kube-proxy, CoreDNS); log in %s", filepath.Join(o.Dir, "logs"))
	c, err := node.Start(ctx, node.Options{Dir: o.Dir, BinDir: o.BinDir, Images: []string{"pause", "workload", "eddy"}, RemoteDatasets: true})
	if err != nil {
		return nil, err
	}
	defer func() {
		if o.Keep && err == nil {
			r.say("running; Ctrl-C to stop")
			<-ctx.Done()
		}
		r.step("stopping the cluster")
		_ = c.Stop()
	}()
	r.env = c.Env
	r.logs = func(component string) string {
		out, _ := c.Env.Kubectl(context.Background(), "logs", "-n", node.EddySystem, "-l", "app.kubernetes.io/component="+component, "--tail=30", "--all-containers")
		return "kubectl logs -n " + node.EddySystem + " -l app.kubernetes.io/component=" + component + ":\n" + out
	}
	r.say("  export KUBECONFIG=%s", c.Kubeconfig)

	r.step("installing eddy from config/ as pods (collector DaemonSet, analyzer, webhook, operator)")
	if _, err := c.DeployEddy(ctx, node.EddyOptions{Args: map[string][]string{
		// A workload is advised once a run ended: here, 4 s without a read
		// (the default, 30 s, is for pods that pause between reads).
		"analyzer":  {"--flush-interval=2s", "--stable-assessments=2", "--run-ended-after=4s"},
		"collector": {"--interval=250ms"},
		"operator":  {"--verify-settle=-1s"},
	}}); err != nil {
		return nil, err
	}
	r.say("  analyzer flushes every 2s and advises a workload 4s after its run ended; the collector drains every 250ms (shortened for the demo)")

	d, err := c.AddRemoteDataset(ctx, Namespace, Dataset, func(dir string) error {
		return workload.WriteSample(dir, o.Files, o.FileBytes, 0)
	}, node.RemoteOptions{Delay: o.Latency, Bandwidth: o.Bandwidth})
	if err != nil {
		return nil, err
	}
	r.step("dataset %s/%s: %d files of %s on a remote behind a link of %s each way and %s/s (rclone serve → proxy → rclone mount, a PersistentVolume on the node)",
		Namespace, Dataset, o.Files, resource.NewQuantity(o.FileBytes, resource.BinarySI), o.Latency, resource.NewQuantity(o.Bandwidth, resource.BinarySI))
	if err := c.OptIn(ctx, Namespace, demoPolicy()); err != nil {
		return nil, err
	}
	r.say("  namespace %s labelled %s=%s, AutotunePolicy default: Auto for Prefetch and InjectSDK", Namespace, v1.AutotuneLabel, v1.AutotuneEnabled)

	res = &Result{}
	r.step("Job %s/%s-1: a pod reading %s in %d shuffled epochs, from a cold mount", Namespace, JobName, Dataset, o.Epochs)
	pod1, rep, err := r.runJobOnNode(ctx, JobName+"-1")
	if err != nil {
		return nil, err
	}
	if _, injected := pod1.Annotations[v1.InjectedAnnotation]; injected {
		return nil, fmt.Errorf("pod %s was injected before any recommendation existed", pod1.Name)
	}
	res.ColdSeconds = rep.Seconds
	r.say("  pod %s read %d files × %d epochs (%.1f MiB) in %.2fs", pod1.Name, rep.Files, rep.Epochs, float64(rep.Bytes)/(1<<20), rep.Seconds)

	r.step("waiting for the analyzer's AccessProfile and Recommendations")
	if err := r.waitProfile(ctx, &res.Profile); err != nil {
		return nil, err
	}
	if f := res.Profile.Status.Features; f != nil {
		res.ColdReadWaitShare = f.ReadWaitShare
		r.say("  AccessProfile %s (%s/%s): class %s, confidence %.2f; %d files, %.1f MiB, whole files %.0f%%, %.1f epochs, read wait %.0f%% of wall time",
			res.Profile.Name, res.Profile.Spec.WorkloadRef.Kind, res.Profile.Spec.WorkloadRef.Name, res.Profile.Status.Class, res.Profile.Status.Confidence,
			f.Files, float64(f.BytesRead)/(1<<20), f.WholeFileRatio*100, f.Epochs, f.ReadWaitShare*100)
	}
	if res.Recommendations, err = r.waitRecommendations(ctx, res.Profile.Status.Class); err != nil {
		return nil, err
	}
	for _, rec := range res.Recommendations {
		r.say("  Recommendation %s: %s (%s)", rec.Name, rec.Spec.Action, summary(&rec))
	}
	r.step("the policy is Auto: waiting for the operator to apply")
	if res.Applied, err = r.waitApplied(ctx, res.Profile.Status.Class); err != nil {
		return nil, err
	}
	r.say("  %s is %s", res.Applied.Name, res.Applied.Status.Phase)

	if err := d.Reset(); err != nil {
		return nil, err
	}
	r.step("Job %s/%s-2, the family's next run, from a cold mount again: the webhook injects what was applied", Namespace, JobName)
	pod2, rep2, err := r.runJobOnNode(ctx, JobName+"-2")
	if err != nil {
		return nil, err
	}
	res.NextPod = pod2
	r.say("  %s: %s=%q", pod2.Name, v1.InjectedAnnotation, pod2.Annotations[v1.InjectedAnnotation])
	for _, ctr := range append(append([]corev1.Container{}, pod2.Spec.InitContainers...), pod2.Spec.Containers...) {
		if strings.HasPrefix(ctr.Name, "eddy-") {
			r.say("  injected container %s: %s %s", ctr.Name, strings.Join(ctr.Command, " "), strings.Join(ctr.Args, " "))
		}
	}
	if _, injected := pod2.Annotations[v1.InjectedAnnotation]; !injected {
		return nil, fmt.Errorf("pod %s was not injected though %s is %s", pod2.Name, res.Applied.Name, res.Applied.Status.Phase)
	}
	res.WarmSeconds = rep2.Seconds
	res.Speedup = res.ColdSeconds / res.WarmSeconds
	r.step("the job before and after eddy (%d files × %d epochs over the remote)", o.Files, o.Epochs)
	r.say("%-34s %7.2fs   read wait %.0f%% of wall time (profile)", "cold ("+pod1.Name+")", res.ColdSeconds, res.ColdReadWaitShare*100)
	r.say("%-34s %7.2fs   the prefetcher ran beside it", "with eddy's prefetch ("+pod2.Name+")", res.WarmSeconds)
	r.say("%-34s %7.1f×", "speedup", res.Speedup)
	if err := r.waitVerdict(ctx, res); err != nil {
		return nil, err
	}
	if err := r.finish(ctx, res); err != nil {
		return nil, err
	}
	if o.Keep {
		r.say("where to look, from the eddy checkout:")
		r.say("  export KUBECONFIG=%s", c.Kubeconfig)
		r.say("  bin/kubectl-eddy explain %s -n %s   # profile, recommendations, the verdict with its before/after", JobName, Namespace)
		r.say("  bin/kubectl get accessprofiles,recommendations,jobs,pods -n %s", Namespace)
		r.say("  bin/kubectl get events -n %s --sort-by=.lastTimestamp", Namespace)
		r.say("  bin/kubectl get pods -n %s -o wide; bin/kubectl logs -n %s deploy/eddy-analyzer", node.EddySystem, node.EddySystem)
	}
	return res, nil
}

// runJobOnNode runs a Job of the demo's family to its end on the node and
// returns its pod and the reader's report.
func (r *run) runJobOnNode(ctx context.Context, name string) (*corev1.Pod, *workload.Report, error) {
	cl := r.env.Client
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To(int32(0)),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy:                 corev1.RestartPolicyNever,
				TerminationGracePeriodSeconds: ptr.To(int64(1)),
				NodeSelector:                  map[string]string{node.NodeLabel: "real"},
				Containers: []corev1.Container{{
					Name: "trainer", Image: node.WorkloadImage, ImagePullPolicy: corev1.PullNever,
					Command:      append([]string{"eddy-workload"}, readerArgs("/data", r.o.Epochs)...),
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data", ReadOnly: true}},
				}},
				Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
					PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: Dataset, ReadOnly: true},
				}}},
			}},
		},
	}
	if err := cl.Create(ctx, job); err != nil {
		return nil, nil, fmt.Errorf("create Job %s: %w", name, err)
	}
	pod := &corev1.Pod{}
	err := r.poll(ctx, 5*time.Minute, "Job "+name+" to finish", "webhook", func() (bool, error) {
		var pods corev1.PodList
		if err := cl.List(ctx, &pods, client.InNamespace(Namespace), client.MatchingLabels{"job-name": name}); err != nil || len(pods.Items) == 0 {
			return false, err
		}
		*pod = pods.Items[0]
		for _, s := range pod.Status.ContainerStatuses {
			if s.Name != "trainer" || s.State.Terminated == nil {
				continue
			}
			if s.State.Terminated.ExitCode != 0 {
				return false, fmt.Errorf("pod %s: the trainer exited %d: %s", pod.Name, s.State.Terminated.ExitCode, s.State.Terminated.Message)
			}
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return nil, nil, err
	}
	logs, err := r.env.Kubectl(ctx, "logs", "-n", Namespace, pod.Name, "-c", "trainer")
	if err != nil {
		return nil, nil, fmt.Errorf("logs of %s: %w", pod.Name, err)
	}
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	var rep workload.Report
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &rep); err != nil {
		return nil, nil, fmt.Errorf("pod %s: its last log line is not the reader's report: %v: %q", pod.Name, err, logs)
	}
	return pod, &rep, nil
}
