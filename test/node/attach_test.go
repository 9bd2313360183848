package node_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/eddy-autotune/eddy/api/v1alpha1"
	"github.com/eddy-autotune/eddy/test/node"
	"github.com/eddy-autotune/eddy/test/node/workload"
)

// TestCollectorAttachesOnlyWhileObserving deploys eddy from config/ on the
// real node and counts, from the host, the BPF links the collector's process
// holds: with no opted-in pod on the node only the cgroup and thread exit
// hooks are attached; an opted-in pod attaches the per-syscall and
// page-cache programs in time for its first reads (its profile holds every
// byte it read); when it ends they detach.
func TestCollectorAttachesOnlyWhileObserving(t *testing.T) {
	node.SkipUnlessAvailable(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("/tmp", "eddy-attach-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	c, err := node.Start(ctx, node.Options{Dir: dir, Images: []string{"pause", "workload", "eddy"}, Log: node.TestLog(t)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer func() {
		if err := c.Stop(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	}()
	if _, err := c.DeployEddy(ctx, node.EddyOptions{Args: map[string][]string{
		"analyzer":  {"--flush-interval=2s", "--run-ended-after=5s"},
		"collector": {"--interval=1s"},
	}}); err != nil {
		t.Fatalf("deploy eddy: %v", err)
	}

	const namespace = "attach"
	const files, size = 48, 64 << 10
	d, err := c.AddLocalDataset(ctx, namespace, "local", func(dir string) error { return workload.WriteSample(dir, files, size, 0) })
	if err != nil {
		t.Fatal(err)
	}
	rest := waitLinks(ctx, t, "no opted-in pod yet", func(n int) bool { return n > 0 })
	if rest > 4 {
		t.Fatalf("%d links with nothing to observe; want the cgroup mkdir/rmdir and thread exit hooks and the batch flusher alone", rest)
	}

	var ns corev1.Namespace
	if err := c.Env.Client.Get(ctx, client.ObjectKey{Name: namespace}, &ns); err != nil {
		t.Fatal(err)
	}
	ns.Labels = map[string]string{v1.AutotuneLabel: v1.AutotuneEnabled}
	if err := c.Env.Client.Update(ctx, &ns); err != nil {
		t.Fatal(err)
	}
	// Any class recognised from one whole run is confident enough to rest.
	if err := c.Env.Client.Create(ctx, &v1.AutotunePolicy{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "default"},
		Spec: v1.AutotunePolicySpec{MinConfidence: ptr.To(0.0)}}); err != nil {
		t.Fatal(err)
	}
	readerPod := func(name string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
			Spec: corev1.PodSpec{
				NodeSelector: map[string]string{node.NodeLabel: "real"},
				Containers: []corev1.Container{{
					Name: "reader", Image: node.WorkloadImage, ImagePullPolicy: corev1.PullNever,
					Command:      []string{"eddy-workload", "read", "--dir", "/data", "--pattern", "smallfiles", "--report", "/out/report.json", "--hold"},
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data", ReadOnly: true}, {Name: "out", MountPath: "/out"}},
				}},
				Volumes: []corev1.Volume{
					{Name: "data", VolumeSource: corev1.VolumeSource{
						PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: d.Claim, ReadOnly: true}}},
					{Name: "out", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				},
			},
		}
	}
	pod := readerPod("reader")
	created := time.Now()
	if err := c.Env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	// 6 page-cache hooks and the syscall hooks: one link per syscalls trace
	// event (18), or 2 raw_syscalls hooks where the collector found no
	// tracefs.
	observing := waitLinks(ctx, t, "an opted-in pod running", func(n int) bool { return n >= rest+8 })
	defer func() {
		if t.Failed() {
			t.Logf("collector logs:\n%s", collectorLogs(ctx, c))
		}
	}()
	t.Logf("links held by the collector: %d at rest, %d observing", rest, observing)
	if observing < rest+24 {
		t.Logf("the collector runs raw_syscalls hooks (no tracefs in its pod?):\n%s", collectorLogs(ctx, c))
	}

	// Every byte the pod read, from its first read, is in its profile. The
	// profile's count decays with time (a few parts in 10,000 over a
	// minute): a missed read, 4 KiB or more, is larger than the slack.
	const want = files * size * 999 / 1000
	var got int64
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		var list v1.AccessProfileList
		if err := c.Env.Client.List(ctx, &list, client.InNamespace(namespace)); err != nil {
			t.Fatal(err)
		}
		got = 0
		for _, p := range list.Items {
			if p.Spec.Dataset.Name == d.Claim && p.Status.Features != nil {
				got += p.Status.Features.BytesRead
			}
		}
		if got >= want {
			break
		}
		time.Sleep(time.Second)
	}
	if got < want {
		t.Errorf("the pod's profile holds %d bytes, want every byte it read (%d, less the decay)", got, files*size)
	}
	logAttachTiming(ctx, t, c, pod, created)
	t.Logf("the pod's profile holds %d of the %d bytes it read", got, files*size)

	if err := c.Env.Client.Delete(ctx, pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	waitLinks(ctx, t, "the pod deleted", func(n int) bool { return n == rest })
	t.Logf("programs detached %.1fs after the pod was deleted", time.Since(deleted).Seconds())

	// Learn, then rest: once its run ended the profile is confident and
	// rests; the family's next run (reader-2, workload "reader") reads the
	// same files without the programs attaching, and a rest is not idleness.
	var prof v1.AccessProfile
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		var list v1.AccessProfileList
		if err := c.Env.Client.List(ctx, &list, client.InNamespace(namespace)); err != nil {
			t.Fatal(err)
		}
		resting, found := 0, false
		for _, p := range list.Items {
			if meta.IsStatusConditionFalse(p.Status.Conditions, v1.ConditionLearning) {
				resting++
			}
			if p.Spec.Dataset.Name == d.Claim {
				prof, found = p, true
			}
		}
		// The pod is observed unless every profile of its workload rests.
		if found && resting == len(list.Items) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the profile did not rest after its run ended: %+v", list.Items)
		}
	}
	t.Logf("profile %s rests: %s", prof.Name, meta.FindStatusCondition(prof.Status.Conditions, v1.ConditionLearning).Message)
	again := readerPod("reader-2")
	if err := c.Env.Client.Create(ctx, again); err != nil {
		t.Fatal(err)
	}
	var report string
	for deadline := time.Now().Add(2 * time.Minute); report == ""; time.Sleep(200 * time.Millisecond) {
		if n := collectorLinks(t); n != rest {
			t.Fatalf("the collector holds %d BPF links while the only pod on the node rests; want %d", n, rest)
		}
		if err := c.Env.Client.Get(ctx, client.ObjectKeyFromObject(again), again); err != nil {
			t.Fatal(err)
		}
		if again.UID != "" {
			p := filepath.Join(c.KubeletRootDir(), "pods", string(again.UID), "volumes", "kubernetes.io~empty-dir", "out", "report.json")
			if _, err := os.Stat(p); err == nil {
				report = p
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the resting workload's pod did not finish its reads")
		}
	}
	time.Sleep(6 * time.Second) // three flushes of the analyzer
	if n := collectorLinks(t); n != rest {
		t.Fatalf("the collector holds %d BPF links after the resting pod read; want %d", n, rest)
	}
	var now v1.AccessProfile
	if err := c.Env.Client.Get(ctx, client.ObjectKeyFromObject(&prof), &now); err != nil {
		t.Fatal(err)
	}
	if !meta.IsStatusConditionFalse(now.Status.Conditions, v1.ConditionLearning) || now.Status.Class == v1.ClassIdle {
		t.Errorf("after a run at rest the profile is %s, Learning %+v; want it resting, not idle", now.Status.Class, meta.FindStatusCondition(now.Status.Conditions, v1.ConditionLearning))
	}
	if now.Status.Features.BytesRead > prof.Status.Features.BytesRead {
		t.Errorf("the resting pod's reads were recorded: %d bytes, %d before it", now.Status.Features.BytesRead, prof.Status.Features.BytesRead)
	}
	var recs v1.RecommendationList
	if err := c.Env.Client.List(ctx, &recs, client.InNamespace(namespace)); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs.Items {
		if r.Spec.Action == v1.ActionEvictDataset {
			t.Errorf("eviction proposed while the workload rests: %s", r.Name)
		}
	}
	t.Logf("a run at rest: the programs stayed detached, the profile rests as %s (%d bytes, unchanged)", now.Status.Class, now.Status.Features.BytesRead)
}

// logAttachTiming logs when, after the pod was created, the collector
// attached its programs and the pod began and ended its reads (from the
// report the workload wrote in its emptyDir, read from the host): a first
// read before the attach is a read the collector could not see.
func logAttachTiming(ctx context.Context, t *testing.T, c *node.Cluster, pod *corev1.Pod, created time.Time) {
	t.Helper()
	var attached time.Time
	sc := bufio.NewScanner(strings.NewReader(collectorLogs(ctx, c)))
	for sc.Scan() {
		var line struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && strings.HasPrefix(line.Msg, "attached per-syscall") && line.Time.After(created) {
			attached = line.Time
			break
		}
	}
	if err := c.Env.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
		t.Logf("timing: %v", err)
		return
	}
	b, err := os.ReadFile(filepath.Join(c.KubeletRootDir(), "pods", string(pod.UID), "volumes", "kubernetes.io~empty-dir", "out", "report.json"))
	var r workload.Report
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	if err != nil {
		t.Logf("timing: the pod's report: %v", err)
		return
	}
	end := time.Unix(0, int64(r.End*1e9))
	began := end.Add(-time.Duration(r.Seconds * 1e9))
	since := func(at time.Time) string {
		if at.IsZero() {
			return "never"
		}
		return fmt.Sprintf("%.3fs", at.Sub(created).Seconds())
	}
	t.Logf("timing after the pod was created: programs attached %s, first read %s, last read %s", since(attached), since(began), since(end))
}

// collectorLogs returns the logs of eddy's collector pods.
func collectorLogs(ctx context.Context, c *node.Cluster) string {
	cs, err := kubernetes.NewForConfig(c.Env.Config)
	if err != nil {
		return err.Error()
	}
	pods, err := cs.CoreV1().Pods(node.EddySystem).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var out strings.Builder
	for _, p := range pods.Items {
		if !strings.HasPrefix(p.Name, node.CollectorName) {
			continue
		}
		b, err := cs.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			b = []byte(err.Error())
		}
		out.WriteString(p.Name + ":\n" + string(b) + "\n")
	}
	return out.String()
}

// waitLinks waits up to a minute until ok holds for the number of BPF links
// the collector's process holds, and returns it.
func waitLinks(ctx context.Context, t *testing.T, what string, ok func(int) bool) int {
	t.Helper()
	n := -1
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(200 * time.Millisecond) {
		if n = collectorLinks(t); ok(n) {
			return n
		}
	}
	t.Fatalf("%s: the collector holds %d BPF links", what, n)
	return n
}

// collectorLinks counts the BPF link file descriptors of the `eddy
// collector` process on this host (one real node runs at a time).
func collectorLinks(t *testing.T) int {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	n, found := 0, false
	for _, cmdline := range procs {
		b, err := os.ReadFile(cmdline)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) < 2 || filepath.Base(args[0]) != "eddy" || args[1] != "collector" {
			continue
		}
		found = true
		fdinfo := filepath.Join(filepath.Dir(cmdline), "fdinfo")
		entries, err := os.ReadDir(fdinfo)
		if err != nil {
			continue
		}
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(fdinfo, e.Name()))
			if err != nil {
				continue
			}
			s := bufio.NewScanner(bytes.NewReader(b))
			for s.Scan() {
				if strings.HasPrefix(s.Text(), "link_type:") {
					n++
					break
				}
			}
		}
	}
	if !found {
		return -1
	}
	return n
}
