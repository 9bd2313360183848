package demo

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/internal/cgroupv2"
)

// createPod creates a pod of the Job as the job controller would, bound to
// the demo node, and returns it as admitted (after the webhook).
func (r *run) createPod(ctx context.Context, name string) (*corev1.Pod, error) {
	c := r.env.Client
	job := &batchv1.Job{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: JobName}, job); err != nil {
		return nil, err
	}
	data := r.dataPath
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: Namespace,
			Labels: map[string]string{"batch.kubernetes.io/job-name": JobName, "job-name": JobName},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "batch/v1", Kind: "Job", Name: JobName, UID: job.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}},
		},
		Spec: corev1.PodSpec{
			NodeName:      NodeName,
			RestartPolicy: corev1.RestartPolicyNever,
			// What ServiceAccount admission sets; the prefetcher's token is
			// bound to the pod and must name the pod's service account.
			ServiceAccountName: "default",
			Containers: []corev1.Container{{
				Name: "trainer", Image: "eddy.local/workload:dev",
				// The dataset is mounted where the workload reads it on this
				// machine, so the collector's path → volume mapping holds.
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: data, ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: Dataset, ReadOnly: true},
			}}},
		},
	}
	if err := c.Create(ctx, pod); err != nil {
		return nil, fmt.Errorf("create pod %s: %w", name, err)
	}
	return pod, nil
}

// startPod marks the pod Running with the given containers (init
// containers first, as the pod spec lists them) each under a fresh container
// id, and creates each container's cgroup as a kubelet would. It returns the
// cgroups by container name.
func (r *run) startPod(ctx context.Context, pod *corev1.Pod, containers ...string) (map[string]*cgroupv2.Group, error) {
	now := metav1.Now()
	isInit := map[string]bool{}
	for _, c := range pod.Spec.InitContainers {
		isInit[c.Name] = true
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning}
	groups := map[string]*cgroupv2.Group{}
	for _, name := range containers {
		ctrID := randomID()
		st := corev1.ContainerStatus{
			Name: name, ContainerID: "containerd://" + ctrID, Ready: true, Started: ptr.To(true), Image: "eddy.local/workload:dev", ImageID: "sha256:" + randomID(),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}
		if isInit[name] {
			pod.Status.InitContainerStatuses = append(pod.Status.InitContainerStatuses, st)
		} else {
			pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, st)
		}
		g, err := cgroupv2.Create("kubepods/besteffort/pod"+string(pod.UID), ctrID)
		if err != nil {
			return nil, err
		}
		r.pods = append(r.pods, g)
		groups[name] = g
	}
	if err := r.env.Client.Status().Update(ctx, pod); err != nil {
		return nil, fmt.Errorf("set pod %s Running: %w", pod.Name, err)
	}
	// The collector allow-lists the container's cgroup when its informer sees
	// the Running pod; reads before that are not recorded. A fixed pause
	// covers it here (the informer reacts within a second).
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(3 * time.Second):
	}
	return groups, nil
}

// runReader runs the training reader over data in the container's cgroup
// g, from a cold page cache, and returns its wall time.
func (r *run) runReader(ctx context.Context, pod *corev1.Pod, g *cgroupv2.Group, data string) (float64, error) {
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
	cmd := exec.CommandContext(ctx, r.o.WorkloadBin, readerArgs(data, r.o.Epochs)...)
	logFile, err := os.Create(filepath.Join(r.o.Dir, "logs", "workload-"+pod.Name+".log"))
	if err != nil {
		return 0, err
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	start := time.Now()
	if err := g.Start(cmd); err != nil {
		return 0, fmt.Errorf("start the workload in %s: %w", g.Path, err)
	}
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("workload: %w (log in %s)", err, logFile.Name())
	}
	return time.Since(start).Seconds(), nil
}

// readerArgs are eddy-workload's arguments for the demo's training run over
// dir: small files in shuffled epochs.
func readerArgs(dir string, epochs int) []string {
	return []string{"read", "--dir", dir, "--pattern", "smallfiles", "--epochs", fmt.Sprint(epochs), "--seed", "7"}
}

func (r *run) waitWebhookReady(ctx context.Context, url string) error {
	return r.poll(ctx, 60*time.Second, "the webhook to be ready", "webhook", func() (bool, error) {
		resp, err := http.Get(url) //nolint:gosec // loopback URL built here
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

func (r *run) waitProfile(ctx context.Context, out *v1.AccessProfile) error {
	return r.poll(ctx, 120*time.Second, "an AccessProfile with a class", "analyzer", func() (bool, error) {
		var list v1.AccessProfileList
		if err := r.env.Client.List(ctx, &list, client.InNamespace(Namespace)); err != nil {
			return false, err
		}
		// Over a slow remote the analyzer may settle on a class during the
		// first epoch; the profile is taken once it holds the whole run.
		want := 0.9 * float64(r.o.Files) * float64(r.o.FileBytes) * float64(r.o.Epochs)
		for _, p := range list.Items {
			if p.Status.Class != "" && p.Status.Class != v1.ClassUnknown && p.Status.Features != nil && float64(p.Status.Features.BytesRead) >= want {
				*out = p
				return true, nil
			}
		}
		return false, nil
	})
}

// waitRecommendations waits for the recommendations made from the profile's
// class (earlier ones, from a partial view of the run, may exist too).
func (r *run) waitRecommendations(ctx context.Context, class v1.AccessClass) ([]v1.Recommendation, error) {
	var recs []v1.Recommendation
	// The analyzer writes a class's recommendations one by one: wait for its
	// Prefetch (what the demo applies), or a few seconds past the first.
	var firstSeen time.Time
	err := r.poll(ctx, 60*time.Second, "recommendations", "analyzer", func() (bool, error) {
		var list v1.RecommendationList
		if err := r.env.Client.List(ctx, &list, client.InNamespace(Namespace)); err != nil {
			return false, err
		}
		recs = list.Items
		for _, rec := range recs {
			if rec.Spec.Evidence.Class != class {
				continue
			}
			if rec.Spec.Action == v1.ActionPrefetch {
				return true, nil
			}
			if firstSeen.IsZero() {
				firstSeen = time.Now()
			}
		}
		return !firstSeen.IsZero() && time.Since(firstSeen) > 10*time.Second, nil
	})
	sort.Slice(recs, func(i, j int) bool { return recs[i].Name < recs[j].Name })
	return recs, err
}

// waitApplied waits for an applied recommendation made from the profile's
// class, preferring Prefetch.
func (r *run) waitApplied(ctx context.Context, class v1.AccessClass) (*v1.Recommendation, error) {
	var applied *v1.Recommendation
	err := r.poll(ctx, 90*time.Second, "an applied recommendation", "operator", func() (bool, error) {
		var list v1.RecommendationList
		if err := r.env.Client.List(ctx, &list, client.InNamespace(Namespace)); err != nil {
			return false, err
		}
		for i := range list.Items {
			rec := &list.Items[i]
			if rec.Spec.Evidence.Class == class && (rec.Status.Phase == v1.PhaseApplied || rec.Status.Phase == v1.PhaseVerified) {
				if applied == nil || rec.Spec.Action == v1.ActionPrefetch {
					applied = rec
				}
			}
		}
		return applied != nil, nil
	})
	return applied, err
}

// poll calls fn every 250ms until it reports done, it fails, or timeout;
// on timeout the error carries the tail of the component's log.
func (r *run) poll(ctx context.Context, timeout time.Duration, what, component string, fn func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, err := fn()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			if r.logs != nil {
				return fmt.Errorf("no %s after %s; %s", what, timeout, r.logs(component))
			}
			logPath := filepath.Join(r.o.Dir, "logs", component+".log")
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("no %s after %s; %s log (%s) ends:\n%s", what, timeout, component, logPath, strings.TrimSpace(tail(out, 3000)))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
